"""CUDA kernels (numba-cuda), built once per (activation / loss / optimizer, dtype) from the same
scalar math as the CPU kernels (``activations.py``, ``losses.py``, ``optimizers.py``).

Never imports CuPy, so ``NUMBA_ENABLE_CUDASIM=1`` can run every kernel on the CPU. Arrays are
C-contiguous (n, m); 2-D kernels put x (the fast thread index) along the m columns, so a warp reads
contiguous memory. Reductions are deterministic: every thread owns a fixed set of elements and partial
sums are combined in a fixed tree order in shared memory — no floating-point atomics, so the same
inputs give bit-identical db and cost on every run.
"""
import functools
import math
import os

import numpy as np
from numba import cuda
from numba.extending import register_jitable

# The simulator runs every thread as a Python thread, so it gets 32-thread blocks; the same kernels are
# compiled (tests/test_cuda_compile.py) and run on GPUs with 256.
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
THREADS_2D = (8, 4) if SIMULATED else (32, 8)   # (along m, along n); one warp per row segment on GPUs
THREADS_1D = 32 if SIMULATED else 256           # also the shared-memory reduction width (a power of 2)


def blocks_2d(n, m):
    """Grid for an (n, m) elementwise kernel with THREADS_2D threads per block."""
    return (math.ceil(m / THREADS_2D[0]), math.ceil(n / THREADS_2D[1]))


def blocks_1d(size):
    return max(1, math.ceil(size / THREADS_1D))


@functools.lru_cache(maxsize=None)
def _scalar(activation, dtype):
    g, dg = activation.scalar(np.dtype(dtype).type)
    return register_jitable(g), register_jitable(dg)


def _ftype(dtype):
    return np.dtype(dtype).type


@register_jitable
def _block_sum(shared, tid):
    """Tree-sum shared[0:THREADS_1D] into shared[0] (all threads of the block call it)."""
    step = THREADS_1D // 2
    while step > 0:
        cuda.syncthreads()
        if tid < step:
            shared[tid] += shared[tid + step]
        step //= 2
    cuda.syncthreads()


@functools.lru_cache(maxsize=None)
def bias_activation(activation, dtype):
    """Z += b (broadcast over columns), A = g(Z). Grid blocks_2d(n, m), block THREADS_2D."""
    g, _ = _scalar(activation, dtype)

    @cuda.jit
    def kernel(Z, b, A):
        j, i = cuda.grid(2)
        if i < Z.shape[0] and j < Z.shape[1]:
            z = Z[i, j] + b[i, 0]
            Z[i, j] = z
            A[i, j] = g(z)

    return kernel


@functools.lru_cache(maxsize=None)
def delta_row_sum(activation, dtype):
    """dZ = dA * g'(Z) over dA, and db[i] = Σ_j dZ[i, j]: one block per row (grid n, block
    THREADS_1D), each thread a fixed stride of columns, then a fixed-order tree sum."""
    _, dg = _scalar(activation, dtype)
    ftype, zero = numba_type(dtype), _ftype(dtype)(0.0)

    @cuda.jit
    def kernel(dA, Z, A, db):
        i, tid = cuda.blockIdx.x, cuda.threadIdx.x
        shared = cuda.shared.array(THREADS_1D, ftype)
        s = zero
        for j in range(tid, dA.shape[1], THREADS_1D):
            d = dA[i, j] * dg(Z[i, j], A[i, j])
            dA[i, j] = d
            s += d
        shared[tid] = s
        _block_sum(shared, tid)
        if tid == 0:
            db[i, 0] = shared[0]

    return kernel


