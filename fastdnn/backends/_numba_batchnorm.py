"""Numba kernels for batch normalization: one pass per row for the batch's μ and σ², one fused pass for
normalize + scale/shift + activation, and two for the backward (dZ̃ with dβ, dγ; then dZ). Built per
(activation, dtype) like the other kernels (see _numba_kernels: names, caching, float64 sums), as jitable
blocks that the backend's ops and the compiled whole step, epoch and loop (``_numba_kernels._backprop``,
``whole_step``, ``whole_epoch``, ``whole_loop``: one body for plain, residual and normalized networks) call."""
import functools

import numpy as np

from .._layout import BN_MOMENTUM
from ..activations import get_activation
from ._numba_kernels import _FLAGS, _scalar, jitable, njit, register_jitable


@register_jitable(**_FLAGS)
def _batch_stats(Z, mu, var):
    """μ = mean and σ² = mean square deviation of each row of Z (n, m), summed in float64."""
    n, m = Z.shape
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += Z[i, j]
        mean = s / m
        q = 0.0
        for j in range(m):
            d = Z[i, j] - mean
            q += d * d
        mu[i, 0] = mean
        var[i, 0] = q / m


@register_jitable(**_FLAGS)
def _batch_norm_backward(dZt, Zn, var, eps, gamma, dgamma, dbeta):
    """dZ = γ/(m √(σ² + ε)) · (m dZ̃ − dβ − Zn·dγ) over dZ̃ (n, m)."""
    n, m = dZt.shape
    for i in range(n):
        c = gamma[i, 0] / (m * np.sqrt(var[i, 0] + eps))
        db, dgm = dbeta[i, 0], dgamma[i, 0]
        for j in range(m):
            dZt[i, j] = c * (m * dZt[i, j] - db - Zn[i, j] * dgm)


batch_stats = njit(_batch_stats)
batch_norm_backward = njit(_batch_norm_backward)


@functools.lru_cache(maxsize=None)
def _batch_norm_activation(activation, dtype):
    g, _ = _scalar(activation, dtype)
    ftype = np.dtype(dtype).type

    def kernel(Zn, mu, var, eps, gamma, beta, Z, A):
        n, m = Zn.shape
        for i in range(n):
            inv_std = ftype(1.0 / np.sqrt(var[i, 0] + eps))
            mean, gi, bi = mu[i, 0], gamma[i, 0], beta[i, 0]
            for j in range(m):
                zn = (Zn[i, j] - mean) * inv_std
                Zn[i, j] = zn
                z = gi * zn + bi
                Z[i, j] = z
                A[i, j] = g(z)

    return jitable(kernel, activation, dtype)


@functools.lru_cache(maxsize=None)
def batch_norm_activation(activation, dtype):
    """kernel(Zn, mu, var, eps, gamma, beta, Z, A): Zn = (Zn − μ)/√(σ² + ε), Z = γ·Zn + β, A = g(Z)."""
    return njit(_batch_norm_activation(activation, dtype))


@functools.lru_cache(maxsize=None)
def _batch_norm_shift(dtype):
    """kernel(Zn, mu, var, eps, gamma, beta, Z): Zn = (Zn − μ)/√(σ² + ε), Z = γ·Zn + β (no activation: a skip
    into the layer is added to Z before it, see ``_activation``). Zn, Z (n, m); μ, σ², γ, β (n, 1). Jitable:
    the linear ``_batch_norm_activation`` with A = Z."""
    normalize = _batch_norm_activation(get_activation("linear"), dtype)

    def kernel(Zn, mu, var, eps, gamma, beta, Z):
        normalize(Zn, mu, var, eps, gamma, beta, Z, Z)

    return jitable(kernel, "shift", dtype)


@functools.lru_cache(maxsize=None)
def _activation(activation, dtype):
    """kernel(Z, A): A = g(Z). (n, m). Jitable."""
    g, _ = _scalar(activation, dtype)

    def kernel(Z, A):
        n, m = Z.shape
        for i in range(n):
            for j in range(m):
                A[i, j] = g(Z[i, j])

    return jitable(kernel, "activation", activation, dtype)


@functools.lru_cache(maxsize=None)
def _batch_norm_delta(activation, dtype):
    _, dg = _scalar(activation, dtype)

    def kernel(dA, Z, A, Zn, dgamma, dbeta):
        n, m = dA.shape
        for i in range(n):
            sb = 0.0
            sg = 0.0
            for j in range(m):
                d = dA[i, j] * dg(Z[i, j], A[i, j])
                dA[i, j] = d
                sb += d
                sg += d * Zn[i, j]
            dbeta[i, 0] = sb
            dgamma[i, 0] = sg

    return jitable(kernel, activation, dtype)


@functools.lru_cache(maxsize=None)
def batch_norm_delta(activation, dtype):
    """kernel(dA, Z, A, Zn, dgamma, dbeta): dZ̃ = dA * g'(Z̃) over dA, dβ = Σ dZ̃, dγ = Σ dZ̃·Zn per row."""
    return njit(_batch_norm_delta(activation, dtype))


# --- the compiled calls' batch-norm plan (``_numba_kernels._backprop``, ``whole_*``) -----------------------
# ``plan`` (the backend's ``_batch_norm_plan``) = (gamma_at, mean_at, var_at, stats_at, rows_at, stats_size):
# tuples of L + 1 ints indexed by layer, -1 (or 0) for a layer without batch norm: where γ[l], the running μ[l]
# and the running σ²[l] start in θ; where the batch's μ[l] starts in the flat batch-norm buffer Bf (σ²[l]
# follows it); the rows of the normalized layers before l. Bf holds every normalized layer's μ, σ² (its first
# stats_size entries, layer after layer), then every normalized layer's Zn (n_l, m) (layer l's block at
# stats_size + rows_at[l]·m) — the engine makes its Workspace's Zn, mu, var views of it in that layout.

@functools.lru_cache(maxsize=None)
def _running_update(dtype, plan):
    """running(thetas, c, Bf, dims): slot 1 − c's running μ, σ² = BN_MOMENTUM·slot c's + (1 − BN_MOMENTUM)·the
    batch's (in Bf), for each normalized layer: what ``Engine._update_running`` does after a step's update
    (which carried them over unchanged: their gradient is 0). Jitable."""
    gamma_at, mean_at, var_at, stats_at, _, _ = plan
    ftype = np.dtype(dtype).type
    keep, new = ftype(BN_MOMENTUM), ftype(1 - BN_MOMENTUM)

    def running(thetas, c, Bf, dims):
        old, out = thetas[c], thetas[1 - c]
        for l in range(dims.shape[0]):
            if gamma_at[l] >= 0:
                n, so, mo, vo = dims[l], stats_at[l], mean_at[l], var_at[l]
                for i in range(n):
                    out[mo + i] = keep * old[mo + i] + new * Bf[so + i]
                    out[vo + i] = keep * old[vo + i] + new * Bf[so + n + i]

    return jitable(running, dtype, plan)
