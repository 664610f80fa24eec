"""Network against the oracle, gradient checks, seeds, dtypes and the public API."""
import numpy as np
import pytest

import fastdnn
from fastdnn import Network, datasets, gradient_check

import oracle
from support import ACTIVATIONS, BACKENDS, DTYPES, OUTPUTS, assert_close, rounded

DEPTHS = [1, 2, 3, 4]
HIDDEN = [5, 4, 3]


def problem(n_out, loss, m=7, n_x=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n_x, m)
    if loss == "bce":
        Y = rng.randint(0, 2, (n_out, m)).astype(float)
    elif loss == "ce":
        Y = np.eye(n_out)[rng.randint(0, n_out, m)].T
    else:
        Y = rng.randn(n_out, m)
    return X, Y


def net_for(depth, hidden, output, loss, backend="numpy", dtype="float64", seed=1, n_x=3):
    n_out = 3 if output == "softmax" else 2 if loss == "mse" else 1
    dims = [n_x] + HIDDEN[:depth - 1] + [n_out]
    params = Network(dims, init="xavier", device="numpy", dtype="float64", seed=seed).parameters
    rng = np.random.RandomState(seed)
    for l in range(1, len(dims)):    # non-zero biases: no Z lands exactly on relu's kink at 0
        params[f"b{l}"] = 0.1 * rng.randn(dims[l], 1)
    return Network(dims, hidden, output, loss, init=params, device=backend, dtype=dtype)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("output,loss", OUTPUTS, ids=["-".join(o) for o in OUTPUTS])
@pytest.mark.parametrize("hidden", ACTIVATIONS)
@pytest.mark.parametrize("name", BACKENDS)
def test_gradient_check_passes_in_float64(name, hidden, output, loss, depth):
    net = net_for(depth, hidden, output, loss, backend=name)
    X, Y = problem(net.layer_dims[-1], loss)
    assert gradient_check(net, X, Y) < 1e-7


@pytest.mark.parametrize("name", BACKENDS)
def test_gradient_check_catches_a_wrong_gradient(name, monkeypatch):
    net = net_for(2, "tanh", "sigmoid", "bce", backend=name)
    X, Y = problem(1, "bce")
    original = net.gradients
    monkeypatch.setattr(net, "gradients", lambda X, Y: {k: v * (1.01 if k == "dW1" else 1)
                                                        for k, v in original(X, Y).items()})
    assert gradient_check(net, X, Y) > 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,loss", OUTPUTS, ids=["-".join(o) for o in OUTPUTS])
@pytest.mark.parametrize("hidden", ACTIVATIONS)
def test_network_matches_oracle(backend, dtype, hidden, output, loss):
    net = net_for(3, hidden, output, loss, backend=backend, dtype=dtype)
    X, Y = problem(net.layer_dims[-1], loss, m=11)
    X = rounded(X, dtype)
    params = {k: v.astype(np.float64) for k, v in net.parameters.items()}
    acts = [hidden, hidden, output]
    assert_close(net.forward(X), oracle.forward(params, X, acts)[1][-1], dtype)
    assert_close(net.cost(X, Y), oracle.network_cost(params, X, Y, acts, loss), dtype)
    grads = net.gradients(X, Y)
    for key, expected in oracle.network_gradients(params, X, Y, acts, loss).items():
        assert grads[key].dtype == np.dtype(dtype)
        assert_close(grads[key], expected, dtype)
    cost = net.step(X, Y, 0.1)
    assert_close(cost, oracle.network_cost(params, X, Y, acts, loss), dtype)
    for key, value in net.parameters.items():
        assert_close(value, params[key] - 0.1 * grads["d" + key], dtype)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("init", ["he", "xavier", "scaled", "small", "large", "zeros"])
def test_seed_gives_the_same_parameters_on_every_backend_and_dtype(name, init):
    a = Network([4, 3, 2, 1], init=init, device=name, dtype="float64", seed=7).parameters
    b = Network([4, 3, 2, 1], init=init, device="numpy", dtype="float32", seed=7).parameters
    c = Network([4, 3, 2, 1], init=init, device=name, dtype="float64", seed=8).parameters
    for key in a:
        np.testing.assert_array_equal(a[key].astype(np.float32), b[key])
    assert init == "zeros" or not np.array_equal(a["W1"], c["W1"])


def test_initializer_scales():
    rng = np.random.RandomState(3)
    draws = rng.randn(4, 5)
    W = {k: Network([5, 4, 1], init=k, device="numpy", dtype="float64", seed=3).parameters["W1"]
         for k in ("he", "xavier", "scaled", "small", "large")}
    np.testing.assert_allclose(W["he"], draws * np.sqrt(2 / 5))
    np.testing.assert_allclose(W["xavier"], draws * np.sqrt(2 / 9))
    np.testing.assert_allclose(W["scaled"], draws / np.sqrt(5))
    np.testing.assert_allclose(W["small"], draws * 0.01)
    np.testing.assert_allclose(W["large"], draws * 10)
    with pytest.raises(ValueError, match="unknown init 'glorot'"):
        Network([5, 4, 1], init="glorot")


