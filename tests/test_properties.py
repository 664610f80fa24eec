"""Property-based tests (hypothesis): random arguments, array layouts and dtypes thrown at Network,
fit, predict, step, cost and save/load on both CPU backends. Every call either raises a clear error
(FastDNNError, ValueError or TypeError) and leaves the network exactly as it was (parameters,
optimizer state, counters: ``state_dict()``), or gives what the numpy backend gives for a plain
C-ordered copy of the same data."""
import math
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (the dev extra)")
from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

import fastdnn  # noqa: E402
from fastdnn import Network  # noqa: E402
from fastdnn.errors import FastDNNError, TrainingDivergedError  # noqa: E402

from support import NUMBA_PATHS  # noqa: E402
from support import BACKENDS  # noqa: E402

CLEAR = (FastDNNError, ValueError, TypeError)
RTOL = {"float32": 2e-4, "float64": 1e-9}
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- arguments: mostly valid, some wrong in one way --------------------------------------------------
BAD_NUMBERS = [0, -1, 1.5, math.nan, math.inf, "3", None, True, [2], 10**30]
bad_number = st.sampled_from(BAD_NUMBERS)


def maybe(valid, bad, odds=3):
    """valid most of the time (about odds to 1), else something from bad. (st.one_of would pick the
    bad branch about half of the time.)"""
    return st.integers(0, 97).flatmap(lambda i: bad if i % (odds + 1) == 2 else valid)


layer_dims = maybe(st.lists(st.integers(1, 4), min_size=2, max_size=4),
                   st.one_of(st.lists(st.sampled_from([0, -2, 2.5, "3", True, None]), min_size=1, max_size=3),
                             st.sampled_from([[], [3], "2,3,1", 5, None, [[2, 3]]])))
hidden = maybe(st.sampled_from(["relu", "tanh", "sigmoid", "leaky_relu", "linear"]),
               st.sampled_from(["rleu", "softmax", 3, None, ""]))
output = maybe(st.sampled_from(["sigmoid", "softmax", "linear", "tanh", None]), st.sampled_from(["swish", 1]))
dtypes = maybe(st.sampled_from(["float32", "float64", np.float32, np.dtype("float64")]),
               st.sampled_from(["float16", "int32", np.int64, "complex128", None, 3]))
keep = maybe(st.sampled_from([1.0, 0.8]), st.sampled_from([0.0, 1.5, -0.1, math.nan, "a", [0.5, 0.5, 0.5, 0.5]]))
l2 = maybe(st.sampled_from([0.0, 0.1]), st.sampled_from([-1.0, math.nan, math.inf, "a", None]))
seeds = maybe(st.integers(0, 2**32 - 1), st.sampled_from([-1, 2**32, 1.5, "a", True]))


@pytest.mark.parametrize("device", BACKENDS)
@SETTINGS
@given(dims=layer_dims, hidden=hidden, output=output, dtype=dtypes, keep_prob=keep, l2=l2, seed=seeds)
def test_network_arguments_build_or_raise_a_clear_error(device, dims, hidden, output, dtype, keep_prob, l2, seed):
    try:
        net = Network(dims, hidden_activation=hidden, output_activation=output, device=device, dtype=dtype,
                      keep_prob=keep_prob, l2=l2, seed=seed)
    except CLEAR:
        return
    assert net.layer_dims == list(dims) and net.backend.name == device
    assert all(np.isfinite(v).all() for v in net.parameters.values())
    assert net.dtype in (np.float32, np.float64)


