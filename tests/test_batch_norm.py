"""Batch normalization (issue 12, item 2): the backend ops against a float64 oracle written here —
the forward from its definition, the backward by central differences of a scalar function of Z (not
the closed form the backends use) — on every backend (the GPU ones through the CuPy stand-in) × dtype."""
import numpy as np
import pytest

import oracle
from support import ACTIVATIONS, BACKENDS, DTYPES, assert_close, rounded

EPS = 1e-5
BN_BACKENDS = BACKENDS + ["cupy-stand-in", "cupy-fused-stand-in"]


@pytest.fixture
def backend(request):
    from fastdnn.backends import get_backend
    name = request.param
    if name.endswith("-stand-in"):
        request.getfixturevalue("fake_cupy")
        name = name.replace("-stand-in", "") + ":0"
    return get_backend(name, fallback=False)


def normalize_oracle(Z, gamma, beta, mu=None, var=None):
    """(Zn, Z̃) by the definition: Zn = (Z − μ)/√(σ² + ε) with the batch's μ, σ² unless given."""
    mu = Z.mean(axis=1, keepdims=True) if mu is None else mu
    var = ((Z - mu) ** 2).mean(axis=1, keepdims=True) if var is None else var
    Zn = (Z - mu) / np.sqrt(var + EPS)
    return Zn, gamma * Zn + beta


def data(dtype, n=4, m=9, seed=0):
    rng = np.random.default_rng(seed)
    Z = rounded(rng.standard_normal((n, m)) * 3 + rng.standard_normal((n, 1)), dtype)
    gamma = rounded(1 + 0.5 * rng.standard_normal((n, 1)), dtype)
    beta = rounded(0.5 * rng.standard_normal((n, 1)), dtype)
    dA = rounded(rng.standard_normal((n, m)), dtype)
    return Z, gamma, beta, dA


def forward(be, act, dtype, Z, gamma, beta, mu=None, var=None):
    from fastdnn.activations import get_activation
    n, m = Z.shape
    Zn, Zt, A = (be.asarray(Z.copy(), dtype=dtype), be.empty((n, m), dtype), be.empty((n, m), dtype))
    if mu is None:
        mu_d, var_d = be.empty((n, 1), dtype), be.empty((n, 1), dtype)
        be.batch_stats(Zn, mu_d, var_d)
    else:
        mu_d, var_d = be.asarray(mu, dtype=dtype), be.asarray(var, dtype=dtype)
    be.batch_norm_activation(get_activation(act), Zn, mu_d, var_d, EPS, be.asarray(gamma, dtype=dtype),
                             be.asarray(beta, dtype=dtype), Zt, A)
    return Zn, Zt, A, mu_d, var_d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("backend", BN_BACKENDS, indirect=True)
def test_batch_norm_forward_matches_the_definition(backend, act, dtype):
    Z, gamma, beta, _ = data(dtype)
    Zn, Zt, A, mu, var = forward(backend, act, dtype, Z, gamma, beta)
    Zn_o, Zt_o = normalize_oracle(Z, gamma, beta)
    assert_close(backend.to_numpy(mu), Z.mean(axis=1, keepdims=True), dtype)
    assert_close(backend.to_numpy(var), Z.var(axis=1, keepdims=True), dtype)
    assert_close(backend.to_numpy(Zn), Zn_o, dtype)
    assert_close(backend.to_numpy(Zt), Zt_o, dtype)
    assert_close(backend.to_numpy(A), oracle.g(act, Zt_o), dtype)
    assert backend.to_numpy(A).dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BN_BACKENDS, indirect=True)
def test_batch_norm_with_running_statistics_uses_them_not_the_batch(backend, dtype):
    Z, gamma, beta, _ = data(dtype)
    mu, var = rounded(np.full((4, 1), 0.3), dtype), rounded(np.full((4, 1), 2.0), dtype)
    _, Zt, _, _, _ = forward(backend, "linear", dtype, Z, gamma, beta, mu, var)
    assert_close(backend.to_numpy(Zt), normalize_oracle(Z, gamma, beta, mu, var)[1], dtype)


def numeric_dZ(act, Z, gamma, beta, dA, h=1e-6):
    """∂/∂Z of Σ dA ⊙ g(Z̃(Z)) by central differences (float64), μ and σ² depending on Z."""
    def f(Zp):
        return float((dA * oracle.g(act, normalize_oracle(Zp, gamma, beta)[1])).sum())
    grad = np.zeros_like(Z)
    for idx in np.ndindex(Z.shape):
        Zp, Zm = Z.copy(), Z.copy()
        Zp[idx] += h
        Zm[idx] -= h
        grad[idx] = (f(Zp) - f(Zm)) / (2 * h)
    return grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "leaky_relu", "linear"])
@pytest.mark.parametrize("backend", BN_BACKENDS, indirect=True)
def test_batch_norm_backward_matches_central_differences(backend, act, dtype):
    from fastdnn.activations import get_activation
    Z, gamma, beta, dA = data(dtype)
    Zn, Zt, A, mu, var = forward(backend, act, dtype, Z, gamma, beta)
    n = Z.shape[0]
    dAd, dgamma, dbeta = backend.asarray(dA.copy(), dtype=dtype), backend.empty((n, 1), dtype), backend.empty((n, 1), dtype)
    g = backend.asarray(gamma, dtype=dtype)
    backend.batch_norm_delta(get_activation(act), dAd, Zt, A, Zn, dgamma, dbeta)
    backend.batch_norm_backward(dAd, Zn, var, EPS, g, dgamma, dbeta)
    Zn_o, Zt_o = normalize_oracle(Z, gamma, beta)
    dZt_o = oracle.dg_times(act, dA, Zt_o)
    assert_close(backend.to_numpy(dbeta), dZt_o.sum(axis=1, keepdims=True), dtype)
    assert_close(backend.to_numpy(dgamma), (dZt_o * Zn_o).sum(axis=1, keepdims=True), dtype)
    tol = {"float64": 1e-7, "float32": 1e-4}[dtype]
    expected = numeric_dZ(act, Z, gamma, beta, dA)
    np.testing.assert_allclose(backend.to_numpy(dAd), expected, rtol=tol, atol=tol * np.abs(expected).max())
