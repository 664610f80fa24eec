"""The course's own experiments reach the course's published quality (course 2 assignments)."""
import os

import pytest

from fastdnn import Network, datasets

from support import SHARED

DATA_MAT = os.path.join(SHARED, "course2", "data.mat")


def test_optimizers_on_moons_adam_wins():
    """[2, 5, 2, 1], mini-batches of 64, lr 0.0007, 5000 epochs: the course reports 79.7 % (gd),
    79.7 % (momentum), 94 % (adam) on its moons sample; here gd = momentum << adam as well."""
    X, Y = datasets.moons(m=300, noise=0.2, seed=3)
    accuracy = {}
    for optimizer in ("gd", "momentum", "adam"):
        net = Network([2, 5, 2, 1], "relu", init="he", dtype="float64", seed=3)
        net.fit(X, Y, learning_rate=0.0007, epochs=5000, batch_size=64, optimizer=optimizer, seed=10)
        accuracy[optimizer] = net.accuracy(X, Y)
    assert accuracy["adam"] >= 0.94
    assert accuracy["gd"] < 0.8 and accuracy["momentum"] < 0.8


@pytest.mark.skipif(not os.path.isfile(DATA_MAT), reason=f"the course's data.mat is not at {DATA_MAT}")
@pytest.mark.parametrize("regularization,train,test", [
    ({}, 0.947867298578, 0.915),                 # the assignment's printed accuracies
    ({"l2": 0.7}, 0.938388625592, 0.93),
    ({"keep_prob": 0.86}, None, 0.93),           # masks are random: the course got 0.929 / 0.95
], ids=["none", "l2", "dropout"])
def test_regularization_on_the_course_data(regularization, train, test):
    """30 000 iterations amplify last-bit differences between BLAS kernels (an AVX-512 machine's
    OpenBLAS reached 0.925 test accuracy with dropout): the margins allow two examples either way
    (train 211, test 200 examples), wide enough for any kernel, narrow enough to catch a wrong model."""
    d = datasets.load_course2(DATA_MAT)
    net = Network([2, 20, 3, 1], "relu", init="scaled", dtype="float64", seed=3, **regularization)
    net.fit(d.train_x, d.train_y, learning_rate=0.3, iterations=30000)
    if train is not None:
        assert net.accuracy(d.train_x, d.train_y) == pytest.approx(train, abs=2 / 211 + 1e-12)
    assert net.accuracy(d.test_x, d.test_y) >= test - 2 / 200 - 1e-12


def test_initialization_on_circles():
    """[2, 10, 5, 1], lr 0.01, 15000 iterations: zeros never break symmetry (50 %), large random
    weights start saturated and stay worse, He works (course: 50 %, 83/86 %, 99.3/96 %)."""
    Xtr, Ytr = datasets.circles(m=300, noise=0.05, seed=1)
    Xte, Yte = datasets.circles(m=100, noise=0.05, seed=2)
    result = {}
    for init in ("zeros", "large", "he"):
        net = Network([2, 10, 5, 1], "relu", init=init, dtype="float64", seed=3)
        history = net.fit(Xtr, Ytr, learning_rate=0.01, iterations=15000, report_every=5000)
        result[init] = (net.accuracy(Xtr, Ytr), net.accuracy(Xte, Yte), history.costs[0])
    assert result["zeros"][:2] == (0.5, 0.5)
    assert result["large"][2] > 100 > result["he"][2]          # saturated start
    assert result["he"][0] > result["large"][0] + 0.1 and result["he"][1] >= 0.88
