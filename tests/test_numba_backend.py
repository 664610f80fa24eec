"""The numba backend: the same training as numpy, no allocation after the first step, kernels
cached on disk. (Every op is also checked against the oracle in test_ops.py.)"""
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from fastdnn import Network, datasets

from support import ACTIVATIONS, BACKENDS, OUTPUTS

pytestmark = pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")


@pytest.fixture(params=["whole-step", "per-op"])
def path(request, monkeypatch):
    """The compiled whole-step path (small networks) or the per-op path with BLAS GEMMs."""
    import fastdnn.backends.numba_backend as nb
    monkeypatch.setattr(nb, "WHOLE_STEP_MAX_WORK", 10**12 if request.param == "whole-step" else 0)
    return request.param


def data(output, loss, n_out, m=37):
    rng = np.random.RandomState(3)
    X = rng.randn(4, m)
    Y = {"bce": rng.randint(0, 2, (1, m)), "ce": rng.randint(0, n_out, m),
         "mse": rng.randn(n_out, m)}[loss]
    return X, Y


@pytest.mark.parametrize("output,loss", OUTPUTS, ids=["-".join(o) for o in OUTPUTS])
@pytest.mark.parametrize("hidden", ACTIVATIONS)
def test_100_steps_match_numpy_in_float64(path, hidden, output, loss):
    n_out = 3 if output == "softmax" else 2 if loss == "mse" else 1
    dims = [4, 6, 5, n_out]
    X, Y = data(output, loss, n_out)
    nets = [Network(dims, hidden, output, device=d, dtype="float64", seed=2) for d in ("numpy", "numba")]
    histories = [net.fit(X, Y, learning_rate=0.05, iterations=100, report_every=10) for net in nets]
    assert (nets[1]._workspaces[X.shape[1]].fused is not None) == (path == "whole-step")
    np.testing.assert_allclose(histories[1].costs, histories[0].costs, rtol=1e-10)
    for key, value in nets[0].parameters.items():
        np.testing.assert_allclose(nets[1].parameters[key], value, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dims,m,hidden,output", [
    ([2, 4, 1], 400, "relu", "sigmoid"),
    ([30, 64, 32, 10], 300, "relu", "softmax"),
    ([30, 64, 32, 1], 300, "tanh", "sigmoid"),
    ([30, 64, 32, 2], 300, "leaky_relu", "linear"),
], ids=["small-whole-step", "relu-softmax", "tanh-sigmoid", "leaky-linear"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_step_allocates_nothing_after_the_first(dims, m, hidden, output, dtype):
    rng = np.random.RandomState(0)
    X = rng.randn(dims[0], m)
    Y = rng.randint(0, dims[-1], m) if output == "softmax" else rng.randint(0, 2, (dims[-1], m))
    net = Network(dims, hidden, output, device="numba", dtype=dtype, seed=0)
    Xd, Yd = net._prepare(X, Y)
    net._train_step(Xd, Yd, 0.01, 0, check=True)            # first step: workspace, JIT
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(1, 20):
            net._train_step(Xd, Yd, 0.01, i, check=True)
        after = tracemalloc.take_snapshot()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    hidden_array = min(dims[1:-1]) * m * np.dtype(dtype).itemsize
    assert grown < 64 * 1024
    assert peak < min(64 * 1024, hidden_array)    # not even a temporary hidden-layer array


def test_numpy_backend_step_does_allocate():
    """The allocation test above can fail: the allocating reference backend shows up in it."""
    X, Y = datasets.moons(m=300)
    net = Network([2, 64, 1], "sigmoid", device="numpy", dtype="float64", seed=0)
    Xd, Yd = net._prepare(X, Y)
    net._train_step(Xd, Yd, 0.01, 0, check=True)
    tracemalloc.start()
    net._train_step(Xd, Yd, 0.01, 1, check=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak > 64 * 300 * 8


def test_kernels_are_cached_on_disk(tmp_path):
    code = ("import numpy as np, fastdnn\n"
            "from fastdnn.backends import _numba_kernels as K\n"
            "net = fastdnn.Network([3, 5, 2], 'relu', 'softmax', device='numba', seed=0)\n"
            "X = np.random.RandomState(0).randn(3, 20); Y = np.arange(20) % 2\n"
            "net.step(X, Y, 0.1)\n"
            "from fastdnn.activations import get_activation as g\n"
            "from fastdnn.losses import get_loss\n"
            "d = K.whole_step(g('relu'), g('softmax'), get_loss('ce', g('softmax')), np.dtype('float32'), True)\n"
            "print(sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values()))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert runs[0] == ["0", "1"] and runs[1] == ["1", "0"]


def test_every_kernel_variant_has_its_own_compiled_name():
    """Numba names compiled symbols after the qualified name and a per-process counter; same-named
    closures with different bodies cached by different processes then clash when one process loads
    both (numba issue #10486). Each factory-made kernel is named after its variant instead, the
    same in every process."""
    from fastdnn.activations import LeakyReLU, get_activation
    from fastdnn.backends import _numba_kernels as K
    from fastdnn.losses import get_loss
    from fastdnn.optimizers import get_optimizer
    f64, relu, lin = np.dtype("float64"), get_activation("relu"), get_activation("linear")
    sig = get_activation("sigmoid")
    bce = get_loss("bce", sig)
    names = [K._bias_activation(relu, f64).__qualname__, K._bias_activation(lin, f64).__qualname__,
             K._bias_activation(LeakyReLU(slope=0.2), f64).__qualname__,
             K._bias_activation(LeakyReLU(slope=0.3), f64).__qualname__,
             K._delta_row_sum(relu, f64).__qualname__, K._delta_row_sum(lin, f64).__qualname__,
             K.optimizer_update(get_optimizer("adam"), f64).py_func.__qualname__,
             K.optimizer_update(get_optimizer("momentum"), f64).py_func.__qualname__,
             K.whole_step(relu, sig, bce, f64, True).py_func.__qualname__,
             K.whole_step(relu, sig, bce, f64, False).py_func.__qualname__,
             K.whole_step(lin, sig, bce, f64, True).py_func.__qualname__]
    assert len(set(names)) == len(names)
    code = ("import numpy as np; from fastdnn.backends import _numba_kernels as K; "
            "from fastdnn.activations import get_activation as g; "
            "print(K._bias_activation(g('relu'), np.dtype('float64')).__qualname__)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == names[0]
