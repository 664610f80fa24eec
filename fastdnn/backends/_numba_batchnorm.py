"""Numba kernels for batch normalization: one pass per row for the batch's μ and σ², one fused pass for
normalize + scale/shift + activation, and two for the backward (dZ̃ with dβ, dγ; then dZ). Built per
(activation, dtype) like the other kernels (see _numba_kernels: names, caching, float64 sums), as jitable
blocks that the backend's ops and the compiled whole step, epoch and loop of a batch-normalized network
(``whole_step``, ``whole_epoch``, ``whole_loop`` here) both call."""
import functools

import numpy as np

from .._layout import BN_EPSILON, BN_MOMENTUM
from . import _numba_kernels as K
from ._numba_kernels import _FLAGS, _row_sum, _scalar, jitable, njit, register_jitable, sgd_update


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


# --- the compiled whole step, epoch and loop of a batch-normalized network ----------------------------------
# ``plan`` (the backend's ``_batch_norm_plan``) = (gamma_at, mean_at, var_at, stats_at, rows_at, stats_size):
# tuples of L + 1 ints indexed by layer, -1 (or 0) for a layer without batch norm: where γ[l], the running μ[l]
# and the running σ²[l] start in θ; where the batch's μ[l] starts in the flat batch-norm buffer Bf (σ²[l]
# follows it); the rows of the normalized layers before l. Bf holds every normalized layer's μ, σ² (its first
# stats_size entries, layer after layer), then every normalized layer's Zn (n_l, m) (layer l's block at
# stats_size + rows_at[l]·m) — the engine makes its Workspace's Zn, mu, var views of it in that layout.

@functools.lru_cache(maxsize=None)
def _bn_backprop(hidden, output, loss, dtype, blas_bits, plan):
    """``_numba_kernels._backprop`` for a network with batch-normalized hidden layers (the engine's math,
    engine.py), jitable: backprop(X, xt, Y, theta, dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m) -> J.
    A normalized layer: Zn = W·A_prev, the batch's μ, σ² into Bf, Zn normalized, Z = γ·Zn + β (β in b's
    slot), A = g(Z); backward: dZ̃, dβ (in db's slot), dγ, then dZ through μ, σ², then the GEMMs. dθ is
    written only when J is finite; the running statistics' entries of dθ are never written (they stay 0)."""
    gemm = K.loop_gemm if blas_bits is None else K.blas_gemm(dtype, blas_bits)
    forward_hidden, delta_hidden = K._bias_activation(hidden, dtype), K._delta_row_sum(hidden, dtype)
    normalize, delta_normalized = _batch_norm_activation(hidden, dtype), _batch_norm_delta(hidden, dtype)
    if output.name == "softmax":
        forward_output, output_pass = K._bias_softmax(dtype), K._output_softmax_ce(dtype)
    else:
        forward_output, output_pass = K._bias_activation(output, dtype), K._output_elementwise(loss, output, dtype)
    gamma_at, _, _, stats_at, rows_at, stats_size = plan
    eps = BN_EPSILON

    def backprop(X, xt, Y, theta, dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m):
        L, m = dims.shape[0] - 1, X.shape[0] if xt else X.shape[1]
        A_prev, wo = X, 0
        for l in range(1, L + 1):
            n, k, po = dims[l], dims[l - 1], pofs[l - 1]
            W = theta[po:po + n * k].reshape((n, k))
            b = theta[po + n * k:po + n * k + n].reshape((n, 1))
            Z, A = Zf[wo:wo + n * m].reshape((n, m)), Af[wo:wo + n * m].reshape((n, m))
            go = gamma_at[l]
            if go >= 0:
                so, zo = stats_at[l], stats_size + rows_at[l] * m
                Zn = Bf[zo:zo + n * m].reshape((n, m))
                mu, var = Bf[so:so + n].reshape((n, 1)), Bf[so + n:so + 2 * n].reshape((n, 1))
                gemm(False, xt and l == 1, W, A_prev, Zn)
                _batch_stats(Zn, mu, var)
                normalize(Zn, mu, var, eps, theta[go:go + n].reshape((n, 1)), b, Z, A)
            else:
                gemm(False, xt and l == 1, W, A_prev, Z)
                if l < L:
                    forward_hidden(Z, b, A)
                else:
                    forward_output(Z, b, A)
            A_prev = A
            wo += n * m
        n = dims[L]
        wo -= n * m
        cost = output_pass(Zf[wo:wo + n * m].reshape((n, m)), Af[wo:wo + n * m].reshape((n, m)), Y,
                           dAf[wo:wo + n * m].reshape((n, m)), inv_m)
        if not np.isfinite(cost):
            return cost
        for l in range(L, 0, -1):
            n, k, po = dims[l], dims[l - 1], pofs[l - 1]
            dZ = dAf[wo:wo + n * m].reshape((n, m))
            db = dtheta[po + n * k:po + n * k + n].reshape((n, 1))
            Z, A = Zf[wo:wo + n * m].reshape((n, m)), Af[wo:wo + n * m].reshape((n, m))
            go = gamma_at[l]
            if go >= 0:
                so, zo = stats_at[l], stats_size + rows_at[l] * m
                Zn, var = Bf[zo:zo + n * m].reshape((n, m)), Bf[so + n:so + 2 * n].reshape((n, 1))
                gamma, dgamma = theta[go:go + n].reshape((n, 1)), dtheta[go:go + n].reshape((n, 1))
                delta_normalized(dZ, Z, A, Zn, dgamma, db)
                _batch_norm_backward(dZ, Zn, var, eps, gamma, dgamma, db)
            elif l < L:
                delta_hidden(dZ, Z, A, db)
            else:
                _row_sum(dZ, db)
            wp = wo - k * m
            A_prev = X if l == 1 else Af[wp:wo].reshape((k, m))
            gemm(False, not (xt and l == 1), dZ, A_prev, dtheta[po:po + n * k].reshape((n, k)))
            if l > 1:
                gemm(True, False, theta[po:po + n * k].reshape((n, k)), dZ, dAf[wp:wo].reshape((k, m)))
            wo = wp
        return cost

    return jitable(backprop, hidden, output, loss, dtype, blas_bits, plan)


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


