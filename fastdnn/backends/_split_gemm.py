"""C = op(A) · op(B) split by C's columns across threads, one single-threaded BLAS call per part, from
compiled code: for GEMMs whose C has few rows, where OpenBLAS's own threading loses. (n, k) · (k, m) -> (n, m).

The case is a narrow first layer on wide inputs — the course's cat network, W1 (20, 12288): Z1 = W1 · X
(20 × 12288 · 12288 × 209) and dW1 = dZ1 · Xᵀ (20 × 209 · 209 × 12288). Measured on 2 cores, float32
(float64), ms: one OpenBLAS call on 2 threads 1.22 (2.63) and 1.19 (2.26); on 1 thread 1.78 (4.16) and 1.57
(3.70); split in two halves of C's columns, each on one thread, 0.87 (2.16) and 0.85 (1.90). With 128 or
more rows OpenBLAS's split is as good or better ((256, 784, 256): 0.57 vs 0.63 ms).

The parts run on threads made with pthread_create by the compiled step (the calling thread runs the first
part), each running ``worker`` — a compiled C function — on its part's job record; BLAS is held at one
thread while they run and given back its count after. As many parts as BLAS has threads (so
``threadpoolctl`` limits hold): with one BLAS thread nothing is split. pthread_create/_join, the BLAS's
thread-count functions and the worker are registered with LLVM under fixed names (``_blas``), so kernels
that split stay cacheable on disk.
"""
import ctypes
import functools

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

# The rule, checked per call on the GEMM's shape (constants of the compiled code): split C's columns when
# C has at most SPLIT_MAX_ROWS rows, the product has at least SPLIT_MIN_MACS multiply-adds, and each part
# gets at least SPLIT_MIN_COLUMNS columns.
SPLIT_MAX_ROWS = 32
SPLIT_MIN_MACS = 1 << 23
SPLIT_MIN_COLUMNS = 64
MAX_PARTS = 16
# OpenBLAS runs products of this many multiply-adds and more on its threads (its SMP threshold: 65536 x
# GEMM_MULTITHREAD_THRESHOLD 4)
BLAS_THREADED_MACS = 1 << 18
# A job record (int64): trans A, trans B, n, m, k, A, lda, B, ldb, C, ldc, the thread's id
JOB, TID = 12, 11


@register_jitable
def splits(n, m, k):
    """Whether the rule splits a GEMM of C (n, m) over k: few rows in C, much work."""
    return n <= SPLIT_MAX_ROWS and n * m * k >= SPLIT_MIN_MACS


@register_jitable
def alone(dims, m):
    """Whether a step of m examples through layers ``dims`` (n0, ..., nL) has no GEMM but the first
    layer's that OpenBLAS would run on its threads (products from BLAS_THREADED_MACS multiply-adds): once
    woken, its threads spin on the cores for a while (~0.1 s and more, measured) and the split's parts
    then compete with them — 1.8 ms instead of 0.87 for the cat's Z1, worse than one BLAS call (1.25)."""
    for l in range(2, dims.shape[0]):
        if dims[l] * dims[l - 1] * m >= BLAS_THREADED_MACS:
            return False
    return True


def worker_name(char, bits):
    """The registered name of the worker for cblas_{s,d}gemm with ``bits``-wide integers."""
    return f"fastdnn_gemm_part_{char}_i{bits}"


def _address_of(symbol):
    """A jitable returning the address of a registered function (to hand to pthread_create)."""
    @intrinsic
    def address(typingctx):
        def codegen(context, builder, signature, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), symbol)
            return builder.ptrtoint(fn, ir.IntType(64))
        return types.int64(), codegen
    return address


_pthread_create = types.ExternalFunction("fastdnn_pthread_create",
                                         types.int32(types.intp, types.intp, types.intp, types.intp))
_pthread_join = types.ExternalFunction("fastdnn_pthread_join", types.int32(types.uint64, types.intp))
_blas_threads = types.ExternalFunction("fastdnn_blas_get_num_threads", types.int32())
_set_blas_threads = types.ExternalFunction("fastdnn_blas_set_num_threads", types.void(types.int32))


