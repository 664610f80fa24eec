"""Plots are matplotlib Figures, written as PNG files when a path is given (matplotlib is in the dev
extra)."""
from pathlib import Path

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


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend (here: pdf, chosen through MPLBACKEND) is still the backend after
    importing and using fastdnn.plot, pyplot is not involved, and the figures still save as PNG."""
    import os
    import subprocess
    import sys
    code = """
import sys, matplotlib
from fastdnn import Network, datasets, plot
X, Y = datasets.moons(m=60)
net = Network([2, 3, 1], seed=0)
history = net.fit(X, Y, iterations=20, verbose=0)
figures = [plot.cost_curve(history, "cost.png"), plot.decision_boundary(net, X, Y, "b.png", resolution=20)]
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, type(figures[0]).__name__)
"""
    root = str(Path(__file__).resolve().parents[1])          # this checkout's fastdnn
    env = dict(os.environ, MPLBACKEND="pdf", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["pdf", "False", "Figure"]
    assert (tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"
