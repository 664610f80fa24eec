"""Bad input: clear errors naming the layer, the array and both shapes; nothing lost on divergence."""
import numpy as np
import pytest

from fastdnn import Network, ShapeError, TrainingDivergedError, course, datasets, optimizers, schedules
from fastdnn import gradient_check as fastdnn_gradient_check


@pytest.fixture
def net(backend):
    return Network([4, 5, 3, 1], device=backend, dtype="float64", seed=0)


def test_X_with_wrong_features_names_layer_and_shapes(net):
    with pytest.raises(ShapeError) as e:
        net.forward(np.ones((3, 64)))
    assert str(e.value).startswith("layer 1 of 3 (relu): X has shape (3, 64), expected (4, m) "
                                   "to match W1 (5, 4)")


def test_one_dimensional_X_is_a_shape_error(net):
    with pytest.raises(ShapeError, match=r"X has shape \(4,\), expected \(4, m\)"):
        net.predict(np.ones(4))


def test_Y_with_wrong_shape_names_the_output_layer(net):
    with pytest.raises(ShapeError) as e:
        net.fit(np.ones((4, 10)), np.ones((2, 10)), iterations=1)
    assert str(e.value) == ("layer 3 of 3 (sigmoid): Y has shape (2, 10), expected (1, 10) "
                            "to match A3 (1, 10)")


def test_one_dimensional_Y_is_accepted_for_one_output(net):
    X, Y = np.random.RandomState(0).randn(4, 6), np.array([0, 1, 1, 0, 1, 0])
    assert net.cost(X, Y) == net.cost(X, Y.reshape(1, -1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_is_refused(net, bad):
    X = np.ones((4, 5))
    X[2, 3] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \(2, 3\)\)"):
        net.fit(X, np.ones((1, 5)), iterations=1)


def test_non_finite_Y_is_refused(net):
    with pytest.raises(ValueError, match="Y contains NaN or infinity"):
        net.cost(np.ones((4, 2)), np.array([[0.0, np.nan]]))


def test_bce_labels_outside_zero_one_are_refused(net):
    with pytest.raises(ValueError, match="labels for loss 'bce' must be 0 or 1; Y contains 2"):
        net.fit(np.ones((4, 3)), np.array([[0, 1, 2]]), iterations=1)


def test_empty_batch_is_refused(net):
    with pytest.raises(ValueError, match=r"X has no examples \(m = 0\)"):
        net.forward(np.ones((4, 0)))


def test_non_numeric_X_is_refused(net):
    with pytest.raises(TypeError, match="X must hold numbers"):
        net.forward(np.array([["a"] * 3] * 4))


def test_class_ids_out_of_range_are_refused(backend):
    net = Network([2, 4, 3], output_activation="softmax", device=backend)
    with pytest.raises(ValueError, match=r"class ids in Y must be integers in \[0, 3\)"):
        net.cost(np.ones((2, 3)), np.array([0, 1, 3]))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="layer_dims must be at least two positive integers"):
        Network([3])
    with pytest.raises(ValueError, match="layer_dims must be at least two positive integers"):
        Network([3, 0, 1])
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'; got float16"):
        Network([3, 1], dtype="float16")
    with pytest.raises(ValueError, match="unknown device 'gpu'; expected one of"):
        Network([3, 1], device="gpu")
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        Network([3, 1]).fit(np.ones((3, 2)), np.ones((1, 2)), learning_rate=-1, iterations=1)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1; got 0"):
        Network([3, 1]).fit(np.ones((3, 2)), np.ones((1, 2)), iterations=0)


