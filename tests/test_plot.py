"""Plots are written as PNG files (matplotlib is in the dev extra)."""
import numpy as np
import pytest

from fastdnn import Network, datasets

plot = pytest.importorskip("fastdnn.plot")
pytest.importorskip("matplotlib")


def test_cost_curve_and_decision_boundary_are_pngs(tmp_path):
    X, Y = datasets.flower(m=200)
    Xv, Yv = datasets.flower(m=100, seed=2)
    net = Network([2, 6, 1], "tanh", seed=1)
    history = net.fit(X, Y, learning_rate=1.0, iterations=500, validation_data=(Xv, Yv), report_every=50)
    plot.cost_curve(history, tmp_path / "cost.png")
    fig = plot.decision_boundary(net, X, Y, tmp_path / "boundary.png", resolution=50)
    for name in ("cost.png", "boundary.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="needs 2-D inputs"):
        plot.decision_boundary(Network([3, 2, 1]), np.ones((3, 4)), np.ones((1, 4)))
