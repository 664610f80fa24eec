"""The compiled loop's output pass without the cost (``_numba_kernels._output_delta``): on the steps it does
not report, the loop computes dZ and G = Σ |z| + |a| + |y| only, and the cost only when G does not prove it
finite (G > cost_safe(dtype), NaN or ∞). Checked here against a float64 oracle: dZ, G, and the bound."""
import numpy as np
import pytest

pytest.importorskip("numba")
import numba  # noqa: E402

from fastdnn.activations import get_activation  # noqa: E402
from fastdnn.backends import _numba_kernels as K  # noqa: E402
from fastdnn.losses import get_loss  # noqa: E402

PAIRS = [("bce", "sigmoid"), ("ce", "softmax"), ("mse", "linear"), ("mse", "tanh"), ("mse", "sigmoid")]


def oracle(loss, activation, Z, Y):
    """A, dZ and the cost J in float64, written from the formulas: dZ = (A - Y)/m for the canonical pairs,
    (A - Y) g'(Z)/m for MSE with another output."""
    Z, Y, m = Z.astype(np.float64), Y.astype(np.float64), Z.shape[1]
    if activation == "softmax":
        E = np.exp(Z - Z.max(axis=0))
        A = E / E.sum(axis=0)
        J = -(Y * (Z - Z.max(axis=0) - np.log(E.sum(axis=0)))).sum() / m
    else:
        A = {"sigmoid": 1 / (1 + np.exp(-Z)), "tanh": np.tanh(Z), "linear": Z}[activation]
        if loss == "bce":
            J = (np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))).sum() / m
        else:
            J = 0.5 * ((A - Y) ** 2).sum() / m
    slope = {"sigmoid": A * (1 - A), "tanh": 1 - A * A}.get(activation, 1.0) if loss == "mse" else 1.0
    return A, (A - Y) * slope / m, J


def kernels(loss, activation, dtype):
    act = get_activation(activation)
    lo = get_loss(loss, act)
    delta = K._output_delta(lo, act, np.dtype(dtype))
    full = K._output_softmax_ce(np.dtype(dtype)) if loss == "ce" else K._output_elementwise(lo, act, np.dtype(dtype))
    return numba.njit(lambda *a: delta(*a)), numba.njit(lambda *a: full(*a))


def problem(loss, dtype, n=3, m=37, scale=3.0):
    r = np.random.default_rng(1)
    Z = (scale * r.standard_normal((n, m))).astype(dtype)
    if loss == "ce":
        Y = np.eye(n, dtype=dtype)[:, r.integers(0, n, m)]
    elif loss == "bce":
        Y = r.integers(0, 2, (n, m)).astype(dtype)
    else:
        Y = r.standard_normal((n, m)).astype(dtype)
    return Z, Y


@pytest.mark.parametrize("loss, activation", PAIRS)
def test_delta_and_guard_match_the_oracle(loss, activation, dtype):
    Z, Y = problem(loss, dtype)
    A_ref, dZ_ref, J_ref = oracle(loss, activation, Z, Y)
    A = A_ref.astype(dtype)
    delta, full = kernels(loss, activation, dtype)
    dZ, dZ_full = np.full_like(Z, np.nan), np.full_like(Z, np.nan)
    G = delta(Z, A, Y, dZ, np.dtype(dtype).type(1 / Z.shape[1]))
    J = full(Z, A, Y, dZ_full, np.dtype(dtype).type(1 / Z.shape[1]))
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == "float32" else dict(rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dZ, dZ_ref, **tol)
    np.testing.assert_array_equal(dZ, dZ_full)              # the same dZ as the pass with the cost
    np.testing.assert_allclose(G, np.abs(Z).sum(dtype=np.float64) + np.abs(A_ref).sum() + np.abs(Y).sum(
        dtype=np.float64), rtol=1e-5 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(J, J_ref, **tol)


@pytest.mark.parametrize("loss, activation", PAIRS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_fails_the_guard(loss, activation, dtype, bad):
    Z, Y = problem(loss, dtype)
    A = oracle(loss, activation, Z, Y)[0].astype(dtype)
    Z[1, 5] = bad
    delta, _ = kernels(loss, activation, dtype)
    G = delta(Z, A, Y, np.empty_like(Z), np.dtype(dtype).type(1 / Z.shape[1]))
    assert not G <= K.cost_safe(dtype)


@pytest.mark.parametrize("loss, activation", PAIRS)
def test_every_output_the_guard_passes_has_a_finite_cost(loss, activation, dtype):
    """The bound's worst cases: all of G in one entry (z and y of opposite signs, or z alone), spread over
    many entries, or over one example's classes (softmax); each at G = cost_safe: J must be finite."""
    safe = float(K.cost_safe(dtype))
    delta, full = kernels(loss, activation, dtype)
    n, m = (3, 64) if loss == "ce" else (1, 64)
    cases = []
    for share in (1.0, 0.5, 1 / 3):          # of G in z (A is at most |z| or 1 here), the rest in y
        Z, Y = np.zeros((n, m)), np.zeros((n, m))
        Z[0, 0], Y[0, 0] = share * safe / 2, -(1 - share) * safe / 2
        cases.append((Z, Y))
    spread_Z = np.full((n, m), safe / (4 * n * m))
    cases.append((spread_Z, -spread_Z))
    if loss == "ce":                          # one-hot labels; the logit gap drives the cost
        Z, Y = np.zeros((n, m)), np.zeros((n, m))
        Z[0, :], Y[1, :] = safe / (2 * m) - 1, 1
        cases = [(Z, Y)]
    for Z, Y in cases:
        Z, Y = Z.astype(dtype), Y.astype(dtype)
        with np.errstate(all="ignore"):
            A = oracle(loss, activation, Z, Y)[0].astype(dtype)
        inv_m = np.dtype(dtype).type(1 / m)
        G = delta(Z, A, Y, np.empty_like(Z), inv_m)
        assert G <= safe * 1.0001, "the case sits at the bound"
        assert np.isfinite(full(Z, A, Y, np.empty_like(Z), inv_m))