# --- data: every layout and dtype NumPy can hand over -----------------------------------------------
def layout(X, how):
    """The values of X (n, m) as a differently laid out array (or list) holding the same numbers."""
    n, m = X.shape
    if how == "C":
        return np.ascontiguousarray(X)
    if how == "fortran":
        return np.asfortranarray(X)
    if how == "transposed view":
        return np.ascontiguousarray(X.T).T
    if how == "reversed rows":
        return np.ascontiguousarray(X[::-1])[::-1]
    if how == "reversed columns":
        return np.ascontiguousarray(X[:, ::-1])[:, ::-1]
    if how == "every other column":
        wide = np.zeros((n, 2 * m))
        wide[:, ::2] = X
        return wide[:, ::2]
    if how == "broadcast":
        return np.broadcast_to(X[:, :1], X.shape) if (X == X[:, :1]).all() else X
    if how == "list":
        return X.tolist()
    raise KeyError(how)


LAYOUTS = ["C", "fortran", "transposed view", "reversed rows", "reversed columns", "every other column",
           "broadcast", "list", "reversed rows", "every other column", "broadcast"]    # BLAS's hard cases twice


@st.composite
def data(draw, n0, nL, output):
    """(X, Y, description): mostly a valid pair in some layout and dtype, sometimes a broken one."""
    m = draw(st.integers(1, 9))
    kind = draw(st.sampled_from(["float64", "float32", "int64", "int8", "bool", "uint8"]))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    raw = rng.standard_normal((n0, m)) * 2
    X = raw.astype(kind) if kind != "bool" else raw > 0
    if draw(st.integers(0, 2)) == 1 and m > 1:
        X = np.repeat(X[:, :1], m, axis=1)            # columns alike: broadcastable
    how = draw(st.sampled_from(LAYOUTS))
    event(f"X {how}")
    X = layout(X, how)
    if output == "softmax":
        Y = np.eye(nL)[:, rng.integers(0, nL, m)]
    elif output in ("sigmoid", None):
        Y = (rng.random((nL, m)) > 0.5).astype(float)
    else:
        Y = rng.standard_normal((nL, m)) * 0.5
    Y = layout(Y, draw(st.sampled_from(LAYOUTS)))
    broken = draw(st.sampled_from([None] * 15 + ["X rows", "Y rows", "X 1-D", "X NaN", "Y NaN", "X strings",
                                                "X complex", "m = 0", "X 3-D", "X object"]))
    if broken == "X rows":
        X = np.zeros((n0 + 1, m))
    elif broken == "Y rows":
        Y = np.zeros((nL + 1, m))
    elif broken == "X 1-D":
        X = np.zeros(m * n0)
    elif broken == "X NaN":
        X = np.array(X, dtype=float)
        X[0, -1] = np.nan
    elif broken == "Y NaN":
        Y = np.array(Y, dtype=float)
        Y[-1, 0] = np.nan
    elif broken == "X strings":
        X = np.full((n0, m), "a")
    elif broken == "X complex":
        X = np.ones((n0, m), complex)
    elif broken == "m = 0":
        X, Y = np.zeros((n0, 0)), np.zeros((nL, 0))
    elif broken == "X 3-D":
        X = np.zeros((n0, m, 1))
    elif broken == "X object":
        X = np.array([[None] * m] * n0, dtype=object)
    return X, Y


def plain(A, dtype):
    """A C-ordered float copy of A in the network's dtype: what the reference network is given."""
    return np.array(A, dtype=dtype, order="C")


def snapshot(net):
    state = net.state_dict()
    return state["config"], {k: v.copy() for k, v in state.items() if k != "config"}


def assert_unchanged(net, before):
    config, arrays = snapshot(net)
    assert config == before[0]
    assert arrays.keys() == before[1].keys()
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[1][k], err_msg=k)


def assert_near(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * max(1.0, np.abs(b).max(initial=0)))


def call(net, what, X, Y, kwargs, tmp_path=None):
    """net.<what>(...) returning plain host data to compare."""
    if what == "predict":
        return net.predict(X)
    if what == "forward":
        return net.forward(X)
    if what == "cost":
        return net.cost(X, Y)
    if what == "gradients":
        return net.gradients(X, Y)
    if what == "step":
        return net.step(X, Y, **kwargs)
    if what == "fit":
        history = net.fit(X, Y, verbose=0, **kwargs)
        return [r.cost for r in history]
    raise KeyError(what)


