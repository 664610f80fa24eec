"""Batch normalization in the numba backend's compiled calls (issue 12, item 2; issue 15, items 1 and 3): the
whole step, the whole shuffled epoch and the loop of full-batch steps of a network with batch-normalized hidden
layers give what the per-op ``numpy`` path gives for the same seed (1e-10 in float64, close in float32): the
costs, every learned array and the running μ, σ²; a diverging step restores the network as there; an epoch
allocates nothing. The same for networks with both skip connections and batch norm (one compiled body for
all, issue 12): skips into normalized layers (ResNet's order, Z̃ = γ·Zn + β + S) and into plain ones, learned
Ws, padding, truncation and identity. Each test also checks that the compiled calls really ran (they are
counted)."""
import warnings

import numpy as np
import pytest

import fastdnn
from support import BACKENDS, PendingCompile, allocations, assert_close, epoch_growth

pytestmark = pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")

RNG = np.random.default_rng(21)
X = RNG.standard_normal((3, 13))          # 13 examples: batches of 5, 5 and a last partial one of 3
LABELS = {"sigmoid": (RNG.random((1, 13)) > 0.5).astype(np.float64), "softmax": np.arange(13) % 3,
          "linear": RNG.standard_normal((2, 13))}
WIDTH = {"sigmoid": 1, "softmax": 3, "linear": 2}
NORMALIZED = [True, False, True]          # layers 1 and 3 normalized, layer 2 not


def net_of(device, hidden, output, dtype="float64", **kw):
    return fastdnn.Network([3, 5, 4, 6, WIDTH[output]], hidden, output, device=device, dtype=dtype, seed=4,
                           batch_norm=kw.pop("batch_norm", NORMALIZED), **kw)


@pytest.fixture
def counts(monkeypatch):
    """How often the numba backend's compiled step, epoch and loop of a batch-normalized network ran:
    every such callable it makes is wrapped to count its calls."""
    from fastdnn.backends.numba_backend import NumbaBackend
    seen = {"step": 0, "epoch": 0, "loop": 0}
    for kind in seen:
        make = getattr(NumbaBackend, f"fused_{kind}")

        def counting_make(self, *args, _make=make, _kind=kind, **kw):
            call = _make(self, *args, **kw)
            if call is None or not kw.get("batch_norm"):
                return call

            def counted(*a):
                seen[_kind] += 1
                return call(*a)
            counted.updates = getattr(call, "updates", False)
            return counted
        monkeypatch.setattr(NumbaBackend, f"fused_{kind}", counting_make)
    return seen


def train(net, output, optimizer, learning_rate=0.05):
    """Costs of a full-batch fit (the compiled loop), a mini-batch fit (the compiled epoch, a last partial
    batch) and two single steps (the compiled whole step)."""
    Y = LABELS[output]
    full = net.fit(X, Y, iterations=7, optimizer=optimizer, learning_rate=learning_rate, report_every=3, verbose=0)
    mini = net.fit(X, Y, epochs=3, batch_size=5, optimizer=optimizer, learning_rate=learning_rate, seed=5,
                   verbose=0)
    steps = [net.step(X, Y, learning_rate=learning_rate) for _ in range(2)]
    return [r.cost for r in full] + [r.cost for r in mini] + steps


def assert_same_network(a, b, dtype):
    pa, pb = a.parameters, b.parameters
    assert pa.keys() == pb.keys() and {"running_mean1", "running_var3", "gamma3", "beta1"} <= pa.keys()
    for k, v in pb.items():
        assert_close(pa[k], v, dtype, scale=max(1.0, float(np.abs(v).max())))
    assert a.iteration == b.iteration and a.epoch == b.epoch


# every optimizer and every hidden activation, each once (each case compiles its own kernels: seconds)
# (not adagrad with linear hidden layers: there β1 and b2 have a zero gradient — a normalized layer 3 removes any
# shift — and adagrad turns their rounding noise into steps of α)
@pytest.mark.parametrize("optimizer, hidden, output", [
    ("momentum", "tanh", "softmax"), ("rmsprop", "sigmoid", "linear"),
    ("adam", "leaky_relu", "softmax"), ("adagrad", "relu", "sigmoid"), ("gd", "linear", "softmax")])
def test_fit_on_numba_equals_fit_on_numpy(optimizer, hidden, output, counts):
    nets = [net_of(d, hidden, output) for d in ("numba", "numpy")]
    costs = [train(net, output, optimizer) for net in nets]
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-10)
    assert_same_network(nets[0], nets[1], "float64")
    assert not np.allclose(nets[0].parameters["running_var3"], 1.0)        # the running statistics moved
    # the compiled calls ran: loops between the reports, one call per epoch, one per step
    assert counts["loop"] >= 2 and (counts["epoch"], counts["step"]) == (3, 2)
    assert nets[0].engine.reference_steps == 0


