"""First-call latency: a call whose compiled loop or epoch is not compiled yet steps on NumPy while it
compiles in the background, and switches to it between two steps (or epochs) with the results of a run
on one path (see ``engine.BACKGROUND_COMPILE``); the demo prints the first-call and steady times."""
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastdnn
from fastdnn import Network, cli, datasets
from fastdnn import engine as engine_module
from fastdnn.backends.numpy_backend import NumpyBackend
from fastdnn.errors import TrainingDivergedError

from support import BACKENDS, PendingCompile

pytestmark = pytest.mark.skipif("numba" not in BACKENDS, reason="the numba backend is not available")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fresh process with an empty Numba cache: the first fit of [2, 4, 1] for 300 full-batch steps, and a
# first mini-batch fit of 5 epochs, each timed, beside the same fits on the numpy backend (one path).
COLD_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import fastdnn
    from fastdnn import datasets
    X, Y = datasets.flower(m=400, seed=1)
    out = {}
    for kind, options in [("iterations", dict(iterations=300, learning_rate=1.2)),
                          ("epochs", dict(epochs=5, batch_size=64, optimizer="adam", learning_rate=0.01))]:
        nets = [fastdnn.Network([2, 4, 1], "tanh", device=d, dtype="float64", seed=1) for d in ("numba", "numpy")]
        start = time.perf_counter()
        history = nets[0].fit(X, Y, verbose=0, **options)
        seconds = time.perf_counter() - start
        out[kind] = dict(seconds=seconds, on_numpy=nets[0].engine.reference_steps, costs=history.costs,
                         numpy_costs=nets[1].fit(X, Y, verbose=0, **options).costs,
                         counters=[[n.iteration, n.epoch, n.engine.t] for n in nets],
                         parameters=[{k: v.tolist() for k, v in n.parameters.items()} for n in nets])
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)     # not waiting for the background compiles to finish
""")


def cold_first_fits(tmp_path, attempt):
    cache = tmp_path / f"numba-cache-{attempt}"
    cache.mkdir()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTDNN_BACKGROUND_COMPILE="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", COLD_SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_first_fit_with_a_cold_numba_cache_returns_in_seconds_with_the_numpy_results(tmp_path):
    # 1 s on this project's 2 shared cores (0.45 s measured); compiling first took 4.5 s. One retry: a
    # timing on a shared machine.
    runs = cold_first_fits(tmp_path, 0)
    if max(r["seconds"] for r in runs.values()) >= 3.0:
        runs = cold_first_fits(tmp_path, 1)
    for kind, run in runs.items():
        assert run["seconds"] < 3.0, (kind, run["seconds"])
        assert run["on_numpy"] > 0, kind          # it did not wait for the compile
        np.testing.assert_allclose(run["costs"], run["numpy_costs"], rtol=1e-10, err_msg=kind)
        assert run["counters"][0] == run["counters"][1], kind
        for key, value in run["parameters"][1].items():
            np.testing.assert_allclose(run["parameters"][0][key], value, rtol=1e-10, atol=1e-13, err_msg=kind)


@pytest.fixture
def pending(monkeypatch):
    """pending(net, kind, checks): the net's compiled loop or epoch ("loop", "epoch") reports a background
    compile running for its next ``checks`` readiness checks (the real kernel runs after)."""
    def install(net, kind, checks):
        make = getattr(net.backend, f"fused_{kind}")

        def made(*args, **kwargs):
            call = make(*args, **kwargs)
            call.ready, call.job = False, PendingCompile(checks)
            return call
        monkeypatch.setattr(net.backend, f"fused_{kind}", made)
    monkeypatch.setattr(engine_module, "BACKGROUND_COMPILE", True)
    return install


def assert_same_training(net, other, histories):
    np.testing.assert_allclose(histories[0].costs, histories[1].costs, rtol=1e-10)
    assert (net.iteration, net.epoch, net.engine.t) == (other.iteration, other.epoch, other.engine.t)
    for key, value in other.parameters.items():
        np.testing.assert_allclose(net.parameters[key], value, rtol=1e-10, atol=1e-13, err_msg=key)
    for mine, theirs in zip(net.engine.states, other.engine.states):
        np.testing.assert_allclose(net.backend.to_numpy(mine), other.backend.to_numpy(theirs), rtol=1e-10,
                                   atol=1e-13)


@pytest.mark.parametrize("single", ["numpy", "numba"])
def test_full_batch_steps_switch_to_the_compiled_loop_mid_call_with_the_single_path_results(pending, single):
    X, Y = datasets.flower(m=200, seed=2)
    nets = [Network([2, 5, 3, 1], "tanh", device=d, dtype="float64", seed=4) for d in ("numba", single)]
    pending(nets[0], "loop", 10)
    # on NumPy: the report at step 0 (1 check), then the quiet stretch's steps 1-9 (1 check before it,
    # one before each step after its first); the compiled loop takes the other 30 steps
    updates = []
    update = NumpyBackend.update
    with pytest.MonkeyPatch.context() as patch:        # the updates that ran on the numpy backend
        patch.setattr(NumpyBackend, "update", lambda self, *a: updates.append(1) or update(self, *a))
        histories = [nets[0].fit(X, Y, learning_rate=0.02, iterations=40, report_every=20, optimizer="adam")]
    histories.append(nets[1].fit(X, Y, learning_rate=0.02, iterations=40, report_every=20, optimizer="adam"))
    assert nets[0].engine.reference_steps == len(updates) == 10 and nets[0].backend.name == "numba"
    assert histories[0].iterations == [0, 20, 39]
    assert_same_training(*nets, histories)


@pytest.mark.parametrize("single", ["numpy", "numba"])
def test_epochs_switch_to_the_compiled_epoch_between_epochs_with_the_single_path_results(pending, single):
    X, Y = datasets.moons(m=150, seed=5)
    nets = [Network([2, 6, 1], "relu", device=d, dtype="float64", seed=3) for d in ("numba", single)]
    pending(nets[0], "epoch", 2)
    histories = [n.fit(X, Y, learning_rate=0.01, epochs=5, batch_size=32, seed=8, optimizer="momentum")
                 for n in nets]
    assert nets[0].engine.reference_steps == 2 * 5       # two epochs of 5 batches on NumPy, then compiled
    assert_same_training(*nets, histories)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_on_the_numpy_steps_goes_back_one_step_and_leaves_the_backend(pending):
    X, Y = datasets.moons(m=64)
    net = Network([2, 8, 1], "relu", device="numba", dtype="float32", seed=0)
    pending(net, "loop", 10**9)                             # never compiled during this fit
    before = net.parameters
    with pytest.raises(TrainingDivergedError) as e:
        net.fit(X * 1e3, Y, learning_rate=50.0, iterations=1000, report_every=100)
    err = e.value
    assert err.iteration >= 1 and err.restored_iteration == err.iteration - 1 == net.iteration
    assert net.engine.reference_steps == err.iteration - 1
    assert all(np.isfinite(v).all() for v in net.parameters.values())
    assert any(not np.array_equal(net.parameters[k], before[k]) for k in before)
    assert net.backend.name == "numba" and net.engine._reference is None


def test_validation_during_a_background_compile_runs_on_numpy(pending, monkeypatch):
    X, Y = datasets.moons(m=80)
    net = Network([2, 4, 1], "tanh", device="numba", dtype="float64", seed=1)
    pending(net, "loop", 10**9)
    seen = []
    evaluate = net.engine.evaluate
    monkeypatch.setattr(net.engine, "evaluate", lambda *a: seen.append(net.engine.backend.name) or evaluate(*a))
    monkeypatch.setattr(engine_module, "compiling", lambda: True)
    history = net.fit(X, Y, learning_rate=0.1, iterations=20, report_every=10, validation_data=(X, Y))
    assert seen == ["numpy"] * 3 and net.engine.reference_steps == 20
    monkeypatch.setattr(engine_module, "compiling", lambda: False)
    np.testing.assert_allclose(history[-1].val_cost, net.cost(X, Y), rtol=1e-10)


def test_without_background_compiles_a_call_waits_for_its_compile(monkeypatch):
    monkeypatch.setattr(engine_module, "BACKGROUND_COMPILE", False)
    X, Y = datasets.flower(m=100)
    net = Network([2, 3, 1], "tanh", device="numba", dtype="float64", seed=1)
    make, jobs = net.backend.fused_loop, []

    def made(*args, **kwargs):
        call = make(*args, **kwargs)
        call.compile_job = lambda *a: jobs.append(a)
        return call
    monkeypatch.setattr(net.backend, "fused_loop", made)
    net.fit(X, Y, learning_rate=0.5, iterations=30)
    assert jobs == [] and net.engine.reference_steps == 0


def fake_call(key, seconds, missed, started):
    """A compiled call whose compile takes ``seconds``: a load from the cache, or (missed) a compile."""
    class Call:
        ready = False

        def compiled(self, *args):
            return False

        def compile_job(self, *args):
            return key, lambda: time.sleep(seconds) or started.append(key), lambda: missed
    return Call()


def test_a_cache_load_is_waited_for_and_a_compile_is_not(monkeypatch):
    monkeypatch.setattr(engine_module, "_compile_jobs", {})
    monkeypatch.setattr(engine_module, "BACKGROUND_COMPILE", True)
    started = []
    first, second = fake_call("load", 0.2, False, started), fake_call("load", 0.2, False, started)
    assert engine_module._compiled_now(first, ()) is True          # waited for: it may be a cache load
    assert engine_module._compiled_now(second, ()) is True and second.job is first.job     # one job a key
    slow = fake_call("compile", 1.0, True, started)
    assert engine_module._compiled_now(slow, ()) is False           # it compiles: not waited for
    assert engine_module._compiled_now(slow, ()) is False
    jobs = engine_module.wait_for_compiles()
    assert started == ["load", "compile"] and [cached for _, cached in jobs] == [True, False]
    assert jobs[1][0] >= 0.9 and engine_module._compiled_now(slow, ()) is True


def demo_lines(capsys, device):
    try:
        status = cli.main(["demo", "--iterations", "300", "--no-bench", "--device", device])
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    assert status == 0, out.err
    return out.out.splitlines()


def test_demo_prints_the_first_call_apart_from_the_steady_time_per_step(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTDNN_BACKGROUND_COMPILE="1", OPENBLAS_NUM_THREADS="1")
    for how in ("compiled in", "loaded from Numba's cache in"):     # a cold cache, then the same one warm
        done = subprocess.run([sys.executable, "-m", "fastdnn", "demo", "--iterations", "300", "--no-bench",
                               "--device", "numba"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        first = [line for line in lines if line.startswith("first call: the compiled loop ")]
        assert len(first) == 1 and how in first[0], (how, lines)
        steady = [line for line in lines if line.startswith("steady: ")]
        assert len(steady) == 1 and 0 < float(steady[0].split()[1]) < 1e5 and "µs per step" in steady[0]
        assert lines[-1].startswith("300 steps in ") and "training accuracy" in lines[-1]


def test_demo_on_a_backend_without_compiles_prints_the_first_call_overhead(capsys):
    lines = demo_lines(capsys, "numpy")
    first = [line for line in lines if line.startswith("first call: ")]
    assert len(first) == 1 and first[0].endswith("s more than 300 steady steps")
    assert any(line.startswith("steady: ") for line in lines) and "training accuracy" in lines[-1]
    assert fastdnn.__version__ in lines[0]


def test_repeated_fits_keep_their_workspaces_and_compiled_calls_until_a_setting_changes():
    """Every fit sets the optimizer and the regularization; the same ones keep what was built (a fit of a
    small network is then mostly its compiled epoch), another l2 rebuilds it and is applied."""
    X, Y = datasets.moons(m=40, seed=0)
    nets = [Network([2, 5, 1], device=d, dtype="float64", seed=1) for d in ("numba", "numpy")]
    fit = dict(epochs=1, batch_size=16, optimizer="adam", learning_rate=0.01, verbose=0)
    for net in nets:
        net.fit(X, Y, **fit)
    engine = nets[0].engine
    built = (dict(engine._workspaces), dict(engine._compiled_calls))
    assert built[0] and built[1]
    for net in nets:
        net.fit(X, Y, **fit)
    assert all(engine._workspaces[k] is v for k, v in built[0].items())
    assert all(engine._compiled_calls[k] is v for k, v in built[1].items())
    for net in nets:
        net.fit(X, Y, l2=0.3, **fit)
    assert not any(engine._workspaces.get(k) is v for k, v in built[0].items())
    for k, v in nets[1].parameters.items():
        np.testing.assert_allclose(nets[0].parameters[k], v, rtol=1e-10, err_msg=k)
