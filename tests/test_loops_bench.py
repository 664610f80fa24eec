"""The for-loop twins compute the same step as Network; the benchmark command writes its reports."""
import json
import subprocess
import sys

import numpy as np
import pytest

from fastdnn import Network, bench, loops

import oracle
from support import BACKENDS

CASES = [("relu", "sigmoid", "bce", 1), ("tanh", "softmax", "ce", 3), ("leaky_relu", "tanh", "mse", 2),
         ("sigmoid", "linear", "mse", 2)]


def case(hidden, output, loss, n_out, m=9):
    rng = np.random.RandomState(0)
    X = rng.randn(3, m)
    Y = {"bce": rng.randint(0, 2, (1, m)), "ce": np.eye(3)[rng.randint(0, 3, m)].T,
         "mse": rng.randn(2, m)}[loss].astype(float)
    net = Network([3, 5, 4, n_out], hidden, output, loss, device="numpy", dtype="float64", seed=1)
    before = net.parameters
    cost = net.step(X, Y, 0.1)
    return net, X, Y, before, cost


def flat(parameters, L=3):
    return np.concatenate([parameters[f"{p}{l}"].ravel() for l in range(1, L + 1) for p in "Wb"])


@pytest.mark.parametrize("hidden,output,loss,n_out", CASES, ids=["-".join(c[:3]) for c in CASES])
def test_per_example_loop_equals_the_vectorized_step(hidden, output, loss, n_out):
    net, X, Y, before, cost = case(hidden, output, loss, n_out)
    params = {k: v.copy() for k, v in before.items()}
    assert loops.per_example_step(params, X, Y, net.activations, net.loss, 0.1) == pytest.approx(cost, rel=1e-12)
    np.testing.assert_allclose(flat(params), flat(net.parameters), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.skipif(
    "numba" not in BACKENDS, reason="numba is not installed"))], ids=["python", "numba"])
