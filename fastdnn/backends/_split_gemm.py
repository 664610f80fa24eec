"""C = op(A) · op(B) split by C's columns into one part per BLAS thread, the parts as one batched BLAS call
(cblas_?gemm_batch: OpenBLAS runs each part on one of its threads), from compiled code: for GEMMs whose C
has few rows, where OpenBLAS's threading of a single product loses (it divides those few rows between its
threads). (n, k) · (k, m) -> (n, m).

The case that asked for it is a narrow layer on wide inputs — the course's cat network, W1 (20, 12288):
Z1 = W1 · X (20 × 12288 · 12288 × 209) and dW1 = dZ1 · Xᵀ (20 × 209 · 209 × 12288). Measured on 2 cores,
float32, Z1: one OpenBLAS call on 2 threads 1.20 ms, on 1 thread 1.78; as a batch of two halves 0.93 ms;
the same right after another 2-thread product (BLAS's threads awake) 1.21 vs 0.96 ms. Parts run on threads
of our own (pthreads started from compiled code) were as fast only while BLAS's threads slept: after a
2-thread product they spin on the cores for ~0.1 s and more, and the parts then took 1.8 ms.

The batched GEMM and openblas_get_num_threads are registered with LLVM under fixed names (``_blas``), so
kernels that split stay cacheable on disk; a BLAS without them (OpenBLAS before its batch API) never splits.
"""
import functools

import numba
import numpy as np
from numba import types
from numba.extending import register_jitable

# The rule, checked per call on the GEMM's shape (constants of the compiled code): split C's columns when
# C has at most SPLIT_MAX_ROWS rows, the product has at least SPLIT_MIN_MACS multiply-adds, and each part
# gets at least SPLIT_MIN_COLUMNS columns. Measured (2 cores, BLAS's 2 threads woken by another product just
# before; split / one call): C of 8, 12, 20, 24 rows 0.63-0.87 float32, 0.63-0.85 float64 (20 rows: 0.70-0.76
# / 0.80-0.85 from 2M to 51M multiply-adds); 32 rows 0.93-1.00 / 1.00-1.04; 64 to 256 rows 0.91-1.14 (noise).
SPLIT_MAX_ROWS = 31
SPLIT_MIN_MACS = 1 << 21
SPLIT_MIN_COLUMNS = 64
MAX_PARTS = 16
# Every part has more multiply-adds than this: OpenBLAS runs batched products of at most 100³ on its
# small-matrix kernels, and its DYNAMIC_ARCH builds (NumPy's wheels; 0.3.31 here) then call a kernel
# table's offset as an address and crash (seen: a segfault in inner_small_matrix_thread).
BATCH_SMALL_MACS = 100 ** 3

_blas_threads = types.ExternalFunction("fastdnn_blas_get_num_threads", types.int32())


def batch_name(char, bits):
    """The name compiled code calls: cblas_{s,d}gemm_batch of the registered BLAS."""
    return f"fastdnn_cblas_{char}gemm_batch_i{bits}"


@register_jitable
def splits(n, m, k):
    """Whether the rule splits a GEMM of C (n, m) over k: few rows in C, much work."""
    return n <= SPLIT_MAX_ROWS and n * m * k >= SPLIT_MIN_MACS


@functools.lru_cache(maxsize=None)
def split_gemm(dtype, bits):
    """split(trans_a, trans_b, n, m, k, A, lda, B, ldb, C, ldc) -> bool (arguments as cblas_?gemm's, pointers
    as integers; C is written, beta = 0): C's columns in one part per BLAS thread, all parts one batched
    call; False (nothing done) when BLAS has one thread, or C too few columns, or the parts would be too
    small (SPLIT_MIN_COLUMNS, BATCH_SMALL_MACS). None when the BLAS has no batched GEMM
    (``_blas.split_ready``). Jitable."""
    from . import _blas
    from ._blas import ROW_MAJOR, TRANS
    char = "s" if np.dtype(dtype) == np.float32 else "d"
    if not _blas.split_ready(bits):
        return None
    integer = np.int64 if bits == 64 else np.int32
    p = types.intp                                     # every array argument, as its address
    cblas_batch = types.ExternalFunction(batch_name(char, bits), types.void(
        types.int32, p, p, p, p, p, p, p, p, p, p, p, p, p, numba.from_dtype(np.dtype(integer)), p))
    ftype, size = np.dtype(dtype).type, np.dtype(dtype).itemsize

    def split(trans_a, trans_b, n, m, k, A, lda, B, ldb, C, ldc):
        parts = min(_blas_threads(), m // SPLIT_MIN_COLUMNS, MAX_PARTS)
        while parts > 1 and n * (m // parts) * k <= BATCH_SMALL_MACS:
            parts -= 1
        if parts < 2:
            return False
        trans = np.empty((2, parts), np.int32)
        sizes = np.empty((7, parts), integer)          # M, N, K, lda, ldb, ldc, group size
        scalars = np.empty((2, parts), ftype)          # alpha, beta
        pointers = np.empty((3, parts), np.intp)       # A, B, C
        for q in range(parts):                         # columns j0:j1, m // parts or one more
            j0, j1 = q * m // parts, (q + 1) * m // parts
            trans[0, q], trans[1, q] = trans_a, trans_b
            sizes[0, q], sizes[1, q], sizes[2, q] = n, j1 - j0, k
            sizes[3, q], sizes[4, q], sizes[5, q], sizes[6, q] = lda, ldb, ldc, 1
            scalars[0, q], scalars[1, q] = 1.0, 0.0
            pointers[0, q] = A
            pointers[1, q] = B + (j0 * ldb if trans_b == TRANS else j0) * size
            pointers[2, q] = C + j0 * size
        cblas_batch(ROW_MAJOR, trans[0].ctypes.data, trans[1].ctypes.data, sizes[0].ctypes.data,
                    sizes[1].ctypes.data, sizes[2].ctypes.data, scalars[0].ctypes.data, pointers[0].ctypes.data,
                    sizes[3].ctypes.data, pointers[1].ctypes.data, sizes[4].ctypes.data, scalars[1].ctypes.data,
                    pointers[2].ctypes.data, sizes[5].ctypes.data, parts, sizes[6].ctypes.data)
        # used after the call, so that Numba frees none of them before it (it frees after a name's last use)
        return trans.size + sizes.size + scalars.size + pointers.size > 0

    # a module attribute under its own name: captured by reference in cache keys (see _numba_kernels)
    split.__name__ = split.__qualname__ = f"split_gemm_{char}_i{bits}"
    globals()[split.__name__] = split
    return register_jitable(split)


def register(lib, pattern, bits):
    """Register the BLAS library's cblas_?gemm_batch and openblas_get_num_threads (named like its cblas
    ``pattern``) under fixed names; False when either is missing."""
    import ctypes
    from llvmlite import binding
    names = {batch_name(c, bits): pattern.format(c).replace("gemm", "gemm_batch") for c in "sd"}
    names["fastdnn_blas_get_num_threads"] = pattern.replace("cblas_{}gemm", "openblas_get_num_threads")
    found = {name: getattr(lib, symbol, None) for name, symbol in names.items()}
    if None in found.values():
        return False
    for name, fn in found.items():
        binding.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)
    return True
