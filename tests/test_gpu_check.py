"""``fastdnn gpu-check``: here (no GPU) the clear no-device message and exit status 2; the whole check
end-to-end through the strict CuPy stand-in (tests/fake_cupy.py, 2 devices, kernel bodies run on the
CPU), where it must pass; and each kind of check fails when what it checks is broken. No GPU is used:
the stand-in runs synchronously, so the "host ran ahead of a held device" half of the synchronization
check reports n/a here and only the refusal half (cupyx.allow_synchronize(False) and the stand-in's
own no_sync()) is exercised."""
import subprocess
import sys

import numpy as np
import pytest

from fastdnn import gpu_check


def test_without_a_gpu_it_stops_with_the_no_device_message_and_status_2():
    out = subprocess.run([sys.executable, "-m", "fastdnn", "gpu-check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("fastdnn gpu-check: error: no CUDA device: cupy: ")
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_says_what_it_checks():
    out = subprocess.run([sys.executable, "-m", "fastdnn", "gpu-check", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "full-batch and mini-batch fit" in out.stdout and "--device N" in out.stdout


@pytest.fixture
def short(monkeypatch):
    """A short configuration: a 0 s hold and a tiny benchmark."""
    pytest.importorskip("cuda_on_cpu")
    from fastdnn import bench
    monkeypatch.setattr(gpu_check, "HOLD_S", 0.0)
    return [bench.Config("t", [3, 4, 1], 24, "relu", "sigmoid")]


def test_the_whole_check_passes_through_the_stand_in(fake_cupy, short):
    lines = []
    results, rows = gpu_check.run(device=0, bench_configs=short, bench_steps=1, step_guard=fake_cupy.no_sync,
                                  out=lines.append)
    failed = [c for c in results if c.ok is False]
    assert not failed, failed
    names = [c.name for c in results]
    for backend in gpu_check.BACKENDS:
        for dtype in gpu_check.DTYPES:
            for what in ("full-batch fit", "mini-batch fit"):
                assert f"{what} {backend}:0 {dtype} vs numpy" in names
            assert f"launches per step {backend}:0 {dtype}" in names
            assert f"device memory over 100 predict calls {backend}:0 {dtype}" in names
        assert f"full-batch fit {backend}:1 float64 vs numpy" in names          # the second device
    sync = [c for c in results if c.name.startswith("training steps without synchronization")]
    assert len(sync) == 4 and all(c.ok and "none refused" in c.detail and "n/a" in c.detail for c in sync)
    assert results[-1].name == "GPU benchmark" and results[-1].ok
    assert {r["kind"] for r in rows} == {"vectorized", "loop"}
    assert lines[0].startswith("fastdnn gpu-check on cuda:0: stand-in GPU, CuPy ")
    assert lines[-1].startswith(f"PASS: {len(results)} of {len(results)} checks passed or n/a, 0 failed")
    assert fake_cupy.counts["launch@1"] > 0 and fake_cupy.counts["gemm@1"] > 0


def test_a_step_that_synchronizes_fails_the_check(fake_cupy, short, monkeypatch):
    from fastdnn import engine
    train_step = engine.Engine.train_step

    def syncing(self, *args, **kwargs):
        cost = train_step(self, *args, **kwargs)
        self.backend.to_numpy(self.theta)            # a device-to-host read in the step
        return cost
    monkeypatch.setattr(engine.Engine, "train_step", syncing)
    c = gpu_check.check_no_sync("cupy-fused", "float32", 0)
    assert c.ok is False and c.detail.startswith("a step synchronized: DeviceSynchronized")


def test_a_wrong_result_a_leak_and_a_wrong_count_fail(fake_cupy, short, monkeypatch):
    assert gpu_check.check_fit("cupy-fused", "float32", 0, "mini-batch").ok
    monkeypatch.setitem(gpu_check.TRAINED, "float32", 0.0)           # float32 sums differ in order
    c = gpu_check.check_fit("cupy-fused", "float32", 0, "mini-batch")
    assert c.ok is False and "(tolerance 0)" in c.detail
    kept = []
    from fastdnn import Network
    predict = Network.predict
    monkeypatch.setattr(Network, "predict", lambda self, X: kept.append(self.backend.empty((64,), np.float32)) or predict(self, X))
    assert gpu_check.check_memory("cupy", "float32", 0).ok is False
    monkeypatch.setattr(gpu_check.gpu_bench, "_fused_launches", lambda config: (99, 1))
    c = gpu_check.check_launches("cupy-fused", "float32", 0)
    assert c.ok is False and "expected 99" in c.detail


def test_a_check_that_raises_is_a_failure_not_a_crash(fake_cupy, short, monkeypatch):
    monkeypatch.setattr(gpu_check, "problem", lambda m=300, seed=0: (np.zeros((2, 3)), np.zeros((1, 3))))
    c = gpu_check._safe(gpu_check.check_fit, "cupy", "float32", 0, "full-batch")
    assert c.ok is False and c.name == "fit cupy float32 0 full-batch" and "ShapeError" in c.detail


def test_the_first_user_script_runs_through_the_stand_in(fake_cupy, monkeypatch, capsys):
    """tools/gpu_user.py (run on the H200, benchmarks/GPU_H200.md) keeps working: every part prints its
    line, each GPU result compared with the CPU one, and none reports an error."""
    import runpy
    from pathlib import Path

    from fastdnn import bench
    monkeypatch.setattr(bench, "CONFIGS", bench.CONFIGS[:1])
    monkeypatch.setattr(bench, "MINIBATCH_CONFIGS", [c for c in bench.MINIBATCH_CONFIGS if c.name == "moons-b64"])
    script = Path(__file__).parents[1] / "tools" / "gpu_user.py"
    module = runpy.run_path(str(script))
    module["full_batch"].__defaults__ = (10,)               # iterations: the lines, not the timings, matter here
    module["minibatch"].__defaults__ = (1,)                 # epochs
    for part in ("first_user", "divergence", "features", "speeds"):
        module[part]()
    out = capsys.readouterr().out
    compared = [line for line in out.splitlines() if ": vs numpy " in line]
    assert len(compared) == 2 * (5 * 2 + 2) and max(float(line.rsplit(" ", 1)[1]) for line in compared) < 1e-10
    assert out.count("finite True") == 2 and out.count("device labels") == 2
    assert "issue-14 repro: backend cupy-fused" in out and "NOT raised" not in out
    assert out.count("parameters finite: True") == 2
    assert out.count("epoch moons-b64") == 4 and out.count("fit step tiny") == 4
    diffs = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith(("epoch", "fit step"))]
    assert max(diffs) < 1e-5
