"""CUDA kernels run by the CUDA simulator against the float64 oracle (NUMBA_ENABLE_CUDASIM=1 must be
set before numba is imported; tests/test_cuda_sim.py runs this file in its own process)."""
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run with NUMBA_ENABLE_CUDASIM=1 (tests/test_cuda_sim.py does)", allow_module_level=True)

from fastdnn.activations import get_activation  # noqa: E402
from fastdnn.backends import _cuda_kernels as C  # noqa: E402
from fastdnn.losses import get_loss  # noqa: E402
from fastdnn.optimizers import OPTIMIZERS  # noqa: E402

import oracle  # noqa: E402
from support import ACTIVATIONS, DTYPES, assert_close, rounded  # noqa: E402

SHAPES = [(1, 1), (1, 7), (5, 1), (9, 37)]           # none divides the block sizes
ids = ["n%dxm%d" % s for s in SHAPES]
LARGE = (33, 67)                                      # once per dtype: each simulated thread is a thread


def draw(shape, seed, dtype, scale=1.0):
    return rounded(np.random.RandomState(seed).randn(*shape) * scale, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,name", [(s, a) for s in SHAPES for a in ACTIVATIONS] + [(LARGE, "tanh")],
                         ids=[f"{a}-{i}" for i in ids for a in ACTIVATIONS] + ["tanh-n33xm67"])
def test_bias_activation_and_delta_row_sum(name, shape, dtype):
    n, m = shape
    act = get_activation(name)
    Z0, b, dA0 = draw(shape, 1, dtype, 3.0), draw((n, 1), 2, dtype), draw(shape, 3, dtype)
    Z, A = Z0.astype(dtype), np.empty(shape, dtype)
    C.bias_activation(act, dtype)[C.blocks_2d(n, m), C.THREADS_2D](Z, b.astype(dtype), A)
    assert_close(Z, Z0 + b, dtype)
    assert_close(A, oracle.g(name, Z0 + b), dtype)
    dA, db = dA0.astype(dtype), np.empty((n, 1), dtype)
    C.delta_row_sum(act, dtype)[n, C.THREADS_1D](dA, Z, A, db)
    dZ = oracle.dg_times(name, dA0, Z.astype(np.float64))
    assert_close(dA, dZ, dtype)
    assert_close(db, dZ.sum(axis=1, keepdims=True), dtype, scale=np.sqrt(m) * 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_sum_is_deterministic(dtype):
    act, (n, m) = get_activation("linear"), (3, 1000)
    results = []
    for _ in range(2):
        dA, db = draw((n, m), 4, dtype).astype(dtype), np.empty((n, 1), dtype)
        C.delta_row_sum(act, dtype)[n, C.THREADS_1D](dA, dA.copy(), dA.copy(), db)
        results.append(db.copy())
    assert results[0].tobytes() == results[1].tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 100), (3, 37)], ids=["n1xm1", "n1xm100", "n3xm37"])
@pytest.mark.parametrize("output,loss_name", [("sigmoid", "bce"), ("linear", "mse"), ("tanh", "mse"),
                                              ("softmax", "ce")])
def test_output_layer_and_cost(output, loss_name, shape, dtype):
    n, m = shape
    if output == "softmax" and n == 1:
        n, shape = 3, (3, m)
    act, rng = get_activation(output), np.random.RandomState(5)
    loss = get_loss(loss_name, act)
    Z0 = draw(shape, 6, dtype, 2.0)
    Y = {"bce": rng.randint(0, 2, shape), "mse": rng.randn(*shape),
         "ce": np.eye(n)[rng.randint(0, n, m)].T}[loss_name].astype(dtype)
    Z, A, b = Z0.astype(dtype), np.empty(shape, dtype), np.zeros((n, 1), dtype)
    if output == "softmax":
        C.bias_softmax(dtype)[C.blocks_1d(m), C.THREADS_1D](Z, b, A)
    else:
        C.bias_activation(act, dtype)[C.blocks_2d(n, m), C.THREADS_2D](Z, b, A)
    A64 = oracle.g(output, Z0)
    assert_close(A, A64, dtype)
    dZ, total = np.empty(shape, dtype), np.empty(1, dtype)
    inv_m = np.dtype(dtype).type(1.0 / m)
    if output == "softmax":
        partials = np.empty(m, dtype)
        C.output_softmax_ce(dtype)[C.blocks_1d(m), C.THREADS_1D](Z, A, Y, dZ, inv_m, partials)
    else:
        partials = np.empty(C.blocks_1d(n * m), dtype)
        C.output_elementwise(loss, act, dtype)[C.blocks_1d(n * m), C.THREADS_1D](Z, A, Y, dZ, inv_m, partials)
    C.sum_partials(dtype)[1, C.THREADS_1D](partials, total)
    Yf = Y.astype(np.float64)
    J = np.sum((A64 - Yf) ** 2) / (2 * m) if loss_name == "mse" else oracle.cost(loss_name, Z0, Yf)
    assert_close(total[0], J, dtype)
    assert_close(dZ, oracle.dg_times(output, oracle.dA_of_loss(loss_name, A64, Yf), Z0) / m, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_update(name, dtype):
    P, optimizer = 300, OPTIMIZERS[name]()
    theta0 = draw((P,), 7, dtype)
    grads = [draw((P,), 8 + t, dtype) for t in range(3)]
    theta, out = theta0.astype(dtype), np.empty(P, dtype)
    states, states_out = ([np.zeros(P, dtype) for _ in range(2)] for _ in range(2))
    f = np.dtype(dtype).type
    for t, g in enumerate(grads, start=1):
        c1, c2 = optimizer.corrections(t)
        C.optimizer_update(optimizer, dtype)[C.blocks_1d(P), C.THREADS_1D](
            theta, g.astype(dtype), states[0], states[1], f(0.01), f(c1), f(c2), out, *states_out)
        theta, out, states, states_out = out, theta, states_out, states
    assert_close(theta, oracle.optimizer_steps(name, theta0, grads, 0.01), dtype)
