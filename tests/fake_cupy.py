"""A strict CuPy stand-in: NumPy-backed ``cupy``/``cupyx`` modules that run fastdnn's GPU code on the CPU
and fail where CuPy fails.

    with fake_cupy.installed(devices=2) as gpu:      # or the ``fake_cupy`` fixture in conftest.py
        net = fastdnn.Network([4, 3, 1], device="cupy").fit(X, Y, iterations=5)
        gpu.counts["sync"], gpu.counts["gemm@0"], gpu.live_bytes(0)

Strict where CuPy is strict (every rule below was checked against CuPy 14's source or the installed package):
- **API**: a function, method or keyword is accepted only if the installed real CuPy has it. Each name is
  looked up on the real ``cupy`` package (it imports without a GPU) at first use and its keywords checked
  against the real callable's signature (``inspect.signature``, else the signature line Cython embeds in
  the docstring, else the short allow-list ``_SIGNATURES`` below). ``cupy.take(..., mode=)`` fails as
  ``take() got an unexpected keyword argument 'mode'``, a ufunc keyword CuPy lacks as ``Wrong arguments``.
- **Host arrays**: ``np.asarray(x)``/``np.array(x)`` raise CuPy's TypeError; a NumPy array given to a CuPy
  ufunc raises ``Unsupported type``; ``x[...] = host`` raises CuPy's ``non-scalar numpy.ndarray cannot be
  used for fill``. (Stricter than CuPy: a NumPy array given to any other CuPy routine raises too — some
  CuPy routines would upload it silently; either way it is a host array in device code.)
- **Reads that synchronize**, allowed as in CuPy and counted: ``float()``, ``int()``, ``complex()``,
  ``bool()``, ``.item()``, ``.tolist()``, ``repr()``/``str()``, boolean-mask indexing, ``.get()``,
  ``cupy.asnumpy``. Each declares a synchronization where CuPy does (in ``get()``), so inside
  ``cupyx.allow_synchronize(False)`` it raises ``cupyx.DeviceSynchronized``. As in CuPy 14, that
  context manager warns that it is deprecated, and only ``get()`` and ``Device.synchronize()``
  declare; ``Stream.synchronize()``/``Event.synchronize()`` are counted but, as in CuPy, not declared
  (``StandIn.no_sync()`` refuses every synchronization).
- **Devices**: ``runtime.getDeviceCount()`` is ``devices``; the current device is per thread (CUDA's);
  every array records the device it was allocated on; an operation on an array of another device
  raises CuPy's ValueError (``The device where the array resides (1) is different from the current
  device (0). Peer access is unavailable between these devices.``), or, with ``peer_access=True``,
  warns CuPy's PerformanceWarning. Views, ``.get()``, ``.set()`` and ``.copy()`` work across devices as
  in CuPy; ``cupy.asarray`` of an array on another device copies it to the current one (counted d2d).
  A stream used on another device than its own raises CuPy's RuntimeError.
- **CuPy's documented differences from NumPy**: ``take`` has no ``mode`` and integer-array indices out
  of bounds wrap around; reductions return 0-d arrays; no object/string dtypes (``Unsupported dtype``).
- **RawKernel** launches check what CuPy's launcher checks (grid and block must be tuples, NumPy arrays
  only of size one, Python scalars passed as int64/float64/bool) and, stricter than CuPy because the
  GPU would fail later or silently: the kernel exists as ``extern "C"``, the arguments match its
  declared parameters (count, pointer vs value, the width of ``float``/``double``/``int``...), every
  array is on the current device (CuPy does not check; the GPU would raise cudaErrorIllegalAddress),
  the launch shape is within CUDA's limits. The body then runs on the CPU through
  ``tests/cuda_on_cpu.launch(source, name, grid, block, args, shared_bytes)`` (or ``StandIn.launcher``):
  grid and block as 3-tuples, each array argument as a 1-D NumPy array aliasing the device memory from
  the array's data pointer to the end of its allocation (a RawKernel ignores views and strides, as in
  CuPy; a non-contiguous argument warns), each scalar as the NumPy scalar CuPy would pass.
- **Counts** (``StandIn.counts``, a Counter; ``name@device`` for the per-device share): ``h2d``, ``d2h``,
  ``d2d`` transfers, ``sync``, ``kernel`` (CuPy operations that launch device work), ``gemm`` (matmul,
  dot), ``launch`` (RawKernel launches), ``alloc``. ``get_default_memory_pool()`` reports the current
  device's ``used_bytes()`` (live arrays, in CuPy's 512-byte units; weakref finalizers release them) and
  ``total_bytes()`` (the pool's high-water mark, until ``free_all_blocks()``); ``set_limit`` makes
  allocations fail with CuPy's own ``OutOfMemoryError``.

Not mirrored: asynchrony (every operation completes at once, so a missing synchronization cannot show
as a wrong value), CUDA graphs, ElementwiseKernel/ReductionKernel/fuse, cuBLAS handles, the numba-cuda
bridge (``cupy-numba`` needs numba-cuda's own driver or simulator; ``installed()`` hides ``numba.cuda``
so that ``device="cuda"`` resolves to the ``cupy`` backend). Anything CuPy has that the stand-in lacks
raises ``StandInGap`` (an AttributeError naming what to add here).

Isolation: ``installed()`` swaps ``cupy``, ``cupy.*`` and ``cupyx`` in ``sys.modules`` and restores them.
fastdnn imports ``cupy`` inside functions, so no reload is needed, but an object built while the stand-in
was installed (a backend, a network) keeps using it; build them inside the ``with`` block. For a clean
process, run the test in a subprocess.
"""
import collections
import contextlib
import ctypes
import importlib
import inspect
import itertools
import re
import sys
import threading
import time
import types
import warnings
import weakref

import numpy as np

_P = inspect.Parameter
_ACTIVE = []                 # installed stand-ins, innermost last
_STREAM_PTRS = itertools.count(0x5000)
ALLOCATION_UNIT = 512        # CuPy's memory pool rounds every allocation up to 512 bytes


class StandInGap(AttributeError):
    """CuPy has this, the stand-in does not (yet): add it to tests/fake_cupy.py."""


class FakeCupyWarning(UserWarning):
    """Something CuPy accepts silently that is almost certainly a bug (e.g. a strided RawKernel argument)."""


class CUDADriverError(RuntimeError):
    """Stands for cupy_backends.cuda.api.driver.CUDADriverError (which cannot be built without libcuda)."""


# --- the real CuPy, for introspection only (never called) ---------------------------------------------
_REAL = {}


def real(path=""):
    """The real CuPy object at ``path`` ('' = the cupy module, 'cuda.Device', 'ndarray.sum', 'cupyx...')."""
    if "cupy" not in _REAL:
        if isinstance(sys.modules.get("cupy"), _Module):
            raise RuntimeError("the real CuPy must be read before a stand-in is installed")
        _REAL["cupy"] = importlib.import_module("cupy")
        _REAL["cupyx"] = importlib.import_module("cupyx")
    obj, parts = (_REAL["cupyx"], path.split(".")[1:]) if path.startswith("cupyx") else \
        (_REAL["cupy"], [p for p in path.split(".") if p])
    for part in parts:
        obj = getattr(obj, part)
    return obj


