"""The course's functional API against the assignment's published outputs (to the printed digits),
and the cat network trained through the course API and through Network."""
import os

import numpy as np
import pytest

from fastdnn import Network, course, datasets

from support import CAT_DIR

randn = np.random.randn


def published(actual, printed):
    """Equal to the digits the assignment printed (8 significant digits, NumPy's default)."""
    np.testing.assert_allclose(actual, np.array(printed), rtol=0, atol=5e-9)


def test_initialize_parameters():
    p = course.initialize_parameters(3, 2, 1)
    published(p["W1"], [[0.01624345, -0.00611756, -0.00528172], [-0.01072969, 0.00865408, -0.02301539]])
    published(p["W2"], [[0.01744812, -0.00761207]])
    assert p["b1"].shape == (2, 1) and not p["b2"].any()


def test_initialize_parameters_deep_step_by_step_variant():
    p = course.initialize_parameters_deep([5, 4, 3], seed=3, scale=0.01)
    published(p["W1"], [[0.01788628, 0.0043651, 0.00096497, -0.01863493, -0.00277388],
                        [-0.00354759, -0.00082741, -0.00627001, -0.00043818, -0.00477218],
                        [-0.01313865, 0.00884622, 0.00881318, 0.01709573, 0.00050034],
                        [-0.00404677, -0.0054536, -0.01546477, 0.00982367, -0.01101068]])
    published(p["W2"], [[-0.01185047, -0.0020565, 0.01486148, 0.00236716],
                        [-0.01023785, -0.00712993, 0.00625245, -0.00160513],
                        [-0.00768836, -0.00230031, 0.00745056, 0.01976111]])
    assert p["b1"].shape == (4, 1) and p["b2"].shape == (3, 1)


def test_linear_forward():
    np.random.seed(1)
    A, W, b = randn(3, 2), randn(1, 3), randn(1, 1)
    Z, cache = course.linear_forward(A, W, b)
    published(Z, [[3.26295337, -1.23429987]])
    assert cache[0] is A and cache[1] is W and cache[2] is b


def test_linear_activation_forward():
    np.random.seed(2)
    A_prev, W, b = randn(3, 2), randn(1, 3), randn(1, 1)
    published(course.linear_activation_forward(A_prev, W, b, "sigmoid")[0], [[0.96890023, 0.11013289]])
    A, ((A0, W0, b0), Z) = course.linear_activation_forward(A_prev, W, b, "relu")
    published(A, [[3.43896131, 0.0]])
    assert A0 is A_prev and Z.shape == (1, 2)


def test_L_model_forward():
    np.random.seed(6)
    X = randn(5, 4)
    params = {"W1": randn(4, 5), "b1": randn(4, 1), "W2": randn(3, 4), "b2": randn(3, 1),
              "W3": randn(1, 3), "b3": randn(1, 1)}
    AL, caches = course.L_model_forward(X, params)
    published(AL, [[0.03921668, 0.70498921, 0.19734387, 0.04728177]])
    assert len(caches) == 3


def test_compute_cost():
    cost = course.compute_cost(np.array([[.8, .9, 0.4]]), np.asarray([[1, 1, 0]]))
    assert cost.shape == () and float(cost) == pytest.approx(0.2797765635793422, abs=1e-15)


def test_linear_backward():
    np.random.seed(1)
    dZ, A, W, b = randn(3, 4), randn(5, 4), randn(3, 5), randn(3, 1)
    dA_prev, dW, db = course.linear_backward(dZ, (A, W, b))
    published(dA_prev, [[-1.15171336, 0.06718465, -0.3204696, 2.09812712],
                        [0.60345879, -3.72508701, 5.81700741, -3.84326836],
                        [-0.4319552, -1.30987417, 1.72354705, 0.05070578],
                        [-0.38981415, 0.60811244, -1.25938424, 1.47191593],
                        [-2.52214926, 2.67882552, -0.67947465, 1.48119548]])
    published(dW, [[0.07313866, -0.0976715, -0.87585828, 0.73763362, 0.00785716],
                   [0.85508818, 0.37530413, -0.59912655, 0.71278189, -0.58931808],
                   [0.97913304, -0.24376494, -0.08839671, 0.55151192, -0.10290907]])
    published(db, [[-0.14713786], [-0.11313155], [-0.13209101]])


