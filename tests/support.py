"""Constants and helpers shared by the tests (the fixtures are in conftest.py)."""
import os
import tracemalloc

import numpy as np

import fastdnn

BACKENDS = [b.name for b in fastdnn.available_backends() if b.available]
DTYPES = ["float64", "float32"]
RTOL = {"float64": 1e-10, "float32": 1e-5}
ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "linear"]
OUTPUTS = [("sigmoid", "bce"), ("softmax", "ce"), ("linear", "mse"), ("tanh", "mse")]
# The numba backend's three ways of running a step, forced whatever the network's size: one
# compiled call with GEMMs as loops, or through BLAS; op by op from Python.
NUMBA_PATHS = {"whole-step": (10**12, False), "blas-step": (0, True), "per-op": (0, False)}
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
CAT_DIR = os.path.join(SHARED, "catvnoncat")


def assert_close(actual, expected, dtype, scale=None):
    """|actual - expected| <= rtol * (|expected| + scale), scale defaulting to max |expected| (or 1)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if scale is None:
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    rtol = RTOL[str(np.dtype(dtype))]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def rounded(x, dtype):
    """x rounded to dtype and back to float64: the exact inputs a backend sees."""
    return np.asarray(x).astype(dtype).astype(np.float64)


def allocations(run):
    """(bytes still allocated after run() that were not before, the most allocated at once) under tracemalloc."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run()
        after = tracemalloc.take_snapshot()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename")), peak


def epoch_growth(net, X, Y, batch_size=64, learning_rate=1e-3):
    """Bytes a whole shuffled epoch of ``net.engine.train_epoch`` leaves allocated once its gather buffers
    exist (an epoch of the same call made them first)."""
    XT, YT = net.engine.example_major(*net.prepare(X, Y))
    buffers = {}
    epoch = lambda: net.engine.train_epoch(XT, YT, learning_rate, batch_size, True, 1, buffers)  # noqa: E731
    epoch()
    return allocations(epoch)[0]


class PendingCompile:
    """A background compile that reports itself running for the next ``checks`` questions."""

    def __init__(self, checks):
        self.checks = checks

    def is_alive(self):
        self.checks -= 1
        return self.checks >= 0
