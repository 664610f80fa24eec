"""Nothing lost, nothing silent: a failing call changes nothing, a diverging one goes back to its last
good step with everything that belongs to it, an interrupted one leaves a consistent network, and runs
repeat from the network's seed."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from fastdnn import Network, TrainingDivergedError, datasets
from fastdnn.schedules import InverseTimeDecay

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy reports overflows first


def state(net):
    """Everything a step changes: parameters, optimizer state and counters (host copies)."""
    return (net.parameters, [net.backend.to_numpy(s) for s in net.engine.states],
            (net.engine.t, net.iteration, net.epoch), net.optimizer, net.l2, net.keep_prob)


def assert_same_state(a, b):
    """The same parameters and optimizer state (to the last few bits: the numba backend compiles a
    lone step and a run of steps separately, and LLVM may contract a multiply-add differently), and
    exactly the same counters and settings."""
    (pa, sa, ca, oa, la, ka), (pb, sb, cb, ob, lb, kb) = a, b
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-12, atol=1e-15, err_msg=k)
    assert len(sa) == len(sb)
    for x, y in zip(sa, sb):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)
    assert (ca, oa, la, ka) == (cb, ob, lb, kb)


def moons(m=64):
    return datasets.moons(m=m, seed=0)


def test_a_last_step_that_makes_the_parameters_non_finite_is_caught(backend):
    X, Y = moons()
    X = X * 1e4                                                # |dW| ~ 1e3
    net = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    before = state(net)
    with pytest.raises(TrainingDivergedError) as e:
        net.fit(X, Y, learning_rate=1e307, iterations=1)     # θ1 = θ0 - 1e307 dθ overflows
    assert e.value.iteration == 1 and e.value.restored_iteration == 0
    assert_same_state(state(net), before)
    assert all(np.isfinite(p).all() for p in net.parameters.values())
    with pytest.raises(TrainingDivergedError):
        net.step(X, Y, learning_rate=1e307)
    assert_same_state(state(net), before)


def test_the_first_step_of_a_call_diverging_leaves_the_network_as_it_was(backend):
    X, Y = moons()
    net = Network([2, 8, 1], device=backend, dtype="float32", seed=0)
    net.fit(X, Y, learning_rate=0.01, iterations=3, optimizer="adam")      # finite costs
    before = state(net)
    assert before[2][1] == 3
    X2 = X * 1e38                          # finite in float32, but Z overflows: the cost is not
    with pytest.raises(TrainingDivergedError) as e:
        net.fit(X2, Y, learning_rate=0.1, iterations=5, optimizer="adam")
    err = e.value
    assert err.iteration == 3 and err.restored_iteration is None and not np.isfinite(err.cost)
    assert "at iteration 3;" in str(err) and "unchanged" in str(err)
    assert_same_state(state(net), before)
    with pytest.raises(TrainingDivergedError) as e:
        net.step(X2, Y)
    assert e.value.restored_iteration is None
    assert_same_state(state(net), before)


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_divergence_restores_parameters_optimizer_state_and_counters_together(backend, optimizer):
    X, Y = moons()
    X = X * 1e3
    net = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    net.fit(X, Y, learning_rate=1e-6, iterations=4, optimizer=optimizer)       # a first call
    lr = {"gd": 50.0, "adam": 1e200}[optimizer]              # steps ~ α dθ / |dθ| for Adam
    with pytest.raises(TrainingDivergedError) as e:
        net.fit(X, Y, learning_rate=lr, iterations=1000, optimizer=optimizer)
    err = e.value
    assert err.iteration > 4, "counted over every call, like net.iteration"
    assert err.restored_iteration == err.iteration - 1 == net.iteration
    assert f"at iteration {err.iteration}" in str(err)
    twin = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    twin.fit(X, Y, learning_rate=1e-6, iterations=4, optimizer=optimizer)
    if err.restored_iteration > 4:
        twin.fit(X, Y, learning_rate=lr, iterations=err.restored_iteration - 4, optimizer=optimizer)
    assert_same_state(state(net), state(twin))
    assert len(err.history) >= 1 and net.history is err.history


def test_a_cost_that_overflows_while_every_output_is_finite_stops_at_its_step(backend):
    """The compiled loop computes the cost of the steps it does not report only when their outputs do not
    prove it finite (``_numba_kernels._output_delta``). Here gradient descent on a linear model grows the
    outputs ~10x a step; at the step where the float64 squared error first overflows every output is still
    finite (~1e154), and every backend stops at that very step."""
    X, Y = moons()
    net = Network([2, 1], "relu", "linear", device=backend, dtype="float64", seed=0)
    with pytest.raises(TrainingDivergedError) as e:
        net.fit(X, Y, learning_rate=7.0, iterations=1000, report_every=1000, verbose=0)
    j = e.value.iteration
    assert e.value.restored_iteration == j - 1 == net.iteration and e.value.cost == np.inf
    W, b = net.parameters["W1"], net.parameters["b1"]          # iteration j - 1's
    assert np.isfinite(0.5 * ((W @ X + b - Y) ** 2).sum())
    dZ = (W @ X + b - Y) / X.shape[1]                          # the oracle's step j
    Z = (W - 7.0 * dZ @ X.T) @ X + (b - 7.0 * dZ.sum())
    assert np.isfinite(Z).all() and 0.5 * ((Z - Y) ** 2).sum() == np.inf


def test_a_nan_inside_relu_layers_reaches_the_cost_on_every_device(device):
    """ReLU passes NaN on, as max(Z, 0) does (its compiled and CUDA forms once made it 0: the cost stayed
    finite while NaN spread into the parameters, and a fit kept them). float32: Z1 = 1e30 · 1e10 overflows,
    Z2 = 0 · inf is NaN, so the output is NaN on every device, and a fit, full batch or mini-batch, stops at
    its first step with the network unchanged."""
    name, _ = device
    params = {"W1": [[1e30]], "b1": [[0.0]], "W2": [[0.0]], "b2": [[0.0]], "W3": [[1.0]], "b3": [[0.0]]}
    X, Y = np.full((1, 8), 1e10), np.ones((1, 8))
    for kwargs in (dict(iterations=3), dict(epochs=2, batch_size=4, optimizer="adam")):
        net = Network.from_parameters({k: np.array(v) for k, v in params.items()}, device=name, dtype="float32")
        assert np.isnan(net.backend.to_numpy(net.forward(X))).all()
        before = state(net)
        with pytest.raises(TrainingDivergedError) as e:
            net.fit(X, Y, learning_rate=0.1, verbose=0, **kwargs)
        assert e.value.iteration == 0 and e.value.restored_iteration is None
        assert_same_state(state(net), before)


def test_a_relu_network_diverging_keeps_finite_parameters_where_numpy_does(backend):
    """A deep ReLU network at a learning rate far too large: the hidden values overflow within a few steps,
    and every backend stops where the numpy one does, keeping the same finite parameters (the case of a
    user's report: the compiled ReLU had turned NaN into 0 and trained on to the last step)."""
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((4, 64)) * 50, (rng.random((1, 64)) > 0.5).astype(float)
    ends = {}
    for name in ("numpy", backend.name):
        net = Network([4, 16, 16, 16, 1], device=name, dtype="float32", seed=3)
        with pytest.raises(TrainingDivergedError) as e:
            net.fit(X, Y, learning_rate=100.0, iterations=300, verbose=0)
        ends[name] = e.value.iteration, net.parameters
    (i0, p0), (i1, p1) = ends["numpy"], ends[backend.name]
    assert i1 == i0 < 10
    for k in p0:
        assert np.isfinite(p1[k]).all(), k
        np.testing.assert_allclose(p1[k], p0[k], rtol=1e-4, err_msg=k)


def test_mini_batch_divergence_counts_iterations_like_the_network(backend):
    X, Y = moons(256)
    net = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    net.fit(X * 1e3, Y, learning_rate=1e-6, iterations=3)
    with pytest.raises(TrainingDivergedError) as e:
        net.fit(X * 1e3, Y, learning_rate=50.0, epochs=100, batch_size=32)
    assert e.value.restored_iteration == e.value.iteration - 1 == net.iteration
    assert net.epoch == e.value.epoch < 100


BAD_SETTINGS = [
    ("fit", dict(optimizer="adam", l2=-1.0)),
    ("fit", dict(optimizer="adam", learning_rate=-0.5)),
    ("fit", dict(optimizer="adam", keep_prob=1.5)),
    ("fit", dict(optimizer="momentum", iterations=0)),
    ("fit", dict(l2=0.3, keep_prob=0.5, batch_size=8)),
    ("fit", dict(optimizer="rmsprop", l2=0.3, validation_data=np.ones((2, 5)))),
    ("fit", dict(optimizer="adam", l2=0.2, patience=0)),
    ("fit", dict(optimizer="adam", schedule="sometimes")),
    ("fit", dict(optimizer="adam", seed="a")),
    ("fit", dict(optimizer="adam", X=np.ones((3, 64)))),
    ("step", dict(optimizer="adam", learning_rate=float("nan"))),
    ("step", dict(optimizer="adam", Y=np.full((1, 64), 2.0))),
    ("regularize", dict(l2=0.1, keep_prob=2.0)),
    ("regularize", dict(l2="abc")),
]


@pytest.mark.parametrize("call, kwargs", BAD_SETTINGS,
                         ids=[f"{c}-" + "-".join(k for k in kw) for c, kw in BAD_SETTINGS])
def test_a_call_that_raises_changes_nothing(backend, call, kwargs):
    X, Y = moons()
    net = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    net.fit(X, Y, learning_rate=0.01, iterations=3, optimizer="momentum", l2=0.0)     # some state
    before = state(net)
    kwargs = dict(kwargs)
    X, Y = kwargs.pop("X", X), kwargs.pop("Y", Y)
    with pytest.raises((ValueError, TypeError)):
        if call == "fit":
            net.fit(X, Y, **{"iterations": 2, **kwargs})
        elif call == "step":
            net.step(X, Y, **kwargs)
        else:
            net.regularize(**kwargs)
    assert_same_state(state(net), before)


def test_a_schedule_that_gives_a_bad_rate_is_named(backend):
    X, Y = moons()
    net = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    with pytest.raises(ValueError, match=r"schedule .* gave learning rate -0.5 at iteration 0"):
        net.fit(X, Y, iterations=3, schedule=lambda lr0, t: -0.5)
    assert net.iteration == 0


@pytest.mark.parametrize("unit", ["iteration", "epoch"])
def test_a_schedule_continues_across_calls(backend, unit):
    X, Y = moons(96)
    kw = dict(schedule=InverseTimeDecay(time_interval=1), learning_rate=0.1, optimizer="adam", seed=3)
    count = (lambda n: dict(iterations=n)) if unit == "iteration" else (lambda n: dict(epochs=n, batch_size=32))
    one = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    whole = one.fit(X, Y, **count(7), **kw, report_every=1)
    two = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    first = two.fit(X, Y, **count(4), **kw, report_every=1)
    second = two.fit(X, Y, **count(3), **kw, report_every=1)
    assert first.learning_rates + second.learning_rates == whole.learning_rates
    assert_same_state(state(one), state(two))


def test_the_network_seed_makes_a_mini_batch_run_repeatable(backend):
    X, Y = moons(200)
    runs = []
    for _ in range(2):
        net = Network([2, 8, 1], device=backend, dtype="float64", seed=3, keep_prob=0.8)
        net.fit(X, Y, learning_rate=0.05, epochs=3, batch_size=32, optimizer="adam")
        runs.append(state(net))
    assert_same_state(*runs)
    assert Network([2, 3, 1], seed=None, device=backend).seed != Network([2, 3, 1], seed=None, device=backend).seed


@pytest.mark.parametrize("seed", ["a", 1.5, -1, 2**32, True, None])
def test_a_bad_seed_is_named(seed):
    if seed is None:
        assert isinstance(Network([2, 3, 1], device="numpy").seed, int)
        return
    with pytest.raises(ValueError, match="seed must be an integer in"):
        Network([2, 3, 1], device="numpy", seed=seed)


def test_an_update_interrupted_half_way_leaves_the_network_as_it_was(backend, monkeypatch):
    X, Y = moons()
    net = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    net.fit(X, Y, learning_rate=0.01, iterations=3, optimizer="adam")
    before = state(net)
    original = net.backend.update

    def interrupted(optimizer, theta, dtheta, states, lr, t, out, states_out):
        original(optimizer, theta, dtheta, states, lr, t, out, states_out)   # everything written ...
        raise KeyboardInterrupt                                               # ... but not committed
    monkeypatch.setattr(net.backend, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):           # a public step: the update runs from Python
        net.step(X, Y, learning_rate=0.01)
    assert_same_state(state(net), before)
    monkeypatch.undo()
    net.fit(X, Y, learning_rate=0.01, iterations=2, optimizer="adam")
    twin = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
    twin.fit(X, Y, learning_rate=0.01, iterations=5, optimizer="adam")
    assert_same_state(state(net), state(twin))


def test_an_interrupt_during_a_compiled_epoch_finds_it_complete_and_counted(monkeypatch):
    """A Ctrl-C that arrives while the whole epoch runs as one compiled call is raised as soon as the call
    returns: every step of the epoch is committed by then, and so is the epoch's count (the next epoch's
    order depends on it), so the network is the one after that epoch, like a twin's that was not interrupted."""
    pytest.importorskip("numba")
    from fastdnn.backends import numba_backend
    compilable, armed = numba_backend._compilable, []

    def interrupted_after(kernel, arguments):
        call = compilable(kernel, arguments)

        def wrapper(*args):
            out = call(*args)
            if armed:
                armed.clear()
                raise KeyboardInterrupt          # the pending signal, at the first bytecode after the call
            return out
        wrapper.__dict__.update(call.__dict__)
        return wrapper
    monkeypatch.setattr(numba_backend, "_compilable", interrupted_after)
    X, Y = moons(96)
    fit = dict(learning_rate=0.01, optimizer="adam", batch_size=16)
    net = Network([2, 8, 1], device="numba", dtype="float64", seed=0)
    net.fit(X, Y, epochs=1, **fit)
    armed.append(True)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=3, **fit)
    assert (net.epoch, net.iteration) == (2, 12)
    twin = Network([2, 8, 1], device="numba", dtype="float64", seed=0)
    twin.fit(X, Y, epochs=2, **fit)
    assert_same_state(state(net), state(twin))


