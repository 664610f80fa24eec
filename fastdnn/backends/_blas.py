"""NumPy's own BLAS, callable from Numba-compiled code: a whole training step can then run its GEMMs
without returning to Python between them.

The library is the one NumPy loaded (found with threadpoolctl; another loaded OpenBLAS, SciPy's say,
only if NumPy's is not one); only OpenBLAS is used — the BLAS of NumPy's wheels — whose CBLAS
``?gemm`` takes 64-bit integers when its symbols end in ``64_``. The two functions are registered
with LLVM under fixed names (``fastdnn_cblas_sgemm_i64``, ...), so compiled code refers to them by
name and stays cacheable on disk whichever build provides them.
"""
import ctypes
import functools
import os

import numpy as np

# (symbol pattern, integer bits): scipy-openblas64 (NumPy's wheels), other ILP64 / LP64 OpenBLAS builds
_SYMBOLS = [("scipy_cblas_{}gemm64_", 64), ("cblas_{}gemm64_", 64), ("scipy_cblas_{}gemm", 32),
            ("cblas_{}gemm", 32)]
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_found = {}          # integer bits -> (the library, its cblas symbol pattern), once int_bits found them


def registered_name(char, bits):
    """The name compiled code calls: cblas_{s,d}gemm of the registered BLAS."""
    return f"fastdnn_cblas_{char}gemm_i{bits}"


@functools.lru_cache(maxsize=None)
def int_bits():
    """64 or 32 after registering NumPy's CBLAS sgemm/dgemm (the width of their integers), or None
    when there is no usable one: not OpenBLAS, threadpoolctl missing, the library or its symbols
    not found, or a check product that came out wrong."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    numpy_dir = os.path.dirname(np.__file__)           # its libraries: numpy.libs/, numpy/.dylibs/
    for info in sorted(threadpool_info(), key=lambda i: not i["filepath"].startswith(numpy_dir)):
        if info.get("internal_api") != "openblas":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for pattern, bits in _SYMBOLS:
            fns = {c: getattr(lib, pattern.format(c), None) for c in "sd"}
            if None not in fns.values() and all(_checks_out(fn, c, bits) for c, fn in fns.items()):
                from llvmlite import binding
                for c, fn in fns.items():
                    binding.add_symbol(registered_name(c, bits), ctypes.cast(fn, ctypes.c_void_p).value)
                _found[bits] = lib, pattern
                return bits
    return None


@functools.lru_cache(maxsize=None)
def split_ready(bits):
    """Whether compiled code can split a GEMM over BLAS's threads (``_split_gemm``) with the BLAS int_bits
    found: its batched GEMMs and thread count registered."""
    from ._split_gemm import register
    return bits in _found and register(*_found[bits], bits)


def _checks_out(fn, char, bits):
    """Whether fn computes C = Aᵀ · B with row strides wider than the rows, like np.matmul."""
    dtype, real = (np.float32, ctypes.c_float) if char == "s" else (np.float64, ctypes.c_double)
    integer = ctypes.c_int64 if bits == 64 else ctypes.c_int32
    fn.restype = None
    fn.argtypes = [ctypes.c_int] * 3 + [integer] * 3 + [real, ctypes.c_void_p, integer,
                                                        ctypes.c_void_p, integer, real, ctypes.c_void_p, integer]
    rng = np.random.RandomState(0)
    A, B = rng.rand(3, 6).astype(dtype)[:, :4], rng.rand(3, 7).astype(dtype)[:, :5]
    C = np.zeros((4, 8), dtype)[:, :5]
    fn(ROW_MAJOR, TRANS, NO_TRANS, 4, 5, 3, 1.0, A.ctypes.data, 6, B.ctypes.data, 7, 0.0, C.ctypes.data, 8)
    return np.allclose(C, A.T @ B, rtol=1e-5)
