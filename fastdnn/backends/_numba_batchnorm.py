"""Numba kernels for batch normalization: one pass per row for the batch's μ and σ², one fused pass for
normalize + scale/shift + activation, and two for the backward (dZ̃ with dβ, dγ; then dZ). Built per
(activation, dtype) like the other kernels (see _numba_kernels: names, caching, float64 sums)."""
import functools

import numpy as np

from ._numba_kernels import _scalar, njit, variant


@njit
def batch_stats(Z, mu, var):
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


@functools.lru_cache(maxsize=None)
def batch_norm_activation(activation, dtype):
    """kernel(Zn, mu, var, eps, gamma, beta, Z, A): Zn = (Zn − μ)/√(σ² + ε), Z = γ·Zn + β, A = g(Z)."""
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

    return njit(variant(kernel, activation, dtype))


@functools.lru_cache(maxsize=None)
def batch_norm_delta(activation, dtype):
    """kernel(dA, Z, A, Zn, dgamma, dbeta): dZ̃ = dA * g'(Z̃) over dA, dβ = Σ dZ̃, dγ = Σ dZ̃·Zn per row."""
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

    return njit(variant(kernel, activation, dtype))


@njit
def batch_norm_backward(dZt, Zn, var, eps, gamma, dgamma, dbeta):
    """dZ = γ/(m √(σ² + ε)) · (m dZ̃ − dβ − Zn·dγ) over dZ̃ (n, m)."""
    n, m = dZt.shape
    for i in range(n):
        c = gamma[i, 0] / (m * np.sqrt(var[i, 0] + eps))
        db, dgm = dbeta[i, 0], dgamma[i, 0]
        for j in range(m):
            dZt[i, j] = c * (m * dZt[i, j] - db - Zn[i, j] * dgm)