@pytest.mark.parametrize("hidden,output,loss,n_out", CASES, ids=["-".join(c[:3]) for c in CASES])
def test_scalar_loop_equals_the_vectorized_step(hidden, output, loss, n_out, compiled):
    net, X, Y, before, cost = case(hidden, output, loss, n_out)
    theta = flat(before)
    step = loops.scalar_step(net.activations[0], net.activations[-1], net.loss, compiled)
    units = sum(net.layer_dims[1:])
    z, a, dz = np.zeros(units), np.zeros(units), np.zeros(units)
    dims, pofs = loops.flat_layout(net.layer_dims)
    assert step(X, Y, theta, np.zeros_like(theta), dims, pofs, z, a, dz, 0.1) == pytest.approx(cost, rel=1e-12)
    np.testing.assert_allclose(theta, flat(net.parameters), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bench_step_without_the_update_leaves_the_parameters_and_computes_the_gradient(backend):
    """The 'without the update' row times forward + cost + backward: dθ right, θ untouched; the
    full step's row moves θ."""
    config = bench.Config("t", [4, 6, 5, 3], 11, "relu", "softmax")
    X, Y = bench.problem(config, "float64")
    for update in (False, True):
        candidate = bench.network_step(config, "float64", backend, update=update)
        net = candidate.net
        before = net.parameters
        candidate.run()
        moved = [not np.array_equal(net.parameters[k], v) for k, v in before.items()]
        assert all(moved) if update else not any(moved)
        expected = oracle.network_gradients(before, X, Y, ["relu", "relu", "softmax"], "ce")
        np.testing.assert_allclose(net.backend.to_numpy(net.engine.dtheta), flat({k[1:]: v for k, v in expected.items()}),
                                   rtol=1e-10, atol=1e-14)


def test_bench_command_prints_tables_and_writes_reports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastdnn", "bench", "--config", "tiny", "--dtype",
                          "float64", "--rounds", "2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| fastdnn numpy | numpy / cpu |" in out.stdout and "| gemm floor |" in out.stdout
    assert "loop over examples (Python)" in out.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["command"].startswith("fastdnn bench --config tiny")
    assert report["machine"]["cores"] >= 1 and report["machine"]["numpy"]
    rows = {r["implementation"]: r for r in report["rows"]}
    assert rows["gemm floor"]["vs_floor"] == 1.0
    assert all(r["rounds"] == 2 and r["median_s"] > 0 for r in rows.values())
    assert rows["fastdnn numpy"]["speedup_over_loop"] > 10      # vectorization pays, by a lot
    md = (tmp_path / "RESULTS.md").read_text()
    assert "Reproduce with" in md and "fastdnn bench --config tiny" in md
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_gpu_benchmark_stops_with_a_clear_message_without_a_gpu():
    out = subprocess.run([sys.executable, "-m", "fastdnn", "bench", "--gpu", "--config", "tiny"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("fastdnn bench: error: --gpu: no CUDA device: cupy: ")


def test_gpu_on_paper_table_covers_every_configuration():
    from fastdnn import bench, gpu_bench
    rows = json.load(open(__file__.replace("tests/test_loops_bench.py", "benchmarks/results.json")))["rows"]
    text = gpu_bench.paper(rows)
    assert all(f"| {c.name} {c.layer_dims} m={c.m} | {d} | {b} |" in text for c in bench.CONFIGS
               for d in ("float32", "float64") for b in ("cupy", "cupy-fused"))
    mnist = bench.CONFIGS[2]                      # [784, 256, 128, 10], m = 256: both hidden dbs split
    assert gpu_bench.launches_per_step(mnist, "cupy-fused") == (2 * 3 + 3 + 2 + 1, 3 * 3 - 1)
    assert gpu_bench.launches_per_step(mnist, "cupy") == (2 * (1 + 1 + 2 + 1) + (1 + 5 + 11 + 3) + 2, 8)
    low, high = gpu_bench.launch_seconds(mnist, "cupy-fused")
    assert low == pytest.approx(11 * 3e-6 + 1 * 11e-6 + 8 * 11e-6)
    assert high == pytest.approx(11 * 12e-6 + 1 * 25e-6 + 8 * 25e-6)
    assert "| mnist-256 [784, 256, 128, 10] m=256 | 12 + 8 | 132–357 µs | 3.5–8 µs | 128–349 µs |" in \
        gpu_bench.graphs_on_paper()
    with pytest.raises(ValueError, match="unknown GPU backend 'cupy-numba'; expected one of 'cupy', 'cupy-fused'"):
        gpu_bench.launches_per_step(mnist, "cupy-numba")
    assert bench.flops_per_step(bench.Config("x", [3, 2, 1], 10, "relu", "sigmoid")) == 2 * (2 * (60 + 20) + 20)


def test_gpu_on_paper_report_is_the_committed_one():
    from fastdnn import gpu_bench
    root = __file__.replace("tests/test_loops_bench.py", "")
    rows = json.load(open(root + "benchmarks/results.json"))["rows"]
    assert gpu_bench._report(rows) + "\n" == open(root + "benchmarks/GPU_ON_PAPER.md", encoding="utf-8").read()


# --- the GPU loop twins through the strict CuPy stand-in (no GPU: code path and results only) ---------
def test_gpu_per_example_loop_equals_the_cpu_loop(fake_cupy):
    from fastdnn import gpu_bench
    cp = fake_cupy.cupy
    for hidden, output, loss, n_out in CASES:
        net, X, Y, before, cost = case(hidden, output, loss, n_out)
        params = {k: cp.asarray(v) for k, v in before.items()}
        J = loops.per_example_step(params, cp.asarray(X), cp.asarray(Y), net.activations, net.loss, 0.1, cp)
        assert float(J) == pytest.approx(cost, rel=1e-12)
        np.testing.assert_allclose(flat({k: cp.asnumpy(v) for k, v in params.items()}), flat(net.parameters),
                                   rtol=1e-12, atol=1e-15)


def test_gpu_benchmark_has_both_loop_rows_labelled_extrapolated(fake_cupy):
    pytest.importorskip("cuda_on_cpu")
    from fastdnn import gpu_bench
    config = bench.Config("t", [3, 5, 2], 40, "tanh", "softmax")
    rows = gpu_bench.run(configs=[config], dtypes=("float64",), steps=1, loop_budget_s=1e-9)
    assert [(r["kind"], r["backend"]) for r in rows] == [("vectorized", "cupy"), ("vectorized", "cupy-fused"),
                                                         ("loop", "cupy"), ("loop", "cupy")]
    labels = [r["implementation"] for r in rows[2:]]
    assert labels == ["loop over examples (CuPy ops; 1 of 40 timed, extrapolated)",
                      "scalar loops in one GPU thread (RawKernel; 1 of 40 timed, extrapolated)"]
    assert all(r["examples_timed"] == 1 and r["ms_per_step"] > 0 for r in rows[2:])
    text = gpu_bench.table(rows)
    assert "| t | float64 | scalar loops in one GPU thread (RawKernel; 1 of 40 timed, extrapolated) |" in text
    assert fake_cupy.counts["launch"] > 0
