"""The ``cupy`` backend: the xp-generic ops on CuPy (cuBLAS GEMMs, CuPy elementwise and reductions),
unfused. The reference on the GPU (``cupy-fused`` inherits from it), and the fallback when NVRTC cannot
compile the fused kernels.

Written against CuPy's documented API; no machine of this project has a GPU: it runs in CI through the
strict CuPy stand-in (tests/fake_cupy.py) — see README.
"""
import contextlib

from . import _cuda_device
from .base import Backend


class CupyBackend(Backend):
    name = "cupy"
    defers_checks = True      # a step never reads its cost back: divergence is marked on the device

    def __init__(self, device="cuda:0", xp=None):
        super().__init__(device)
        self.counters.update(launch=0, sync=0)
        self.device_index = int(device.split(":")[1]) if ":" in device else 0
        if xp is None:                          # the real thing: CuPy on a device
            self.xp = _cuda_device.cupy()
        else:                                   # NumPy standing in for CuPy (CUDA simulator tests)
            self.xp = xp

    @staticmethod
    def probe(device_index=0):
        return _cuda_device.probe(device_index)

    def device_scope(self):
        """This backend's device made current for the work inside (its allocations, GEMMs, launches)."""
        return _cuda_device.device_scope(self.device_index) if self._real else contextlib.nullcontext()

    @property
    def _real(self):
        return self.xp.__name__ == "cupy"

    def asarray(self, x, dtype=None):
        return _cuda_device.to_device(x, dtype) if self._real else self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        self.counters["sync"] += 1
        return _cuda_device.to_host(x) if self._real else super().to_numpy(x)

    def scalar(self, x):
        """A device scalar as a Python float (one device-to-host copy); floats pass through."""
        return x if isinstance(x, float) else float(self.to_numpy(x))

    def empty(self, shape, dtype):
        return _cuda_device.empty(shape, dtype) if self._real else super().empty(shape, dtype)

    def host_buffer(self, shape, dtype):
        return _cuda_device.pinned_empty(shape, dtype) if self._real else super().host_buffer(shape, dtype)

    def copy_to_host(self, x, host):
        self.counters["sync"] += 1
        return _cuda_device.copy_to_host(x, host) if self._real else super().copy_to_host(x, host)

    def copy_from_host(self, host, x):
        return _cuda_device.copy_from_host(host, x) if self._real else super().copy_from_host(host, x)

    def synchronize(self):
        if self._real:
            _cuda_device.synchronize()

    def dropout_mask(self, D, keep_prob, rng):
        """D = (u < keep_prob) / keep_prob, u drawn on the device (seeded from the network's generator)."""
        if not self._real:
            return super().dropout_mask(D, keep_prob, rng)
        if not hasattr(self, "_rng"):
            self._rng = self.xp.random.default_rng(int(rng.integers(2**31)))
        self._rng.random(D.shape, dtype=D.dtype, out=D)          # drawn in place: no allocation per step
        self.xp.less(D, keep_prob, out=D)
        D *= 1 / keep_prob
        return D
