"""Whole training steps through the cupy-numba backend's code path in the CUDA simulator, with NumPy
arrays standing in for CuPy arrays: same results as the numpy backend, and the launches, GEMMs and
device-to-host copies per step are pinned."""
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run with NUMBA_ENABLE_CUDASIM=1 (tests/test_cuda_sim.py does)", allow_module_level=True)

from fastdnn import Network  # noqa: E402
from fastdnn.backends.cupy_numba_backend import CupyNumbaBackend  # noqa: E402

CASES = [("relu", "sigmoid", 1), ("tanh", "softmax", 3), ("leaky_relu", "linear", 2)]


def problem(n_out, output, m=11):
    rng = np.random.RandomState(0)
    X = rng.randn(4, m)
    Y = {"sigmoid": rng.randint(0, 2, (1, m)), "softmax": rng.randint(0, 3, m),
         "linear": rng.randn(2, m)}[output]
    return X, Y


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden,output,n_out", CASES, ids=["-".join(c[:2]) for c in CASES])
def test_training_steps_match_numpy_and_counts_are_pinned(hidden, output, n_out, dtype):
    dims = [4, 6, 5, n_out]
    L = len(dims) - 1
    X, Y = problem(n_out, output)
    be = CupyNumbaBackend("cuda:0", xp=np)
    net = Network(dims, hidden, output, device=be, dtype=dtype, seed=1)
    ref = Network(dims, hidden, output, device="numpy", dtype=dtype, seed=1)
    Xd, Yd = net.prepare(X, Y)
    Xr, Yr = ref.prepare(X, Y)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=1e-6)
    for i in range(3):
        before = dict(be.counters)
        cost = net.engine.train_step(Xd, Yd, 0.1, check=False)          # a GPU step: no host check
        used = {k: be.counters[k] - before[k] for k in be.counters}
        assert used["launch"] <= 5 * L + 2 and used["gemm"] == 3 * L - 1 and used["sync"] == 0
        expected = ref.engine.train_step(Xr, Yr, 0.1, check=True)
        np.testing.assert_allclose(float(cost), float(expected), **tol)
    for key, value in ref.parameters.items():
        np.testing.assert_allclose(net.parameters[key], value, **tol)


def test_fit_reads_the_cost_back_only_when_reporting():
    X, Y = problem(1, "sigmoid")
    be = CupyNumbaBackend("cuda:0", xp=np)
    net = Network([4, 6, 1], device=be, dtype="float64", seed=0)
    history = net.fit(X, Y, learning_rate=0.1, iterations=7, report_every=3, verbose=0)
    assert history.iterations == [0, 3, 6]
    assert be.counters["sync"] == len(history)          # one read-back per reported cost


def test_data_parallel_fit_through_the_kernels(monkeypatch):
    """fit(comm=MPI.COMM_SELF) through the cupy-numba kernels (Adam, mini-batches, L2): the same
    parameters as the numpy backend in one process; one all-reduce per step, through the host only
    as the MPI library is not CUDA-aware (tests/test_distributed.py checks the CUDA-aware path)."""
    MPI = pytest.importorskip("mpi4py.MPI")
    monkeypatch.setenv("FASTDNN_MPI_CUDA_AWARE", "0")
    X, Y = problem(1, "sigmoid", m=40)
    be = CupyNumbaBackend("cuda:0", xp=np)
    net = Network([4, 6, 5, 1], device=be, dtype="float64", seed=0, l2=0.1)
    ref = Network([4, 6, 5, 1], device="numpy", dtype="float64", seed=0, l2=0.1)
    fit = dict(epochs=2, batch_size=16, optimizer="adam", learning_rate=0.01, seed=2, verbose=0)
    ref.fit(X, Y, **fit)
    reduces = []
    original = MPI.COMM_SELF.Allreduce
    comm = type("Comm", (), {"__getattr__": lambda self, name: getattr(MPI.COMM_SELF, name),
                             "Allreduce": lambda self, *a, **k: (reduces.append(1), original(*a, **k))})()
    copies = []
    be.copy_to_host = lambda x, host: (copies.append(x.shape), np.copyto(host, x))
    net.fit(X, Y, comm=comm, **fit)
    steps, P = 2 * 3, net.engine.dtheta.shape[0]
    assert len(reduces) == steps
    # staged: θ and Adam's two states broadcast once, then the (P + 1) buffer every step
    assert copies == [(P,)] * 3 + [(P + 1,)] * steps
    for key, value in ref.parameters.items():
        np.testing.assert_allclose(net.parameters[key], value, rtol=1e-10, atol=1e-12)