def _is_cupy_module(name):
    return name in ("cupy", "cupyx") or name.startswith(("cupy.", "cupyx."))


# Signatures for callables whose real signature cannot be read (each checked against CuPy 14's source).
_SIGNATURES = {
    # raw.pyx: __call__(self, grid, block, args, **kwargs) passes kwargs to function.pyx's
    # Function.__call__(tuple grid, tuple block, args, size_t shared_mem=0, stream=None, ...)
    "RawKernel.__call__": "grid, block, args, *, shared_mem=0, stream=None",
}


def _split_params(text):
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _parse_params(text):
    """An inspect.Signature from a parameter list as Cython writes it ('str code, tuple options=(), *, ...')."""
    params, kind = [], _P.POSITIONAL_OR_KEYWORD
    for p in _split_params(text.replace("\\*", "*")):
        if p == "/":
            params = [q.replace(kind=_P.POSITIONAL_ONLY) for q in params]
            continue
        if p == "*":
            kind = _P.KEYWORD_ONLY
            continue
        default = _P.empty
        if "=" in p:
            p, default = p.split("=", 1)[0].strip(), None
        p = p.split(":", 1)[0].strip()
        if p.startswith("**"):
            params.append(_P(p[2:].split()[-1], _P.VAR_KEYWORD))
            continue
        if p.startswith("*"):
            params.append(_P(p[1:].split()[-1], _P.VAR_POSITIONAL))
            kind = _P.KEYWORD_ONLY
            continue
        name = p.split()[-1].lstrip("$")
        if not name.isidentifier():
            raise ValueError(f"cannot read parameter {p!r}")
        params.append(_P(name, kind, default=default))
    if params and params[0].name == "self":
        params = params[1:]
    return inspect.Signature(params)


_DOC_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+)\((.*)\)\s*(?:->.*)?$")
_SIGNATURE_CACHE = {}


def signature(label, obj):
    """The real callable's signature (without self), read as described in the module docstring."""
    if label in _SIGNATURE_CACHE:
        return _SIGNATURE_CACHE[label]
    sig = None
    if label in _SIGNATURES:
        sig = _parse_params(_SIGNATURES[label])
    else:
        try:
            sig = inspect.signature(obj)
            if sig.parameters and next(iter(sig.parameters)) == "self":
                sig = sig.replace(parameters=list(sig.parameters.values())[1:])
        except (TypeError, ValueError):
            for line in (obj.__doc__ or "").strip().splitlines()[:3]:
                m = _DOC_LINE.match(line.strip())
                if m:
                    try:
                        sig = _parse_params(m.group(2))
                        break
                    except ValueError:
                        pass
        if sig is None and isinstance(obj, real("ufunc")):    # x1[, out1, out2] of multi-output ufuncs
            sig = _ufunc_signature(obj.nin, obj.nout)
    if sig is None:
        raise StandInGap(f"no signature can be read for cupy {label}; add one to _SIGNATURES in "
                         "tests/fake_cupy.py")
    _SIGNATURE_CACHE[label] = sig
    return sig


def _ufunc_signature(nin, nout):
    params = [_P(f"x{i + 1}", _P.POSITIONAL_ONLY) for i in range(nin)]
    params += [_P(f"out{i + 1}", _P.POSITIONAL_ONLY, default=None) for i in range(nout)]
    params += [_P(n, _P.KEYWORD_ONLY, default=None) for n in ("out", "casting", "dtype")]
    return inspect.Signature(params)


def check_call(label, obj, args, kwargs, ufunc=False):
    """Raise TypeError as CuPy would if the real ``obj`` does not take these arguments."""
    sig = signature(label, obj)
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        if ufunc:
            extra = {k: v for k, v in kwargs.items() if k not in sig.parameters}
            if extra:
                raise TypeError(f"Wrong arguments {extra}") from None
        raise TypeError(f"{label.split('.')[-1]}() {exc}") from None