@functools.lru_cache(maxsize=None)
def whole_step(hidden, output, loss, dtype, with_update, blas_bits, plan):
    """``_numba_kernels.whole_step`` for a batch-normalized network (``_bn_backprop``): step(X, xt, Y, theta,
    theta_out, dtheta, dims, pofs, Zf, Af, dAf, Bf, lr, inv_m) -> J, the batch's μ, σ² left in Bf for the
    engine's running-statistics update (after the optimizer's)."""
    backprop = _bn_backprop(hidden, output, loss, dtype, blas_bits, plan)

    def step(X, xt, Y, theta, theta_out, dtheta, dims, pofs, Zf, Af, dAf, Bf, lr, inv_m):
        cost = backprop(X, xt, Y, theta, dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m)
        if with_update and np.isfinite(cost):
            sgd_update(theta, dtheta, lr, theta_out)
        return cost

    return njit(K.variant(step, hidden, output, loss, dtype, with_update, blas_bits, plan))


@functools.lru_cache(maxsize=None)
def whole_epoch(hidden, output, loss, optimizer, dtype, blas_bits, plan):
    """``_numba_kernels.whole_epoch`` for a batch-normalized network: epoch(XT, YT, order, B, thetas, states1,
    states2, dtheta, dims, pofs, Zf, Af, dAf, Bf, XbT, Ybf, lr, counters, current) -> (J, diverged at batch, its
    cost); after each batch's update and commit, the running μ, σ² of the new slot (``_running_update``). A
    batch whose cost is not finite stops the epoch before its update: nothing of it is written."""
    backprop = _bn_backprop(hidden, output, loss, dtype, blas_bits, plan)
    update, running = K._update_and_commit(optimizer, dtype), _running_update(dtype, plan)
    ftype = np.dtype(dtype).type

    def epoch(XT, YT, order, B, thetas, states1, states2, dtheta, dims, pofs, Zf, Af, dAf, Bf, XbT, Ybf, lr,
              counters, current):
        m, n0, nL = XT.shape[0], XT.shape[1], YT.shape[1]
        total = 0.0
        for k, start in enumerate(range(0, m, B)):
            mb = min(B, m - start)
            Xb, Yb = XbT[:mb], Ybf[:nL * mb].reshape((nL, mb))
            for r in range(mb):
                src = order[start + r]
                for c in range(n0):
                    Xb[r, c] = XT[src, c]
                for i in range(nL):
                    Yb[i, r] = YT[src, i]
            c = current[0]
            cost = backprop(Xb, True, Yb, thetas[c], dtheta, dims, pofs, Zf, Af, dAf, Bf, ftype(1.0 / mb))
            if not np.isfinite(cost):
                return total, k, cost
            update(thetas, states1, states2, dtheta, lr, counters, current)
            running(thetas, c, Bf, dims)
            total += cost * mb / m
        return total, -1, 0.0

    return njit(K.variant(epoch, hidden, output, loss, optimizer, dtype, blas_bits, plan))


@functools.lru_cache(maxsize=None)
def whole_loop(hidden, output, loss, optimizer, dtype, blas_bits, plan):
    """``_numba_kernels.whole_loop`` for a batch-normalized network: loop(X, xt, Y, rates, thetas, states1,
    states2, dtheta, dims, pofs, Zf, Af, dAf, Bf, counters, current) -> (first J, steps taken, the diverging
    cost); after each step's update and commit, the running μ, σ² of the new slot (``_running_update``)."""
    backprop = _bn_backprop(hidden, output, loss, dtype, blas_bits, plan)
    update, running = K._update_and_commit(optimizer, dtype), _running_update(dtype, plan)
    ftype = np.dtype(dtype).type

    def loop(X, xt, Y, rates, thetas, states1, states2, dtheta, dims, pofs, Zf, Af, dAf, Bf, counters, current):
        inv_m = ftype(1.0 / (X.shape[0] if xt else X.shape[1]))
        first = 0.0
        for i in range(rates.shape[0]):
            c = current[0]
            cost = backprop(X, xt, Y, thetas[c], dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m)
            if i == 0:
                first = cost
            if not np.isfinite(cost):
                return first, i, cost
            update(thetas, states1, states2, dtheta, rates[i], counters, current)
            running(thetas, c, Bf, dims)
        return first, rates.shape[0], 0.0

    return njit(K.variant(loop, hidden, output, loss, optimizer, dtype, blas_bits, plan))