def test_float32_is_close_to_numpy(counts):
    nets = [net_of(d, "relu", "softmax", dtype="float32") for d in ("numba", "numpy")]
    costs = [train(net, "softmax", "adam", learning_rate=0.01) for net in nets]
    assert_close(costs[0], costs[1], "float32")
    assert_same_network(nets[0], nets[1], "float32")
    assert nets[0].parameters["W1"].dtype == np.float32
    assert counts["loop"] >= 2 and (counts["epoch"], counts["step"]) == (3, 2)


def test_every_hidden_layer_normalized_with_gemms_as_loops(counts, monkeypatch):
    """The compiled calls without BLAS (GEMMs as loops), every hidden layer normalized."""
    import fastdnn.backends.numba_backend as nb
    monkeypatch.setattr(nb, "BLAS_WHOLE_STEP", False)
    monkeypatch.setattr(nb, "WHOLE_STEP_MAX_WORK", 10**12)
    nets = [net_of(d, "tanh", "sigmoid", batch_norm=True) for d in ("numba", "numpy")]
    costs = [train(net, "sigmoid", "rmsprop") for net in nets]
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-10)
    assert_same_network(nets[0], nets[1], "float64")
    assert counts["loop"] >= 2 and (counts["epoch"], counts["step"]) == (3, 2)


@pytest.mark.parametrize("fit", [dict(iterations=40), dict(epochs=10, batch_size=5)], ids=["loop", "epoch"])
def test_a_diverging_step_restores_the_network_as_numpy_does(fit, counts):
    """A far too large learning rate: the cost becomes infinite mid-call (at step 6); the network goes back to
    the step before, running statistics included, as on the per-op path. (Not a rate that diverges only after
    tens of steps: that far, both paths' rounding has been amplified into other trajectories.)"""
    errors, nets = [], [net_of(d, "tanh", "linear") for d in ("numba", "numpy")]
    for net in nets:
        with pytest.raises(fastdnn.errors.TrainingDivergedError) as err, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            net.fit(X, LABELS["linear"], optimizer="momentum", learning_rate=1e30, seed=5, verbose=0, **fit)
        errors.append(err.value)
    a, b = errors
    assert (a.iteration, a.restored_iteration, a.cost) == (b.iteration, b.restored_iteration, b.cost)
    assert a.restored_iteration is not None and a.iteration > 5 and not np.isfinite(a.cost)
    assert_same_network(nets[0], nets[1], "float64")
    assert counts["epoch" if "epochs" in fit else "loop"] >= 1


