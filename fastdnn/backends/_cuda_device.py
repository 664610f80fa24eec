"""Every CuPy-only call of fastdnn's device handling, kept here so it is small and reviewable.

Nothing here runs on a machine without an NVIDIA GPU except the failure paths; the calls
follow CuPy's documented API (``cupy.cuda.runtime.getDeviceCount``).
"""


def probe(device_index=0):
    """Why CUDA device ``device_index`` cannot be used through CuPy (None: it can)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install failing at import
        return f"cupy: {type(exc).__name__}: {exc}".rstrip(": ")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy_backends.cuda.api.runtime.CUDARuntimeError and friends
        return f"cupy: {type(exc).__name__}: {exc}"
    if count == 0:
        return "cupy: no CUDA device found"
    if device_index >= count:
        return f"cupy: cuda:{device_index} asked for, but only {count} CUDA device(s) found"
    return None


_NVRTC_PROBE = "fdnn_probe"
_NVRTC_SOURCE = 'extern "C" __global__ void fdnn_probe(float* x) { x[threadIdx.x] += 1.0f; }'
_nvrtc_checked = {}       # (cupy module, device index) -> None or the reason


def probe_nvrtc(device_index=0):
    """Why CuPy cannot compile a RawKernel for CUDA device ``device_index`` (None: it can). Compiles one
    tiny kernel once per device (NVRTC through the driver); call it only after :func:`probe` passed."""
    cp = cupy()
    key = (cp, device_index)
    if key not in _nvrtc_checked:
        try:
            with cp.cuda.Device(device_index):
                cp.RawKernel(_NVRTC_SOURCE, _NVRTC_PROBE).compile()
            _nvrtc_checked[key] = None
        except Exception as exc:  # noqa: BLE001  (CompileException, missing libnvrtc, driver errors)
            _nvrtc_checked[key] = f"cupy-fused: NVRTC cannot compile a kernel: {type(exc).__name__}: {exc}"
    return _nvrtc_checked[key]


def cupy():
    """The cupy module (imported on first use only)."""
    import cupy as cp
    return cp


def use_device(index):
    """Make CUDA device ``index`` current for CuPy (allocations, cuBLAS, streams)."""
    cupy().cuda.Device(index).use()


def device_scope(index):
    """A context in which CUDA device ``index`` is current (the previous one again on exit): every
    allocation, cuBLAS call and kernel launch inside goes to it, whatever thread or code made another
    device current before."""
    return cupy().cuda.Device(index)


def to_device(x, dtype=None):
    """A host or device array as a CuPy array of ``dtype`` on the current device."""
    return cupy().asarray(x, dtype=dtype)


def to_host(x):
    """A NumPy copy of a CuPy array (a device-to-host copy that waits for the stream)."""
    return cupy().asnumpy(x)


def pinned_empty(shape, dtype):
    """An uninitialized NumPy array in page-locked host memory (fast, asynchronous-capable copies)."""
    import numpy as np
    count = int(np.prod(shape))
    memory = cupy().cuda.alloc_pinned_memory(count * np.dtype(dtype).itemsize)
    return np.frombuffer(memory, dtype, count).reshape(shape)


def copy_to_host(x, host):
    """host[...] = x for a CuPy array x (waits for the copy)."""
    x.get(out=host)


def copy_from_host(host, x):
    """x[...] = host for a CuPy array x, queued on the current stream."""
    x.set(host)


def synchronize():
    """Wait for the work queued on CuPy's current stream."""
    cupy().cuda.get_current_stream().synchronize()


def empty(shape, dtype):
    """cupy.empty, turning CuPy's out-of-memory error into MemoryError with the bytes asked for."""
    cp = cupy()
    try:
        return cp.empty(shape, dtype=dtype)
    except cp.cuda.memory.OutOfMemoryError as exc:
        import numpy as np
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raise MemoryError(f"out of GPU memory allocating {nbytes} bytes for the fastdnn workspace "
                          f"({exc})") from exc
