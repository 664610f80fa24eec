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
