"""Every backend op against the float64 oracle: backend x dtype x case."""
import numpy as np
import pytest

from fastdnn.activations import get_activation
from fastdnn.losses import get_loss
from fastdnn.optimizers import GradientDescent

import oracle
from support import ACTIVATIONS, BACKENDS, DTYPES, OUTPUTS, assert_close, rounded

SHAPES = [(1, 1), (5, 1), (1, 7), (4, 3), (33, 67)]
GEMM_SHAPES = [(1, 1, 1), (3, 5, 1), (1, 7, 4), (33, 17, 67)]
ids = lambda shapes: ["n%dxm%d" % s if len(s) == 2 else "n%dxk%dxm%d" % s for s in shapes]


def draw(shape, seed, scale=1.0):
    return np.random.RandomState(seed).randn(*shape) * scale


def on(backend, x, dtype):
    return backend.asarray(np.asarray(x).astype(dtype))


@pytest.fixture(params=BACKENDS)
def be(request):
    import fastdnn
    return fastdnn.get_backend(request.param)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
@pytest.mark.parametrize("nkm", GEMM_SHAPES, ids=ids(GEMM_SHAPES))
def test_gemm_matches_reference(be, dtype, trans, nkm):
    n, k, m = nkm
    ta, tb = trans
    A = rounded(draw((k, n) if ta else (n, k), 1), dtype)
    B = rounded(draw((m, k) if tb else (k, m), 2), dtype)
    expected = (A.T if ta else A) @ (B.T if tb else B)
    out = be.empty((n, m), dtype)
    result = be.gemm(on(be, A, dtype), on(be, B, dtype), out=out, trans_a=ta, trans_b=tb)
    assert result.dtype == np.dtype(dtype)
    assert_close(be.to_numpy(out), expected, dtype, scale=np.sqrt(k) * 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=ids(SHAPES))
def test_add_bias_and_row_sum_match_reference(be, dtype, shape):
    n, m = shape
    Z, b = rounded(draw(shape, 3), dtype), rounded(draw((n, 1), 4), dtype)
    out = be.empty(shape, dtype)
    be.add_bias(on(be, Z, dtype), on(be, b, dtype), out=out)
    assert_close(be.to_numpy(out), Z + b, dtype)
    db = be.empty((n, 1), dtype)
    be.row_sum(on(be, Z, dtype), out=db)
    assert db.dtype == np.dtype(dtype)
    assert_close(be.to_numpy(db), Z.sum(axis=1, keepdims=True), dtype, scale=np.sqrt(m) * 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=ids(SHAPES))
@pytest.mark.parametrize("name", ACTIVATIONS + ["softmax"])
def test_activation_forward_backward_match_reference(be, dtype, shape, name):
    act = get_activation(name)
    Z, dA = rounded(draw(shape, 5, 3.0), dtype), rounded(draw(shape, 6), dtype)
    A = be.empty(shape, dtype)
    be.activation_forward(act, on(be, Z, dtype), out=A)
    assert A.dtype == np.dtype(dtype)
    assert_close(be.to_numpy(A), oracle.g(name, Z), dtype)
    dZ = be.empty(shape, dtype)
    be.activation_backward(act, on(be, dA, dtype), on(be, Z, dtype), A, out=dZ)
    assert dZ.dtype == np.dtype(dtype)
    assert_close(be.to_numpy(dZ), oracle.dg_times(name, dA, Z), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[1:], ids=ids(SHAPES[1:]))
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_linear_activation_forward_backward_match_reference(be, dtype, shape, name):
    n, m = shape
    n_prev = 6
    act = get_activation(name)
    A_prev, W = rounded(draw((n_prev, m), 7), dtype), rounded(draw((n, n_prev), 8), dtype)
    b, dA = rounded(draw((n, 1), 9), dtype), rounded(draw((n, m), 10), dtype)
    Z = W @ A_prev + b
    Zd, Ad = be.empty((n, m), dtype), be.empty((n, m), dtype)
    be.linear_activation_forward(act, on(be, A_prev, dtype), on(be, W, dtype), on(be, b, dtype), Zd, Ad)
    assert_close(be.to_numpy(Zd), Z, dtype, scale=10)
    assert_close(be.to_numpy(Ad), oracle.g(name, Z), dtype, scale=10)
    dZ = oracle.dg_times(name, dA, be.to_numpy(Zd).astype(np.float64))
    dW, db = be.empty((n, n_prev), dtype), be.empty((n, 1), dtype)
    dA_prev = be.empty((n_prev, m), dtype)
    be.linear_activation_backward(act, on(be, dA, dtype), Zd, Ad, on(be, A_prev, dtype),
                                  on(be, W, dtype), dW, db, dA_prev)
    assert_close(be.to_numpy(dW), dZ @ A_prev.T, dtype, scale=10 * np.sqrt(m))
    assert_close(be.to_numpy(db), dZ.sum(axis=1, keepdims=True), dtype, scale=10 * np.sqrt(m))
    assert_close(be.to_numpy(dA_prev), W.T @ dZ, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (3, 1), (4, 37)], ids=ids([(1, 1), (1, 9), (3, 1), (4, 37)]))
@pytest.mark.parametrize("output,loss_name", OUTPUTS, ids=["-".join(o) for o in OUTPUTS])
def test_output_layer_matches_reference(be, dtype, shape, output, loss_name):
    n, m = shape
    act = get_activation(output)
    loss = get_loss(loss_name, act)
    Z = rounded(draw(shape, 11, 2.0), dtype)
    rng = np.random.RandomState(12)
    if loss_name == "bce":
        Y = rng.randint(0, 2, shape).astype(float)
    elif loss_name == "ce":
        Y = np.eye(n)[rng.randint(0, n, m)].T
    else:
        Y = rounded(rng.randn(*shape), dtype)
    A = oracle.g(output, Z)
    Ad, dZ = be.empty(shape, dtype), be.empty(shape, dtype)
    be.activation_forward(act, on(be, Z, dtype), out=Ad)
    cost = be.output_layer(loss, act, on(be, Z, dtype), Ad, on(be, Y, dtype), dZ)
    expected = np.sum((A - Y) ** 2) / (2 * m) if loss_name == "mse" else oracle.cost(loss_name, Z, Y)
    assert_close(be.scalar(cost), expected, dtype)
    expected_dZ = oracle.dg_times(output, oracle.dA_of_loss(loss_name, A, Y), Z) / m
    assert_close(be.to_numpy(dZ), expected_dZ, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P", [1, 7, 1000])
def test_update_matches_reference(be, dtype, P):
    theta, dtheta = rounded(draw((P,), 13), dtype), rounded(draw((P,), 14), dtype)
    out = be.empty((P,), dtype)
    be.update(GradientDescent(), on(be, theta, dtype), on(be, dtheta, dtype), [], 0.05, 1, out, [])
    assert out.dtype == np.dtype(dtype)
    assert_close(be.to_numpy(out), theta - 0.05 * dtheta, dtype)
