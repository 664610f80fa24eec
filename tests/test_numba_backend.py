"""The numba backend: the same training as numpy, no allocation after the first step, kernels
cached on disk. (Every op is also checked against the oracle in test_ops.py.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastdnn import Network, datasets

from support import ACTIVATIONS, BACKENDS, OUTPUTS, allocations, epoch_growth

pytestmark = pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")


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
    assert (nets[1].engine.workspace(X.shape[1]).fused is not None) == (path != "per-op")
    np.testing.assert_allclose(histories[1].costs, histories[0].costs, rtol=1e-10)
    for key, value in nets[0].parameters.items():
        np.testing.assert_allclose(nets[1].parameters[key], value, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dims,m,hidden,output,blas,fused", [
    ([2, 4, 1], 400, "relu", "sigmoid", True, True),
    ([2, 4, 1], 400, "relu", "sigmoid", False, True),
    ([30, 64, 32, 10], 300, "relu", "softmax", True, True),
    ([30, 64, 32, 1], 300, "tanh", "sigmoid", True, True),
    ([30, 64, 32, 1], 300, "tanh", "sigmoid", False, False),
    ([30, 64, 32, 2], 300, "leaky_relu", "linear", True, True),
    ([30, 64, 32, 2], 300, "leaky_relu", "linear", False, False),
], ids=["small-blas-step", "small-loops-step", "relu-softmax-blas-step", "tanh-sigmoid-blas-step",
        "tanh-sigmoid-per-op", "leaky-linear-blas-step", "leaky-linear-per-op"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_step_allocates_nothing_after_the_first(dims, m, hidden, output, blas, fused, dtype,
                                                         monkeypatch):
    import fastdnn.backends.numba_backend as nb
    monkeypatch.setattr(nb, "BLAS_WHOLE_STEP", blas)
    rng = np.random.RandomState(0)
    X = rng.randn(dims[0], m)
    Y = rng.randint(0, dims[-1], m) if output == "softmax" else rng.randint(0, 2, (dims[-1], m))
    net = Network(dims, hidden, output, device="numba", dtype=dtype, seed=0)
    Xd, Yd = net.prepare(X, Y)
    net.engine.train_step(Xd, Yd, 0.01, check=True)            # first step: workspace, JIT
    assert (net.engine.workspace(m).fused is not None) == fused
    grown, peak = allocations(lambda: [net.engine.train_step(Xd, Yd, 0.01, check=True) for _ in range(19)])
    hidden_array = min(dims[1:-1]) * m * np.dtype(dtype).itemsize
    assert grown < 64 * 1024
    assert peak < min(64 * 1024, hidden_array)    # not even a temporary hidden-layer array


def test_numpy_backend_step_does_allocate():
    """The allocation test above can fail: the allocating reference backend shows up in it."""
    X, Y = datasets.moons(m=300)
    net = Network([2, 64, 1], "sigmoid", device="numpy", dtype="float64", seed=0)
    Xd, Yd = net.prepare(X, Y)
    net.engine.train_step(Xd, Yd, 0.01, check=True)
    peak = allocations(lambda: net.engine.train_step(Xd, Yd, 0.01, check=True))[1]
    assert peak > 64 * 300 * 8


def test_kernels_are_cached_on_disk(tmp_path):
    """Both whole steps — GEMMs through BLAS and as loops — are compiled by the first process and
    loaded from the disk cache by the second."""
    code = ("import numpy as np, fastdnn\n"
            "from fastdnn.backends import _numba_kernels as K, _blas, numba_backend\n"
            "from fastdnn.activations import get_activation as g\n"
            "from fastdnn.losses import get_loss\n"
            "ce = get_loss('ce', g('softmax'))\n"
            "for dims, m, bits in [([3, 5, 2], 20, None), ([30, 64, 32, 10], 300, _blas.int_bits())]:\n"
            "    numba_backend.BLAS_WHOLE_STEP = bits is not None\n"
            "    net = fastdnn.Network(dims, 'relu', 'softmax', device='numba', seed=0)\n"
            "    X = np.random.RandomState(0).randn(dims[0], m); Y = np.arange(m) % 2\n"
            "    net.step(X, Y, 0.1)\n"
            "    d = K.whole_step(g('relu'), g('softmax'), ce, np.dtype('float32'), True, bits)\n"
            "    print(sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values()))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert runs[0] == ["0", "1"] * 2 and runs[1] == ["1", "0"] * 2


def test_numpys_openblas_is_found_for_the_blas_whole_step():
    from threadpoolctl import threadpool_info
    from fastdnn.backends import _blas
    if not any(i.get("internal_api") == "openblas" for i in threadpool_info()):
        pytest.skip("NumPy here does not use OpenBLAS")
    assert _blas.int_bits() in (32, 64)


@pytest.mark.parametrize("libraries", [
    [{"internal_api": "mkl", "filepath": "/opt/lib/libmkl_rt.so"}],
    [{"internal_api": "openblas", "filepath": "/nonexistent/libopenblas.so"}],
    [{"internal_api": "openblas", "filepath": np.__file__}],        # a file that is no library
], ids=["not-openblas", "missing", "not-a-library"])
def test_no_usable_blas_is_none_not_an_error(libraries, monkeypatch):
    import threadpoolctl
    from fastdnn.backends import _blas
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: libraries)
    _blas.int_bits.cache_clear()
    try:
        assert _blas.int_bits() is None
    finally:
        _blas.int_bits.cache_clear()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True)], ids=["NN", "TN", "NT"])
@pytest.mark.parametrize("nkm", [(1, 1, 1), (3, 5, 1), (1, 7, 4), (33, 17, 67)], ids=str)
def test_compiled_code_calls_blas_gemm_like_the_oracle(dtype, trans, nkm):
    """C = op(A) · op(B) as the BLAS whole step calls it, on views whose rows are wider than their
    row length (column slices), against the float64 product; C's parent outside the view is untouched."""
    import numba
    from fastdnn.backends import _blas
    from fastdnn.backends import _numba_kernels as K
    from support import assert_close, rounded
    bits = _blas.int_bits()
    if bits is None:
        pytest.skip("no BLAS callable from compiled code here")
    gemm = K.blas_gemm(np.dtype(dtype), bits)
    call = numba.njit(lambda ta, tb, A, B, C: gemm(ta, tb, A, B, C))
    (n, k, m), (ta, tb) = nkm, trans
    rng = np.random.RandomState(5)
    A = rng.randn(*((k, n + 2) if ta else (n, k + 2))).astype(dtype)
    B = rng.randn(*((m, k + 3) if tb else (k, m + 3))).astype(dtype)
    A, B = A[:, :n] if ta else A[:, :k], B[:, :k] if tb else B[:, :m]
    parent = np.full((n, m + 4), np.nan, dtype)
    call(ta, tb, A, B, parent[:, :m])
    A64, B64 = rounded(A, dtype), rounded(B, dtype)
    expected = (A64.T if ta else A64) @ (B64.T if tb else B64)
    assert_close(parent[:, :m], expected, dtype, scale=np.sqrt(k) * 3)
    assert np.isnan(parent[:, m:]).all()


