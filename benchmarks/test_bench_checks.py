"""The benchmark's candidates and columns are checked, not only run.

- every candidate of a step (fastdnn backends, PyTorch, JAX) computes the same parameters as a float64
  NumPy oracle written here, from the same start; the mini-batch epochs with B = m (one batch, so the
  shuffle cannot matter) the same Adam steps;
- the ratio columns are "this candidate's time over the reference's" (2x slower reads 2.00x);
- the physical limit is the step's FLOPs at the measured peak GEMM rate, and below the GEMM floor;
- every mini-batch row counts ceil(m / B) steps per epoch.
"""
import math
import time

import numpy as np
import pytest

from fastdnn import bench
from fastdnn.backends import available_backends

BACKENDS = [b.name for b in available_backends() if b.available]
SOFTMAX = bench.Config("softmax", [4, 6, 5, 3], 11, "relu", "softmax")
SIGMOID = bench.Config("sigmoid", [3, 5, 1], 9, "relu", "sigmoid")
RTOL = {"float64": 1e-9, "float32": 2e-4}


# --- the oracle: float64 NumPy, the course's formulas -------------------------------------------------
def oracle_gradients(p, X, Y, config):
    L, m = len(config.layer_dims) - 1, X.shape[1]
    A, cache = X, []
    for l in range(1, L + 1):
        Z = p[f"W{l}"] @ A + p[f"b{l}"]
        cache.append((A, Z))
        if l < L:
            A = np.maximum(Z, 0)
        elif config.output == "softmax":
            E = np.exp(Z - Z.max(axis=0))
            A = E / E.sum(axis=0)
        else:
            A = 1 / (1 + np.exp(-Z))
    dZ, grads = A - Y, {}
    for l in range(L, 0, -1):
        A_prev, _ = cache[l - 1]
        grads[f"W{l}"], grads[f"b{l}"] = dZ @ A_prev.T / m, dZ.sum(axis=1, keepdims=True) / m
        if l > 1:
            dZ = (p[f"W{l}"].T @ dZ) * (cache[l - 2][1] > 0)
    return grads


def oracle_gd(config, dtype, lr, steps):
    p = {k: v.astype(np.float64) for k, v in bench.initial_parameters(config, dtype).items()}
    X, Y = (a.astype(np.float64) for a in bench.problem(config, dtype))
    for _ in range(steps):
        g = oracle_gradients(p, X, Y, config)
        p = {k: p[k] - lr * g[k] for k in p}
    return p


def oracle_adam(config, dtype, lr, steps, b1=0.9, b2=0.999, eps=1e-8):
    p = {k: v.astype(np.float64) for k, v in bench.initial_parameters(config, dtype).items()}
    X, Y = (a.astype(np.float64) for a in bench.problem(config, dtype))
    v = {k: 0 * a for k, a in p.items()}
    s = {k: 0 * a for k, a in p.items()}
    for t in range(1, steps + 1):
        g = oracle_gradients(p, X, Y, config)
        for k in p:
            v[k] = b1 * v[k] + (1 - b1) * g[k]
            s[k] = b2 * s[k] + (1 - b2) * g[k] ** 2
            p[k] = p[k] - lr * (v[k] / (1 - b1 ** t)) / (np.sqrt(s[k] / (1 - b2 ** t)) + eps)
    return p


def assert_parameters(got, want, start, dtype):
    assert sorted(got) == sorted(want)
    for k in want:
        moved = np.max(np.abs(want[k] - start[k]))
        assert moved > 50 * RTOL[dtype] * np.max(np.abs(start[k])), k     # the step is well above the tolerance
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2, err_msg=k)


STEP_IMPLS = [*BACKENDS, "fit-loop", "torch-autograd", "torch-hand", "jax-step", "jax-loop"]