def test_linear_activation_backward():
    np.random.seed(2)
    dA, A, W, b, Z = randn(1, 2), randn(3, 2), randn(1, 3), randn(1, 1), randn(1, 2)
    cache = ((A, W, b), Z)
    dA_prev, dW, db = course.linear_activation_backward(dA, cache, "sigmoid")
    published(dA_prev, [[0.11017994, 0.01105339], [0.09466817, 0.00949723], [-0.05743092, -0.00576154]])
    published(dW, [[0.10266786, 0.09778551, -0.01968084]])
    published(db, [[-0.05729622]])
    dA_prev, dW, db = course.linear_activation_backward(dA, cache, "relu")
    published(dA_prev, [[0.44090989, 0.0], [0.37883606, 0.0], [-0.2298228, 0.0]])
    published(dW, [[0.44513824, 0.37371418, -0.10478989]])
    published(db, [[-0.20837892]])


def test_L_model_backward():
    np.random.seed(3)
    AL, Y = randn(1, 2), np.array([[1, 0]])
    A1, W1, b1, Z1 = randn(4, 2), randn(3, 4), randn(3, 1), randn(3, 2)
    A2, W2, b2, Z2 = randn(3, 2), randn(1, 3), randn(1, 1), randn(1, 2)
    grads = course.L_model_backward(AL, Y, [((A1, W1, b1), Z1), ((A2, W2, b2), Z2)])
    published(grads["dW1"], [[0.41010002, 0.07807203, 0.13798444, 0.10502167], [0, 0, 0, 0],
                             [0.05283652, 0.01005865, 0.01777766, 0.0135308]])
    published(grads["db1"], [[-0.22007063], [0.0], [-0.02835349]])
    published(grads["dA1"], [[0.12913162, -0.44014127], [-0.14175655, 0.48317296],
                             [0.01663708, -0.05670698]])
    assert sorted(grads) == ["dA0", "dA1", "dW1", "dW2", "db1", "db2"]


def test_update_parameters():
    np.random.seed(2)
    params = {"W1": randn(3, 4), "b1": randn(3, 1), "W2": randn(1, 3), "b2": randn(1, 1)}
    np.random.seed(3)
    grads = {"dW1": randn(3, 4), "db1": randn(3, 1), "dW2": randn(1, 3), "db2": randn(1, 1)}
    before = {k: v.copy() for k, v in params.items()}
    new = course.update_parameters(params, grads, 0.1)
    published(new["W1"], [[-0.59562069, -0.09991781, -2.14584584, 1.82662008],
                          [-1.76569676, -0.80627147, 0.51115557, -1.18258802],
                          [-1.0535704, -0.86128581, 0.68284052, 2.20374577]])
    published(new["b1"], [[-0.04659241], [-1.28888275], [0.53405496]])
    published(new["W2"], [[-0.55569196, 0.0354055, 1.32964895]])
    published(new["b2"], [[-0.84610769]])
    assert all(np.array_equal(params[k], before[k]) for k in params)   # the input is not modified


def test_course_gradients_equal_network_gradients():
    X, Y = datasets.moons(m=30)
    params = course.initialize_parameters_deep([2, 5, 4, 1], seed=2)
    AL, caches = course.L_model_forward(X, params)
    grads = course.L_model_backward(AL, Y, caches)
    net = Network.from_parameters(params, device="numpy")
    np.testing.assert_allclose(net.forward(X), AL, rtol=1e-14)
    for key, value in net.gradients(X, Y).items():
        np.testing.assert_allclose(value, grads[key], rtol=1e-12, atol=1e-16)
    assert net.cost(X, Y) == pytest.approx(float(course.compute_cost(AL, Y)), rel=1e-14)


def test_course_predict_prints_accuracy(capsys):
    """p = 1 where AL > 0.5 (AL from a float64 forward written here), and the printed accuracy is
    the fraction of p equal to y."""
    X, Y = datasets.moons(m=50, seed=1)
    params = course.initialize_parameters_deep([2, 4, 1], seed=3)
    p = course.predict(X, Y, params)
    A = np.maximum(params["W1"] @ X + params["b1"], 0)
    AL = 1 / (1 + np.exp(-(params["W2"] @ A + params["b2"])))
    np.testing.assert_array_equal(p, (AL > 0.5).astype(float))
    expected = np.mean(p == Y)
    assert 0 < expected < 1                        # neither all right nor all wrong: the value matters
    out = capsys.readouterr().out
    assert out.startswith("Accuracy: ") and float(out.split()[1]) == pytest.approx(expected, abs=1e-12)