def _root(a):
    """The NumPy array that owns a's memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _fakes(x, found):
    if isinstance(x, ndarray):
        found.append(x)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _fakes(v, found)
    elif isinstance(x, dict):
        for v in x.values():
            _fakes(v, found)
    return found


_SCALARS = (int, float, complex, bool)
# Functions and methods that return views (no device work; allowed on any device, as in CuPy).
_VIEWS = {"reshape", "view", "transpose", "swapaxes", "moveaxis", "squeeze", "ravel", "diagonal",
          "expand_dims", "broadcast_to", "atleast_1d", "atleast_2d", "atleast_3d", "real", "imag", "T",
          "split", "array_split", "hsplit", "vsplit", "rollaxis"}
_NO_DEVICE_WORK = {"shape", "ndim", "size", "result_type", "can_cast", "min_scalar_type", "empty_like",
                   "may_share_memory", "shares_memory", "iscomplexobj", "isrealobj", "get_array_module"}
_GEMMS = {"matmul", "dot", "tensordot", "inner"}


def _check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind not in "biufc":
        raise ValueError(f"Unsupported dtype {dt}")
    return dt


def _active():
    if not _ACTIVE:
        raise RuntimeError("no CuPy stand-in is installed (use fake_cupy.installed())")
    return _ACTIVE[-1]


# --- the stand-in's state: devices, streams, counts, memory -------------------------------------------
class _Pool:
    def __init__(self, limit):
        self.used, self.high, self.limit = 0, 0, limit


class StandIn:
    """One installed stand-in: ``cupy``/``cupyx`` modules (``.cupy``, ``.cupyx``) and what they observed."""

    def __init__(self, devices=2, peer_access=False, memory_per_device=80 * 2**30, launcher=None):
        if devices < 0:
            raise ValueError("devices must be >= 0")
        self.device_count, self.peer_access, self.launcher = devices, peer_access, launcher
        self.counts = collections.Counter()
        self.pools = [_Pool(memory_per_device) for _ in range(devices)]
        self._allocs = {}                  # id(owning NumPy array) -> (weakref, device)
        self._pinned = []                  # weakrefs to pinned host buffers
        self._tls = threading.local()
        self.cupy, self.cupyx, self.modules = _build_modules(self)

    # counting
    def count(self, what, n=1, device=None):
        self.counts[what] += n
        if device is not None:
            self.counts[f"{what}@{device}"] += n

    def reset_counts(self):
        self.counts.clear()

    # devices and streams (per thread, as CUDA's current device)
    def current_device(self):
        return getattr(self._tls, "device", 0)

    def set_device(self, i):
        i = int(i)
        if not 0 <= i < self.device_count:
            raise real("cuda.runtime.CUDARuntimeError")(101)      # cudaErrorInvalidDevice
        self._tls.device = i

    def _stream_stacks(self):
        if not hasattr(self._tls, "streams"):
            self._tls.streams = {}
        return self._tls.streams

    def current_stream(self, device=None):
        device = self.current_device() if device is None or device < 0 else device
        stack = self._stream_stacks().setdefault(device, [Stream.null])
        return stack[-1]

    def check_devices(self, arrays, what):
        cur = self.current_device()
        for a in arrays:
            if a._dev != cur:
                msg = (f"The device where the array resides ({a._dev}) is different from the current "
                       f"device ({cur}).")
                if not self.peer_access:
                    raise ValueError(f"{msg} Peer access is unavailable between these devices.")
                warnings.warn(f"{msg} Peer access has been activated automatically.",
                              real("_util.PerformanceWarning"), stacklevel=4)
                self.count("peer_access", device=cur)

    # synchronization
    def declare_sync(self):
        """What CuPy's syncdetect._declare_synchronize does (raises inside allow_synchronize(False))."""
        if not real("_core.syncdetect._is_allowed")():
            raise real("_core.syncdetect.DeviceSynchronized")()

    def synced(self, what):
        if getattr(self._tls, "forbid", False):
            raise real("_core.syncdetect.DeviceSynchronized")(
                f"stand-in: {what} synchronized inside StandIn.no_sync()")
        self.count("sync", device=self.current_device())

    @contextlib.contextmanager
    def no_sync(self):
        """Refuse every synchronization (stream, event, device, device-to-host read) in this thread."""
        old = getattr(self._tls, "forbid", False)
        self._tls.forbid = True
        try:
            yield
        finally:
            self._tls.forbid = old

    # memory
    def live_bytes(self, device=None):
        return self.pools[self.current_device() if device is None else device].used

    def reserve(self, nbytes, device):
        """Raise CuPy's OutOfMemoryError if ``nbytes`` more do not fit on ``device``."""
        pool, size = self.pools[device], -(-nbytes // ALLOCATION_UNIT) * ALLOCATION_UNIT
        if pool.used + size > pool.limit:
            raise real("cuda.memory.OutOfMemoryError")(nbytes, pool.used, pool.limit)
        return size

    def _register(self, root, device):
        size = self.reserve(root.nbytes, device) if root.nbytes else 0
        self._allocs[id(root)] = (weakref.ref(root), device)
        pool = self.pools[device]
        pool.used += size
        pool.high = max(pool.high, pool.used)
        self.count("alloc", device=device)
        weakref.finalize(root, self._release, id(root), device, size)

    def _release(self, key, device, size):
        self._allocs.pop(key, None)
        self.pools[device].used -= size

    def owner_device(self, a):
        """The device of the allocation a NumPy array lives in (None: not device memory)."""
        root = _root(a)
        entry = self._allocs.get(id(root))
        return entry[1] if entry is not None and entry[0]() is root else None

    def new(self, a, device=None):
        """A device array holding the NumPy array ``a``, which the stand-in now owns (allocated on
        ``device``, default the current one) unless it already lives in a device allocation."""
        _check_dtype(a.dtype)
        owner = self.owner_device(a)
        if owner is None:
            owner = self.current_device() if device is None else device
            self._register(_root(a), owner)
        return ndarray._make(self, a, owner)

    def wrap(self, r, inputs=()):
        """A NumPy result as stand-in arrays: the input itself, a view of its allocation, or a new one."""
        if isinstance(r, (list, tuple)):
            return type(r)(self.wrap(v, inputs) for v in r)
        if isinstance(r, np.generic):
            return self.new(np.array(r))
        if not isinstance(r, np.ndarray):
            return r
        for x in inputs:
            if x._a is r:
                return x
        device = self.owner_device(r)
        if device is not None:
            return ndarray._make(self, r, device)
        return self.new(r)

    def is_view(self, result, inputs):
        """Whether every array in result shares an input's allocation (no device work was needed)."""
        if isinstance(result, (list, tuple)):
            return all(self.is_view(r, inputs) for r in result)
        return isinstance(result, ndarray) and any(_root(result._a) is _root(x._a) for x in inputs)

    # pinned host memory
    def is_pinned(self, host):
        """Whether the NumPy array ``host`` lives in memory from cupy.cuda.alloc_pinned_memory."""
        addr = host.__array_interface__["data"][0]
        for ref in self._pinned:
            buf = ref()
            if buf is not None and buf.ptr <= addr < buf.ptr + len(buf):
                return True
        return False

    # operations
    def run(self, label, np_func, args, kwargs, ufunc=False, name=None, extra=()):
        """One CuPy operation on NumPy: check the operands as CuPy does, run, wrap, count. ``extra``: more
        device arrays the operation reads (index arrays)."""
        name = name or label.split(".")[-1]
        arrays = _fakes(list(args), []) + list(extra)
        _fakes(kwargs, arrays)
        self._check_operands(label, args, kwargs, ufunc)
        if name not in _VIEWS and name not in _NO_DEVICE_WORK:
            self.check_devices(arrays, label)
        result = self.wrap(np_func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}), arrays)
        if name in _NO_DEVICE_WORK or name in _VIEWS and self.is_view(result, arrays):
            return result
        if name in _VIEWS:                 # a view function that had to copy: device work after all
            self.check_devices(arrays, label)
        device = self.current_device()
        self.count("kernel", device=device)
        if name in _GEMMS:
            self.count("gemm", device=device)
        return result

    def function(self, name):
        """The stand-in's cupy.<name>."""
        return getattr(self.cupy, name)

    def resolve(self, module, attr):
        return _resolve(self, module, attr)

    def method(self, array, name):
        return _method(self, array, name)

    def _check_operands(self, label, args, kwargs, ufunc):
        """A ufunc takes device arrays and scalars only (_kernel.pyx's _preprocess_args); other routines
        no host arrays (stricter than CuPy, see the module docstring)."""
        if ufunc:
            out = kwargs.get("out")
            for x in list(args) + (list(out) if isinstance(out, tuple) else [] if out is None else [out]):
                if not (isinstance(x, (ndarray, np.generic)) or type(x) in _SCALARS):
                    raise TypeError(f"Unsupported type {type(x)}")
            return
        for x in list(args) + list(kwargs.values()):
            if _has_host_array(x):
                raise TypeError(f"Unsupported type {type(x)}: cupy.{label} got a numpy.ndarray; CuPy "
                                "kernels take device arrays only (move it with cupy.asarray)")

    # RawKernel launches
    def launch(self, kernel, grid, block, args, shared_mem, stream):
        device = self.current_device()
        if stream is not None and stream.device_id not in (-1, device):
            raise real("cuda.runtime.CUDARuntimeError")(400)    # invalid resource handle
        grid3, block3 = _launch_shape(grid, "grid"), _launch_shape(block, "block")
        _check_launch_limits(grid3, block3, shared_mem)
        params = _kernel_params(kernel.code, kernel.name)
        if len(params) != len(args):
            raise TypeError(f"kernel {kernel.name!r} takes {len(params)} parameters "
                            f"({', '.join(p for p, _, _ in params)}) but the launch passes {len(args)}")
        cpu_args = [self._kernel_arg(kernel.name, i, p, a, device)
                    for i, (p, a) in enumerate(zip(params, args))]
        self.count("launch", device=device)
        self.count(f"launch:{kernel.name}", device=device)
        launcher = self.launcher
        if launcher is None:
            import cuda_on_cpu
            launcher = cuda_on_cpu.launch
        launcher(kernel.code, kernel.name, grid3, block3, tuple(cpu_args), int(shared_mem))

    def _kernel_arg(self, kname, i, param, a, device):
        """What the kernel receives for one argument (see the module docstring), checked."""
        text, pointer, width = param
        where = f"argument {i} of kernel {kname!r} ({text})"
        if isinstance(a, ndarray):
            if a._dev != device:
                raise ValueError(
                    f"{where}: the array is on device {a._dev} but the launch is on device {device} (CuPy "
                    "does not check this; on a GPU the kernel would read another device's memory: "
                    "cudaErrorIllegalAddress without peer access)")
            if not pointer:
                raise TypeError(f"{where}: a device array passed for a value parameter")
            if not a._a.flags.c_contiguous and a.size > 1:
                warnings.warn(f"{where}: a non-contiguous array (RawKernel ignores views and strides: the "
                              "kernel sees the memory from the array's first element)", FakeCupyWarning,
                              stacklevel=4)
            return _memory_from(a._a)
        value = _by_value(a)
        if pointer and a is not None:
            raise TypeError(f"{where}: a pointer parameter needs a cupy.ndarray, got {type(a).__name__}")
        if width is not None and (value.dtype.itemsize, value.dtype.kind in "fc") != width:
            raise TypeError(f"{where}: got {type(a).__name__} ({value.dtype.itemsize} bytes); CuPy passes "
                            "it as is, so the kernel would read the wrong bytes (Python floats go as "
                            "double, ints as long long: use numpy.float32(x) etc.)")
        return value


