"""Generated data sets, and the README's test command (the command line itself: test_cli.py)."""
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


def test_ci_runs_the_readme_test_command():
    import os
    root = os.path.join(os.path.dirname(__file__), "..")
    readme = open(os.path.join(root, "README.md")).read()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and commands[0].endswith("fastdnn demo")
    assert commands[1] in open(os.path.join(root, ".ci", "run")).read().splitlines()