@pytest.mark.parametrize("fit", [dict(iterations=3), dict(epochs=2, batch_size=5)], ids=["loop", "epoch"])
def test_a_diverging_first_step_changes_nothing(fit, counts):
    """The call's first cost is infinite (W4 overflows the output): nothing changes, the running statistics
    included."""
    params = net_of("numpy", "relu", "sigmoid").parameters
    params["W4"] = np.full_like(params["W4"], 1e308)
    net = fastdnn.Network.from_parameters(params, "relu", "sigmoid", device="numba")
    before = net.parameters
    with pytest.raises(fastdnn.errors.TrainingDivergedError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        net.fit(X, LABELS["sigmoid"], learning_rate=0.1, verbose=0, **fit)
    assert err.value.restored_iteration is None and net.iteration == 0
    for k, v in before.items():
        np.testing.assert_array_equal(net.parameters[k], v, err_msg=k)
    assert counts["epoch" if "epochs" in fit else "loop"] == 1


@pytest.mark.parametrize("fit, checks", [(dict(iterations=12, report_every=6), 4), (dict(epochs=4, batch_size=5), 2)],
                         ids=["loop", "epoch"])
def test_a_call_goes_on_from_numpy_steps_to_the_compiled_call(fit, checks, counts, monkeypatch):
    """While the compiled loop or epoch compiles in the background (see engine.BACKGROUND_COMPILE), the steps
    run on NumPy on the same θ; the compiled call then takes over mid-call, running statistics included."""
    import fastdnn.engine as engine_module
    from fastdnn.backends.numba_backend import NumbaBackend
    monkeypatch.setattr(engine_module, "BACKGROUND_COMPILE", True)
    kind = "epoch" if "epochs" in fit else "loop"
    make = getattr(NumbaBackend, f"fused_{kind}")

    def made(self, *args, **kw):
        call = make(self, *args, **kw)
        call.ready, call.job = False, PendingCompile(checks)
        return call
    monkeypatch.setattr(NumbaBackend, f"fused_{kind}", made)
    nets = [net_of(d, "tanh", "sigmoid") for d in ("numba", "numpy")]
    histories = [net.fit(X, LABELS["sigmoid"], optimizer="adam", learning_rate=0.05, seed=5, verbose=0, **fit)
                 for net in nets]
    np.testing.assert_allclose(histories[0].costs, histories[1].costs, rtol=1e-10)
    assert_same_network(nets[0], nets[1], "float64")
    assert 0 < nets[0].engine.reference_steps < nets[0].iteration
    assert counts[kind] >= 1


@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_a_compiled_batch_norm_epoch_allocates_nothing(optimizer, counts):
    """A whole shuffled epoch (64 steps) of a batch-normalized network as one compiled call allocates nothing
    once its buffers exist (tracemalloc over the whole epoch)."""
    rng = np.random.RandomState(0)
    X_, Y_ = rng.rand(64, 4096), rng.randint(0, 10, 4096)
    net = fastdnn.Network([64, 32, 16, 10], "relu", "softmax", device="numba", dtype="float32", seed=0,
                          batch_norm=[True, False])
    net.fit(X_, Y_, epochs=1, batch_size=64, optimizer=optimizer, learning_rate=1e-3, verbose=0)
    assert epoch_growth(net, X_, Y_) < 64 * 1024
    assert counts["epoch"] == 3 and net.iteration == 3 * 64


def test_a_compiled_step_allocates_nothing_after_the_first(counts):
    rng = np.random.RandomState(1)
    net = fastdnn.Network([30, 64, 32, 10], "relu", "softmax", device="numba", dtype="float32", seed=0,
                          batch_norm=True)
    Xd, Yd = net.prepare(rng.randn(30, 300), rng.randint(0, 10, 300))
    net.engine.train_step(Xd, Yd, 0.01, check=True)            # first step: workspace, JIT
    grown, peak = allocations(lambda: [net.engine.train_step(Xd, Yd, 0.01, check=True) for _ in range(10)])
    assert grown < 64 * 1024
    assert peak < 32 * 300 * 4             # not even a temporary hidden-layer array
    assert counts["step"] == 11


@pytest.mark.parametrize("kw", [dict(l2=0.1), dict(keep_prob=[0.9, 1.0, 1.0]),
                                dict(l2=0.1, skip=[(1, 3)])], ids=["l2", "dropout", "l2-with-skip"])
def test_networks_the_compiled_calls_decline_train_op_by_op_as_numpy(kw, counts):
    """L2 and dropout (Python between the ops) decline as for plain networks, skips or not: they train op by
    op, and still as on numpy."""
    nets = [net_of(d, "relu", "sigmoid", **kw) for d in ("numba", "numpy")]
    assert nets[0].engine._compiled("loop", 13) is None and nets[0].engine._compiled("epoch", 5) is None
    assert nets[0].engine.workspace(13).fused is None
    costs = [train(net, "sigmoid", "adam") for net in nets]
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-10)
    assert_same_network(nets[0], nets[1], "float64")
    assert counts == {"loop": 0, "epoch": 0, "step": 0}


def test_data_parallel_steps_of_a_normalized_network_get_no_compiled_calls():
    """Data-parallel batch norm needs the batch's μ, σ² all-reduced inside the forward: no compiled step,
    epoch or loop then (a plain network keeps its fused step without the update)."""
    for batch_norm, fused in ((NORMALIZED, False), (False, True)):
        engine = net_of("numba", "relu", "sigmoid", batch_norm=batch_norm).engine
        engine.set_parallel(object())          # what the engine sees of a distributed.DataParallel here
        assert engine._compiled("loop", 13) is None and engine._compiled("epoch", 5) is None
        assert (engine.workspace(13).fused is not None) == fused


def test_a_plain_network_gets_its_compiled_calls_without_batch_norm(monkeypatch):
    """A network without batch norm asks the backend exactly as before (no ``batch_norm`` argument: its
    kernels and their cache keys unchanged)."""
    from fastdnn.backends.numba_backend import NumbaBackend
    asked = []
    for kind in ("step", "epoch", "loop"):
        make = getattr(NumbaBackend, f"fused_{kind}")
        monkeypatch.setattr(NumbaBackend, f"fused_{kind}",
                            lambda self, *a, _make=make, **kw: asked.append(sorted(kw)) or _make(self, *a, **kw))
    net = fastdnn.Network([3, 5, 4, 1], "relu", "sigmoid", device="numba", seed=1)
    assert net.engine._compiled("loop", 13) is not None and net.engine.workspace(13).fused is not None
    assert asked == [[], []]