def _by_value(a):
    """A non-array kernel argument as function.pyx's _pointer passes it: None as a null pointer, NumPy
    arrays of size one and NumPy scalars as they are, Python bool/int/float/complex as bool_/int64/
    float64/complex128; anything else is refused."""
    if a is None:
        return np.intp(0)
    if isinstance(a, np.ndarray):
        if a.size != 1:
            raise TypeError(f"You are trying to pass a numpy.ndarray of shape {a.shape} as a kernel "
                            "parameter. Only numpy.ndarrays of size one can be passed by value. If you "
                            "meant to pass a pointer to __global__ memory, you need to pass a cupy.ndarray "
                            "instead.")
        return a.reshape(())[()]
    if isinstance(a, np.generic):
        return a
    for kind, convert in ((bool, np.bool_), (int, np.int64), (float, np.float64), (complex, np.complex128)):
        if type(a) is kind:
            return convert(a)
    raise TypeError(f"Unsupported type {type(a)}")


def _has_host_array(x):
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_host_array(v) for v in x)
    return False


def _memory_from(a):
    """A 1-D NumPy array of a's dtype over a's allocation, from a's first element to the allocation's
    end: what a kernel sees through the pointer."""
    root = _root(a)
    mem = root.ravel(order="K").view(np.uint8)
    offset = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    count = (mem.nbytes - offset) // a.dtype.itemsize
    return np.ndarray((count,), a.dtype, buffer=mem, offset=offset)


def _launch_shape(dims, name):
    if not isinstance(dims, tuple):
        raise TypeError(f"Argument '{name}' has incorrect type (expected tuple, got {type(dims).__name__})")
    dims = (dims + (1, 1))[:3]
    return tuple(max(1, int(d)) for d in dims)


def _check_launch_limits(grid, block, shared_mem):
    """CUDA's launch limits on every GPU CuPy 14 supports (else cuLaunchKernel: CUDA_ERROR_INVALID_VALUE)."""
    bad = (block[0] > 1024 or block[1] > 1024 or block[2] > 64 or block[0] * block[1] * block[2] > 1024
           or grid[0] > 2**31 - 1 or grid[1] > 65535 or grid[2] > 65535 or shared_mem > 48 * 1024)
    if bad:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument (grid {grid}, block {block}, "
                              f"shared_mem {shared_mem}; at most 1024 threads per block, 48 KiB of dynamic "
                              "shared memory without the opt-in attribute)")


_C_TYPES = {  # parameter type -> (bytes, floating)
    "float": (4, True), "double": (8, True), "__half": (2, True), "half": (2, True),
    "int": (4, False), "unsigned": (4, False), "unsigned int": (4, False), "int32_t": (4, False),
    "uint32_t": (4, False), "long long": (8, False), "unsigned long long": (8, False),
    "int64_t": (8, False), "uint64_t": (8, False), "size_t": (8, False), "ptrdiff_t": (8, False),
    "long": (8, False), "unsigned long": (8, False), "short": (2, False), "char": (1, False),
    "bool": (1, False), "signed char": (1, False), "unsigned char": (1, False),
}


def _kernel_params(code, name):
    """[(text, is_pointer, (bytes, floating) or None)] of the extern "C" __global__ kernel ``name``."""
    m = re.search(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+" + re.escape(name) + r"\s*\(",
                  code)
    if m is None:
        raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r} is not a __global__ "
                              "function of the source)")
    if not _in_extern_c(code, m.start()):
        raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r} is not declared "
                              "extern \"C\", so its name is mangled)")
    depth, i = 1, m.end()
    while depth:
        depth += (code[i] == "(") - (code[i] == ")")
        i += 1
    params = []
    for text in _split_params(code[m.end():i - 1]):
        pointer = "*" in text
        base = re.sub(r"\b(const|__restrict__|restrict|volatile)\b", " ", text.replace("*", " "))
        words = base.split()[:-1]                   # drop the parameter's name
        params.append((text, pointer, None if pointer else _C_TYPES.get(" ".join(words))))
    return params


def _in_extern_c(code, pos):
    before = code[:pos].rstrip()
    if before.endswith('extern "C"'):
        return True
    for m in re.finditer(r'extern\s+"C"\s*\{', code[:pos]):
        depth, i = 1, m.end()
        while i < pos and depth:
            depth += (code[i] == "{") - (code[i] == "}")
            i += 1
        if depth:
            return True
    return False


# --- cupy.ndarray -------------------------------------------------------------------------------------
def _ufunc_op(name, reflected=False, inplace=False):
    def op(self, other):
        if getattr(type(other), "__array_ufunc__", 1) is None:
            return NotImplemented
        f = self._s.function(name)
        if inplace:
            return f(self, other, out=self)
        return f(other, self) if reflected else f(self, other)
    return op


def _unary(name):
    def op(self):
        return self._s.function(name)(self)
    return op


