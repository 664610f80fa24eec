"""The ``cupy-numba`` backend: cuBLAS GEMMs through CuPy into preallocated ``out``, and the fused passes
as Numba CUDA kernels (``_cuda_kernels``) launched on CuPy's current stream: bias + activation; dZ and
the deterministic db; cost partials + output delta; the optimizer update over the flat buffers. The
cost stays on the device (no host sync in a step) until it is reported."""
from collections import OrderedDict

import numpy as np

from . import _cuda_device
from . import _cuda_kernels as C
from .cupy_backend import CupyBackend


class CupyNumbaBackend(CupyBackend):
    name = "cupy-numba"

    defers_checks = True      # the cost is read back only when reported
    VIEWS_KEPT = 512          # Numba views of the buffers in use (workspace, parameters, data)

    def __init__(self, device="cuda:0", xp=None):
        super().__init__(device, xp)
        self._scratch = {}
        self._views = OrderedDict()

    @staticmethod
    def probe(device_index=0):
        reason = _cuda_device.probe(device_index)
        if reason is None:
            try:
                import numba.cuda  # noqa: F401  (numba-cuda present?)
            except ImportError as exc:
                return f"numba-cuda: {type(exc).__name__}: {exc}"
        return reason

    def _launch(self, kernel, grid, block, *args):
        self.counters["launch"] += 1
        if self._real:
            kernel[grid, block, _cuda_device.numba_stream()](*map(self._view, args))
        else:
            kernel[grid, block, 0](*args)

    def _view(self, a):
        """A cached no-sync Numba view of a CuPy array (scalars pass through). Converting a CuPy array
        at every launch would synchronize its stream from the host each time."""
        if not hasattr(a, "__cuda_array_interface__"):
            return a
        key = (a.data.ptr, a.shape, a.strides, a.dtype.str)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = _cuda_device.kernel_view(a)
            if len(self._views) > self.VIEWS_KEPT:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(key)
        return view

    def _buffer(self, key, shape, dtype):
        """A device scratch array kept between steps (cost partials and totals)."""
        buf = self._scratch.get((key, shape, np.dtype(dtype)))
        if buf is None:
            buf = self._scratch[(key, shape, np.dtype(dtype))] = self.empty(shape, dtype)
        return buf

    def linear_activation_forward(self, activation, A_prev, W, b, Z=None, A=None):
        """Z = W · A_prev (cuBLAS), then one fused kernel: Z += b, A = g(Z)."""
        Z = self.gemm(W, A_prev, out=Z)
        A = self.xp.empty_like(Z) if A is None else A
        n, m = Z.shape
        if activation.name == "softmax":
            self._launch(C.bias_softmax(Z.dtype), C.blocks_1d(m), C.THREADS_1D, Z, b, A)
        else:
            self._launch(C.bias_activation(activation, Z.dtype), C.blocks_2d(n, m), C.THREADS_2D, Z, b, A)
        return Z, A

    def delta_row_sum(self, activation, dA, Z, A, db):
        """dZ = dA g'(Z) with the deterministic row sum db, in one kernel."""
        if not activation.elementwise:
            return super().delta_row_sum(activation, dA, Z, A, db)
        self._launch(C.delta_row_sum(activation, dA.dtype), dA.shape[0], C.THREADS_1D, dA, Z, A, db)
        return dA

    def output_layer(self, loss, activation, Z, A, Y, dZ):
        """dZ[L] and the cost's partial sums in one kernel, their fixed-order sum in a second; the
        cost is returned as a 0-d device array (read back only when reported; valid until the next
        call, which reuses its buffer)."""
        if activation.name == "softmax" and loss.name != "ce":
            return super().output_layer(loss, activation, Z, A, Y, dZ)
        n, m = Z.shape
        inv_m = Z.dtype.type(1.0 / m)
        total = self._buffer("total", (1,), Z.dtype)
        if activation.name == "softmax":
            partials = self._buffer("partials", (m,), Z.dtype)
            self._launch(C.output_softmax_ce(Z.dtype), C.blocks_1d(m), C.THREADS_1D, Z, A, Y, dZ, inv_m, partials)
        else:
            partials = self._buffer("partials", (C.blocks_1d(n * m),), Z.dtype)
            self._launch(C.output_elementwise(loss, activation, Z.dtype), C.blocks_1d(n * m), C.THREADS_1D,
                         Z, A, Y, dZ, inv_m, partials)
        self._launch(C.sum_partials(Z.dtype), 1, C.THREADS_1D, partials, total)
        return total.reshape(())

    def update(self, optimizer, theta, dtheta, states, learning_rate, t, out, states_out):
        """The optimizer's update in one kernel over the flat parameter, gradient and state buffers."""
        f = theta.dtype.type
        s1, s2 = (list(states) + [dtheta, dtheta])[:2]
        s1_out, s2_out = (list(states_out) + [dtheta, dtheta])[:2]    # unused: never written
        c1, c2 = optimizer.corrections(t)
        self._launch(C.optimizer_update(optimizer, theta.dtype), C.blocks_1d(theta.shape[0]), C.THREADS_1D,
                     theta, dtheta, s1, s2, f(learning_rate), f(c1), f(c2), out, s1_out, s2_out)
        return out