# --- residual + normalized networks (skips and batch norm in the same compiled calls) -------------------------
# [3, 5, 4, 6, out], layers 1 and 3 normalized: a[1] -> z[3] goes into a normalized layer (5 -> 6: Ws or zero
# padding), x -> z[2] into a plain hidden one (3 -> 4), a[2] -> z[4] into the output layer (4 -> 1, 3 or 2: Ws
# or truncation); a[1] -> z[3] and a[1] -> z[4]: two skip gradients into dA[1], the first from the output
# layer, the second from the normalized layer's dZ̃.
RESIDUAL = [
    ("adam", "tanh", "sigmoid", dict(skip=[(1, 3), (0, 2), (2, 4)], projection="learned")),
    ("momentum", "relu", "softmax", dict(skip=[(1, 3), (0, 2), (2, 4)], projection="pad")),
    ("rmsprop", "leaky_relu", "linear", dict(skip=[(1, 3), (1, 4)], projection="pad")),
    ("gd", "sigmoid", "sigmoid", dict(skip=[(0, 3), (1, 4)], projection="learned")),
]


@pytest.mark.parametrize("optimizer, hidden, output, kw", RESIDUAL,
                         ids=["learned", "pad", "two-into-one-source", "from-x-into-normalized"])
def test_residual_normalized_fit_on_numba_equals_fit_on_numpy(optimizer, hidden, output, kw, counts):
    nets = [net_of(d, hidden, output, **kw) for d in ("numba", "numpy")]
    assert nets[0].engine._compiled("loop", 13) is not None and nets[0].engine.workspace(13).fused is not None
    costs = [train(net, output, optimizer) for net in nets]
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-10)
    assert_same_network(nets[0], nets[1], "float64")
    if kw["projection"] == "learned":
        assert "Ws1_3" in nets[0].parameters or "Ws0_3" in nets[0].parameters
    assert counts["loop"] >= 2 and (counts["epoch"], counts["step"]) == (3, 2)
    assert nets[0].engine.reference_steps == 0


@pytest.mark.parametrize("dims, batch_norm, skip", [
    ([3, 6, 5, 4, 2], [True, False, True], [(1, 3), (0, 2)]),        # truncation 6 -> 4 into a normalized layer
    ([3, 5, 4, 5, 2], True, [(1, 3), (2, 4)]),                        # identity 5 -> 5, every hidden layer normalized
], ids=["truncation", "identity"])
def test_skips_that_truncate_or_keep_widths_into_normalized_layers(dims, batch_norm, skip, counts, monkeypatch):
    """Also with GEMMs as loops (no BLAS from the compiled code) for the first."""
    import fastdnn.backends.numba_backend as nb
    if dims[1] == 6:
        monkeypatch.setattr(nb, "BLAS_WHOLE_STEP", False)
        monkeypatch.setattr(nb, "WHOLE_STEP_MAX_WORK", 10**12)
    nets = [fastdnn.Network(dims, "tanh", "linear", device=d, dtype="float64", seed=4, batch_norm=batch_norm,
                            skip=skip, projection="pad") for d in ("numba", "numpy")]
    costs = [train(net, "linear", "adam") for net in nets]
    np.testing.assert_allclose(costs[0], costs[1], rtol=1e-10)
    for k, v in nets[1].parameters.items():
        assert_close(nets[0].parameters[k], v, "float64", scale=max(1.0, float(np.abs(v).max())))
    assert counts["loop"] >= 2 and (counts["epoch"], counts["step"]) == (3, 2)


def test_residual_normalized_float32_is_close_to_numpy(counts):
    kw = dict(skip=[(1, 3), (0, 2), (2, 4)], projection="learned")
    nets = [net_of(d, "relu", "softmax", dtype="float32", **kw) for d in ("numba", "numpy")]
    costs = [train(net, "softmax", "adam", learning_rate=0.01) for net in nets]
    assert_close(costs[0], costs[1], "float32")
    assert_same_network(nets[0], nets[1], "float32")
    assert nets[0].parameters["Ws1_3"].dtype == np.float32
    assert counts["loop"] >= 2 and (counts["epoch"], counts["step"]) == (3, 2)


@pytest.mark.parametrize("projection", ["learned", "pad"])
def test_a_compiled_residual_normalized_epoch_allocates_nothing(projection, counts):
    """As ``test_a_compiled_batch_norm_epoch_allocates_nothing``, with skips into a normalized layer (32 -> 24)
    and into the output layer (64 -> 10)."""
    rng = np.random.RandomState(0)
    X_, Y_ = rng.rand(64, 4096), rng.randint(0, 10, 4096)
    net = fastdnn.Network([64, 32, 16, 24, 10], "relu", "softmax", device="numba", dtype="float32", seed=0,
                          batch_norm=[False, True, True], skip=[(1, 3), (0, 4)], projection=projection)
    net.fit(X_, Y_, epochs=1, batch_size=64, optimizer="adam", learning_rate=1e-3, verbose=0)
    assert epoch_growth(net, X_, Y_) < 64 * 1024
    assert counts["epoch"] == 3 and net.iteration == 3 * 64
