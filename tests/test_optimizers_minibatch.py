"""Optimizers against the float64 oracle on every backend; mini-batch training semantics."""
import numpy as np
import pytest

from fastdnn import Network, datasets
from fastdnn.optimizers import OPTIMIZERS, Adam, Momentum, get_optimizer

import oracle
from support import BACKENDS, DTYPES, assert_close, rounded

NAMES = sorted(OPTIMIZERS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P", [1, 7, 1001])
@pytest.mark.parametrize("name", NAMES)
def test_optimizer_update_matches_reference(backend, dtype, P, name):
    rng = np.random.RandomState(5)
    theta = rounded(rng.randn(P), dtype)
    grads = [rounded(rng.randn(P), dtype) for _ in range(4)]
    optimizer = get_optimizer(name)
    states, states_out = ([backend.zeros((P,), dtype) for _ in range(optimizer.n_state)] for _ in range(2))
    cur, out = backend.asarray(theta.astype(dtype)), backend.empty((P,), dtype)
    for t, g in enumerate(grads, start=1):
        before = [backend.to_numpy(a) for a in [cur, *states]]
        backend.update(optimizer, cur, backend.asarray(g.astype(dtype)), states, 0.01, t, out, states_out)
        for a, b in zip([cur, *states], before):       # out of place: θ and the state are only read
            np.testing.assert_array_equal(backend.to_numpy(a), b)
        cur, out, states, states_out = out, cur, states_out, states
        assert cur.dtype == np.dtype(dtype)
    assert_close(backend.to_numpy(cur), oracle.optimizer_steps(name, theta, grads, 0.01), dtype)


def test_optimizer_hyperparameters_reach_the_kernels(backend):
    rng = np.random.RandomState(0)
    theta, grads = rng.randn(50), [rng.randn(50) for _ in range(3)]
    for optimizer, hyper in [(Adam(beta1=0.5, beta2=0.9, epsilon=1e-3), dict(beta1=0.5, beta2=0.9, epsilon=1e-3)),
                             (Momentum(beta=0.3), dict(beta=0.3))]:
        expected = oracle.optimizer_steps(optimizer.name, theta, grads, 0.1, **hyper)
        states, states_out = ([backend.zeros((50,), "float64") for _ in range(optimizer.n_state)] for _ in range(2))
        cur, out = backend.asarray(theta.copy()), backend.empty((50,), "float64")
        for t, g in enumerate(grads, start=1):
            backend.update(optimizer, cur, backend.asarray(g), states, 0.1, t, out, states_out)
            cur, out, states, states_out = out, cur, states_out, states
        assert_close(backend.to_numpy(cur), expected, "float64")


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; expected one of 'adagrad', 'adam', 'gd', "
                                         "'momentum', 'rmsprop'"):
        get_optimizer("sgd")
    with pytest.raises(ValueError, match=r"beta1 must be in \[0, 1\); got 1.0"):
        Adam(beta1=1.0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        Adam(learning_rate=0)


@pytest.mark.parametrize("name", NAMES)
def test_every_backend_trains_the_same_with_every_optimizer(path, name):
    X, Y = datasets.moons(m=90, seed=1)
    nets = [Network([2, 5, 4, 1], "tanh", device=b, dtype="float64", seed=3) for b in BACKENDS]
    histories = [net.fit(X, Y, learning_rate=0.05, epochs=6, batch_size=32, seed=7, optimizer=name)
                 for net in nets]
    for net, history in zip(nets[1:], histories[1:]):
        np.testing.assert_allclose(history.costs, histories[0].costs, rtol=1e-10)
        for key, value in nets[0].parameters.items():
            np.testing.assert_allclose(net.parameters[key], value, rtol=1e-10, atol=1e-13)


def test_optimizer_state_carries_over_between_fits_and_resets_on_change(backend):
    X, Y = datasets.moons(m=64, seed=2)
    a = Network([2, 6, 1], device=backend, dtype="float64", seed=1)
    b = Network([2, 6, 1], device=backend, dtype="float64", seed=1)
    a.fit(X, Y, learning_rate=0.01, iterations=10, optimizer="adam")
    a.fit(X, Y, learning_rate=0.01, iterations=10)                    # same Adam, state kept
    b.fit(X, Y, learning_rate=0.01, iterations=20, optimizer="adam")
    for key, value in b.parameters.items():
        np.testing.assert_allclose(a.parameters[key], value, rtol=1e-12)
    a.fit(X, Y, learning_rate=0.01, iterations=1, optimizer="momentum")
    assert a.optimizer.name == "momentum" and a.engine.t == 1


def test_one_epoch_of_one_batch_is_one_full_batch_step(backend):
    X, Y = datasets.flower(m=100)
    a = Network([2, 4, 1], "tanh", device=backend, dtype="float64", seed=1)
    b = Network([2, 4, 1], "tanh", device=backend, dtype="float64", seed=1)
    ha = a.fit(X, Y, learning_rate=0.5, epochs=3, shuffle=False)
    hb = b.fit(X, Y, learning_rate=0.5, iterations=3, report_every=1)
    np.testing.assert_allclose(ha.costs, hb.costs, rtol=1e-13)
    assert ha.unit == "epoch" and ha.iterations == [0, 1, 2]


def test_mini_batches_are_consecutive_slices_of_a_seeded_permutation(backend):
    X, Y = datasets.moons(m=50, seed=4)
    net = Network([2, 5, 1], device=backend, dtype="float64", seed=2)
    manual = Network([2, 5, 1], device=backend, dtype="float64", seed=2)
    history = net.fit(X, Y, learning_rate=0.1, epochs=2, batch_size=16, seed=9)
    epoch_costs = []
    for epoch in range(2):
        stream = np.random.PCG64(np.random.SeedSequence([9]))      # epoch e: the stretch from e · 2⁶⁴ on
        stream.advance(epoch * 2**64)
        order = np.random.Generator(stream).permutation(50)
        batches = [order[k:k + 16] for k in range(0, 50, 16)]
        assert [len(b) for b in batches] == [16, 16, 16, 2]        # the last batch is partial
        costs = [manual.step(X[:, b], Y[:, b], 0.1) * len(b) / 50 for b in batches]
        epoch_costs.append(sum(costs))
    np.testing.assert_allclose(history.costs, epoch_costs, rtol=1e-12)
    for key, value in manual.parameters.items():
        np.testing.assert_allclose(net.parameters[key], value, rtol=1e-12)
    again = Network([2, 5, 1], device=backend, dtype="float64", seed=2)
    assert again.fit(X, Y, learning_rate=0.1, epochs=2, batch_size=16, seed=9).costs == history.costs


def test_fit_argument_errors():
    X, Y = datasets.moons(m=20)
    net = Network([2, 3, 1])
    with pytest.raises(ValueError, match="batch_size needs epochs"):
        net.fit(X, Y, batch_size=8)
    with pytest.raises(ValueError, match="give iterations .* or epochs, not both"):
        net.fit(X, Y, iterations=3, epochs=2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got 0"):
        net.fit(X, Y, epochs=1, batch_size=0)


def test_adam_on_moons_learns():
    X, Y = datasets.moons(m=300, noise=0.2, seed=3)
    net = Network([2, 5, 2, 1], "relu", device="cpu", seed=3)
    history = net.fit(X, Y, learning_rate=0.0007, epochs=300, batch_size=64, optimizer="adam", seed=10)
    assert history.costs[-1] < 0.5 * history.costs[0]
    assert net.accuracy(X, Y) > 0.85