def test_inconsistent_parameters_name_the_layer():
    params = Network([4, 5, 3, 1], seed=0).parameters
    params["W2"] = np.ones((3, 6))
    with pytest.raises(ShapeError, match=r"layer 2 of 3: W2 has shape \(3, 6\), expected \(n2, 5\) "
                                         r"to match W1 \(5, 4\)"):
        Network.from_parameters(params)
    params = Network([4, 5, 3, 1], seed=0).parameters
    params["b2"] = np.ones((4, 1))
    with pytest.raises(ShapeError, match=r"b2 has shape \(4, 1\), expected \(3, 1\) to match W2 \(3, 5\)"):
        Network.from_parameters(params)
    params = Network([4, 5, 3, 1], seed=0).parameters
    params["W1"][0, 0] = np.nan
    with pytest.raises(ValueError, match="W1 must be finite numbers"):
        Network.from_parameters(params)
    with pytest.raises(ValueError, match="found no 'W1'"):
        Network.from_parameters({})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy reports the overflow first
def test_divergence_stops_with_iteration_and_keeps_last_finite_parameters(backend):
    X, Y = datasets.moons(m=64)
    X = X * 1e3                                # a learning rate far too large for this scale
    net = Network([2, 8, 1], "relu", device=backend, dtype="float32", seed=0)
    snapshots = []
    original = net.engine.train_steps          # one call per step when every step is reported

    def recording(*args, **kwargs):
        snapshots.append(net.parameters)
        return original(*args, **kwargs)

    net.engine.train_steps = recording
    with pytest.raises(TrainingDivergedError) as e:
        net.fit(X, Y, learning_rate=50.0, iterations=1000, report_every=1)   # a Python call per step
    err = e.value
    assert err.iteration >= 1 and not np.isfinite(err.cost)
    assert f"at iteration {err.iteration}" in str(err)
    assert err.restored_iteration == err.iteration - 1
    kept = net.parameters
    for key in kept:
        np.testing.assert_array_equal(kept[key], snapshots[err.iteration - 1][key])
    assert np.isfinite(net.cost(X, Y))


def test_course_forward_names_the_layer_on_shape_mismatch():
    params = course.initialize_parameters_deep([4, 5, 3, 1])
    params["W2"] = np.ones((3, 4))
    with pytest.raises(ShapeError) as e:
        course.L_model_forward(np.ones((4, 64)), params)
    assert str(e.value) == ("layer 2 of 3 (relu): A_prev has shape (5, 64), expected (4, m) "
                            "to match W2 (3, 4)")


def test_out_of_memory_says_how_many_bytes_the_workspace_needs(monkeypatch):
    net = Network([10, 300, 200, 1], device="numpy", dtype="float32", seed=0)
    real_empty = net.backend.empty

    def empty(shape, dtype):
        if shape[0] > 10_000:                     # the flat workspace buffers
            raise MemoryError("out of GPU memory allocating 1 bytes")
        return real_empty(shape, dtype)
    monkeypatch.setattr(net.backend, "empty", empty)
    with pytest.raises(MemoryError) as e:
        net.fit(np.ones((10, 512)), np.ones((1, 512)), iterations=1)
    assert str(e.value).startswith(f"the numpy workspace for batches of 512 needs {3 * 501 * 512 * 4} bytes")


def test_labels_left_out_are_named_not_read_from_X(net):
    """Y = None where labels are needed: a TypeError naming Y (X's rows were once unpacked as X and Y: an
    accuracy of 0.0 for a two-row X, and IndexErrors elsewhere)."""
    X, Y = np.ones((4, 6)), np.ones((1, 6))
    calls = [lambda: net.accuracy(X, None), lambda: net.cost(X, None), lambda: net.gradients(X, None),
             lambda: net.step(X, None), lambda: net.fit(X, None, iterations=1, verbose=0)]
    for call in calls:
        with pytest.raises(TypeError, match=r"^Y is required \(the labels of X's examples\); got None$"):
            call()
    with pytest.raises(TypeError, match="^validation_data: Y is required"):
        net.fit(X, Y, iterations=1, verbose=0, validation_data=(X, None))
    two_rows = Network([2, 3, 1], device="numpy", seed=0)
    with pytest.raises(TypeError, match="Y is required"):
        two_rows.accuracy(np.ones((2, 5)), None)