def rarely(valid, bad):
    return maybe(valid, bad, odds=10)


STEP_KWARGS = st.fixed_dictionaries({}, optional={
    "learning_rate": rarely(st.sampled_from([0.01, 0.1]), st.sampled_from([-0.1, 0.0, math.nan, math.inf, "abc", [0.1]])),
    "optimizer": rarely(st.sampled_from(["gd", "adam", "momentum"]), st.sampled_from(["sgd", 3, ""])),
})
FIT_KWARGS = st.fixed_dictionaries({}, optional={
    "learning_rate": rarely(st.sampled_from([0.01, 0.1]), st.sampled_from([-0.1, math.nan, "abc"])),
    "iterations": rarely(st.integers(1, 3), bad_number),
    "optimizer": rarely(st.sampled_from(["gd", "adam", "rmsprop"]), st.sampled_from(["sgd", 3])),
    "l2": rarely(st.sampled_from([0.0, 0.05]), st.sampled_from([-1.0, "a", math.nan])),
    "keep_prob": rarely(st.sampled_from([1.0, 0.9]), st.sampled_from([0.0, 2.0, "x"])),
    "schedule": rarely(st.sampled_from([None, "inverse_time"]), st.sampled_from(["cosine", 3])),
    "report_every": rarely(st.just(1), st.sampled_from([0, -1, 1.5])),
    "seed": rarely(st.integers(0, 10), st.sampled_from([-1, "a", 1.5])),
})
MINIBATCH_KWARGS = st.fixed_dictionaries({"epochs": rarely(st.integers(1, 2), bad_number),
                                          "batch_size": rarely(st.integers(1, 4), bad_number)},
                                         optional={"shuffle": st.booleans(), "seed": st.integers(0, 5)})


@st.composite
def operation(draw):
    what = draw(st.sampled_from(["predict", "forward", "cost", "gradients"] + ["step", "fit"] * 3))
    if what == "step":
        return what, draw(STEP_KWARGS)
    if what == "fit":
        kwargs = draw(FIT_KWARGS)
        if "iterations" not in kwargs or draw(st.booleans()):
            kwargs.pop("iterations", None)
            kwargs.update(draw(MINIBATCH_KWARGS))
        return what, kwargs
    return what, {}


ARCHITECTURES = [([3, 4, 1], "relu", "sigmoid"), ([2, 3, 3], "tanh", "softmax"), ([4, 2], "relu", "linear"),
                 ([2, 5, 2, 1], "leaky_relu", "sigmoid")]


def twins(device, arch, dtype, trained):
    """The network on ``device`` and the same one on 'numpy', optionally after one Adam step (so the
    optimizer has state and the counters are not zero)."""
    dims, hidden, out = arch
    nets = [Network(dims, hidden_activation=hidden, output_activation=out, device=d, dtype=dtype, seed=5)
            for d in (device, "numpy")]
    if trained:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((dims[0], 6))
        Y = np.eye(dims[-1])[:, rng.integers(0, dims[-1], 6)] if out == "softmax" else \
            (rng.random((dims[-1], 6)) > 0.5).astype(float)
        for net in nets:
            net.step(X, Y, learning_rate=0.01, optimizer="adam")
    return nets


@pytest.mark.parametrize("device", BACKENDS)
@settings(SETTINGS, max_examples=40)
@given(arch=st.sampled_from(ARCHITECTURES), dtype=st.sampled_from(["float32", "float64"]), trained=st.booleans(),
       op=operation(), st_data=st.data(), numba_path=st.sampled_from(list(NUMBA_PATHS)))