@functools.lru_cache(maxsize=None)
def split_gemm(dtype, bits):
    """split(trans_a, trans_b, n, m, k, A, lda, B, ldb, C, ldc) -> bool (arguments as cblas's,
    pointers as integers; C is written, beta = 0): C's columns split over BLAS's threads, False (nothing done)
    when BLAS has one thread or C too few columns. None when threads cannot be made from compiled
    code here (``_blas.split_ready``). Jitable."""
    from . import _blas
    from ._blas import ROW_MAJOR, TRANS, registered_name
    char = "s" if np.dtype(dtype) == np.float32 else "d"
    if not _blas.split_ready(bits):
        return None
    real, integer = numba.from_dtype(np.dtype(dtype)), types.int64 if bits == 64 else types.int32
    cblas_gemm = types.ExternalFunction(registered_name(char, bits), types.void(
        types.int32, types.int32, types.int32, integer, integer, integer, real, types.intp, integer,
        types.intp, integer, real, types.intp, integer))
    ftype, size = np.dtype(dtype).type, np.dtype(dtype).itemsize

    def run(job):
        cblas_gemm(ROW_MAJOR, job[0], job[1], job[2], job[3], job[4], ftype(1.0), job[5], job[6], job[7],
                   job[8], ftype(0.0), job[9], job[10])

    # module attributes under their own names: captured by reference in cache keys (see _numba_kernels)
    run.__name__ = run.__qualname__ = f"gemm_part_{char}_i{bits}"
    globals()[run.__name__] = run
    run = register_jitable(run)

    def worker(job):
        run(numba.carray(job, (JOB,)))
        return 0

    worker.__name__ = worker.__qualname__ = f"gemm_worker_{char}_i{bits}"
    compiled = numba.cfunc(types.intp(types.CPointer(types.int64)), cache=True)(worker)
    from llvmlite import binding
    binding.add_symbol(worker_name(char, bits), compiled.address)
    worker_address = _address_of(worker_name(char, bits))

    def split(trans_a, trans_b, n, m, k, A, lda, B, ldb, C, ldc):
        threads = _blas_threads()
        parts = min(threads, m // SPLIT_MIN_COLUMNS, MAX_PARTS)
        if parts < 2:
            return False
        width = -(-m // parts)
        jobs = np.empty((parts, JOB), np.int64)
        for p in range(parts):
            j0 = p * width
            job = jobs[p]
            job[0], job[1], job[2], job[3], job[4] = trans_a, trans_b, n, min(m, j0 + width) - j0, k
            job[5], job[6], job[8], job[10] = A, lda, ldb, ldc
            job[7] = B + (j0 * ldb if trans_b == TRANS else j0) * size
            job[9] = C + j0 * size
        _set_blas_threads(1)
        started = np.zeros(parts, np.bool_)
        for p in range(1, parts):
            at = jobs.ctypes.data + p * JOB * 8
            started[p] = _pthread_create(at + TID * 8, 0, worker_address(), at) == 0
        run(jobs[0])
        for p in range(1, parts):
            if started[p]:
                _pthread_join(np.uint64(jobs[p, TID]), 0)
            else:                                      # no thread could be made: this one runs it
                run(jobs[p])
        _set_blas_threads(threads)
        return True

    split.__name__ = split.__qualname__ = f"split_gemm_{char}_i{bits}"
    globals()[split.__name__] = split
    return register_jitable(split)


def register_threads(lib, pattern):
    """Register pthread_create/_join and the BLAS library's openblas_{get,set}_num_threads (named like its
    cblas ``pattern``) under fixed names; False when any is missing."""
    from llvmlite import binding
    names = {"fastdnn_blas_get_num_threads": pattern.replace("cblas_{}gemm", "openblas_get_num_threads"),
             "fastdnn_blas_set_num_threads": pattern.replace("cblas_{}gemm", "openblas_set_num_threads")}
    try:
        libc = ctypes.CDLL(None)                       # the process's own symbols (no such thing on Windows)
        found = {"fastdnn_pthread_create": libc.pthread_create, "fastdnn_pthread_join": libc.pthread_join}
        found.update({name: getattr(lib, symbol) for name, symbol in names.items()})
    except (AttributeError, OSError, TypeError):
        return False
    for name, fn in found.items():
        binding.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)
    return True