def test_large_steps_run_whole_through_blas_unless_blas_is_missing(monkeypatch):
    """[30, 64, 32, 10] at m = 300 (3.9M multiply-adds) runs as one compiled call with BLAS GEMMs, with
    tanh hidden layers too (their fast forms vectorize); op by op when no BLAS can be called from
    compiled code. All three train like the numpy backend."""
    from fastdnn.backends import _blas
    rng = np.random.RandomState(0)
    X, Y = rng.randn(30, 300), rng.randint(0, 10, 300)
    for hidden, no_blas, fused in [("relu", False, True), ("tanh", False, True), ("relu", True, False)]:
        if no_blas:
            monkeypatch.setattr(_blas, "int_bits", lambda: None)
        nets = [Network([30, 64, 32, 10], hidden, "softmax", device=d, dtype="float64", seed=1)
                for d in ("numpy", "numba")]
        costs = [net.fit(X, Y, learning_rate=0.1, iterations=20, report_every=5).costs for net in nets]
        assert (nets[1].engine.workspace(300).fused is not None) == fused
        np.testing.assert_allclose(costs[1], costs[0], rtol=1e-10)
        for key, value in nets[0].parameters.items():
            np.testing.assert_allclose(nets[1].parameters[key], value, rtol=1e-10, atol=1e-14)


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
             K.whole_step(lin, sig, bce, f64, True).py_func.__qualname__,
             K.whole_step(relu, sig, bce, f64, True, 64).py_func.__qualname__]
    assert len(set(names)) == len(names)
    code = ("import numpy as np; from fastdnn.backends import _numba_kernels as K; "
            "from fastdnn.activations import get_activation as g; "
            "print(K._bias_activation(g('relu'), np.dtype('float64')).__qualname__)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == names[0]


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_a_compiled_epoch_allocates_nothing_after_its_first_step(optimizer):
    """A whole shuffled epoch (64 steps) as one compiled call: the permutation is drawn before its first
    step; nothing else is allocated while it runs (tracemalloc over the whole epoch)."""
    rng = np.random.RandomState(0)
    X, Y = rng.rand(64, 4096), rng.randint(0, 10, 4096)
    net = Network([64, 32, 16, 10], "relu", "softmax", device="numba", dtype="float32", seed=0)
    fit = dict(epochs=1, batch_size=64, optimizer=optimizer, learning_rate=1e-3, verbose=0)
    net.fit(X, Y, **fit)                                       # JIT, workspace, buffers
    assert net.engine._compiled("epoch", 64) is not None
    assert epoch_growth(net, X, Y) < 64 * 1024
    assert net.iteration == 3 * 64 and net.epoch == 3


def test_whole_epochs_and_loops_are_compiled_calls_where_the_step_is(path):
    """The paths the equivalence tests run: whole-step and blas-step networks train epochs and runs of
    full-batch steps as compiled calls, per-op ones step from Python."""
    net = Network([2, 5, 4, 1], "tanh", device="numba", dtype="float64", seed=3)
    compiled = path != "per-op"
    assert (net.engine._compiled("epoch", 32) is not None) == compiled
    assert (net.engine._compiled("loop", 90) is not None) == compiled
    net.regularize(l2=0.1)                            # L2 adds Python between the ops
    assert net.engine._compiled("epoch", 32) is None


@pytest.mark.parametrize("shape", [(1, 1), (3, 70), (33, 31), (64, 96), (100, 1), (33, 1000),
                                   (1, 1024), (13, 1024), (131, 2048), (7, 3072)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_tiled_transpose_is_the_transpose(shape, dtype, monkeypatch):
    """The example-major copy of mini-batch training: tiles of 32, or of 8 in blocks of 128 where a row is a
    multiple of 4096 bytes (the last four shapes), edges included; blocks of 128 columns on up to 4 threads."""
    from fastdnn.backends import _numba_kernels, get_backend, numba_backend
    monkeypatch.setattr(numba_backend, "TRANSPOSE_MIN_SIZE", 1)
    monkeypatch.setattr(numba_backend, "_cores", lambda: 4)
    used = []
    for name in ("transpose_into", "transpose_into_8"):
        kernel = getattr(_numba_kernels, name)
        monkeypatch.setattr(_numba_kernels, name, lambda A, out, a, b, _k=kernel, _n=name: used.append((_n, a, b))
                            or _k(A, out, a, b))
    A = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    out = get_backend("numba").transposed(A)
    assert out.flags.c_contiguous and out.dtype == dtype
    np.testing.assert_array_equal(out, A.T)
    name = "transpose_into_8" if shape[1] * A.itemsize % 4096 == 0 else "transpose_into"
    parts = max(1, min(4, A.size, shape[1] // 128))
    assert sorted(used, key=lambda u: u[1]) == [(name, a, b) for a, b in zip(
        [shape[1] * k // parts // 128 * 128 for k in range(parts)], [shape[1] * k // parts // 128 * 128
                                                                      for k in range(1, parts)] + [shape[1]])]


@pytest.mark.parametrize("shape, start, stop", [((13, 21), 0, 21), ((13, 21), 5, 19), ((8, 8), 0, 8),
                                                ((3, 5), 1, 5), ((136, 260), 0, 260), ((136, 260), 128, 259)])
def test_the_8_by_8_transpose_handles_any_edges(shape, start, stop):
    """Its row and column remainders (which ``transposed`` never gives it whole: its rows are multiples of 4096
    bytes), and only the rows start:stop of out are written."""
    from fastdnn.backends import _numba_kernels
    A = np.random.default_rng(1).standard_normal(shape)
    out = np.full(shape[::-1], np.nan)
    _numba_kernels.transpose_into_8(A, out, start, stop)
    np.testing.assert_array_equal(out[start:stop], A.T[start:stop])
    assert np.isnan(out[:start]).all() and np.isnan(out[stop:]).all()
