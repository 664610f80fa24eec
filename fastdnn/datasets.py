"""Data sets in course layout: X (n_x, m) float64, Y (1, m) int64 class ids; seeded.

Generated in code: ``flower`` (the course's planar petals), ``moons``, ``circles``, ``spirals``.
Loaded from disk: ``load_catvnoncat(directory)`` (the course's HDF5 cat images; needs h5py,
the ``data`` extra).
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np


class CatData(NamedTuple):
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: np.ndarray


class Split(NamedTuple):
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _check_m(m, parts):
    if int(m) != m or m < parts:
        raise ValueError(f"m must be an integer >= {parts}; got {m}")
    return int(m)


def _split(m, parts):
    """Sizes of ``parts`` classes that add up to m."""
    return [m // parts + (1 if c < m % parts else 0) for c in range(parts)]


def _finish(points, labels, rng):
    """Shuffle examples and return X (2, m), Y (1, m)."""
    X, Y = np.concatenate(points, axis=1), np.concatenate(labels)
    order = rng.permutation(Y.size)
    return X[:, order], Y[order].reshape(1, -1).astype(np.int64)


def flower(m: int = 400, noise: float = 0.2, petals: int = 4, seed: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two classes on the petals of r = 4 sin(petals·t), t in [3.12 j, 3.12 (j+1)] for class j."""
    m = _check_m(m, 2)
    rng = np.random.RandomState(seed)
    points, labels = [], []
    for j, n in enumerate(_split(m, 2)):
        t = np.linspace(j * 3.12, (j + 1) * 3.12, n) + rng.randn(n) * noise
        r = 4 * np.sin(petals * t) + rng.randn(n) * noise
        points.append(np.vstack([r * np.sin(t), r * np.cos(t)]))
        labels.append(np.full(n, j))
    return _finish(points, labels, rng)


def moons(m: int = 300, noise: float = 0.2, seed: int | None = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles: (cos t, sin t) and (1 - cos t, 0.5 - sin t), t in [0, π], plus noise."""
    m = _check_m(m, 2)
    rng = np.random.RandomState(seed)
    n0, n1 = _split(m, 2)
    t0, t1 = np.linspace(0, np.pi, n0), np.linspace(0, np.pi, n1)
    points = [np.vstack([np.cos(t0), np.sin(t0)]), np.vstack([1 - np.cos(t1), 0.5 - np.sin(t1)])]
    points = [p + rng.randn(*p.shape) * noise for p in points]
    return _finish(points, [np.zeros(n0), np.ones(n1)], rng)


def circles(m: int = 300, noise: float = 0.05, factor: float = 0.8,
            seed: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles of radius 1 (class 0) and ``factor`` (class 1), plus noise."""
    m = _check_m(m, 2)
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1); got {factor}")
    rng = np.random.RandomState(seed)
    points, labels = [], []
    for j, (n, radius) in enumerate(zip(_split(m, 2), (1.0, factor))):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        points.append(radius * np.vstack([np.cos(t), np.sin(t)]) + rng.randn(2, n) * noise)
        labels.append(np.full(n, j))
    return _finish(points, labels, rng)


def spirals(m: int = 300, classes: int = 3, noise: float = 0.2,
            seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` interleaved spiral arms: radius r in [0, 1], angle 4r + 2πj/classes + noise."""
    m = _check_m(m, classes)
    rng = np.random.RandomState(seed)
    points, labels = [], []
    for j, n in enumerate(_split(m, classes)):
        r = np.linspace(0.0, 1.0, n)
        t = 4 * r + 2 * np.pi * j / classes + rng.randn(n) * noise
        points.append(np.vstack([r * np.sin(t), r * np.cos(t)]))
        labels.append(np.full(n, j))
    return _finish(points, labels, rng)


GENERATED = {"flower": flower, "moons": moons, "circles": circles, "spirals": spirals}


def load_catvnoncat(directory: str | os.PathLike[str], flatten: bool = True, normalize: bool = True) -> CatData:
    """The course's cat images from ``train_catvnoncat.h5`` / ``test_catvnoncat.h5`` in directory.

    Returns CatData(train_x, train_y, test_x, test_y, classes): with flatten, X is (12288, m) as in
    the course (images (m, 64, 64, 3) otherwise), divided by 255 with normalize; Y is (1, m)."""
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("load_catvnoncat needs h5py: pip install 'fastdnn[data]'") from exc
    parts = {}
    for split in ("train", "test"):
        path = os.path.join(directory, f"{split}_catvnoncat.h5")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found; expected the course's "
                                    "train_catvnoncat.h5 and test_catvnoncat.h5 in that directory")
        with h5py.File(path, "r") as f:
            x, y = np.array(f[f"{split}_set_x"]), np.array(f[f"{split}_set_y"])
            classes = np.array(f["list_classes"])
        if flatten:
            x = x.reshape(x.shape[0], -1).T
        parts[split] = (x / 255. if normalize else x, y.reshape(1, -1).astype(np.int64))
    return CatData(*parts["train"], *parts["test"], classes)


def load_course2(path: str | os.PathLike[str]) -> Split:
    """The course's regularization data (``data.mat``: the 2-D football positions): Split(train_x
    (2, 211), train_y (1, 211), test_x (2, 200), test_y (1, 200)). Needs SciPy (the ``data`` extra)."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise ImportError("load_course2 needs scipy: pip install 'fastdnn[data]'") from exc
    data = loadmat(path)
    return Split(data["X"].T, data["y"].T.astype(np.int64), data["Xval"].T, data["yval"].T.astype(np.int64))