def test_calls_give_the_numpy_result_or_a_clear_error_that_changes_nothing(device, arch, dtype, trained, op,
                                                                           st_data, numba_path):
    """(On 'numba', each of its three step paths: one compiled call with loop GEMMs, one through BLAS,
    op by op.)"""
    with pytest.MonkeyPatch.context() as patch:
        if device == "numba":
            import fastdnn.backends.numba_backend as nb
            patch.setattr(nb, "WHOLE_STEP_MAX_WORK", NUMBA_PATHS[numba_path][0])
            patch.setattr(nb, "BLAS_WHOLE_STEP", NUMBA_PATHS[numba_path][1])
        check_call(device, arch, dtype, trained, op, st_data)


def check_call(device, arch, dtype, trained, op, st_data):
    dims, _, out = arch
    X, Y = st_data.draw(data(dims[0], dims[-1], out))
    net, reference = twins(device, arch, dtype, trained)
    before = snapshot(net)
    what, kwargs = op
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            got = call(net, what, X, Y, kwargs)
        except TrainingDivergedError:
            event("diverged")
            assert all(np.isfinite(v).all() for v in net.parameters.values())
            return
        except CLEAR as exc:
            event(f"{what}: {type(exc).__name__}: {str(exc)[:70]}")
            assert str(exc)                       # a message, not a bare exception
            assert_unchanged(net, before)
            with pytest.raises(CLEAR):            # the reference refuses the same call
                call(reference, what, plain_or_same(X, dtype), plain_or_same(Y, dtype), kwargs)
            return
        try:
            expected = call(reference, what, plain(X, dtype), plain(Y, dtype), kwargs)
        except TrainingDivergedError:
            return
    event(f"{what}: result compared")
    compare(got, expected, dtype)
    for k, v in reference.parameters.items():
        assert_near(net.parameters[k], v, dtype)
    assert net.iteration == reference.iteration and net.epoch == reference.epoch


def plain_or_same(A, dtype):
    """A plain copy where A converts to the dtype, else A itself (it is broken on purpose)."""
    try:
        return plain(A, dtype) if np.asarray(A).dtype.kind in "biuf" else A
    except (TypeError, ValueError):
        return A


def compare(got, expected, dtype):
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for k in expected:
            assert_near(got[k], expected[k], dtype)
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        assert_near(got, expected, dtype)
    elif np.ndim(expected) and np.asarray(expected).dtype.kind == "i":
        np.testing.assert_array_equal(got, expected)
    else:
        assert_near(got, expected, dtype)


# --- save / load -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", BACKENDS)
@SETTINGS
@given(arch=st.sampled_from(ARCHITECTURES), dtype=st.sampled_from(["float32", "float64"]),
       cut=st.one_of(st.none(), st.floats(0.0, 0.999)), flip=st.one_of(st.none(), st.integers(0, 10**6)),
       to=st.sampled_from(BACKENDS + ["cpu", "nothing", 3]))
def test_save_load_round_trips_and_damage_is_a_model_file_error(tmp_path_factory, device, arch, dtype, cut, flip, to):
    net, _ = twins(device, arch, dtype, trained=True)
    path = str(tmp_path_factory.mktemp("files") / "net.npz")
    before = snapshot(net)
    net.save(path)
    assert_unchanged(net, before)
    data_ = open(path, "rb").read()
    if cut is not None or flip is not None:
        damaged = bytearray(data_[:int(len(data_) * cut)] if cut is not None else data_)
        if flip is not None and damaged:
            damaged[flip % len(damaged)] ^= 0xFF
        with open(path, "wb") as f:
            f.write(bytes(damaged))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = fastdnn.load(path, device=to)
    except CLEAR:
        assert cut is not None or flip is not None or to in ("nothing", 3)
        return
    # a flipped byte in compressed-free data can land in a value: then only the value differs
    config, arrays = snapshot(back)
    if cut is None and flip is None:
        assert config == before[0]
        for k, v in arrays.items():
            np.testing.assert_array_equal(v, before[1][k])
    assert all(np.isfinite(v).all() for v in arrays.values())
    assert back.layer_dims == net.layer_dims
