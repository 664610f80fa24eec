"""Data-parallel training over MPI: mpiexec -n 2 and -n 3 (unequal shards) against one process.

Each launch runs tests/mpi_worker.py on every rank; the reference is a single-process Network on all
the examples, trained here. float64, within 1e-10 relative after 50 steps.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastdnn
from fastdnn import distributed

pytest.importorskip("mpi4py", reason="mpi4py is not installed (the mpi/dev extras)")
sys.path.insert(0, os.path.dirname(__file__))
import mpi_worker  # noqa: E402  (the worker's data and shard layout)

# the ranks import the fastdnn of this checkout, not an installed one
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOUT_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
BACKENDS = [b for b in ("numpy", "numba") if b in [i.name for i in fastdnn.available_backends() if i.available]]
RTOL = 1e-10


def launch(shards, scenarios, tmp_path, timeout=240):
    """mpiexec -n len(shards) the worker; returns (CompletedProcess, {name: [per-rank npz dict]})."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"shards": shards, "scenarios": scenarios}))
    env = dict(CHECKOUT_ENV, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    worker = os.path.join(os.path.dirname(__file__), "mpi_worker.py")
    proc = subprocess.run([MPIEXEC, "-n", str(len(shards)), sys.executable, worker, str(spec), str(tmp_path)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    results = {}
    for s in scenarios:
        files = [tmp_path / f"{s['name']}.rank{r}.npz" for r in range(len(shards))]
        if all(f.exists() for f in files):
            results[s["name"]] = [dict(np.load(f)) for f in files]
    return proc, results


def reference(backend, fit, network=None):
    """The same training in one process on all the examples: (parameters, History)."""
    X, Y, Xv, Yv = mpi_worker.data()
    fit = dict(fit)
    if fit.pop("validation", False):
        fit["validation_data"] = (Xv, Yv)
    net = fastdnn.Network([2, 5, 3, 1], device=backend, dtype="float64", seed=1,
                          **{"hidden_activation": "relu", **(network or {})})
    return net, net.fit(X, Y, verbose=0, **fit)


def assert_same_parameters(ranks, expected):
    for r, got in enumerate(ranks):
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=RTOL, atol=RTOL * np.abs(value).max(),
                                       err_msg=f"rank {r} {key}")


FULL_BATCH = [
    ("gd", dict(iterations=50, learning_rate=0.5, report_every=10), None),
    ("adam", dict(iterations=50, learning_rate=0.02, optimizer="adam", report_every=10), None),
    ("adam_l2_validation", dict(iterations=50, learning_rate=0.02, optimizer="adam", report_every=10,
                                validation=True), dict(l2=0.3)),
    # synchronized batch norm: the batch's μ, σ², dβ, dγ over every rank's columns
    ("adam_batch_norm", dict(iterations=50, learning_rate=0.02, optimizer="adam", report_every=10,
                             validation=True), dict(batch_norm=True)),
]


def scenarios_for(cases):
    return [dict(name=f"{name}_{backend}", backend=backend, fit=fit, network=network or {})
            for backend in BACKENDS for name, fit, network in cases]


@pytest.mark.parametrize("shards", [[150, 150], [50, 120, 130]], ids=["2 equal", "3 unequal"])
def test_full_batch_data_parallel_equals_one_process(shards, tmp_path):
    scenarios = scenarios_for(FULL_BATCH)
    proc, results = launch(shards, scenarios, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for s in scenarios:
        ranks = results[s["name"]]
        assert all("error" not in r for r in ranks), ranks[0].get("error")
        net, history = reference(s["backend"], s["fit"], s["network"])
        assert_same_parameters(ranks, net.parameters)
        for r in ranks:               # the History (cost and validation cost) is every rank's alike
            np.testing.assert_allclose(r["cost"], [h.cost for h in history], rtol=RTOL)
            expected_val = [np.nan if h.val_cost is None else h.val_cost for h in history]
            np.testing.assert_allclose(r["val_cost"], expected_val, rtol=RTOL)


def test_minibatches_split_across_unequal_shards_equal_one_process(tmp_path):
    """Global batch k of 64 takes the same fraction of every rank's examples: the same steps in one
    process on the concatenated pieces give the same parameters (Adam, 4 epochs of 5 batches); with
    batch norm the running statistics too (every batch's μ, σ² are over all its ranks' pieces)."""
    shards, batch, epochs = [50, 120, 130], 64, 4
    fit = dict(epochs=epochs, batch_size=batch, shuffle=False, optimizer="adam", learning_rate=0.01)
    scenarios = [dict(name=f"mini_{b}_{norm}", backend=b, fit=fit, network=dict(batch_norm=norm))
                 for b in BACKENDS for norm in (False, True)]
    proc, results = launch(shards, scenarios, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    X, Y, _, _ = mpi_worker.data()
    M = sum(shards)
    offsets = np.cumsum([0] + shards)
    for s in scenarios:
        net = fastdnn.Network([2, 5, 3, 1], "relu", device=s["backend"], dtype="float64", seed=1, **s["network"])
        for _ in range(epochs):
            for k in range(0, M, batch):          # rank r's part: positions [k m_r / M, (k + B) m_r / M)
                cols = np.concatenate([np.arange(o + k * m // M, o + min(k + batch, M) * m // M)
                                       for o, m in zip(offsets, shards)])
                net.step(X[:, cols], Y[:, cols], learning_rate=0.01, optimizer="adam")
        assert_same_parameters(results[s["name"]], net.parameters)


def test_every_rank_draws_its_own_dropout_masks_reproducibly(tmp_path):
    """Each rank's dropout generator is its own stream (rank 0's jumped by the rank): after the same
    training the ranks' generators stand at different places, the same run gives every rank the same
    place again, and the parameters are the same on every rank."""
    fit = dict(iterations=4, learning_rate=0.1)
    scenarios = [dict(name=f"dropout_{k}", backend="numpy", fit=fit, network=dict(keep_prob=0.7))
                 for k in "ab"]
    proc, results = launch([100, 100, 100], scenarios, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first, again = results["dropout_a"], results["dropout_b"]
    draws = [r["next_draws"] for r in first]
    assert all((draws[r] != draws[s]).all() for r in range(3) for s in range(r + 1, 3))
    for r in range(3):
        np.testing.assert_array_equal(again[r]["next_draws"], draws[r])
    assert_same_parameters(first[1:], {k: v for k, v in first[0].items() if k[0] in "Wb"})


def test_divergence_stops_every_rank_at_the_same_iteration(tmp_path):
    fit = dict(iterations=200, learning_rate=1e6, report_every=1)
    scenarios = [dict(name="diverge", backend=BACKENDS[-1], fit=fit, network=dict(hidden_activation="linear"))]
    with np.errstate(all="ignore"):
        proc, results = launch([150, 150], scenarios, tmp_path)
        net = fastdnn.Network([2, 5, 3, 1], "linear", device=BACKENDS[-1], dtype="float64", seed=1)
        with pytest.raises(fastdnn.TrainingDivergedError) as e:
            X, Y, _, _ = mpi_worker.data()
            net.fit(X, Y, verbose=0, **fit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in results["diverge"]:
        assert str(r["error"]).startswith("TrainingDivergedError")
        assert int(r["iteration"]) == e.value.iteration
    assert_same_parameters(results["diverge"], net.parameters)


def test_a_rank_with_bad_data_or_other_fit_arguments_stops_every_rank_with_an_error(tmp_path):
    scenarios = [dict(name="bad", backend="numpy", fit=dict(iterations=5), fail="shape"),
                 dict(name="plan", backend="numpy", fit=dict(iterations=5), fail="plan")]
    proc, results = launch([150, 150], scenarios, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (str(r["error"]) for r in results["bad"])
    assert rank1.startswith("ShapeError") and "X" in rank1
    assert rank0.startswith("DistributedError: rank 1 of 2 failed: ShapeError")
    for r in results["plan"]:
        assert str(r["error"]).startswith("DistributedError: rank ") and "fit arguments differ" in str(r["error"])


def test_parameters_that_drift_apart_are_reported_and_reset_to_rank_0s(tmp_path):
    scenarios = [dict(name="drift", backend="numpy", fit=dict(iterations=6), fail="drift"),
                 dict(name="same", backend="numpy", fit=dict(iterations=6))]
    proc, results = launch([150, 150], scenarios, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in results["drift"]:
        assert any("rank(s) [1] drifted from rank 0's" in w for w in r["warnings"])
    np.testing.assert_array_equal(results["drift"][0]["W1"], results["drift"][1]["W1"])
    assert all(len(r["warnings"]) == 0 for r in results["same"])


def test_a_rank_failing_midway_aborts_the_job_instead_of_hanging(tmp_path):
    scenarios = [dict(name="midway", backend="numpy", fit=dict(iterations=1000), fail="midway")]
    proc, _ = launch([150, 150], scenarios, tmp_path, timeout=60)
    assert proc.returncode != 0
    assert "rank 1 of 2 failed during data-parallel training" in proc.stderr
    assert "injected failure on rank 1 at iteration 5" in proc.stderr


def test_shards_follow_array_split_and_batches_take_each_ranks_fraction():
    class Comm:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return self.size

    X, Y = np.arange(20.0).reshape(2, 10), np.arange(10.0).reshape(1, 10)
    parts = [distributed.shard(X, Y, Comm(r, 3)) for r in range(3)]
    assert [p[0].shape[1] for p in parts] == [4, 3, 3]
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts], axis=1), Y)
    dp = distributed.DataParallel.__new__(distributed.DataParallel)
    dp.rank, dp.shard_sizes, dp.m_total = 1, [50, 120, 130], 300
    assert dp.batches(64) == [(0, 25, 62), (25, 51, 65), (51, 76, 64), (76, 102, 63), (102, 120, 46)]
    assert dp.batches(300) == [(0, 120, 300)]
    dp.rank, dp.shard_sizes = 0, [300]
    assert dp.batches(64) == [(0, 64, 64), (64, 128, 64), (128, 192, 64), (192, 256, 64), (256, 300, 44)]
    dp.shard_sizes = [5, 295]
    with pytest.raises(fastdnn.DistributedError, match="rank 0 holds 5 of the 300"):
        dp.batches(30)


def test_cuda_aware_detection():
    assert not distributed.cuda_aware({})
    assert distributed.cuda_aware({"OMPI_MCA_opal_cuda_support": "true"})
    assert distributed.cuda_aware({"MPICH_GPU_SUPPORT_ENABLED": "1"})
    assert not distributed.cuda_aware({"MPICH_GPU_SUPPORT_ENABLED": "1", "FASTDNN_MPI_CUDA_AWARE": "0"})
    assert distributed.cuda_aware({"FASTDNN_MPI_CUDA_AWARE": "1"})
    assert distributed.cuda_aware({"OMPI_MCA_opal_cuda_support": " TRUE\n"})     # as a shell may leave it
    assert not distributed.cuda_aware({"OMPI_MCA_opal_cuda_support": "false"})
    assert distributed.cuda_aware({"FASTDNN_MPI_CUDA_AWARE": " Yes "})


@pytest.mark.parametrize("aware", ["0", "1"], ids=["staged through the host", "CUDA-aware"])
def test_device_buffers_go_through_the_host_unless_mpi_is_cuda_aware(aware, monkeypatch):
    """The cupy backend's code path with NumPy standing in for CuPy (no GPU here), on MPI.COMM_SELF:
    staged, each step copies the reduced buffer to a host buffer and back (one counted device-to-host
    copy); CUDA-aware, MPI gets the device buffer itself. Both train exactly like one process."""
    from mpi4py import MPI
    from fastdnn.backends.cupy_backend import CupyBackend
    monkeypatch.setenv("FASTDNN_MPI_CUDA_AWARE", aware)
    X, Y, _, _ = mpi_worker.data()
    be = CupyBackend("cuda:0", xp=np)
    net = fastdnn.Network([2, 5, 3, 1], device=be, dtype="float64", seed=1)
    ref = fastdnn.Network([2, 5, 3, 1], device="numpy", dtype="float64", seed=1)
    staged = []
    original = be.copy_to_host
    be.copy_to_host = lambda x, host: (staged.append(x.shape), original(x, host))
    net.fit(X, Y, iterations=20, optimizer="adam", learning_rate=0.01, verbose=0, comm=MPI.COMM_SELF)
    ref.fit(X, Y, iterations=20, optimizer="adam", learning_rate=0.01, verbose=0)
    P = sum(n * (k + 1) for k, n in zip([2, 5, 3], [5, 3, 1]))
    # staged: θ and Adam's two states broadcast once, then one (P + 1) all-reduce per step
    assert staged == ([] if aware == "1" else [(P,)] * 3 + [(P + 1,)] * 20)
    assert_same_parameters([net.parameters], ref.parameters)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_rank_trains_exactly_like_no_communicator(backend):
    """On MPI.COMM_SELF (rank 0 of 1) a data-parallel fit is the plain fit: same batches, dropout
    masks, L2, Adam state and History."""
    from mpi4py import MPI
    X, Y, Xv, Yv = mpi_worker.data()
    runs = []
    for comm in (None, MPI.COMM_SELF):
        net = fastdnn.Network([2, 5, 3, 1], device=backend, dtype="float64", seed=1, l2=0.2, keep_prob=0.8,
                              batch_norm=[True, False])
        history = net.fit(X, Y, epochs=3, batch_size=64, optimizer="adam", learning_rate=0.01, seed=4,
                          validation_data=(Xv, Yv), verbose=0, comm=comm)
        runs.append((net.parameters, [(h.cost, h.val_cost, h.val_accuracy) for h in history]))
    assert_same_parameters([runs[1][0]], runs[0][0])
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=RTOL)
    assert distributed.local_rank(MPI.COMM_SELF) == 0


def test_cli_train_under_mpiexec_is_data_parallel(tmp_path):
    model = tmp_path / "moons.npz"
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "fastdnn", "train", "--epochs", "30", "--device", "numpy",
           "--save", str(model)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          cwd=ROOT,
                          env=dict(CHECKOUT_ENV, OPENBLAS_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("data-parallel over 2 MPI ranks") == 1 and proc.stdout.count("saved") == 1
    assert fastdnn.load(model).layer_dims == [2, 8, 8, 1]