needs_cats = pytest.mark.skipif(not os.path.isdir(CAT_DIR),
                                reason=f"the course's cat images are not at {CAT_DIR}")


@pytest.fixture(scope="module")
def cats():
    return datasets.load_catvnoncat(CAT_DIR)


@needs_cats
def test_cat_loader_gives_course_layout(cats):
    assert cats.train_x.shape == (12288, 209) and cats.test_x.shape == (12288, 50)
    assert cats.train_y.shape == (1, 209) and cats.test_y.shape == (1, 50)
    assert 0 <= cats.train_x.min() and cats.train_x.max() <= 1
    assert list(cats.classes) == [b"non-cat", b"cat"]
    assert cats.train_y.sum() == 72


@needs_cats
@pytest.mark.slow
def test_cat_network_reproduces_the_course(cats):
    """2500 iterations, lr 0.0075, /sqrt init with seed 1: the assignment printed 0.771749 (iteration 0),
    0.672053 (100), 0.092878 (2400), train accuracy 0.985645933014, test 0.8."""
    dims = [12288, 20, 7, 5, 1]
    params, costs = course.L_layer_model(cats.train_x, cats.train_y, dims, num_iterations=2500)
    net = Network.from_parameters(course.initialize_parameters_deep(dims, seed=1), device="numpy")
    history = net.fit(cats.train_x, cats.train_y, learning_rate=0.0075, iterations=2500)
    assert history.iterations[:25] == list(range(0, 2500, 100))
    np.testing.assert_allclose(history.costs[:25], costs, rtol=1e-12)
    published(np.round([costs[0], costs[1], costs[24]], 6), [0.771749, 0.672053, 0.092878])
    assert net.accuracy(cats.train_x, cats.train_y) == pytest.approx(0.985645933014)
    assert net.accuracy(cats.test_x, cats.test_y) == pytest.approx(0.8)
    p = course.predict(cats.test_x, cats.test_y, params, print_accuracy=False)
    np.testing.assert_array_equal(p, net.predict(cats.test_x))


def test_cat_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="train_catvnoncat.h5 not found"):
        datasets.load_catvnoncat(str(tmp_path))
    import builtins
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(
        ImportError("no h5py")) if name == "h5py" else real_import(name, *a, **k))
    with pytest.raises(ImportError, match=r"pip install 'fastdnn\[data\]'"):
        datasets.load_catvnoncat(str(tmp_path))


def test_random_mini_batches_follow_the_course():
    rng = np.random.RandomState(1)
    X, Y = rng.randn(5, 148), (rng.randn(1, 148) < 0.5).astype(float)
    batches = course.random_mini_batches(X, Y, 64, seed=0)
    assert [b[0].shape for b in batches] == [(5, 64), (5, 64), (5, 20)]
    np.random.seed(0)
    order = np.random.permutation(148)
    np.testing.assert_array_equal(np.hstack([b[0] for b in batches]), X[:, order])
    np.testing.assert_array_equal(np.hstack([b[1] for b in batches]), Y[:, order])


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_course_optimizers_equal_the_network_optimizers(name):
    """The course's dict-based updates and Network's fused flat-buffer ones are written apart."""
    X, Y = datasets.moons(m=40, seed=5)
    params = course.initialize_parameters_deep([2, 4, 1], seed=2)
    net = Network.from_parameters(params, device="cpu")
    v = course.initialize_velocity(params)
    s = course.initialize_velocity(params)
    for t in range(1, 6):
        AL, caches = course.L_model_forward(X, params)
        grads = course.L_model_backward(AL, Y, caches)
        if name == "momentum":
            params, v = course.update_parameters_with_momentum(params, grads, v, 0.9, 0.1)
        else:
            params, v, s, _, _ = course.update_parameters_with_adam(params, grads, v, s, t, 0.1)
        net.step(X, Y, 0.1, optimizer=name)
    for key, value in net.parameters.items():
        np.testing.assert_allclose(value, params[key], rtol=1e-10, atol=1e-13)