class ndarray:
    """cupy.ndarray on a NumPy array: a device, no implicit host conversion, CuPy's methods only."""

    __slots__ = ("_a", "_dev", "_s", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise StandInGap("cupy.ndarray(memptr=, strides=) is not in the stand-in")
        s = _active()
        dt = _check_dtype(dtype)
        s.reserve(int(np.prod(shape)) * dt.itemsize, s.current_device())
        a = np.empty(shape, dt, order=order)
        s._register(a, s.current_device())
        self._a, self._dev, self._s = a, s.current_device(), s

    @classmethod
    def _make(cls, s, a, device):
        self = object.__new__(cls)
        self._a, self._dev, self._s = a, device, s
        return self

    # attributes that need no device work
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: self._s.wrap(self._a.T, (self,)))
    device = property(lambda self: self._s.cupy.cuda.Device(self._dev))
    flags = property(lambda self: types.SimpleNamespace(
        c_contiguous=self._a.flags.c_contiguous, f_contiguous=self._a.flags.f_contiguous,
        owndata=self._a.base is None))
    data = property(lambda self: types.SimpleNamespace(
        ptr=self._a.__array_interface__["data"][0], device_id=self._dev,
        device=self._s.cupy.cuda.Device(self._dev)))

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def base(self):
        root = _root(self._a)
        return None if root is self._a else self._s.wrap(root)

    @property
    def __cuda_array_interface__(self):
        stream = self._s.current_stream().ptr or 1
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": self.dtype.descr,
                "strides": None if self._a.flags.c_contiguous else self.strides, "version": 3,
                "data": (self.data.ptr if self.size else 0, False), "stream": stream}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")
        return self._s.method(self, name)

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    # host conversion: refused implicitly, explicit reads synchronize
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __complex__(self):
        return complex(self.get())

    def __bool__(self):
        if self.size == 1:
            return bool(self.get())
        if self.size == 0:
            return bool(np.empty(0))
        raise ValueError("The truth value of an array with more than one element is ambiguous. "
                         "Use a.any() or a.all()")

    def item(self):
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def tobytes(self, order="C"):
        return self.get().tobytes(order)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __reduce__(self):
        return _rebuild, (self.get(),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        with self.device:
            return self.copy()

    # explicit transfers
    def get(self, stream=None, order="C", out=None, blocking=True):
        s = self._s
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained fromcupy.ndarray")
            if self.dtype != out.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if self.shape != out.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, actual shape: {out.shape}")
        elif self.size == 0:
            return np.ndarray(self.shape, dtype=self.dtype)
        s.declare_sync()
        s.count("d2h", device=self._dev)
        s.count("d2h_bytes", self.nbytes)
        if blocking:
            s.synced("get()")
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not (self._a.flags.c_contiguous or self._a.flags.f_contiguous):
            raise RuntimeError("Cannot set to non-contiguous array")
        self._s.count("h2d", device=self._dev)
        self._a[...] = arr

    # operations with CuPy semantics that differ from NumPy's
    def copy(self, order="C"):
        """A copy on the current device (CuPy copies from any device)."""
        s = self._s
        check_call("ndarray.copy", real("ndarray.copy"), (), {"order": order})
        device = s.current_device()
        s.count("d2d" if self._dev != device else "kernel", device=device)
        return s.new(np.array(self._a, order=order, copy=True))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        dt = _check_dtype(dtype)
        if dt == self.dtype and not copy and order in ("K", "A"):
            return self
        kwargs = {"order": order} if casting is None else {"order": order, "casting": casting}
        return self._s.run("ndarray.astype", lambda a: a.astype(dt, copy=True, **kwargs), (self,), {})

    def fill(self, value):
        if isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        if isinstance(value, ndarray):
            raise TypeError(f"Unsupported type {type(value)}")
        self._s.run("ndarray.fill", lambda a: a.fill(value), (self,), {})

    def take(self, indices, axis=None, out=None):
        return self._s.function("take")(self, indices, axis=axis, out=out)

    def __getitem__(self, key):
        s = self._s
        if _is_basic(key):
            return ndarray._make(s, self._a[_as_view_key(key)], self._dev)
        key, arrays = self._device_key(key)
        if any(isinstance(k, ndarray) and k.dtype == np.bool_ for k in _as_tuple(key)):
            s.declare_sync()                      # CuPy reads the mask's count back to size the result
            s.count("d2h", device=self._dev)
            s.synced("boolean-mask indexing")
        return s.run("ndarray.__getitem__", lambda a: a[_wrap_indices(_unwrap_key(key), a.shape)],
                     (self,), {}, name="__getitem__", extra=arrays)

    def __setitem__(self, key, value):
        s = self._s
        if isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        if not (isinstance(value, (ndarray, np.generic)) or type(value) in _SCALARS):
            raise TypeError(f"Unsupported type {type(value)}")
        key, arrays = (key, []) if _is_basic(key) else self._device_key(key)

        def store(a, v=None):
            a[_wrap_indices(_unwrap_key(key), a.shape)] = value if v is None else v
            return a
        if isinstance(value, ndarray):
            s.run("ndarray.__setitem__", store, (self, value), {}, name="__setitem__", extra=arrays)
        else:
            s.run("ndarray.__setitem__", store, (self,), {}, name="__setitem__", extra=arrays)

    def _device_key(self, key):
        """An advanced-indexing key with host index arrays uploaded (counted, as CuPy does implicitly)."""
        out, arrays = [], []
        for k in _as_tuple(key):
            if isinstance(k, (list, np.ndarray)):
                self._s.count("h2d", device=self._s.current_device())
                k = self._s.new(np.array(k))
            if isinstance(k, ndarray):
                arrays.append(k)
            out.append(k)
        return (tuple(out) if isinstance(key, tuple) else out[0]), arrays

    # NumPy interoperability, as CuPy's: NumPy ufuncs and functions dispatch to CuPy's
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            return NotImplemented
        try:
            f = self._s.function(ufunc.__name__)
        except AttributeError:
            return NotImplemented
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = out[0]
        for x in inputs + ((kwargs["out"],) if "out" in kwargs else ()):
            if not (isinstance(x, (ndarray, np.ndarray, np.generic)) or type(x) in _SCALARS):
                return NotImplemented
        return f(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        if any(t not in (ndarray, np.ndarray) for t in types_):
            return NotImplemented
        try:
            f = self._s.function(func.__name__)
        except AttributeError:
            return NotImplemented
        return f(*args, **kwargs)

    __add__, __radd__, __iadd__ = _ufunc_op("add"), _ufunc_op("add", True), _ufunc_op("add", inplace=True)
    __sub__, __rsub__, __isub__ = (_ufunc_op("subtract"), _ufunc_op("subtract", True),
                                   _ufunc_op("subtract", inplace=True))
    __mul__, __rmul__, __imul__ = (_ufunc_op("multiply"), _ufunc_op("multiply", True),
                                   _ufunc_op("multiply", inplace=True))
    __truediv__, __rtruediv__, __itruediv__ = (_ufunc_op("true_divide"), _ufunc_op("true_divide", True),
                                               _ufunc_op("true_divide", inplace=True))
    __floordiv__, __rfloordiv__, __ifloordiv__ = (_ufunc_op("floor_divide"), _ufunc_op("floor_divide", True),
                                                  _ufunc_op("floor_divide", inplace=True))
    __mod__, __rmod__, __imod__ = (_ufunc_op("remainder"), _ufunc_op("remainder", True),
                                   _ufunc_op("remainder", inplace=True))
    __pow__, __rpow__, __ipow__ = _ufunc_op("power"), _ufunc_op("power", True), _ufunc_op("power", inplace=True)
    __matmul__, __rmatmul__ = _ufunc_op("matmul"), _ufunc_op("matmul", True)
    __and__, __rand__, __iand__ = (_ufunc_op("bitwise_and"), _ufunc_op("bitwise_and", True),
                                   _ufunc_op("bitwise_and", inplace=True))
    __or__, __ror__, __ior__ = (_ufunc_op("bitwise_or"), _ufunc_op("bitwise_or", True),
                                _ufunc_op("bitwise_or", inplace=True))
    __xor__, __rxor__, __ixor__ = (_ufunc_op("bitwise_xor"), _ufunc_op("bitwise_xor", True),
                                   _ufunc_op("bitwise_xor", inplace=True))
    __lt__, __le__, __gt__, __ge__ = (_ufunc_op("less"), _ufunc_op("less_equal"), _ufunc_op("greater"),
                                      _ufunc_op("greater_equal"))
    __eq__, __ne__ = _ufunc_op("equal"), _ufunc_op("not_equal")
    __neg__, __abs__, __invert__ = _unary("negative"), _unary("absolute"), _unary("invert")

    def __pos__(self):
        return self


ndarray.__module__ = "cupy"


def _rebuild(host):
    return _active().cupy.array(host)


def _as_tuple(key):
    return key if isinstance(key, tuple) else (key,)


def _is_basic(key):
    return all(k is None or k is Ellipsis or isinstance(k, slice)
               or (isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)))
               for k in _as_tuple(key))