def test_unseeded_networks_differ():
    assert not np.array_equal(Network([3, 4, 1]).parameters["W1"], Network([3, 4, 1]).parameters["W1"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_is_kept_everywhere(backend, dtype):
    X, Y = datasets.moons(m=50)
    net = Network([2, 6, 1], "tanh", device=backend, dtype=dtype, seed=0)
    net.fit(X, Y, learning_rate=0.5, iterations=3)
    assert net.predict_proba(X).dtype == np.dtype(dtype)
    assert all(v.dtype == np.dtype(dtype) for v in net.parameters.values())
    assert all(v.dtype == np.dtype(dtype) for v in net.gradients(X, Y).values())
    net64 = Network.from_parameters({k: v.astype(np.float64) for k, v in net.parameters.items()}, "tanh")
    assert net64.dtype == np.float64


def test_integer_X_is_cast(backend):
    X = np.array([[0, 1, 2, 3], [1, 0, 1, 0]])
    net = Network([2, 3, 1], device=backend, dtype="float32", seed=0)
    np.testing.assert_array_equal(net.forward(X), net.forward(X.astype(np.float32)))


def test_fit_learns_flower_and_reports_history(backend):
    X, Y = datasets.flower()
    net = Network([2, 4, 1], "tanh", device=backend, dtype="float64", seed=1)
    history = net.fit(X, Y, learning_rate=1.2, iterations=2001, report_every=500)
    assert history.iterations == [0, 500, 1000, 1500, 2000]
    assert history.costs[-1] < history.costs[0] / 2
    assert all(b >= a for a, b in zip(history.seconds, history.seconds[1:]))
    assert net.accuracy(X, Y) > 0.85
    assert net.iteration == 2001
    assert net.predict(X).shape == (1, 400) and set(np.unique(net.predict(X))) <= {0, 1}


def test_fit_prints_course_style_costs(backend, capsys):
    X, Y = datasets.moons(m=40)
    history = Network([2, 3, 1], device=backend, seed=0).fit(X, Y, iterations=3, report_every=2,
                                                             verbose=2)
    assert capsys.readouterr().out.splitlines() == [f"Cost after iteration {r.iteration}: {r.cost:.6f}"
                                                    for r in history]
    assert history.iterations == [0, 2]


def test_softmax_network_on_spirals_accepts_class_ids(backend):
    X, Y = datasets.spirals(m=300)
    net = Network([2, 32, 3], "relu", "softmax", device=backend, dtype="float64", seed=0)
    net.fit(X, Y, learning_rate=1.0, iterations=300)
    assert net.predict(X).shape == (1, 300)
    assert net.accuracy(X, Y) > 0.8
    one_hot = np.eye(3)[Y.ravel()].T
    assert net.cost(X, Y) == net.cost(X, one_hot) == net.cost(X, Y.ravel())


def test_regression_with_linear_output(backend):
    rng = np.random.RandomState(0)
    X = rng.randn(3, 200)
    Y = np.vstack([X[0] - 2 * X[1], X[2] ** 2])
    net = Network([3, 16, 2], "tanh", "linear", device=backend, dtype="float64", seed=0)
    history = net.fit(X, Y, learning_rate=0.1, iterations=500)
    assert net.loss.name == "mse" and history.costs[-1] < 0.1 * history.costs[0]
    np.testing.assert_array_equal(net.predict(X), net.forward(X))
    with pytest.raises(ValueError, match="accuracy needs a sigmoid or softmax output"):
        net.accuracy(X, Y)


def test_per_layer_activations():
    a = Network([3, 4, 4, 2], ["relu", "tanh", "softmax"], seed=0)
    b = Network([3, 4, 4, 2], ["relu", "tanh"], "softmax", seed=0)
    assert [x.name for x in a.activations] == [x.name for x in b.activations] == ["relu", "tanh", "softmax"]
    with pytest.raises(ValueError, match="hidden_activation has 1 entries; expected 2"):
        Network([3, 4, 4, 2], ["relu"])
    with pytest.raises(ValueError, match="'softmax' is only allowed as the output activation"):
        Network([3, 4, 2], "softmax")


def test_from_parameters_round_trip_and_to(backend):
    net = Network([3, 5, 2, 1], "leaky_relu", device=backend, seed=4)
    clone = Network.from_parameters(net.parameters, "leaky_relu", device=backend)
    X = np.random.RandomState(0).randn(3, 9)
    np.testing.assert_array_equal(clone.forward(X), net.forward(X))
    assert clone.dtype == net.dtype
    assert net.to("cpu") is net and net.backend.device == "cpu"
    for key, value in clone.parameters.items():
        np.testing.assert_array_equal(net.parameters[key], value)     # moved exactly
    np.testing.assert_allclose(net.forward(X), clone.forward(X), rtol=1e-5)


def test_outputs_are_copies_not_views(backend):
    net = Network([2, 3, 1], device=backend, seed=0)
    X = np.ones((2, 4))
    A = net.forward(X)
    params = net.parameters
    params["W1"][...] = 0
    A[...] = 5
    assert not np.array_equal(net.forward(X), A)
    assert not np.array_equal(net.parameters["W1"], params["W1"])


def test_repr_and_device(backend):
    net = Network([2, 3, 1], device=backend)
    assert net.device == "cpu" and net.backend.name in repr(net) and "relu/sigmoid" in repr(net)


def test_top_level_exports():
    for name in ("Network", "get_backend", "available_backends", "gradient_check", "ShapeError",
                 "DeviceFallbackWarning", "BackendUnavailableError", "TrainingDivergedError"):
        assert hasattr(fastdnn, name)
    assert issubclass(fastdnn.ShapeError, ValueError)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_a_step_makes_3L_minus_1_gemms_and_never_computes_dA0(name, depth, monkeypatch):
    import fastdnn.backends.numba_backend as nb
    monkeypatch.setattr(nb, "WHOLE_STEP_MAX_WORK", 0)        # the per-op path, which calls GEMMs
    monkeypatch.setattr(nb, "BLAS_WHOLE_STEP", False)
    net = net_for(depth, "relu", "sigmoid", "bce", backend=name)
    X, Y = problem(1, "bce", m=300)
    Xd, Yd = net.prepare(X, Y)
    before = net.backend.counters["gemm"]
    net.engine.train_step(Xd, Yd, 0.1, check=True)
    assert net.backend.counters["gemm"] - before == 3 * depth - 1