def build_step(impl, config, dtype, lr):
    if impl in BACKENDS:
        return bench.network_step(config, dtype, impl, learning_rate=lr)
    if impl == "fit-loop":
        return bench.network_fit_loop(config, dtype, BACKENDS[-1], learning_rate=lr, steps=3)
    if impl.startswith("torch"):
        pytest.importorskip("torch")
        make = bench.torch_autograd if impl == "torch-autograd" else bench.torch_by_hand
        return make(config, dtype, learning_rate=lr)
    pytest.importorskip("jax")
    if impl == "jax-step":
        return bench.jax_step(config, dtype, learning_rate=lr)
    return bench.jax_loop(config, dtype, learning_rate=lr, steps=3)


CASES = [(SOFTMAX, "float64"), (SIGMOID, "float32")]     # each output and dtype once: numba compiles are slow
CASE_IDS = ["softmax-float64", "sigmoid-float32"]


@pytest.mark.parametrize("impl", STEP_IMPLS)
@pytest.mark.parametrize("config, dtype", CASES, ids=CASE_IDS)
def test_every_step_candidate_computes_the_oracle_step(config, dtype, impl):
    lr = 0.5
    candidate = build_step(impl, config, dtype, lr)
    start = {k: v.astype(np.float64) for k, v in bench.initial_parameters(config, dtype).items()}
    for k, v in candidate.params().items():
        np.testing.assert_array_equal(v, start[k], err_msg=f"{impl} does not start from initial_parameters")
    candidate.run()
    candidate.run()
    want = oracle_gd(config, dtype, lr, 2 * candidate.steps)
    assert_parameters(candidate.params(), want, start, dtype)


MINI_IMPLS = [*BACKENDS, *(f"{b} X = data.T" for b in BACKENDS), "torch", "jax"]


def build_epoch(impl, config, dtype, lr=1e-3):
    if impl in BACKENDS:
        return bench.network_epoch(config, dtype, impl, learning_rate=lr)
    if impl.endswith(" X = data.T"):
        return bench.network_epoch(config, dtype, impl.split()[0], learning_rate=lr, example_major=True)
    if impl == "torch":
        pytest.importorskip("torch")
        return bench.torch_adam_epoch(config, dtype, learning_rate=lr)
    if impl == "jax":
        pytest.importorskip("jax")
        return bench.jax_adam_epoch(config, dtype, learning_rate=lr)
    pytest.importorskip("sklearn")
    return bench.sklearn_adam_epoch(config, dtype, learning_rate=lr)


@pytest.mark.parametrize("impl", MINI_IMPLS)
@pytest.mark.parametrize("config, dtype", CASES, ids=CASE_IDS)
def test_an_epoch_of_one_batch_is_the_oracle_adam_step(config, dtype, impl):
    """B = m: the epoch is one Adam step on all the examples whatever the order; two epochs, two steps."""
    lr = 0.05
    config = config._replace(batch_size=config.m)
    candidate = build_epoch(impl, config, dtype, lr)
    start = {k: v.astype(np.float64) for k, v in bench.initial_parameters(config, dtype).items()}
    candidate.run()
    candidate.run()
    assert_parameters(candidate.params(), oracle_adam(config, dtype, lr, 2), start, dtype)


@pytest.mark.parametrize("impl, m, batch_size", [*((i, 300, 64) for i in [*MINI_IMPLS, "sklearn"]),
                                                  ("numpy", 20, 64), ("jax", 20, 64), ("torch", 256, 64)])
def test_every_epoch_candidate_takes_ceil_m_over_B_steps(m, batch_size, impl):
    config = bench.Config("moons", [2, 5, 2, 1], m, "relu", "sigmoid", batch_size)
    candidate = build_epoch(impl, config, "float32")
    steps = math.ceil(m / batch_size)
    assert candidate.steps == steps
    before = candidate.steps_done()
    candidate.run()
    assert candidate.steps_done() - before == steps
    candidate.run()
    assert candidate.steps_done() - before == 2 * steps


