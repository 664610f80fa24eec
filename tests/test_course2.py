"""Course 2's functions in fastdnn.course (initialization, regularization, gradient checking,
optimization) and course 1's two-layer model: against the assignments' published outputs (to the
printed digits), a float64 oracle written here, and central-difference gradients."""
import os

import numpy as np
import pytest

from fastdnn import ShapeError, course, datasets

from support import SHARED

randn = np.random.randn
DATA_MAT = os.path.join(SHARED, "course2", "data.mat")
GRADIENT_KEYS = ["dA1", "dA2", "dW1", "dW2", "dW3", "dZ1", "dZ2", "dZ3", "db1", "db2", "db3"]


def published(actual, printed):
    """Equal to the digits the assignment printed (8 decimals, NumPy's default)."""
    np.testing.assert_allclose(actual, np.array(printed), rtol=0, atol=5e-9)


# --- the float64 oracle, written apart from fastdnn.course --------------------------------------
def oracle_activations(X, params, masks=None, keep_prob=1.0):
    """[X, A1, ..., AL]: relu hidden layers (times mask / keep_prob when masks are given), sigmoid output."""
    L = len(params) // 2
    activations = [X]
    for l in range(1, L + 1):
        Z = params[f"W{l}"] @ activations[-1] + params[f"b{l}"]
        if l == L:
            activations.append(1.0 / (1.0 + np.exp(-Z)))
        else:
            A = np.where(Z > 0, Z, 0.0)
            activations.append(A if masks is None else A * masks[l - 1] / keep_prob)
    return activations