def _as_view_key(key):
    """A basic key that gives a view even when it selects one element (CuPy returns a 0-d array)."""
    key = _as_tuple(key)
    return key if Ellipsis in key else key + (Ellipsis,)


def _unwrap_key(key):
    return tuple(_unwrap(k) for k in key) if isinstance(key, tuple) else _unwrap(key)


def _wrap_indices(key, shape):
    """Integer index arrays taken modulo their axis's length: CuPy wraps out-of-bounds indices."""
    keys = _as_tuple(key)
    if any(k is None or k is Ellipsis for k in keys):
        return key
    wrapped = tuple(k % shape[i] if isinstance(k, np.ndarray) and k.dtype.kind in "iu" and shape[i] else k
                    for i, k in enumerate(keys))
    return wrapped if isinstance(key, tuple) else wrapped[0]


# --- cupy.cuda ----------------------------------------------------------------------------------------
class Device:
    """cupy.cuda.Device: ``use()``, ``with``, ``id``, ``synchronize()`` on the stand-in's devices."""

    def __init__(self, device=None):
        self._s = _active()
        self.id = self._s.current_device() if device is None else int(device)
        self._prev = []

    def use(self):
        self._s.set_device(self.id)
        return self

    def __enter__(self):
        self._prev.append(self._s.current_device())
        self._s.set_device(self.id)
        return self

    def __exit__(self, *exc):
        self._s.set_device(self._prev.pop())

    def synchronize(self):
        self._s.declare_sync()
        self._s.synced(f"Device({self.id}).synchronize()")

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        pool = self._s.pools[self.id]
        return pool.limit - pool.used, pool.limit

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __int__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    """cupy.cuda.Stream: a current stream per thread and device; work completes at once (no asynchrony)."""

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        if null:
            self.ptr, self.device_id = 0, -1
        else:
            self.ptr, self.device_id = next(_STREAM_PTRS), _active().current_device()

    def _check_device(self):
        s = _active()
        cur = s.current_device()
        if self.device_id not in (-1, cur):
            raise RuntimeError(f"The device that the stream is created on ({self.device_id}) does not match "
                               f"with the current device ({cur})")
        return s, cur

    def use(self):
        s, cur = self._check_device()
        s.current_stream(cur)
        s._stream_stacks()[cur][-1] = self
        return self

    def __enter__(self):
        s, cur = self._check_device()
        s.current_stream(cur)
        s._stream_stacks()[cur].append(self)
        s._tls.__dict__.setdefault("stream_devices", []).append(cur)
        return self

    def __exit__(self, *exc):
        s = _active()
        s._stream_stacks()[s._tls.stream_devices.pop()].pop()

    def synchronize(self):
        _active().synced("Stream.synchronize()")

    @property
    def done(self):
        return True

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return self.ptr

    def __repr__(self):
        return f"<{type(self).__name__} {self.ptr} (device {self.device_id})>"


Stream.null = Stream(null=True)


