"""One group per op and layer size; rows: backend x {vectorized, loop over examples}.

Ops: forward (GEMM + bias + activation), backward (dZ = dA g'(Z), db, dW, dA_prev) and the
parameter update, on the largest layer of each benchmark configuration.
"""
import numpy as np
import pytest

from fastdnn import get_backend
from fastdnn.activations import get_activation
from fastdnn.backends import available_backends
from fastdnn.optimizers import GradientDescent

BACKENDS = [b.name for b in available_backends() if b.available]
# (n_l, n_{l-1}, m): the largest layer of each configuration in fastdnn.bench.CONFIGS
SIZES = [(4, 2, 400), (20, 12288, 209), (256, 784, 256), (256, 784, 2048), (1024, 1024, 512)]
SMOKE = SIZES[0], SIZES[2]          # tiny and mnist-256: untimed runs (CI) take these only
RELU = get_activation("relu")


def arrays(backend, size, dtype):
    n, k, m = size
    rng = np.random.RandomState(0)
    put = lambda *shape: backend.asarray(rng.randn(*shape).astype(dtype))
    return dict(A_prev=put(k, m), W=put(n, k), b=put(n, 1), Z=put(n, m), A=put(n, m), dA=put(n, m),
                dW=put(n, k), db=put(n, 1), dA_prev=put(k, m))


def loop_forward(a, m):
    """for i in range(m): z = W a_i + b; a = relu(z), one example at a time (NumPy vectors)."""
    W, b, A_prev = a["W"], a["b"], a["A_prev"]
    for i in range(m):
        np.maximum(W @ A_prev[:, i:i + 1] + b, 0)


def loop_backward(a, m):
    """for i in range(m): dz = da_i * (z_i > 0); dW += dz a_prevᵀ; db += dz; da_prev = Wᵀ dz."""
    W, Z, dA, A_prev, dW, db = a["W"], a["Z"], a["dA"], a["A_prev"], a["dW"], a["db"]
    dW[...] = 0
    db[...] = 0
    for i in range(m):
        dz = dA[:, i:i + 1] * (Z[:, i:i + 1] > 0)
        dW += dz @ A_prev[:, i:i + 1].T
        db += dz
        W.T @ dz


def vectorized(op, be, a):
    if op == "forward":
        return lambda: be.linear_activation_forward(RELU, a["A_prev"], a["W"], a["b"], a["Z"], a["A"])
    if op == "backward":
        return lambda: be.linear_activation_backward(RELU, a["dA"], a["Z"], a["A"], a["A_prev"], a["W"],
                                                     a["dW"], a["db"], a["dA_prev"])
    sgd = GradientDescent()
    return lambda: be.update(sgd, a["W"].reshape(-1), a["dW"].reshape(-1), [], 1e-3, 1,
                             out=a["W"].reshape(-1), states_out=[])


@pytest.mark.parametrize("impl", [*BACKENDS, "loop"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["forward", "backward", "update"])
@pytest.mark.parametrize("size", [pytest.param(s, id="n%dxk%dxm%d" % s, marks=() if s in SMOKE else pytest.mark.large)
                                  for s in SIZES])
def test_op(benchmark, size, op, dtype, impl):
    be = get_backend("numpy" if impl == "loop" else impl)
    a = arrays(be, size, dtype)
    if impl == "loop":
        if op == "update":
            pytest.skip("the update is one array expression in every implementation")
        k = max(1, min(size[2], 20_000_000 // (size[0] * size[1])))   # cap: extrapolate from k examples
        fn = (lambda: loop_forward(a, k)) if op == "forward" else (lambda: loop_backward(a, k))
        benchmark.extra_info["extrapolation_factor"] = size[2] / k
    else:
        fn = vectorized(op, be, a)
    fn()
    benchmark.group = f"{op} n={size[0]} k={size[1]} m={size[2]} {dtype}"
    benchmark.extra_info["backend"] = be.name
    benchmark(fn)