def oracle_cost(X, Y, params, lambd=0.0, masks=None, keep_prob=1.0):
    """Mean binary cross-entropy of the output plus (λ / 2m) Σ ||W||²."""
    AL = oracle_activations(X, params, masks, keep_prob)[-1]
    m = X.shape[1]
    cross_entropy = -np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m
    squares = sum(np.sum(params[f"W{l}"] ** 2) for l in range(1, len(params) // 2 + 1))
    return cross_entropy + lambd / (2 * m) * squares


def numeric_gradients(f, params, eps=1e-6):
    """{'dW1': ..., 'db1': ...}: (f(θ + ε) - f(θ - ε)) / 2ε for every entry of every parameter."""
    grads = {}
    for key, value in params.items():
        g = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            value[index] = saved + eps
            plus = f(params)
            value[index] = saved - eps
            minus = f(params)
            value[index] = saved
            g[index] = (plus - minus) / (2 * eps)
        grads["d" + key] = g
    return grads


def random_case(layer_dims, m, seed):
    rng = np.random.RandomState(seed)
    params = {}
    for l in range(1, len(layer_dims)):
        params[f"W{l}"] = rng.randn(layer_dims[l], layer_dims[l - 1]) * 0.6
        params[f"b{l}"] = rng.randn(layer_dims[l], 1) * 0.1
    X = rng.randn(layer_dims[0], m)
    Y = (rng.rand(1, m) < 0.5).astype(np.int64)
    return X, Y, params


def assignment_case():
    """The regularization and dropout assignments' test network: np.random.seed(1), X (3, 5), then
    W1 (2, 3), b1, W2 (3, 2), b2, W3 (1, 3), b3 drawn in that order."""
    np.random.seed(1)
    X = randn(3, 5)
    params = {"W1": randn(2, 3), "b1": randn(2, 1), "W2": randn(3, 2), "b2": randn(3, 1),
              "W3": randn(1, 3), "b3": randn(1, 1)}
    return X, np.array([[1, 1, 0, 1, 0]]), params


def check_gradients(grads, expected, atol=1e-7):
    for key, value in expected.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-6, atol=atol, err_msg=key)


# --- initialization --------------------------------------------------------------------------
def test_initialize_parameters_zeros():
    p = course.initialize_parameters_zeros([3, 2, 1])
    assert {k: v.shape for k, v in p.items()} == {"W1": (2, 3), "b1": (2, 1), "W2": (1, 2), "b2": (1, 1)}
    assert all(v.dtype == np.float64 and not v.any() for v in p.values())


def test_initialize_parameters_random_published():
    p = course.initialize_parameters_random([3, 2, 1])
    published(p["W1"], [[17.88628473, 4.36509851, 0.96497468], [-18.63492703, -2.77388203, -3.54758979]])
    published(p["W2"], [[-0.82741481, -6.27000677]])
    assert not p["b1"].any() and p["b2"].shape == (1, 1)


def test_initialize_parameters_he_published():
    p = course.initialize_parameters_he([2, 4, 1])
    published(p["W1"], [[1.78862847, 0.43650985], [0.09649747, -1.8634927],
                        [-0.2773882, -0.35475898], [-0.08274148, -0.62700068]])
    published(p["W2"], [[-0.03098412, -0.33744411, -0.92904268, 0.62552248]])
    p = course.initialize_parameters_he([3, 1, 2])
    published(p["W1"], [[1.46040903, 0.3564088, 0.07878985]])
    published(p["W2"], [[-2.63537665], [-0.39228616]])
    assert p["b2"].shape == (2, 1) and not p["b2"].any()


@pytest.mark.parametrize("name,scale", [("he", lambda n_prev: np.sqrt(2.0 / n_prev)),
                                        ("random", lambda n_prev: 10.0)])
def test_initializers_draw_the_course_stream(name, scale):
    dims = [5, 4, 3, 1]
    p = getattr(course, f"initialize_parameters_{name}")(dims, seed=7)
    rng = np.random.RandomState(7)
    for l in range(1, 4):
        np.testing.assert_array_equal(p[f"W{l}"], rng.randn(dims[l], dims[l - 1]) * scale(dims[l - 1]))
        np.testing.assert_array_equal(p[f"b{l}"], np.zeros((dims[l], 1)))


def test_velocity_and_adam_state_keep_the_parameters_dtype():
    p = {k: v.astype(np.float32) for k, v in course.initialize_parameters_he([3, 4, 1]).items()}
    g = {"d" + k: np.ones_like(v) for k, v in p.items()}
    v = course.initialize_velocity(p)
    assert {a.dtype for a in v.values()} == {np.dtype(np.float32)}
    assert course.update_parameters_with_momentum(dict(p), g, v, 0.9, 0.1)[0]["W1"].dtype == np.float32
    v, s = course.initialize_adam(p)
    assert {a.dtype for a in [*v.values(), *s.values()]} == {np.dtype(np.float32)}
    assert course.update_parameters_with_adam(dict(p), g, v, s, 1)[0]["W1"].dtype == np.float32


def test_network_init_scaled_is_the_course_division_to_the_bit():
    """init="scaled" draws what initialize_parameters_deep draws, randn / sqrt(n[l-1]) (a multiplication by
    1 / sqrt(n[l-1]) differed in the last bit for about half the cat network's W1)."""
    from fastdnn import Network
    dims = [12288, 20, 7, 5, 1]
    net = Network(dims, init="scaled", seed=1, device="numpy", dtype="float64")
    expected = course.initialize_parameters_deep(dims, seed=1)
    for k, v in expected.items():
        np.testing.assert_array_equal(net.parameters[k], v)


def test_initialize_parameters_deep_default_is_the_application_version():
    """Default seed=1, randn / sqrt(n[l-1]); the step-by-step one (seed=3, * 0.01) is in test_course.py."""
    dims = [4, 3, 2]
    p = course.initialize_parameters_deep(dims)
    rng = np.random.RandomState(1)
    for l in (1, 2):
        np.testing.assert_array_equal(p[f"W{l}"], rng.randn(dims[l], dims[l - 1]) / np.sqrt(dims[l - 1]))
    with pytest.raises(ValueError, match="scale must be 'sqrt' or a number; got 'he'"):
        course.initialize_parameters_deep(dims, scale="he")


# --- L2 regularization -------------------------------------------------------------------------
def test_compute_cost_with_regularization_published():
    np.random.seed(1)
    Y = np.array([[1, 1, 0, 1, 0]])
    params = {"W1": randn(2, 3), "b1": randn(2, 1), "W2": randn(3, 2), "b2": randn(3, 1),
              "W3": randn(1, 3), "b3": randn(1, 1)}
    A3 = np.array([[0.40682402, 0.01629284, 0.16722898, 0.10118111, 0.40682402]])
    cost = course.compute_cost_with_regularization(A3, Y, params, lambd=0.1)
    assert float(cost) == pytest.approx(1.7864859451590758, rel=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("dims", [[3, 4, 3, 1], [2, 5, 1], [4, 3, 5, 2, 1]],
                         ids=lambda d: "x".join(map(str, d)))
def test_compute_cost_with_regularization_matches_the_oracle(dims, dtype):
    X, Y, params = random_case(dims, 7, seed=len(dims))
    AL = oracle_activations(X, params)[-1]
    cost = course.compute_cost_with_regularization(AL.astype(dtype), Y,
                                                   {k: v.astype(dtype) for k, v in params.items()}, 0.7)
    assert cost.dtype == dtype
    rel = 1e-12 if dtype == "float64" else 1e-5
    assert float(cost) == pytest.approx(oracle_cost(X, Y, params, lambd=0.7), rel=rel)


def test_backward_propagation_with_regularization_published():
    """The assignment's cache is the forward pass of its test network, printed to 8 decimals."""
    X, Y, params = assignment_case()
    _, cache = course.forward_propagation_n(X, Y, params)
    published(cache[0][0], [-1.52855314, 3.32524635, 2.13994541, 2.60700654, -0.75942115])
    published(cache[8], [[-0.3771104, -4.10060224, -1.60539468, -2.18416951, -0.3771104]])
    published(cache[9], [[0.40682402, 0.01629284, 0.16722898, 0.10118111, 0.40682402]])
    cache = tuple(np.round(a, 8) for a in cache)
    grads = course.backward_propagation_with_regularization(X, Y, cache, lambd=0.7)
    assert sorted(grads) == GRADIENT_KEYS
    published(grads["dZ3"], [[-0.59317598, -0.98370716, 0.16722898, -0.89881889, 0.40682402]])
    published(grads["dW3"], [[-1.77691347, -0.11832879, -0.09397446]])
    published(grads["db3"], [[-0.38032981]])
    published(grads["dA2"], [[0.40761434, 0.67597671, -0.11491519, 0.6176438, -0.27955836],
                             [0.50135568, 0.83143484, -0.14134288, 0.7596868, -0.34384996],
                             [0.39816708, 0.66030962, -0.11225181, 0.6033287, -0.27307905]])
    published(grads["dW2"], [[0.79276486, 0.85133918], [-0.0957219, -0.01720463], [-0.13100772, -0.03750433]])
    published(grads["db2"], [[0.26135226], [0.], [0.]])
    published(grads["dA1"], [[0.2048239, 0.33967447, -0.05774423, 0.31036252, -0.14047649],
                             [0.3672018, 0.60895764, -0.10352203, 0.5564081, -0.25184181]])
    published(grads["dW1"], [[-0.25604646, 0.12298827, -0.28297129], [-0.17706303, 0.34536094, -0.4410571]])
    published(grads["db1"], [[0.11845855], [0.21236874]])


@pytest.mark.parametrize("dims", [[3, 4, 3, 1], [4, 5, 4, 3, 1]], ids=["3-layer", "4-layer"])
def test_backward_propagation_with_regularization_is_the_gradient(dims):
    X, Y, params = random_case(dims, 6, seed=3)
    _, cache = course.forward_propagation_n(X, Y, params)
    grads = course.backward_propagation_with_regularization(X, Y, cache, lambd=0.7)
    check_gradients(grads, numeric_gradients(lambda p: oracle_cost(X, Y, p, lambd=0.7), params))


# --- dropout -------------------------------------------------------------------------------------
def test_forward_propagation_with_dropout_published():
    X, _, params = assignment_case()
    A3, cache = course.forward_propagation_with_dropout(X, params, keep_prob=0.7)
    published(A3, [[0.36974721, 0.00305176, 0.04565099, 0.49683389, 0.36974721]])
    assert len(cache) == 14 and cache[11] is A3 and cache[3] is params["W1"]
    np.testing.assert_array_equal(cache[1], [[True, False, True, True, True], [True, True, True, True, True]])
    np.testing.assert_array_equal(cache[6], [[True, True, True, False, True], [True, True, True, True, True],
                                             [False, False, True, True, False]])
    published(cache[2], [[0., 0., 3.05706487, 3.72429505, 0.], [0., 5.94299915, 1.1293003, 2.09276446, 0.]])
    published(cache[10], [[-0.53330145, -5.78898099, -3.04000407, -0.0126646, -0.53330145]])


def test_forward_propagation_with_dropout_draws_as_the_course():
    """np.random.seed(1), then one np.random.rand(n_l, m) per hidden layer, kept where < keep_prob."""
    X, Y, params = random_case([3, 6, 4, 1], 9, seed=5)
    A3, cache = course.forward_propagation_with_dropout(X, params, keep_prob=0.6)
    np.random.seed(1)
    masks = [np.random.rand(6, 9) < 0.6, np.random.rand(4, 9) < 0.6]
    np.testing.assert_array_equal(cache[1], masks[0])
    np.testing.assert_array_equal(cache[6], masks[1])
    np.testing.assert_allclose(A3, oracle_activations(X, params, masks, 0.6)[-1], rtol=1e-12)
    again, _ = course.forward_propagation_with_dropout(X, params, keep_prob=0.6)
    np.testing.assert_array_equal(again, A3)                  # the seed is set inside, every call
    other, _ = course.forward_propagation_with_dropout(X, params, keep_prob=0.6, seed=None)
    assert not np.array_equal(other, A3)
    kept, _ = course.forward_propagation_with_dropout(X, params, keep_prob=1.0)
    np.testing.assert_allclose(kept, course.forward_propagation_n(X, Y, params)[1][9], rtol=1e-15)


def test_backward_propagation_with_dropout_published():
    """The assignment's cache is its test network's forward pass with keep_prob 0.5, to 8 decimals;
    its backward pass is then asked with keep_prob 0.8."""
    X, Y, params = assignment_case()
    A3, cache = course.forward_propagation_with_dropout(X, params, keep_prob=0.5)
    published(A3, [[0.32266394, 0.49683389, 0.00348883, 0.49683389, 0.32266394]])
    np.testing.assert_array_equal(cache[1], [[True, False, True, True, True],
                                             [True, True, True, True, False]])
    cache = tuple(c if c.dtype == bool else np.round(c, 8) for c in cache)
    grads = course.backward_propagation_with_dropout(X, Y, cache, keep_prob=0.8)
    assert sorted(grads) == GRADIENT_KEYS
    published(grads["dZ3"], [[-0.67733606, -0.50316611, 0.00348883, -0.50316611, 0.32266394]])
    published(grads["dW3"], [[-0.06951191, 0., 0.]])
    published(grads["db3"], [[-0.2715031]])
    published(grads["dA2"], [[0.58180856, 0., -0.00299679, 0., -0.27715731],
                             [0., 0.53159854, -0., 0.53159854, -0.34089673],
                             [0., 0., -0.00292733, 0., -0.]])
    published(grads["dW2"], [[-0.00256518, -0.0009476], [0., 0.], [0., 0.]])
    published(grads["db2"], [[0.06033089], [0.], [0.]])
    published(grads["dA1"], [[0.36544439, 0., -0.00188233, 0., -0.17408748],
                             [0.65515713, 0., -0.00337459, 0., -0.]])
    published(grads["dW1"], [[0.00019884, 0.00028657, 0.00012138], [0.00035647, 0.00051375, 0.00021761]])
    published(grads["db1"], [[-0.00037647], [-0.00067492]])


@pytest.mark.parametrize("dims", [[3, 5, 4, 1], [2, 6, 5, 4, 1]], ids=["3-layer", "4-layer"])
def test_backward_propagation_with_dropout_is_the_gradient_through_its_masks(dims):
    X, Y, params = random_case(dims, 8, seed=4)
    _, cache = course.forward_propagation_with_dropout(X, params, keep_prob=0.7, seed=2)
    masks = [c for c in cache if c.dtype == bool]
    assert len(masks) == len(dims) - 2
    grads = course.backward_propagation_with_dropout(X, Y, cache, keep_prob=0.7)
    def cost(p):
        return oracle_cost(X, Y, p, masks=masks, keep_prob=0.7)
    check_gradients(grads, numeric_gradients(cost, params))


def test_regularization_functions_keep_float32():
    X, Y, params = random_case([3, 4, 3, 1], 5, seed=1)
    X32, p32 = X.astype(np.float32), {k: v.astype(np.float32) for k, v in params.items()}
    A3, cache = course.forward_propagation_with_dropout(X32, p32, keep_prob=0.8)
    grads = course.backward_propagation_with_dropout(X32, Y, cache, keep_prob=0.8)
    assert A3.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    cost, cache = course.forward_propagation_n(X32, Y, p32)
    grads = course.backward_propagation_with_regularization(X32, Y, cache, lambd=0.5)
    assert cost.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    np.testing.assert_allclose(float(cost), oracle_cost(X, Y, params), rtol=1e-5)


def test_regularization_input_errors():
    X, Y, params = random_case([3, 4, 3, 1], 5, seed=1)
    for keep_prob in (0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"keep_prob must be in \(0, 1\]; got"):
            course.forward_propagation_with_dropout(X, params, keep_prob)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    with pytest.raises(ShapeError, match=r"layer 1 of 3 \(relu\): X has shape \(4, 5\), expected \(3, m\) "
                                         r"to match W1 \(4, 3\)"):
        course.forward_propagation_with_dropout(X[[0, 1, 2, 0]], params, 0.5)
    np.testing.assert_array_equal(np.random.get_state()[1], state)        # nothing drawn, nothing seeded
    with pytest.raises(ShapeError, match=r"layer 1 of 3 \(relu\): X has shape \(5,\)"):
        course.forward_propagation_n(X[0], Y, params)
    _, cache = course.forward_propagation_n(X, Y, params)
    with pytest.raises(ValueError, match=r"cache has 11 entries; expected the layout \(Z1, A1, W1, b1, "):
        course.backward_propagation_with_regularization(X, Y, cache[:11], 0.7)
    with pytest.raises(ValueError, match=r"cache has 12 entries; expected the layout \(Z1, D1, A1, W1, b1"):
        course.backward_propagation_with_dropout(X, Y, cache, 0.7)


@pytest.mark.skipif(not os.path.isfile(DATA_MAT), reason=f"the course's data.mat is not at {DATA_MAT}")
def test_the_regularization_assignment_on_its_data():
    """The assignment's model() on data.mat ([2, 20, 3, 1], np.random.seed(3) randn / sqrt(n[l-1]),
    lr 0.3) printed these costs; dropout's masks repeat each iteration (the seed is set inside)."""
    pytest.importorskip("scipy", reason="loading data.mat needs scipy")
    d = datasets.load_course2(DATA_MAT)
    X, Y = d.train_x, d.train_y
    params = course.initialize_parameters_deep([2, 20, 3, 1], seed=3)
    cost, cache = course.forward_propagation_n(X, Y, params)
    assert float(cost) == pytest.approx(0.6557412523481002, rel=1e-13)
    cost = course.compute_cost_with_regularization(cache[9], Y, params, lambd=0.7)
    assert float(cost) == pytest.approx(0.6974484493131264, rel=1e-13)
    costs = []
    for i in range(10001):
        A3, cache = course.forward_propagation_with_dropout(X, params, keep_prob=0.86)
        if i % 10000 == 0:
            costs.append(float(course.compute_cost_with_regularization(A3, Y, params, lambd=0)))
        grads = course.backward_propagation_with_dropout(X, Y, cache, keep_prob=0.86)
        params = course.update_parameters_with_gd(params, grads, 0.3)
    np.testing.assert_allclose(costs, [0.6543912405149825, 0.0610169865749056], rtol=1e-9)


# --- gradient checking -------------------------------------------------------------------------
def test_one_dimensional_gradient_check_published(capsys):
    assert course.forward_propagation(2, 4) == 8 and course.backward_propagation(2, 4) == 2
    difference = course.gradient_check(2, 4)
    assert difference < 1e-7 and float(difference) == pytest.approx(2.919335883291695e-10, rel=1e-9)
    assert "Your backward propagation works perfectly fine! difference = 2.9193" in capsys.readouterr().out
    course.gradient_check(2, 4, print_msg=False)
    assert capsys.readouterr().out == ""


def test_one_dimensional_gradient_check_finds_a_wrong_derivative(monkeypatch, capsys):
    monkeypatch.setattr(course, "backward_propagation", lambda x, theta: 2 * x)
    assert course.gradient_check(2.0, 4.0) == pytest.approx(1 / 3, rel=1e-6)
    assert "There is a mistake in the backward propagation!" in capsys.readouterr().out


def gradient_check_case():
    np.random.seed(1)
    X, Y = randn(4, 3), np.array([1, 1, 0])
    params = {"W1": randn(5, 4), "b1": randn(5, 1), "W2": randn(3, 5), "b2": randn(3, 1),
              "W3": randn(1, 3), "b3": randn(1, 1)}
    return X, Y, params


def test_gradient_check_n_published(capsys):
    """The assignment's two expected differences: 1.189e-07 with a correct backward pass, 0.285 with
    its two planted mistakes (dW2 doubled, db1 four times)."""
    X, Y, params = gradient_check_case()
    cost, cache = course.forward_propagation_n(X, Y, params)
    assert float(cost) == pytest.approx(oracle_cost(X, Y.reshape(1, -1), params), rel=1e-12)
    grads = course.backward_propagation_n(X, Y, cache)
    assert sorted(grads) == GRADIENT_KEYS
    difference = course.gradient_check_n(params, grads, X, Y)
    assert float(difference) == pytest.approx(1.1890913024229996e-07, rel=1e-6)
    assert "works perfectly fine! difference = 1.18909" in capsys.readouterr().out
    wrong = dict(grads, dW2=2 * grads["dW2"], db1=4 * grads["db1"])
    difference = course.gradient_check_n(params, wrong, X, Y, 1e-7, False)
    assert float(difference) == pytest.approx(0.2850931567761623, rel=1e-12)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("dims", [[4, 5, 3, 1], [3, 4, 4, 2, 1]], ids=["3-layer", "4-layer"])
def test_backward_propagation_n_is_the_gradient(dims):
    X, Y, params = random_case(dims, 5, seed=6)
    _, cache = course.forward_propagation_n(X, Y, params)
    grads = course.backward_propagation_n(X, Y, cache)
    check_gradients(grads, numeric_gradients(lambda p: oracle_cost(X, Y, p), params))
    assert course.gradient_check_n(params, grads, X, Y, print_msg=False) < 2e-7


def test_parameters_and_vectors():
    X, Y, params = gradient_check_case()
    theta, keys = course.dictionary_to_vector(params)
    order = ["W1", "b1", "W2", "b2", "W3", "b3"]
    np.testing.assert_array_equal(theta, np.concatenate([params[k].ravel() for k in order]).reshape(-1, 1))
    assert keys == [k for k in order for _ in range(params[k].size)] and len(keys) == 47
    back = course.vector_to_dictionary(theta)                   # the assignment's (4, 5, 3, 1) network
    assert list(back) == order
    for key in order:
        np.testing.assert_array_equal(back[key], params[key])
    _, cache = course.forward_propagation_n(X, Y, params)
    grads = course.backward_propagation_n(X, Y, cache)
    np.testing.assert_array_equal(course.gradients_to_vector(grads),
                                  np.concatenate([grads["d" + k].ravel() for k in order]).reshape(-1, 1))
    small = course.vector_to_dictionary(np.arange(13.0).reshape(-1, 1), layer_dims=[2, 3, 1])
    np.testing.assert_array_equal(small["W1"], np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(small["b2"], [[12.0]])
    with pytest.raises(ShapeError, match=r"theta has shape \(46, 1\), expected \(47, 1\) for "
                                         r"layer_dims \(4, 5, 3, 1\)"):
        course.vector_to_dictionary(theta[:46])
    with pytest.raises(ShapeError, match="gradients hold 44 values, parameters 47"):
        course.gradient_check_n(params, dict(grads, dW3=grads["dW3"][:, :0]), X, Y)


# --- optimization --------------------------------------------------------------------------------
def test_update_parameters_with_gd_published():
    np.random.seed(1)
    params = {"W1": randn(2, 3), "b1": randn(2, 1), "W2": randn(3, 3), "b2": randn(3, 1)}
    grads = {"dW1": randn(2, 3), "db1": randn(2, 1), "dW2": randn(3, 3), "db2": randn(3, 1)}
    expected = {k: params[k] - 0.01 * grads["d" + k] for k in params}
    out = course.update_parameters_with_gd(params, grads, 0.01)
    published(out["W1"], [[1.63535156, -0.62320365, -0.53718766], [-1.07799357, 0.85639907, -2.29470142]])
    published(out["b1"], [[1.74604067], [-0.75184921]])
    published(out["W2"], [[0.32171798, -0.25467393, 1.46902454], [-2.05617317, -0.31554548, -0.3756023],
                          [1.1404819, -1.09976462, -0.1612551]])
    published(out["b2"], [[-0.88020257], [0.02561572], [0.57539477]])
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key])


def test_learning_rate_decay_published():
    assert course.update_lr(0.5, 2, 1) == 0.16666666666666666
    assert course.update_lr(1, 2, 1) == pytest.approx(1 / 3, rel=1e-15)
    for args, expected in [((0.5, 100, 1, 100), 0.25), ((0.5, 10, 1, 100), 0.5),
                           ((0.3, 1000, 0.25, 100), 0.3 / 3.5), ((0.3, 100, 0.25, 100), 0.24),
                           ((0.5, 10, 0.3, 100), 0.5), ((0.5, 100, 0.3, 100), 0.5 / 1.3),
                           ((0.5, 999, 1), 0.5), ((0.5, 2000, 1), 0.5 / 3)]:
        assert course.schedule_lr_decay(*args) == pytest.approx(expected, rel=1e-14), args


# --- course 1's two-layer model, and the costs L_layer_model records -----------------------------
def test_two_layer_model_published():
    """The application assignment's test: np.random.seed(1), X = randn(10, 10), Y = randn(1, 10)."""
    np.random.seed(1)
    X, Y = randn(10, 10), randn(1, 10)
    params, costs = course.two_layer_model(X, Y, (10, 4, 1), learning_rate=0.0075, num_iterations=2)
    published(costs, [0.69315968])
    published(params["W1"][0], [0.01624965, -0.00610741, -0.00528734, -0.01072836, 0.008664, -0.02301103,
                                 0.01745639, -0.00760949, 0.0031934, -0.00248971])
    published(params["b1"], [[1.10437111e-05], [1.78437869e-05], [3.74879549e-05], [-4.42988824e-05]])
    published(params["W2"], [[-0.00200283, -0.00888593, -0.00751122, 0.01688162]])
    published(params["b2"], [[-0.00689018]])
    params, costs = course.two_layer_model(X, Y, (10, 4, 1), 0.1, 3)
    published(costs, [0.69315968])
    published(params["b1"], [[0.00027478], [0.00034477], [0.00076016], [-0.00084497]])
    published(params["W2"], [[-0.00358725, -0.00911995, -0.00831979, 0.01615845]])
    published(params["b2"], [[-0.13451354]])


def oracle_two_layer(X, Y, n_h, learning_rate, iterations):
    """Gradient descent on LINEAR->RELU->LINEAR->SIGMOID from np.random.seed(1), randn * 0.01."""
    rng = np.random.RandomState(1)
    W1 = rng.randn(n_h, X.shape[0]) * 0.01
    W2 = rng.randn(1, n_h) * 0.01
    b1, b2 = np.zeros((n_h, 1)), np.zeros((1, 1))
    m = X.shape[1]
    for _ in range(iterations):
        Z1 = W1 @ X + b1
        A1 = np.maximum(Z1, 0)
        A2 = 1 / (1 + np.exp(-(W2 @ A1 + b2)))
        dZ2 = A2 - Y
        dZ1 = (W2.T @ dZ2) * (Z1 > 0)
        W2, b2 = W2 - learning_rate * dZ2 @ A1.T / m, b2 - learning_rate * dZ2.sum(1, keepdims=True) / m
        W1, b1 = W1 - learning_rate * dZ1 @ X.T / m, b1 - learning_rate * dZ1.sum(1, keepdims=True) / m
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


def test_two_layer_model_trains_on_circles(capsys):
    X, Y = datasets.circles(m=200, seed=2)
    params, costs = course.two_layer_model(X, Y, (2, 8, 1), learning_rate=2.0, num_iterations=801,
                                           print_cost=True)
    expected = oracle_two_layer(X, Y, 8, 2.0, 801)
    for key, value in expected.items():
        np.testing.assert_allclose(params[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    assert len(costs) == 9 and all(b < a for a, b in zip(costs, costs[1:])) and costs[-1] < 0.25 * costs[0]
    AL, _ = course.L_model_forward(X, params)
    assert np.mean((AL > 0.5) == Y) >= 0.9
    assert all(type(c) is type(course.compute_cost(AL, Y)) and c.shape == () for c in costs)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [f"Cost after iteration {i}"
                                                        for i in range(0, 801, 100)]


def test_two_layer_model_keeps_float32():
    X, Y = datasets.moons(m=50, seed=4)
    p64, c64 = course.two_layer_model(X, Y, (2, 3, 1), learning_rate=0.3, num_iterations=101)
    p32, c32 = course.two_layer_model(X.astype(np.float32), Y, (2, 3, 1), learning_rate=0.3,
                                      num_iterations=101)
    assert all(v.dtype == np.float32 for v in p32.values()) and all(c.dtype == np.float32 for c in c32)
    for key in p64:
        np.testing.assert_allclose(p32[key], p64[key], rtol=1e-4, atol=1e-5)


def test_L_layer_model_records_what_compute_cost_returns():
    """The application assignment's test: [10, 5, 6, 1], two iterations, costs [array(0.70723944)]."""
    np.random.seed(1)
    X, Y = randn(10, 10), np.array([[1, 1, 1, 1, 0, 0, 0, 1, 1, 0]])
    params, costs = course.L_layer_model(X, Y, (10, 5, 6, 1), num_iterations=2)
    published(costs, [0.70723944])
    assert type(costs[0]) is np.ndarray and costs[0].shape == () and costs[0].dtype == np.float64
    published(params["W3"], [[-0.09079199, -0.08117381, 0.07667568, 0.16665535, 0.08029575, 0.04805811]])
    published(params["b3"], [[0.0013201]])
    published(params["b1"], [[-2.16491028e-04], [1.50999130e-04], [8.71516045e-06], [5.57557615e-05],
                             [-2.90746349e-05]])
    AL, _ = course.L_model_forward(X, course.initialize_parameters_deep([10, 5, 6, 1]))
    assert type(costs[0]) is type(course.compute_cost(AL, Y))
    _, c32 = course.L_layer_model(X.astype(np.float32), Y, (10, 5, 6, 1), num_iterations=2)
    assert c32[0].dtype == np.float32 and float(c32[0]) == pytest.approx(float(costs[0]), rel=1e-6)
