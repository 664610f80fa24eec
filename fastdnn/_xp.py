"""The array namespace of given arrays: cupy for CuPy arrays, else numpy (never imports cupy)."""
import sys

import numpy


def array_namespace(*arrays):
    """cupy if any array is a cupy.ndarray (cupy is then already imported), else numpy."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            return sys.modules["cupy"]
    return numpy