def test_a_ctrl_c_between_two_distant_reports_stops_the_fit_at_once(backend):
    """Reports 10⁶ steps apart (one at the start, one at the end): the quiet steps between run in calls of
    ~0.1 s (training.QUIET_CALL_S), so a SIGINT stops the fit within a moment, not at the next report
    (~10 s away on numba: before, all of them were one compiled call), and the network is a whole step of the run."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    X, Y = moons()
    fit = dict(learning_rate=1e-4, verbose=0)
    net = Network([2, 64, 64, 1], device=backend, dtype="float64", seed=0)
    net.fit(X, Y, iterations=2, **fit)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            net.fit(X, Y, iterations=10**6, report_every=10**6, **fit)
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 3
    twin = Network([2, 64, 64, 1], device=backend, dtype="float64", seed=0)
    twin.fit(X, Y, iterations=2, **fit)
    twin.fit(X, Y, iterations=net.iteration - 2, report_every=10**9, **fit)
    assert_same_state(state(net), state(twin))


@pytest.mark.parametrize("batch_size", [None, 16])
def test_real_interrupts_at_random_moments_leave_a_consistent_network(backend, batch_size):
    """SIGINT at random moments of a fit: the network is always some whole step of the run, with its
    optimizer state and counters, and the History recorded so far is on the network."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    X, Y = moons(96)
    fit = dict(learning_rate=0.01, optimizer="adam", report_every=1)
    fit.update(dict(iterations=10**6) if batch_size is None else dict(epochs=10**5, batch_size=batch_size))
    rng = np.random.RandomState(0)
    for trial in range(6):
        net = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
        net.fit(X, Y, **{**fit, **(dict(iterations=1) if batch_size is None else dict(epochs=1))})  # compile
        timer = threading.Timer(rng.uniform(0.05, 0.3), os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                net.fit(X, Y, **fit)
                time.sleep(5)
        finally:
            timer.cancel()
        assert len(net.history) >= 1
        twin = Network([2, 8, 1], device=backend, dtype="float64", seed=0)
        steps = net.iteration
        if batch_size is None:
            twin.fit(X, Y, **{**fit, "iterations": steps})
        else:       # whole epochs, then the steps of the interrupted epoch through the public step
            twin.fit(X, Y, **{**fit, "epochs": net.epoch})
            assert 0 <= steps - twin.iteration < 96 // batch_size + 1
            assert steps == twin.iteration or net.epoch == twin.epoch
            if steps != twin.iteration:
                continue        # mid-epoch: counters consistent; the partial epoch is replayed on resume
        assert_same_state(state(net), state(twin))


BAD_ARGUMENTS = [
    ("softmax with one unit", lambda: Network([2, 3, 1], "relu", "softmax", device="numpy"), "at least 2 units"),
    ("booleans as layer_dims", lambda: Network([True, True], device="numpy"), "layer_dims"),
    ("a string as layer_dims", lambda: Network("23", device="numpy"), "layer_dims"),
    ("iterations=inf", lambda: Network([2, 3, 1], device="numpy").fit(*moons(), iterations=float("inf")),
     "iterations must be an integer"),
    ("epochs='3'", lambda: Network([2, 3, 1], device="numpy").fit(*moons(), epochs="3"), "epochs must be"),
    ("learning_rate='abc'", lambda: Network([2, 3, 1], device="numpy").fit(*moons(), learning_rate="abc"),
     "learning_rate must be a number"),
    ("validation_data=X", lambda: Network([2, 3, 1], device="numpy").fit(*moons(), validation_data=moons()[0]),
     "validation_data must be a pair"),
    ("validation X of the wrong shape", lambda: Network([2, 3, 1], device="numpy").fit(
        *moons(), validation_data=(moons()[0][:1], moons()[1])), r"^validation_data: layer 1 of 2 \(relu\): X has shape \(1, 64\)"),
    ("keep_prob without hidden layers", lambda: Network([2, 1], device="numpy", keep_prob=0.5), "no hidden layer"),
    ("float64 X beyond float32", lambda: Network([2, 3, 1], device="numpy").cost(moons()[0] * 1e39, moons()[1]),
     "beyond the range of float32"),
    ("a one-hot column of zeros", lambda: Network([2, 3, 2], "relu", "softmax", device="numpy").cost(
        moons()[0], np.zeros((2, 64))), "column 0 sums to 0"),
]


@pytest.mark.parametrize("what, call, message", BAD_ARGUMENTS, ids=[b[0] for b in BAD_ARGUMENTS])
def test_bad_arguments_are_named(what, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_checking_X_allocates_no_X_sized_temporary(backend):
    import tracemalloc
    X, Y = np.random.RandomState(0).rand(200, 4096), (np.arange(4096) % 2).reshape(1, -1)
    net = Network([200, 4, 1], device=backend, dtype="float64", seed=0)
    Xd, Yd = net.prepare(X, Y)
    net.step(Xd, Yd)
    tracemalloc.start()
    net.step(Xd, Yd)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < X.nbytes / 8, peak        # an X-sized bool temporary alone would be X.nbytes / 8


def test_mini_batches_of_example_major_data_copy_nothing_X_sized(backend):
    """X = data.T for example-major data (m, n0), as the course's loading code makes it, is already one
    example per row: an epoch gathers its batches from it with no copy of X; a C-ordered X is copied once
    per call (which this peak sees)."""
    import tracemalloc
    data, Y = np.random.RandomState(0).rand(4096, 200), (np.arange(4096) % 2).reshape(1, -1)
    peaks = {}
    for layout, X in (("data.T", data.T), ("C-ordered", np.ascontiguousarray(data.T))):
        net = Network([200, 4, 1], device=backend, dtype="float64", seed=0)
        net.fit(X, Y, epochs=1, batch_size=256, verbose=0)
        tracemalloc.start()
        net.fit(X, Y, epochs=1, batch_size=256, verbose=0)
        peaks[layout] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["data.T"] < data.nbytes / 8 <= data.nbytes <= peaks["C-ordered"], peaks


LAYOUTS = {
    "reversed rows": lambda X: X[::-1],
    "reversed columns": lambda X: X[:, ::-1],
    "broadcast rows": lambda X: np.broadcast_to(X[:1], X.shape),
    "overlapping rows": lambda X: np.lib.stride_tricks.sliding_window_view(X.ravel(), X.shape[1])[:X.shape[0]],
    "column slice": lambda X: np.ascontiguousarray(np.hstack([X, X]))[:, ::2],
    "Fortran order": lambda X: np.asfortranarray(X),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_any_layout_numpy_accepts_trains_as_on_the_numpy_backend(backend, layout):
    """Strides BLAS cannot take (negative, zero, overlapping) are copied first: the compiled step once
    passed them on and trained on uninitialised memory."""
    X, Y = moons()
    X = np.vstack([X, X[:1] * 2])                       # 3 features, so row tricks differ from columns
    Xl = LAYOUTS[layout](X)
    nets = [Network([3, 6, 1], device=b, dtype="float64", seed=0) for b in (backend, "numpy")]
    costs = [n.fit(Xl, Y, learning_rate=0.1, iterations=5, report_every=1).costs for n in nets]
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-10)
    np.testing.assert_allclose(nets[0].forward(Xl), nets[1].forward(np.ascontiguousarray(Xl)), rtol=1e-10)