BAD_SETTINGS = [
    (lambda net, X, Y: net.fit(X, Y, epochs=1, batch_size=2, shuffle="no"), TypeError,
     "shuffle must be True or False; got 'no'"),
    (lambda net, X, Y: net.fit(X, Y, iterations=1, verbose="quiet"), ValueError,
     "verbose must be None, 0, 1 or 2; got 'quiet'"),
    (lambda net, X, Y: net.fit(X, Y, iterations=1, verbose=5), ValueError, "verbose must be None, 0, 1 or 2; got 5"),
    (lambda net, X, Y: fastdnn_gradient_check(net, X, Y, max_checks=0), ValueError,
     r"max_checks must be an integer >= 1 \(or None: every parameter\); got 0"),
    (lambda net, X, Y: fastdnn_gradient_check(net, X, Y, epsilon=0), ValueError,
     "epsilon must be a finite number > 0; got 0"),
    (lambda net, X, Y: optimizers.Adam(beta1="a"), TypeError, "beta1 must be a number; got 'a'"),
    (lambda net, X, Y: schedules.ExponentialDecay(decay_rate="a"), TypeError, "decay_rate must be a number; got 'a'"),
    (lambda net, X, Y: schedules.StepDecay(step_size=None), TypeError, "step_size must be a number; got None"),
    (lambda net, X, Y: schedules.InverseTimeDecay(time_interval=2.5), ValueError,
     "time_interval must be an integer >= 1; got 2.5"),
]


@pytest.mark.parametrize("call, kind, message", BAD_SETTINGS)
def test_bad_settings_name_the_argument_and_change_nothing(call, kind, message):
    net = Network([4, 5, 3, 1], device="numpy", dtype="float64", seed=0)
    X, Y = np.ones((4, 6)), np.ones((1, 6))
    before = net.parameters
    with pytest.raises(kind, match=f"^{message}$"):
        call(net, X, Y)
    for k, v in before.items():
        np.testing.assert_array_equal(net.parameters[k], v)


def test_from_parameters_names_a_missing_middle_layer_and_takes_lists():
    P = Network([2, 4, 3, 1], device="numpy", seed=1).parameters
    with pytest.raises(ValueError, match="^parameters have W3, b2, b3 but no W2$"):
        Network.from_parameters({k: v for k, v in P.items() if k != "W2"}, device="numpy")
    net = Network.from_parameters({**P, "W1": P["W1"].tolist()}, device="numpy")
    assert net.dtype == np.float64
    np.testing.assert_array_equal(net.parameters["W1"], P["W1"])


def test_course_functions_name_what_is_wrong_with_Y_b_and_batches():
    """The course API's shape errors name the function or layer and both shapes, where NumPy would say
    'not aligned' (or, for a (n,) b with m == n, broadcast it along the examples and say nothing)."""
    X, Y = np.ones((3, 4)), np.ones((1, 4))
    p = course.initialize_parameters_deep([3, 4, 1])
    AL, caches = course.L_model_forward(X, p)
    with pytest.raises(ShapeError, match=r"^compute_cost: Y has shape \(1, 3\), expected \(1, 4\) to match AL"):
        course.compute_cost(AL, Y[:, :3])
    with pytest.raises(ShapeError, match=r"^L_model_backward: Y has shape \(1, 3\), expected \(1, 4\)"):
        course.L_model_backward(AL, Y[:, :3], caches)
    assert course.L_model_backward(AL, Y.ravel(), caches)["dW1"].shape == (4, 3)      # (m,): reshaped
    with pytest.raises(ShapeError, match=r"^layer 1 of 2 \(relu\): b1 has shape \(4,\), expected \(4, 1\)"):
        course.L_model_forward(X, {**p, "b1": p["b1"].ravel()})
    with pytest.raises(ShapeError, match=r"^the cost: Y has shape \(1, 3\)"):
        course.compute_cost_with_regularization(AL, Y[:, :3], p, 0.1)
    with pytest.raises(ShapeError, match=r"^random_mini_batches: X \(3, 4\) and Y \(1, 3\)"):
        course.random_mini_batches(X, Y[:, :3])
    with pytest.raises(ValueError, match=r"^mini_batch_size must be an integer >= 1; got 0$"):
        course.random_mini_batches(X, Y, mini_batch_size=0)