@functools.lru_cache(maxsize=None)
def output_elementwise(loss, activation, dtype):
    """dZ = (A - Y)/m (times g'(Z) unless canonical) and per-block partial sums of L(z, a, y)/m into
    partials[block]: grid blocks_1d(n*m), block THREADS_1D; then sum_partials."""
    cost = register_jitable(loss.scalar(_ftype(dtype)))
    _, dg = _scalar(activation, dtype)
    canonical = activation.name == loss.canonical
    ftype, zero = numba_type(dtype), _ftype(dtype)(0.0)

    @cuda.jit
    def kernel(Z, A, Y, dZ, inv_m, partials):
        tid = cuda.threadIdx.x
        k = cuda.blockIdx.x * THREADS_1D + tid
        shared = cuda.shared.array(THREADS_1D, ftype)
        c = zero
        if k < Z.size:
            i, j = k // Z.shape[1], k % Z.shape[1]
            z, a, y = Z[i, j], A[i, j], Y[i, j]
            c = cost(z, a, y) * inv_m
            d = a - y
            if not canonical:
                d = d * dg(z, a)
            dZ[i, j] = d * inv_m
        shared[tid] = c
        _block_sum(shared, tid)
        if tid == 0:
            partials[cuda.blockIdx.x] = shared[0]

    return kernel


@functools.lru_cache(maxsize=None)
def bias_softmax(dtype):
    """Z += b, A[:, j] = softmax(Z[:, j]): one thread per column (grid blocks_1d(m))."""
    zero = _ftype(dtype)(0.0)

    @cuda.jit
    def kernel(Z, b, A):
        j = cuda.grid(1)
        if j < Z.shape[1]:
            zmax = Z[0, j] + b[0, 0]
            for i in range(Z.shape[0]):
                z = Z[i, j] + b[i, 0]
                Z[i, j] = z
                zmax = max(zmax, z)
            s = zero
            for i in range(Z.shape[0]):
                e = math.exp(Z[i, j] - zmax)
                A[i, j] = e
                s += e
            for i in range(Z.shape[0]):
                A[i, j] /= s

    return kernel


@functools.lru_cache(maxsize=None)
def output_softmax_ce(dtype):
    """dZ = (A - Y)/m and per-column costs -Σ_i y (z - logsumexp(z_col))/m into partials[j]: one thread
    per column (grid blocks_1d(m)); then sum_partials."""
    zero = _ftype(dtype)(0.0)

    @cuda.jit
    def kernel(Z, A, Y, dZ, inv_m, partials):
        j = cuda.grid(1)
        if j < Z.shape[1]:
            zmax = Z[0, j]
            for i in range(Z.shape[0]):
                zmax = max(zmax, Z[i, j])
            s = zero
            for i in range(Z.shape[0]):
                s += math.exp(Z[i, j] - zmax)
            lse = zmax + math.log(s)
            c = zero
            for i in range(Z.shape[0]):
                y = Y[i, j]
                if y != 0:
                    c -= y * (Z[i, j] - lse)
                dZ[i, j] = (A[i, j] - y) * inv_m
            partials[j] = c * inv_m

    return kernel


@functools.lru_cache(maxsize=None)
def sum_partials(dtype):
    """out[0] = Σ partials in a fixed order (one block of THREADS_1D threads)."""
    ftype, zero = numba_type(dtype), _ftype(dtype)(0.0)

    @cuda.jit
    def kernel(partials, out):
        tid = cuda.threadIdx.x
        shared = cuda.shared.array(THREADS_1D, ftype)
        s = zero
        for k in range(tid, partials.shape[0], THREADS_1D):
            s += partials[k]
        shared[tid] = s
        _block_sum(shared, tid)
        if tid == 0:
            out[0] = shared[0]

    return kernel


@functools.lru_cache(maxsize=None)
def optimizer_update(optimizer, dtype):
    """out = θ' and s1_out, s2_out = state' from the optimizer's scalar update (out of place): one
    thread per parameter (grid blocks_1d(P)). s1, s2, s1_out, s2_out: any (P,) arrays when unused."""
    step, n_state = register_jitable(optimizer.scalar(_ftype(dtype))), optimizer.n_state

    @cuda.jit
    def kernel(theta, dtheta, s1, s2, lr, c1, c2, out, s1_out, s2_out):
        p = cuda.grid(1)
        if p < theta.shape[0]:
            t, a, b = step(theta[p], dtheta[p], s1[p], s2[p], lr, c1, c2)
            out[p] = t
            if n_state >= 1:
                s1_out[p] = a
            if n_state >= 2:
                s2_out[p] = b

    return kernel


def numba_type(dtype):
    """The Numba scalar type for a NumPy float dtype (for shared arrays)."""
    from numba import float32, float64
    return float32 if np.dtype(dtype) == np.float32 else float64
