"""L2 and inverted dropout against the float64 oracle, on every backend; gradient check with L2."""
import numpy as np
import pytest

import fastdnn
from fastdnn import Network, datasets, gradient_check

import oracle
from support import ACTIVATIONS, BACKENDS, DTYPES, assert_close, rounded


def setup(backend, dtype, hidden, l2=0.0, keep_prob=1.0, m=13):
    rng = np.random.RandomState(0)
    X, Y = rounded(rng.randn(4, m), dtype), rng.randint(0, 2, (1, m)).astype(float)
    net = Network([4, 6, 5, 1], hidden, device=backend, dtype=dtype, seed=3, l2=l2, keep_prob=keep_prob)
    return net, X, Y, {k: v.astype(np.float64) for k, v in net.parameters.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", ACTIVATIONS)
def test_l2_cost_gradients_and_step_match_reference(backend, dtype, hidden):
    net, X, Y, params = setup(backend, dtype, hidden, l2=0.7)
    acts = [hidden, hidden, "sigmoid"]
    J, new = oracle.regularized_step(params, X, Y, acts, "bce", 0.1, l2=0.7)
    assert_close(net.cost(X, Y), J, dtype)
    assert_close(net.step(X, Y, 0.1), J, dtype)
    for key, value in net.parameters.items():
        assert_close(value, new[key], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", ACTIVATIONS)
def test_dropout_step_matches_reference_with_the_same_masks(backend, dtype, hidden):
    net, X, Y, params = setup(backend, dtype, hidden, keep_prob=[0.8, 0.6])
    Xd, Yd = net.prepare(X, Y)
    cost = net.engine.train_step(Xd, Yd, 0.1, check=True)
    ws = net.engine.workspace(X.shape[1])
    masks = {l: net.backend.to_numpy(D).astype(np.float64) for l, D in ws.D.items()}
    assert set(masks) == {1, 2}
    assert set(np.unique(masks[1])) <= {0.0, np.float64(np.dtype(dtype).type(1 / 0.8))}
    J, new = oracle.regularized_step(params, X, Y, [hidden, hidden, "sigmoid"], "bce", 0.1, masks=masks)
    assert_close(net.backend.scalar(cost), J, dtype)
    for key, value in net.parameters.items():
        assert_close(value, new[key], dtype)


def test_dropout_is_fresh_each_step_seeded_and_off_outside_training(backend):
    X, Y = datasets.moons(m=200, seed=1)
    net = Network([2, 50, 1], device=backend, dtype="float64", seed=5, keep_prob=0.7)
    Xd, Yd = net.prepare(X, Y)
    before = net.predict_proba(X)
    np.testing.assert_array_equal(net.predict_proba(X), before)       # no dropout when predicting
    net.engine.train_step(Xd, Yd, 1e-9, check=True)
    first = net.backend.to_numpy(net.engine.workspace(200).D[1]).copy()
    net.engine.train_step(Xd, Yd, 1e-9, check=True)
    second = net.backend.to_numpy(net.engine.workspace(200).D[1])
    assert not np.array_equal(first, second)
    assert abs((first > 0).mean() - 0.7) < 0.02
    twin = Network([2, 50, 1], device="numpy", dtype="float64", seed=5, keep_prob=0.7)
    twin.engine.train_step(*twin.prepare(X, Y), 1e-9, check=True)
    np.testing.assert_array_equal(twin.engine.workspace(200).D[1], first)   # same seed, same masks


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("output,loss", [("sigmoid", "bce"), ("softmax", "ce"), ("linear", "mse")])
@pytest.mark.parametrize("hidden", ACTIVATIONS)
def test_gradient_check_passes_with_l2(name, hidden, output, loss):
    rng = np.random.RandomState(1)
    n_out = 3 if output == "softmax" else 1
    params = Network([3, 5, 4, n_out], init="xavier", dtype="float64", seed=2).parameters
    for l in (1, 2, 3):
        params[f"b{l}"] = 0.1 * rng.randn(*params[f"b{l}"].shape)
    net = Network.from_parameters(params, hidden, output, loss, device=name).regularize(l2=0.7)
    X = rng.randn(3, 8)
    Y = {"bce": rng.randint(0, 2, (1, 8)), "ce": rng.randint(0, 3, 8), "mse": rng.randn(1, 8)}[loss]
    assert gradient_check(net, X, Y) < 1e-7


def test_bad_regularization_arguments():
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
        Network([2, 3, 1], l2=-1)
    with pytest.raises(ValueError, match=r"keep_prob must be in \(0, 1\], one value or one per hidden layer \(2\)"):
        Network([2, 3, 3, 1], keep_prob=[0.5])
    with pytest.raises(ValueError, match="keep_prob must be in"):
        Network([2, 3, 1], keep_prob=0)


def test_resume_with_dropout_and_l2_is_bit_identical(tmp_path):
    X, Y = datasets.moons(m=60, seed=1)
    kwargs = dict(device="numpy", dtype="float64", seed=0, l2=0.1, keep_prob=0.8)
    whole = Network([2, 8, 1], **kwargs)
    whole.fit(X, Y, learning_rate=0.05, epochs=4, batch_size=16, seed=2)
    first = Network([2, 8, 1], **kwargs)
    first.fit(X, Y, learning_rate=0.05, epochs=2, batch_size=16, seed=2)
    resumed = fastdnn.load(first.save(str(tmp_path / "n.npz")), device="numpy")
    assert resumed.l2 == 0.1 and resumed.keep_prob == (0.8,)
    resumed.fit(X, Y, learning_rate=0.05, epochs=2, batch_size=16, seed=2)
    for key, value in whole.parameters.items():
        np.testing.assert_array_equal(resumed.parameters[key], value)