class ExternalStream(Stream):
    def __init__(self, ptr, device_id=-1):
        self.ptr, self.device_id = ptr, device_id


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        if interprocess and not disable_timing:
            raise ValueError("Timing must be disabled for interprocess events")
        self.disable_timing, self._time = disable_timing, None

    def record(self, stream=None):
        self._time = time.perf_counter()

    def synchronize(self):
        _active().synced("Event.synchronize()")

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (CUDA's error for unrecorded or timing-less events)."""
    for e in (start_event, end_event):
        if e._time is None or e.disable_timing:
            raise real("cuda.runtime.CUDARuntimeError")(400)
    return (end_event._time - start_event._time) * 1e3


class MemoryPool:
    """cupy.get_default_memory_pool(): the current device's live bytes and high-water mark."""

    def __init__(self, s):
        self._s = s

    def _pool(self):
        return self._s.pools[self._s.current_device()]

    def used_bytes(self):
        return self._pool().used

    def total_bytes(self):
        return self._pool().high

    def free_bytes(self):
        return self._pool().high - self._pool().used

    def free_all_blocks(self, stream=None):
        self._pool().high = self._pool().used

    def n_free_blocks(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        if fraction is not None:
            raise StandInGap("MemoryPool.set_limit(fraction=) is not in the stand-in")
        self._pool().limit = size if size else 80 * 2**30

    def get_limit(self):
        return self._pool().limit


class PinnedMemoryPointer(bytearray):
    """Page-locked host memory (a bytearray the stand-in remembers, so copies can be checked for it)."""

    @property
    def ptr(self):
        return ctypes.addressof((ctypes.c_char * len(self)).from_buffer(self)) if len(self) else 0


def _alloc_pinned_memory(s, size):
    buf = PinnedMemoryPointer(int(size))
    s._pinned.append(weakref.ref(buf))
    s.count("pinned_alloc")
    return buf


# --- RawKernel, RawModule -----------------------------------------------------------------------------
class RawKernel:
    """cupy.RawKernel: launches check their arguments and run the body on the CPU (see the module doc)."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False, *,
                 enable_cooperative_groups=False, jitify=None):
        for arg, value, kind in (("code", code, str), ("name", name, str), ("options", options, tuple),
                                 ("backend", backend, str)):
            if not isinstance(value, kind):
                raise TypeError(f"Argument '{arg}' has incorrect type (expected {kind.__name__}, got "
                                f"{type(value).__name__})")
        if backend not in ("nvrtc", "nvcc"):
            raise ValueError(f"Invalid backend {backend}")
        self.code, self.name, self.options, self.backend = code, name, options, backend
        self._s = _active()

    def __call__(self, grid, block, args, **kwargs):
        check_call("RawKernel.__call__", real("RawKernel.__call__"), (grid, block, args), kwargs)
        self._s.launch(self, grid, block, tuple(args), kwargs.get("shared_mem", 0), kwargs.get("stream"))

    def compile(self, log_stream=None):
        _kernel_params(self.code, self.name)


class RawModule:
    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=None):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if path is not None:
            raise StandInGap("RawModule(path=) is not in the stand-in")
        if not isinstance(options, tuple):
            raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got "
                            f"{type(options).__name__})")
        self.code, self.options, self.backend = code, options, backend

    def get_function(self, name):
        kernel = RawKernel(self.code, name, self.options, self.backend)
        kernel.compile()
        return kernel

    def compile(self, log_stream=None):
        pass


# --- random -------------------------------------------------------------------------------------------
class Generator:
    """cupy.random.Generator on NumPy's default generator (other numbers than CuPy's, same API)."""

    def __init__(self, s, np_rng):
        self._s, self._rng = s, np_rng

    def random(self, size=None, dtype=np.float64, out=None):
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"Unsupported dtype {dt.name} for random")
        if out is not None:
            if not isinstance(out, ndarray):
                raise TypeError(f"Unsupported type {type(out)}")
            if size is not None and tuple(np.atleast_1d(size)) != out.shape:
                raise ValueError(f"size {size} does not match out {out.shape}")
            return self._s.run("random.Generator.random",
                               lambda o: self._rng.random(dtype=dt, out=o), (out,), {}, name="random")
        return self._s.run("random.Generator.random", lambda: self._rng.random(size, dtype=dt), (), {},
                           name="random")

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        real_method = getattr(real("random.Generator"), name)
        np_method = getattr(self._rng, name)

        def method(*args, **kwargs):
            check_call(f"random.Generator.{name}", real_method, args, kwargs)
            return self._s.run(f"random.Generator.{name}", np_method, args, kwargs, name=name)
        return method


# --- the modules --------------------------------------------------------------------------------------
class _Module(types.ModuleType):
    """A stand-in module: explicit attributes, else the real module's names forwarded to NumPy's."""

    def __init__(self, name, s, real_path, np_ns):
        super().__init__(name)
        self.__path__ = []                              # a package whose other submodules do not exist
        self._s, self._real_path, self._np = s, real_path, np_ns

    def __getattr__(self, attr):
        if attr.startswith("__") or attr in ("_s", "_real_path", "_np"):
            raise AttributeError(attr)
        value = self._s.resolve(self, attr)
        setattr(self, attr, value)
        return value


def _resolve(s, module, attr):
    real_module = real(module._real_path)
    if not hasattr(real_module, attr):
        raise AttributeError(f"module '{module.__name__}' has no attribute '{attr}'")
    obj = getattr(real_module, attr)
    label = f"{module._real_path}.{attr}".lstrip(".")
    np_obj = getattr(module._np, attr, None) if module._np is not None else None
    if isinstance(obj, types.ModuleType):
        raise StandInGap(f"{module.__name__}.{attr} (a module) is not in the stand-in")
    if isinstance(obj, type) and obj is np_obj or not callable(obj):
        return obj                                      # NumPy scalar types, dtypes, constants
    if isinstance(obj, type) or np_obj is None or not callable(np_obj):
        raise StandInGap(f"{module.__name__}.{attr} exists in CuPy {real().__version__} but not in the "
                         "stand-in; add it to tests/fake_cupy.py")
    return _Function(s, label, obj, np_obj)


class _Function:
    """A CuPy function: the real one's name and keywords, NumPy's arithmetic, the stand-in's checks."""

    def __init__(self, s, label, real_obj, np_func):
        self._s, self._label, self._real, self._np = s, label, real_obj, np_func
        self._ufunc = isinstance(real_obj, (real("ufunc"), real("_core._gufuncs._GUFunc")))
        self.__name__ = label.split(".")[-1]
        self.__doc__ = getattr(real_obj, "__doc__", None)
        self.nin, self.nout = getattr(real_obj, "nin", None), getattr(real_obj, "nout", None)

    def __call__(self, *args, **kwargs):
        check_call(self._label, self._real, args, kwargs, ufunc=self._ufunc)
        if self._ufunc and isinstance(kwargs.get("out"), tuple) and len(kwargs["out"]) == 1:
            kwargs["out"] = kwargs["out"][0]
        return self._s.run(self._label, self._np, args, kwargs, ufunc=self._ufunc)

    def __repr__(self):
        return f"<stand-in for cupy.{self._label}>"


def _method(s, self, name):
    """A bound ndarray method: CuPy's name and keywords, NumPy's method."""
    try:
        real_attr = getattr(real("ndarray"), name)
    except AttributeError:
        raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'") from None
    np_attr = getattr(np.ndarray, name, None)
    if np_attr is None:
        raise StandInGap(f"cupy.ndarray.{name} is not in the stand-in")
    if not callable(real_attr) or isinstance(real_attr, property) or type(real_attr).__name__ == \
            "getset_descriptor":
        return s.wrap(getattr(self._a, name), (self,))

    def method(*args, **kwargs):
        check_call(f"ndarray.{name}", real_attr, args, kwargs)
        return s.run(f"ndarray.{name}", lambda a, *r, **k: getattr(a, name)(*r, **k), (self,) + args, kwargs,
                     name=name)
    method.__name__ = name
    return method


def _explicit(label, impl):
    """A stand-in implementation called only with arguments the real cupy.<label> accepts."""
    def f(*args, **kwargs):
        check_call(label, real(label), args, kwargs)
        return impl(*args, **kwargs)
    f.__name__, f.__doc__ = label.split(".")[-1], impl.__doc__
    return f


def _take(s, a, indices, axis=None, out=None):
    """cupy.take: no ``mode``; indices out of bounds wrap around (CuPy's documented difference)."""
    if isinstance(indices, (list, tuple)):
        s.count("h2d", device=s.current_device())
        indices = s.new(np.array(indices))
    return s.run("take", lambda x, i, **k: np.take(x, i, mode="wrap", **k), (a, indices),
                 {"axis": axis, "out": out})


def _array(s, obj, dtype=None, copy=True, order="K", ndmin=0, label="array"):
    """cupy.array / cupy.asarray: a host object uploaded (h2d); a device array kept, cast, or copied
    from another device (d2d)."""
    if isinstance(obj, ndarray):
        a = obj
        if a._dev != s.current_device():
            if copy is False:
                raise ValueError("Unable to avoid copy while creating an array as requested.")
            s.count("d2d", device=s.current_device())
            a = s.new(np.array(a._a, copy=True))
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError("Unable to avoid copy while creating an array as requested.")
            a = a.astype(dtype)
        elif copy is True and a is obj:
            a = a.copy()
        return a if a.ndim >= ndmin else a.reshape((1,) * (ndmin - a.ndim) + a.shape)
    if hasattr(obj, "__cuda_array_interface__"):
        raise StandInGap("cupy.asarray of a foreign __cuda_array_interface__ object is not in the stand-in")
    inner = _fakes(obj, []) if isinstance(obj, (list, tuple)) else []
    if inner:                                       # a sequence of device arrays: stacked on the device
        return s.run(label, lambda *parts: np.array(_unwrap(obj), dtype=dtype, ndmin=ndmin), tuple(inner), {},
                     name="stack")
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    host = np.asarray(obj)
    _check_dtype(host.dtype if dtype is None else dtype)
    s.reserve(host.nbytes, s.current_device())
    s.count("h2d", device=s.current_device())
    return s.new(np.array(host, dtype=dtype, order=order or "K", ndmin=ndmin, copy=True))


def _asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """cupy.asnumpy: a device array read back (counted as get()); anything else through NumPy."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    host = np.asarray(a, order=order)
    if out is not None:
        out[...] = host
        return out
    return host


def _creation(s, name):
    """cupy.empty/zeros/ones/full: the memory is reserved (OutOfMemoryError) before NumPy allocates it."""
    np_func = getattr(np, name)

    def create(*args, **kwargs):
        bound = signature(name, real(name)).bind(*args, **kwargs)
        shape, dtype = bound.arguments["shape"], bound.arguments.get("dtype")
        if dtype is None:
            dtype = np.asarray(bound.arguments["fill_value"]).dtype if name == "full" else float
        dt = _check_dtype(dtype)
        s.reserve(int(np.prod(shape)) * dt.itemsize, s.current_device())
        result = s.new(np_func(*args, **kwargs))
        if name != "empty":
            s.count("kernel", device=s.current_device())
        return result
    return _explicit(name, create)


def _build_modules(s):
    """The stand-in's cupy, cupy.cuda, cupy.cuda.runtime, cupy.cuda.memory, cupy.random, cupyx modules."""
    cp = _Module("cupy", s, "", np)
    cuda = _Module("cupy.cuda", s, "cuda", None)
    runtime = _Module("cupy.cuda.runtime", s, "cuda.runtime", None)
    memory = _Module("cupy.cuda.memory", s, "cuda.memory", None)
    driver = _Module("cupy.cuda.driver", s, "cuda.driver", None)
    random = _Module("cupy.random", s, "random", np.random)
    linalg = _Module("cupy.linalg", s, "linalg", np.linalg)
    cupyx = _Module("cupyx", s, "cupyx", None)
    pool = MemoryPool(s)

    cp.ndarray, cp.RawKernel, cp.RawModule = ndarray, RawKernel, RawModule
    cp.cuda, cp.random, cp.linalg = cuda, random, linalg
    cp.__version__ = real().__version__
    cp.take = _explicit("take", lambda a, indices, axis=None, out=None: _take(s, a, indices, axis, out))
    cp.asarray = _explicit("asarray", lambda a, dtype=None, order=None, *, copy=None, blocking=False: _array(
        s, a, dtype, copy, order, label="asarray"))
    cp.array = _explicit("array", lambda obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *,
                         blocking=False: _array(s, obj, dtype, copy, order, ndmin))
    cp.asnumpy = _explicit("asnumpy", _asnumpy)
    cp.get_array_module = _explicit("get_array_module", lambda *args: s.cupy if any(
        isinstance(a, ndarray) for a in args) else np)
    for name in ("empty", "zeros", "ones", "full"):
        setattr(cp, name, _creation(s, name))
    cp.get_default_memory_pool = _explicit("get_default_memory_pool", lambda: pool)

    cuda.Device, cuda.Stream, cuda.ExternalStream, cuda.Event = Device, Stream, ExternalStream, Event
    cuda.MemoryPool, cuda.PinnedMemoryPointer = MemoryPool, PinnedMemoryPointer
    cuda.get_elapsed_time = _explicit("cuda.get_elapsed_time", get_elapsed_time)
    cuda.get_current_stream = _explicit("cuda.get_current_stream",
                                        lambda device_id=-1: s.current_stream(device_id))
    cuda.alloc_pinned_memory = _explicit("cuda.alloc_pinned_memory", lambda size: _alloc_pinned_memory(s, size))
    cuda.is_available = _explicit("cuda.is_available", lambda: s.device_count > 0)
    cuda.runtime, cuda.memory, cuda.driver = runtime, memory, driver
    memory.OutOfMemoryError = real("cuda.memory.OutOfMemoryError")
    memory.MemoryPool = MemoryPool
    driver.CUDADriverError = CUDADriverError

    runtime.CUDARuntimeError = real("cuda.runtime.CUDARuntimeError")
    for name, impl in {
            "getDeviceCount": lambda: s.device_count,
            "getDevice": s.current_device,
            "setDevice": s.set_device,
            "deviceSynchronize": lambda: s.synced("runtime.deviceSynchronize()"),
            "runtimeGetVersion": lambda: 12080,
            "driverGetVersion": lambda: 12080,
            "memGetInfo": lambda: Device().mem_info,
            "getDeviceProperties": lambda device: {
                "name": b"stand-in GPU", "totalGlobalMem": s.pools[device].limit, "multiProcessorCount": 132,
                "major": 9, "minor": 0, "maxThreadsPerBlock": 1024, "sharedMemPerBlock": 48 * 1024,
                "warpSize": 32}}.items():
        setattr(runtime, name, _explicit(f"cuda.runtime.{name}", impl))

    random.default_rng = _explicit("random.default_rng",
                                   lambda seed=None: Generator(s, np.random.default_rng(seed)))
    random.Generator = Generator

    cupyx.allow_synchronize = real("cupyx.allow_synchronize")
    cupyx.DeviceSynchronized = real("cupyx.DeviceSynchronized")
    modules = {"cupy": cp, "cupy.cuda": cuda, "cupy.cuda.runtime": runtime, "cupy.cuda.memory": memory,
               "cupy.cuda.driver": driver, "cupy.random": random, "cupy.linalg": linalg, "cupyx": cupyx}
    return cp, cupyx, modules


@contextlib.contextmanager
def installed(devices=2, peer_access=False, hide_numba_cuda=True, **options):
    """Install a StandIn as ``cupy``/``cupyx`` for the duration of the block (see the module docstring)."""
    real()                                              # read the real package before hiding it
    s = StandIn(devices=devices, peer_access=peer_access, **options)
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_cupy_module(k)}
    hidden = {}
    if hide_numba_cuda:
        hidden = {k: sys.modules.get(k, _MISSING) for k in ("numba.cuda",)}
        sys.modules["numba.cuda"] = None
    sys.modules.update(s.modules)
    _ACTIVE.append(s)
    try:
        yield s
    finally:
        _ACTIVE.remove(s)
        for k in s.modules:
            sys.modules.pop(k, None)
        sys.modules.update(saved)
        for k, v in hidden.items():
            if v is _MISSING:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


_MISSING = object()
