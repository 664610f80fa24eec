"""The reference backend: the xp-generic ops on NumPy, simple and allocating."""
import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    @staticmethod
    def probe(device_index=None):
        """Why this backend cannot run here (None: it can)."""
        return None