def test_the_minibatch_rows_count_the_steps_and_the_epoch():
    found = [fake("step", "batch step", [1.0, 1.0]), fake("epoch", "epoch", [3.0, 3.0], steps=5)]
    rows = {r["implementation"]: r for r in bench.summarize_minibatch(bench.MINIBATCH_CONFIGS[2], "float64", found)}
    assert rows["epoch"]["steps_per_epoch"] == 5 == math.ceil(300 / 64)
    assert rows["epoch"]["epoch_s"] == 15.0
    assert rows["epoch"]["vs_batch_step"] == 3.0
    assert [c.steps for c in (bench.network_epoch(c, "float32", "numpy") for c in bench.MINIBATCH_CONFIGS)] == \
        [16384 // 64, 16384 // 256, 5]


# --- the ratio columns ----------------------------------------------------------------------------------
def fake(name, kind, times, steps=1, family="numpy"):
    return bench.Candidate(name, kind, family, lambda: None, times=list(times), steps=steps)


def test_the_ratio_columns_are_candidate_over_reference():
    config = bench.CONFIGS[0]
    found = [fake("gemm floor", "floor", [1.0, 2.0, 1.0]),
             fake("slow", "fused", [2.0, 4.0, 2.0]),
             fake("loop over examples (Python)", "loop", [20.0, 40.0, 20.0]),
             fake("PyTorch autograd + SGD", "reference", [4.0, 8.0, 4.0], family="torch")]
    per_flop = 0.5 / bench.flops_per_step(config)      # the physical limit: 0.5 s per step in every round
    peak = fake("peak GEMM", "peak", [per_flop] * 3)
    rows = {r["implementation"]: r for r in bench.summarize(config, "float32", found, peak)}
    slow = rows["slow"]
    assert slow["vs_floor"] == 2.0 and slow["vs_torch"] == 0.5 and slow["speedup_over_loop"] == 10.0
    assert slow["limit_s"] == pytest.approx(0.5) and slow["vs_limit"] == pytest.approx(4.0)   # median 2.0 / 0.5
    assert rows["gemm floor"]["vs_floor"] == 1.0 and rows["gemm floor"]["vs_limit"] == pytest.approx(2.0)
    line = next(l for l in bench.table(list(rows.values())).splitlines() if l.startswith("| slow |"))
    assert "| 10.0x | 2.00x | 4.00x | 0.50x |" in line


def test_measure_divides_by_the_steps_of_a_call_and_keeps_the_ratio_the_right_way_round():
    """Real timing of sleeps: a 2x slower candidate shows ≈ 2x; one call of 4 steps in 10 ms is 2.5 ms a
    step (≈ 0.5x). Sleeps overshoot on a busy machine, hence the margins."""
    def sleeper(s):
        return lambda: time.sleep(s)
    found = [bench.Candidate("gemm floor", "floor", "numpy", sleeper(0.005)),
             bench.Candidate("slow", "fused", "numpy", sleeper(0.010)),
             bench.Candidate("four steps", "fused", "numpy", sleeper(0.010), steps=4)]
    rows = {r["implementation"]: r for r in bench.summarize(bench.CONFIGS[0], "float64",
                                                             bench.measure(found, 3, min_block_s=0.02))}
    assert 1.5 < rows["slow"]["vs_floor"] < 2.6
    assert 0.35 < rows["four steps"]["vs_floor"] < 0.7
    assert 0.0024 < rows["four steps"]["median_s"] < 0.004


# --- the physical limit ---------------------------------------------------------------------------------
def test_the_physical_limit_is_the_flops_at_the_rate():
    config = bench.CONFIGS[2]
    assert bench.physical_limit_s(config, 1e9) == bench.flops_per_step(config) / 1e9
    mini = bench.MINIBATCH_CONFIGS[1]                  # per step: the batch's FLOPs, not the epoch's
    assert bench.physical_limit_s(mini, 1e9) == bench.flops_per_step(mini._replace(m=256)) / 1e9


def test_the_peak_gemm_times_seconds_per_flop():
    peak = bench.peak_gemm("float32", n=64)
    bench.measure([peak], 3)
    assert peak.scale == 1 / (2 * 64 ** 3) and len(peak.times) == 3
    assert 1e7 < 1 / np.median(peak.times) < 1e14                   # FLOP/s


def test_a_machine_slowed_in_some_rounds_moves_the_limit_with_it():
    """Each round's ratio is over that round's limit: a step that takes twice as long in the rounds where
    the GEMM rate halves keeps its ratio; the limit reported is at the table's median rate."""
    config = bench.CONFIGS[2]
    flops = bench.flops_per_step(config)
    peak = fake("peak GEMM", "peak", [1e-11, 2e-11, 1e-11])        # 100, 50, 100 GFLOP/s
    step = fake("step", "fused", [3 * flops * 1e-11, 6 * flops * 1e-11, 4 * flops * 1e-11])   # 3x, 3x, 4x
    row = next(r for r in bench.summarize(config, "float32", [fake("gemm floor", "floor", [1, 1, 1]), step], peak)
               if r["implementation"] == "step")
    assert row["vs_limit"] == pytest.approx(3.0)       # not 4.0, its median time over the median round's limit
    assert row["limit_s"] == pytest.approx(flops * 1e-11) and row["machine_gflops"] == pytest.approx(100)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_physical_limit_is_below_the_gemm_floor(dtype):
    """mnist-256's GEMMs are smaller than the peak's square ones, so they cannot run faster; timing on a
    shared machine is noisy (with test workers on every core, a 2048³ product is the likelier to be slowed),
    hence the best rate and the best floor over up to five tries."""
    config = bench.CONFIGS[2]
    floor, peak = bench.gemm_floor(config, dtype), bench.peak_gemm(dtype)
    rate = 0.0
    for _ in range(5):
        bench.measure([peak], 3)
        rate = max(rate, 1 / min(peak.times))
        assert 1e8 < rate < 1e14
        bench.measure([floor], 3)
        if bench.physical_limit_s(config, rate) <= min(floor.times):
            break
    else:
        pytest.fail(f"physical limit {bench.physical_limit_s(config, rate)} s above the floor's {min(floor.times)} s")


def test_run_reports_the_limit_and_the_minibatch_section(tmp_path):
    moons = bench.MINIBATCH_CONFIGS[2]._replace(m=100)
    rows, info = bench.run([bench.CONFIGS[0]], ("float64",), rounds=1, loop_budget_s=0.001, progress=False,
                           minibatch=[moons], gemm_n=256, backends=["numpy"], others=False)
    step = [r for r in rows if r["section"] == "step"]
    mini = [r for r in rows if r["section"] == "minibatch"]
    assert {r["implementation"] for r in step} >= {"gemm floor", "fastdnn numpy"}
    assert {r["implementation"] for r in mini} == {"fastdnn numpy fit epoch", "fastdnn numpy fit epoch, X = data.T",
                                                   "fastdnn numpy full-batch step (B examples)"}
    for r in rows:
        config = moons if r["section"] == "minibatch" else bench.CONFIGS[0]
        assert r["limit_s"] == pytest.approx(bench.physical_limit_s(config, r["machine_gflops"] * 1e9))
        assert r["vs_limit"] == pytest.approx(r["median_s"] / r["limit_s"])     # one round: its own limit
    assert info["peak_gemm"]["float64"]["gflops"] == max(r["machine_gflops"] for r in rows)
    assert all(r["steps_per_epoch"] == 2 for r in mini if r["kind"] == "epoch")
    paths = bench.write_reports(rows, info, str(tmp_path), "fastdnn bench --test")
    md = open(paths["md"]).read()
    assert "vs physical limit" in md and "Mini-batch" in md and "moons-b64" in md


def test_the_activation_section_compares_each_hidden_activation_with_relu(tmp_path):
    planar = bench.ACTIVATION_CONFIGS[0]._replace(m=50)
    found = bench.activation_candidates(planar, "float64", ["numpy"], others=False)
    assert [c.hidden for c in found] == list(bench.HIDDEN_ACTIVATIONS)
    assert [c.net.activations[0].name for c in found] == list(bench.HIDDEN_ACTIVATIONS)
    for c, scale in zip(found, (1.0, 2.0, 3.0, 4.0)):      # made-up times: each activation a multiple of relu's
        c.times = [scale * 1e-5, scale * 2e-5]
    rows = bench.summarize_activations(planar, "float64", found)
    assert [r["vs_relu"] for r in rows] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert {r["section"] for r in rows} == {"activations"}
    md = bench.table(rows)
    assert "Hidden activations" in md and "| tanh |" in md and "3.00x" in md


def test_run_takes_the_minibatch_section_with_every_configuration_and_only_moons_when_quick(monkeypatch):
    monkeypatch.setattr(bench, "peak_gemm", lambda dtype, n: fake("peak GEMM", "peak", [1e-9]))
    for name in ("candidates", "minibatch_candidates"):
        monkeypatch.setattr(bench, name, lambda config, dtype, *rest: [config])
    monkeypatch.setattr(bench, "measure", lambda found, rounds: found)
    for name in ("summarize", "summarize_minibatch"):
        monkeypatch.setattr(bench, name, lambda config, dtype, found, peak: [dict(config=config.name, dtype=dtype)])
    monkeypatch.setattr(bench, "machine_info", dict)
    monkeypatch.setattr(bench, "activation_candidates", lambda config, dtype, *rest: [config])
    monkeypatch.setattr(bench, "summarize_activations",
                        lambda config, dtype, found: [dict(config="act " + config.name, dtype=dtype)])
    names = lambda configs, rounds: [r["config"] for r in  # noqa: E731
                                     bench.run(configs, ("float32",), rounds=rounds, progress=False)[0]]
    steps = [c.name for c in bench.CONFIGS]
    acts = ["act " + c.name for c in bench.ACTIVATION_CONFIGS]
    assert names(bench.CONFIGS, 15) == steps + [c.name for c in bench.MINIBATCH_CONFIGS] + acts
    assert names(bench.CONFIGS, 3) == steps + ["moons-b64"] + acts[:1]
    assert names(bench.CONFIGS[:2], 15) == steps[:2]


def test_each_table_records_the_machine_speed_and_a_slow_one_is_flagged(tmp_path, monkeypatch, capsys):
    """Each table records the GEMM rate timed in its rounds; a table timed while it read below 90% of the best
    table's says so (RESULTS.md title and header; ``fastdnn bench`` on stderr)."""
    speeds = iter([[1e-11, 1e-11], [2e-11, 2e-11]])     # s per FLOP: 100 GFLOP/s, then half that

    def measure(found, rounds):                          # the peak GEMM comes last
        for c in found[:-1]:
            c.times = [1e-3] * rounds
        found[-1].times = next(speeds)
        return found
    monkeypatch.setattr(bench, "measure", measure)
    moons = bench.MINIBATCH_CONFIGS[2]._replace(m=100, name="tiny")     # its name as the step table's
    rows, info = bench.run([bench.CONFIGS[0]], ("float64",), rounds=2, loop_budget_s=0.001, progress=False,
                           minibatch=[moons], gemm_n=64, backends=["numpy"], others=False)
    speed = lambda section: {round(r["machine_gflops"], 6) for r in rows if r["section"] == section}  # noqa: E731
    assert speed("step") == {100} and speed("minibatch") == {50}
    assert {round(r["machine_share"], 6) for r in rows} == {1.0, 0.5}
    assert info["peak_gemm"]["float64"]["gflops"] == pytest.approx(100)
    assert bench.slow_tables(rows) == ["tiny float64, minibatch (50%)"]
    md = open(bench.write_reports(rows, info, str(tmp_path), "fastdnn bench --test")["md"]).read()
    titles = [line for line in md.splitlines() if line.startswith("**")]
    assert [("50% of its best" in t) for t in titles] == [False, True]
    assert "here: tiny float64, minibatch (50%)." in md

    from fastdnn import cli
    monkeypatch.setattr(bench, "run", lambda *a, **k: (rows, info))
    assert cli.main(["bench", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "below 90% of its best" in err and "tiny float64, minibatch (50%)" in err
    monkeypatch.setattr(bench, "run", lambda *a, **k: ([dict(r, machine_share=0.95) for r in rows], info))
    assert cli.main(["bench", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
