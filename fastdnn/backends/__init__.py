"""Backends by name, imported only when asked for (``import fastdnn`` imports no numba/cupy).

Device strings: "cpu" (fastest CPU backend), "cuda" / "cuda:N" (fastest CUDA backend, else the
CPU with one DeviceFallbackWarning), "auto" (CUDA when usable, else CPU, silently), or a
backend name, "cupy:N" naming the device for a CUDA one (that backend or BackendUnavailableError). Adding a backend is one module here
plus one line in ``_REGISTRY``.
"""
import importlib
import warnings
from collections import namedtuple

from ..errors import BackendUnavailableError, DeviceFallbackWarning, unknown_name
from .base import Backend

# name -> (module, class, device kind); preference order within a kind is the order here.
_REGISTRY = {
    "cupy-fused": ("fastdnn.backends.cupy_fused_backend", "CupyFusedBackend", "cuda"),
    "cupy": ("fastdnn.backends.cupy_backend", "CupyBackend", "cuda"),
    "numba": ("fastdnn.backends.numba_backend", "NumbaBackend", "cpu"),
    "numpy": ("fastdnn.backends.numpy_backend", "NumpyBackend", "cpu"),
}

BackendInfo = namedtuple("BackendInfo", "name device available reason")


def _backend_class(name):
    module, cls, _ = _REGISTRY[name]
    try:
        return getattr(importlib.import_module(module), cls), None
    except ImportError as exc:
        return None, f"{name}: {type(exc).__name__}: {exc}"


def _unavailable_reason(name, device_index=0):
    """Why backend ``name`` cannot run here (None: it can)."""
    cls, reason = _backend_class(name)
    return reason if cls is None else cls.probe(device_index)


def _names(kind):
    return [n for n, (_, _, k) in _REGISTRY.items() if k == kind]


def available_backends():
    """Every known backend with whether it can run here and, if not, why."""
    infos = []
    for name, (_, _, kind) in _REGISTRY.items():
        reason = _unavailable_reason(name)
        infos.append(BackendInfo(name, kind, reason is None, reason))
    return infos


def _parse_cuda(device):
    index = 0
    if device != "cuda":
        suffix = device[len("cuda:"):]
        if not suffix.isdigit():
            raise ValueError(f"bad device {device!r}; expected 'cuda' or 'cuda:N' with N >= 0")
        index = int(suffix)
    return index


def _first_usable(kind, device_index=0):
    """(name, None) for the first usable backend of a kind, else (None, reasons). For CUDA, a device
    that cannot be used is one reason, said once."""
    if kind == "cuda":
        from . import _cuda_device
        reason = _cuda_device.probe(device_index)
        if reason:
            return None, reason
    reasons = []
    for name in _names(kind):
        reason = _unavailable_reason(name, device_index)
        if reason is None:
            return name, None
        reasons.append(reason)
    return None, "; ".join(reasons)


def _make(name, device="cpu", device_index=0):
    cls, _ = _backend_class(name)
    return cls(device=device) if device == "cpu" else cls(device=f"cuda:{device_index}")


def get_backend(device="auto", fallback=True, _stacklevel=2):
    """The Backend for a device string or backend name (see the module docstring)."""
    if isinstance(device, Backend):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string or a Backend, got {type(device).__name__}")
    name, _, index = device.partition(":")
    if name in _REGISTRY:                       # a backend by name; a CUDA one may name its device
        kind = _REGISTRY[name][2]
        if index and (kind != "cuda" or not index.isdigit()):
            raise ValueError(f"bad device {device!r}; a CUDA backend takes 'NAME:N' with N >= 0, a CPU "
                             "backend no index")
        index = int(index or 0)
        reason = _unavailable_reason(name, index)
        if reason:
            raise BackendUnavailableError(f"backend {device!r} unavailable ({reason})")
        return _make(name, kind, index)
    if device == "cpu":
        return _make(_first_usable("cpu")[0])
    if device == "auto" or device.startswith("cuda"):
        index = 0 if device == "auto" else _parse_cuda(device)
        name, reason = _first_usable("cuda", index)
        if name is not None:
            return _make(name, "cuda", index)
        if device != "auto" and not fallback:
            raise BackendUnavailableError(f"device={device!r} unavailable ({reason})")
        backend = _make(_first_usable("cpu")[0])
        if device != "auto":
            warnings.warn(f"device={device!r} unavailable ({reason}); using backend "
                          f"{backend.name!r} on cpu", DeviceFallbackWarning, stacklevel=_stacklevel)
        return backend
    raise unknown_name("device", device, ["auto", "cpu", "cuda", "cuda:N", *_REGISTRY])
