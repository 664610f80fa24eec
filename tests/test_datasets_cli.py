"""Generated data sets and the fastdnn command."""
import subprocess
import sys

import numpy as np
import pytest

from fastdnn import datasets


@pytest.mark.parametrize("name", sorted(datasets.GENERATED))
@pytest.mark.parametrize("m", [7, 400])
def test_generated_sets_are_in_course_layout_and_seeded(name, m):
    make = datasets.GENERATED[name]
    X, Y = make(m=m, seed=5)
    classes = 3 if name == "spirals" else 2
    assert X.shape == (2, m) and Y.shape == (1, m) and X.dtype == np.float64 and Y.dtype == np.int64
    assert sorted(np.unique(Y)) == list(range(classes))
    assert np.bincount(Y.ravel()).max() - np.bincount(Y.ravel()).min() <= 1
    X2, Y2 = make(m=m, seed=5)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(Y, Y2)
    assert not np.array_equal(make(m=m, seed=6)[0], X)


def test_bad_sizes():
    with pytest.raises(ValueError, match="m must be an integer >= 2"):
        datasets.flower(m=1)
    with pytest.raises(ValueError, match="factor must be in"):
        datasets.circles(factor=2)


def run(*args):
    return subprocess.run([sys.executable, "-m", "fastdnn", *args], capture_output=True, text=True,
                          timeout=120)


def test_demo_prints_device_costs_and_accuracy():
    out = run("demo", "--iterations", "300", "--no-bench")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "backend" in lines[1] and "on cpu" in lines[1]
    costs = [float(line.split("cost")[1].split()[0]) for line in lines if "cost" in line]
    assert len(costs) >= 5 and costs[-1] < costs[0]
    assert "training accuracy" in lines[-1]


def test_backends_command_and_bad_arguments():
    out = run("backends")
    assert out.returncode == 0 and "numpy" in out.stdout and "device='cuda' ->" in out.stdout
    bad = run("demo", "--dataset", "mnist")
    assert bad.returncode == 2 and "invalid choice: 'mnist'" in bad.stderr


def test_ci_runs_the_readme_test_command():
    import os
    root = os.path.join(os.path.dirname(__file__), "..")
    readme = open(os.path.join(root, "README.md")).read()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and commands[0].endswith("fastdnn demo")
    assert commands[1] in open(os.path.join(root, ".ci", "run")).read().splitlines()


def test_train_command_saves_the_model_and_the_cost_curve(tmp_path):
    out = run("train", "--dataset", "moons", "--epochs", "30", "--learning-rate", "0.01", "--beta1", "0.8",
              "--save", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "c.png"), "--verbose", "0")
    assert out.returncode == 0, out.stderr
    assert "backend" in out.stdout and "training accuracy" in out.stdout
    import fastdnn
    net = fastdnn.load(str(tmp_path / "m.npz"))
    assert net.layer_dims == [2, 5, 2, 1] and net.optimizer.name == "adam" and net.epoch == 30
    assert net.optimizer.beta1 == 0.8
    bad = run("train", "--optimizer", "gd", "--beta1", "0.8")
    assert bad.returncode != 0 and "takes none of --beta1" in bad.stderr
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
