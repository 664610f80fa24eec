"""Numba CPU kernels, built once per (activation or loss, dtype) from the scalar math in
``activations.py`` / ``losses.py``, compiled on first use and cached on disk.

Arrays are C-contiguous (n, m): rows are units, columns examples, so inner loops run along
contiguous memory. Reductions accumulate in float64; ``fastmath`` only allows reassociation and
FMA contraction (no finite-math assumptions: NaN must still reach the cost check).

Building blocks are plain Python functions registered with ``register_jitable`` and captured by
the kernels' closures; Numba hashes closure contents (and the globals they use) into its cache
key, and plain functions, unlike dispatchers, hash the same in every process — so ``cache=True``
works for every kernel as long as no closure-captured block refers to a dispatcher.

Every function made by a factory is named after what its body depends on (``variant``): Numba
names compiled symbols from the qualified name and a per-process counter, so two same-named
closures with different bodies, compiled and cached by different processes, can get the same
symbol, and a process that loads both from the cache runs one body for both (numba issue #10486;
seen here: a linear network stepping with a ReLU network's cached kernel).
"""
import functools
import hashlib

import numba
import numpy as np
from numba.core import cgutils, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, register_jitable
from numba.np.arrayobj import make_array, populate_array

from ..activations import get_activation
from . import _split_gemm
from ._fastmath import fast_loss_scalar, fast_scalar

_FLAGS = dict(nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})


def variant(fn, *key):
    """fn renamed after key (the arguments its body depends on; their reprs hold every parameter)."""
    fn.__qualname__ += "." + hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    return fn


def jitable(fn, *key):
    """fn, named after key, made callable from compiled code (compiled with _FLAGS where it is called)."""
    return register_jitable(**_FLAGS)(variant(fn, *key))


njit = functools.partial(numba.njit, cache=True, **_FLAGS)


@register_jitable(**_FLAGS)
def _view(flat, start, n, m):
    """flat[start:start + n m] as an (n, m) C-contiguous view of a 1-D contiguous array, the same array as
    ``.reshape((n, m))`` of that slice without Numba's reshape helper call (25 ns a view, measured; a step
    of a small network makes dozens). The caller keeps start + n m within flat (nothing checks it)."""
    return _view_of(flat, start, n, m)


# An intrinsic pickles with a per-process id: kernels reach it only through _view (a plain function,
# pickled by reference), so that their cache keys stay the same in every process.
@intrinsic
def _view_of(typingctx, flat, start, n, m):
    result = types.Array(flat.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        source, out = make_array(sig.args[0])(context, builder, args[0]), make_array(result)(context, builder)
        start, n, m = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:]))
        itemsize = source.itemsize
        populate_array(out, data=builder.gep(source.data, [start]), shape=cgutils.pack_array(builder, [n, m]),
                       strides=cgutils.pack_array(builder, [builder.mul(m, itemsize), itemsize]),
                       itemsize=itemsize, meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, result, out._getvalue())

    return result(flat, start, n, m), codegen


@functools.lru_cache(maxsize=None)
def _scalar(activation, dtype):
    g, dg = fast_scalar(activation, dtype)      # vectorizable forms of tanh, sigmoid (see _fastmath)
    return jitable(g, activation, dtype), jitable(dg, activation, dtype)


# --- fused passes: plain (jitable) versions, composed by whole_step --------------------------
@functools.lru_cache(maxsize=None)
def _bias_activation(activation, dtype):
    key = (activation, dtype)
    g, _ = _scalar(activation, dtype)

    def kernel(Z, b, A):
        n, m = Z.shape
        for i in range(n):
            bi = b[i, 0]
            for j in range(m):
                z = Z[i, j] + bi
                Z[i, j] = z
                A[i, j] = g(z)

    return jitable(kernel, *key)


@functools.lru_cache(maxsize=None)
def _bias_skip_activation(activation, dtype):
    key = (activation, dtype)
    g, _ = _scalar(activation, dtype)

    def kernel(Z, b, S, A):
        n, m = Z.shape
        r = min(n, S.shape[0])
        for i in range(r):
            bi = b[i, 0]
            for j in range(m):
                z = Z[i, j] + bi + S[i, j]
                Z[i, j] = z
                A[i, j] = g(z)
        for i in range(r, n):
            bi = b[i, 0]
            for j in range(m):
                z = Z[i, j] + bi
                Z[i, j] = z
                A[i, j] = g(z)

    return jitable(kernel, *key)


@functools.lru_cache(maxsize=None)
def _bias_softmax(dtype):
    key = (dtype,)
    zero = np.dtype(dtype).type(0.0)

    def kernel(Z, b, A):
        n, m = Z.shape
        for j in range(m):
            zmax = Z[0, j] + b[0, 0]
            for i in range(n):
                z = Z[i, j] + b[i, 0]
                Z[i, j] = z
                zmax = max(zmax, z)
            s = zero
            for i in range(n):
                e = np.exp(Z[i, j] - zmax)
                A[i, j] = e
                s += e
            for i in range(n):
                A[i, j] /= s

    return jitable(kernel, *key)


@functools.lru_cache(maxsize=None)
def _delta_row_sum(activation, dtype):
    key = (activation, dtype)
    _, dg = _scalar(activation, dtype)

    def kernel(dA, Z, A, db):
        n, m = dA.shape
        for i in range(n):
            s = 0.0
            for j in range(m):
                d = dA[i, j] * dg(Z[i, j], A[i, j])
                dA[i, j] = d
                s += d
            db[i, 0] = s

    return jitable(kernel, *key)


@functools.lru_cache(maxsize=None)
def _delta_row_sum_skip(activation, dtype):
    key = (activation, dtype)
    _, dg = _scalar(activation, dtype)

    def kernel(dA, Z, A, db, dS, accumulate):
        n, m = dA.shape
        r = min(n, dS.shape[0])
        for i in range(n):
            s = 0.0
            for j in range(m):
                d = dA[i, j] * dg(Z[i, j], A[i, j])
                dA[i, j] = d
                s += d
            db[i, 0] = s
            if i < r:
                if accumulate:
                    for j in range(m):
                        dS[i, j] += dA[i, j]
                else:
                    for j in range(m):
                        dS[i, j] = dA[i, j]

    return jitable(kernel, *key)


@functools.lru_cache(maxsize=None)
def _output_delta_scalar(loss, activation, dtype):
    """dz = (a - y)/m, times g'(z) off the canonical pair (softmax: always canonical). Jitable scalar."""
    canonical = activation.name == loss.canonical
    _, dg = _scalar(get_activation("linear") if canonical else activation, dtype)    # dg: unused if canonical

    def delta(z, a, y, inv_m):
        d = a - y
        if not canonical:
            d = d * dg(z, a)
        return d * inv_m

    return jitable(delta, loss, activation, dtype)


@functools.lru_cache(maxsize=None)
def _output_elementwise(loss, activation, dtype):
    key = (loss, activation, dtype)
    cost = jitable(fast_loss_scalar(loss, dtype), loss, dtype)
    delta = _output_delta_scalar(loss, activation, dtype)

    def kernel(Z, A, Y, dZ, inv_m):
        n, m = Z.shape
        total = 0.0
        for i in range(n):
            for j in range(m):
                z, a, y = Z[i, j], A[i, j], Y[i, j]
                total += cost(z, a, y)
                dZ[i, j] = delta(z, a, y, inv_m)
        return total * inv_m

    return jitable(kernel, *key)


@functools.lru_cache(maxsize=None)
def _output_delta(loss, activation, dtype):
    """dZ (``_output_delta_scalar``, as the output pass writes it), and G = Σ |z| + |a| + |y| in the dtype: the
    output pass without the cost, for the steps whose cost only needs to be finite. Every loss's entry is
    at most 2(|z| + |a| + |y|)² + 1 + |y| ln n, so G ≤ ``cost_safe(dtype)`` (the dtype's √max / 8) proves J
    finite (tests/test_output_delta.py); NaN or ∞ anywhere makes G fail that test. (n, m) arrays -> G."""
    delta, ftype = _output_delta_scalar(loss, activation, dtype), np.dtype(dtype).type

    def kernel(Z, A, Y, dZ, inv_m):
        n, m = Z.shape
        guard = ftype(0.0)
        for i in range(n):
            for j in range(m):
                z, a, y = Z[i, j], A[i, j], Y[i, j]
                guard += abs(z) + abs(a) + abs(y)
                dZ[i, j] = delta(z, a, y, inv_m)
        return guard

    return jitable(kernel, loss, activation, dtype)


def cost_safe(dtype):
    """The largest G (``_output_delta``) taken as proof that a step's cost is finite: √max / 8."""
    return np.dtype(dtype).type(np.sqrt(np.finfo(dtype).max) / 8)


@functools.lru_cache(maxsize=None)
def _output_softmax_ce(dtype):
    key = (dtype,)
    tiny = np.dtype(dtype).type(1e-30)

    def kernel(Z, A, Y, dZ, inv_m):
        n, m = Z.shape
        for i in range(n):
            for j in range(m):
                dZ[i, j] = (A[i, j] - Y[i, j]) * inv_m
        total = 0.0
        for i in range(n):
            for j in range(m):
                y = Y[i, j]
                if y != 0:
                    a = A[i, j]
                    total -= y * (np.log(np.float64(a)) if a > tiny else _log_softmax(Z, i, j))
        return total * inv_m

    return jitable(kernel, *key)


@jitable
def _log_softmax(Z, i, j):
    """z_ij - logsumexp(Z[:, j]) in float64."""
    zmax = np.float64(Z[0, j])
    for r in range(Z.shape[0]):
        zmax = max(zmax, np.float64(Z[r, j]))
    s = 0.0
    for r in range(Z.shape[0]):
        s += np.exp(np.float64(Z[r, j]) - zmax)
    return np.float64(Z[i, j]) - zmax - np.log(s)


# --- the kernels the backend calls --------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def bias_activation(activation, dtype):
    """Z += b (broadcast over columns), A = g(Z), in one pass. Z, A (n, m), b (n, 1)."""
    return njit(_bias_activation(activation, dtype))


@functools.lru_cache(maxsize=None)
def bias_skip_activation(activation, dtype):
    """Z += b + S (S added to the first min(n, n_s) rows), A = g(Z), in one pass. Z, A (n, m), b (n, 1),
    S (n_s, m): a skip connection's A[l], its identity or zero padding / truncation."""
    return njit(_bias_skip_activation(activation, dtype))


@functools.lru_cache(maxsize=None)
def delta_row_sum_skip(activation, dtype):
    """dZ = dA * g'(Z) over dA, db = Σ_cols dZ, and dS[:r] = dZ[:r] (+= when ``accumulate``),
    r = min(n, n_s), in one pass over dA. dA, Z, A (n, m), db (n, 1), dS (n_s, m): a skip's dA[l]."""
    return njit(_delta_row_sum_skip(activation, dtype))


@functools.lru_cache(maxsize=None)
def bias_softmax(dtype):
    """Z += b, A[:, j] = softmax(Z[:, j]) per column, in one sweep of each column. (C, m)."""
    return njit(_bias_softmax(dtype))


@functools.lru_cache(maxsize=None)
def delta_row_sum(activation, dtype):
    """dZ = dA * g'(Z) written over dA, and db = Σ_cols dZ, in one pass. dA, Z, A (n, m), db (n, 1)."""
    return njit(_delta_row_sum(activation, dtype))


@functools.lru_cache(maxsize=None)
def output_elementwise(loss, activation, dtype):
    """J = (1/m) Σ L(z, a, y) and dZ = (A - Y)/m (times g'(Z) unless the activation is the loss's
    canonical one), in one pass. Z, A, Y, dZ (n_L, m); returns J as a float."""
    return njit(_output_elementwise(loss, activation, dtype))


@functools.lru_cache(maxsize=None)
def output_softmax_ce(dtype):
    """J = -(1/m) Σ y log a and dZ = (A - Y)/m. (C, m). log a comes from A where A is a normal
    number, else from the logits (z - logsumexp of the column), so saturated outputs stay finite."""
    return njit(_output_softmax_ce(dtype))


@njit
def add_bias(Z, b, out):
    """out = Z + b, b broadcast over the m columns. Z, out (n, m), b (n, 1)."""
    n, m = Z.shape
    for i in range(n):
        bi = b[i, 0]
        for j in range(m):
            out[i, j] = Z[i, j] + bi


@functools.lru_cache(maxsize=None)
def _optimizer_pass(optimizer, dtype):
    """The optimizer's scalar update per parameter, jitable: out = θ', s1_out, s2_out = the state'."""
    step, n_state = jitable(optimizer.scalar(np.dtype(dtype).type), optimizer, dtype), optimizer.n_state

    def kernel(theta, dtheta, s1, s2, lr, c1, c2, out, s1_out, s2_out):
        for p in range(theta.shape[0]):
            t, a, b = step(theta[p], dtheta[p], s1[p], s2[p], lr, c1, c2)
            out[p] = t
            if n_state >= 1:
                s1_out[p] = a
            if n_state >= 2:
                s2_out[p] = b

    return jitable(kernel, optimizer, dtype)


@functools.lru_cache(maxsize=None)
def optimizer_update(optimizer, dtype):
    """out = θ' and s1_out, s2_out = the state', one pass over the flat buffers: the optimizer's scalar
    update per parameter. s1, s2 (read) and s1_out, s2_out (written): state buffers (any (P,) arrays
    if unused, never written then)."""
    update = _optimizer_pass(optimizer, dtype)

    def kernel(theta, dtheta, s1, s2, lr, c1, c2, out, s1_out, s2_out):
        update(theta, dtheta, s1, s2, lr, c1, c2, out, s1_out, s2_out)

    return njit(variant(kernel, optimizer, dtype))


@njit
def transpose_into(A, out, start, stop):
    """out[start:stop] = A[:, start:stop]ᵀ, in 32 x 32 tiles (each tile's reads and writes stay in cache; a
    row-by-row transpose misses on every write). A (n, m) -> out (m, n), both C-contiguous."""
    n = A.shape[0]
    for j0 in range(start, stop, 32):
        for i0 in range(0, n, 32):
            for j in range(j0, min(j0 + 32, stop)):
                for i in range(i0, min(i0 + 32, n)):
                    out[j, i] = A[i, j]


@njit
def transpose_into_8(A, out, start, stop):
    """out[start:stop] = A[:, start:stop]ᵀ in 8 x 8 tiles, 128 x 128 blocks of them: for rows whose byte
    length is a multiple of 4096, where the 32 rows of a 32 x 32 tile all fall in one set of the 8-way L1
    cache and evict each other (see ``NumbaBackend.transposed``). A (n, m) -> out (m, n), both C-contiguous."""
    n = A.shape[0]
    n8, stop8 = n - n % 8, stop - (stop - start) % 8
    for I in range(0, n8, 128):
        for J in range(start, stop8, 128):
            for i0 in range(I, min(I + 128, n8), 8):
                for j0 in range(J, min(J + 128, stop8), 8):
                    for a in range(8):
                        for b in range(8):
                            out[j0 + b, i0 + a] = A[i0 + a, j0 + b]
    for i in range(n8, n):
        for j in range(start, stop):
            out[j, i] = A[i, j]
    for i in range(n8):
        for j in range(stop8, stop):
            out[j, i] = A[i, j]


@njit
def add_scaled(dW, W, c):
    """dW += c W over 2-D arrays."""
    for i in range(dW.shape[0]):
        for j in range(dW.shape[1]):
            dW[i, j] += c * W[i, j]


@njit
def sgd_update(theta, dtheta, learning_rate, out):
    """out = θ - α dθ over the flat buffers. (P,)."""
    for p in range(theta.shape[0]):
        out[p] = theta[p] - learning_rate * dtheta[p]


# --- the whole step in one compiled call -------------------------------------------------------
# GEMMs through NumPy's BLAS, called from the compiled code (blas_gemm), or, where no BLAS can be
# called so, as loops whose inner loop runs along the m contiguous columns: for a few thousand
# multiply-adds those beat calling BLAS from Python, which costs microseconds per call.

@register_jitable(**_FLAGS)
def gemm_nn(W, A, Z):
    """Z = W · A. W (n, k), A (k, m) -> Z (n, m)."""
    n, k = W.shape
    for i in range(n):
        w = W[i, 0]
        for j in range(A.shape[1]):
            Z[i, j] = w * A[0, j]
        for p in range(1, k):
            w = W[i, p]
            for j in range(A.shape[1]):
                Z[i, j] += w * A[p, j]


@register_jitable(**_FLAGS)
def gemm_nt(dZ, A, dW):
    """dW = dZ · Aᵀ. dZ (n, m), A (k, m) -> dW (n, k)."""
    for i in range(dZ.shape[0]):
        for p in range(A.shape[0]):
            s = 0.0
            for j in range(dZ.shape[1]):
                s += dZ[i, j] * A[p, j]
            dW[i, p] = s


@register_jitable(**_FLAGS)
def gemm_tn(W, dZ, dA):
    """dA = Wᵀ · dZ. W (n, k), dZ (n, m) -> dA (k, m)."""
    n, k = W.shape
    for p in range(k):
        w = W[0, p]
        for j in range(dZ.shape[1]):
            dA[p, j] = w * dZ[0, j]
    for i in range(1, n):
        for p in range(k):
            w = W[i, p]
            for j in range(dZ.shape[1]):
                dA[p, j] += w * dZ[i, j]


@register_jitable(**_FLAGS)
def loop_gemm(trans_a, trans_b, A, B, C):
    """C = op(A) · op(B) as loops (op = transpose where asked; never both)."""
    if trans_a:
        gemm_tn(A, B, C)
    elif trans_b:
        gemm_nt(A, B, C)
    else:
        gemm_nn(A, B, C)


@register_jitable(**_FLAGS)
def loop_gemm_acc(trans_a, trans_b, A, B, C):
    """C += op(A) · op(B) as loops (op = transpose where asked)."""
    n, m = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    for i in range(n):
        for p in range(k):
            a = A[p, i] if trans_a else A[i, p]
            for j in range(m):
                C[i, j] += a * (B[j, p] if trans_b else B[p, j])


# Up to this many multiply-adds a GEMM runs as the loops above even where BLAS is callable: OpenBLAS's
# per-call work (argument checks, its threading and kernel choice) costs 0.1-0.6 µs more than the loops
# take for such products (measured, one thread, float32: (4, 2)·(2, 400) 0.40 vs 0.29 µs, (1, 400)·(400, 4)
# 0.85 vs 0.20 µs; from ~14 000 on BLAS is as fast or faster) — what a course-sized network's step is made of.
SMALL_GEMM_MACS = 4096
# GEMMs with few rows in C split their columns over BLAS's threads where ``_split_gemm``'s rule says so.
SPLIT_GEMMS = True


@register_jitable(**_FLAGS)
def _no_split(trans_a, trans_b, n, m, k, A, lda, B, ldb, C, ldc):
    return False


@functools.lru_cache(maxsize=None)
def blas_gemm(dtype, bits, accumulate=False):
    """C = op(A) · op(B) (C += op(A) · op(B) when ``accumulate``: BLAS's beta = 1) through NumPy's BLAS as
    registered by ``_blas`` (``bits``: its integer width), for 2-D arrays with contiguous rows; products
    of at most SMALL_GEMM_MACS multiply-adds as loops. (n, k) · (k, m) -> (n, m)."""
    from numba import types
    from ._blas import NO_TRANS, ROW_MAJOR, TRANS, registered_name
    ftype = np.dtype(dtype).type
    real, integer = numba.from_dtype(np.dtype(dtype)), types.int64 if bits == 64 else types.int32
    cblas_gemm = types.ExternalFunction(registered_name("s" if ftype is np.float32 else "d", bits), types.void(
        types.int32, types.int32, types.int32, integer, integer, integer, real, types.intp, integer,
        types.intp, integer, real, types.intp, integer))
    size, one, zero = np.dtype(dtype).itemsize, ftype(1.0), ftype(1.0 if accumulate else 0.0)
    split = None if accumulate or not SPLIT_GEMMS else _split_gemm.split_gemm(dtype, bits)
    splitting, split = split is not None, split or _no_split

    def gemm(trans_a, trans_b, A, B, C):
        n, m = C.shape
        k = A.shape[0] if trans_a else A.shape[1]
        if n * m * k <= SMALL_GEMM_MACS:
            if accumulate:
                loop_gemm_acc(trans_a, trans_b, A, B, C)
            else:
                loop_gemm(trans_a, trans_b, A, B, C)
            return
        ta, tb = TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS
        a, lda, b, ldb = A.ctypes.data, _leading(A, size), B.ctypes.data, _leading(B, size)
        c, ldc = C.ctypes.data, _leading(C, size)
        if not (splitting and _split_gemm.splits(n, m, k) and split(ta, tb, n, m, k, a, lda, b, ldb, c, ldc)):
            cblas_gemm(ROW_MAJOR, ta, tb, n, m, k, one, a, lda, b, ldb, zero, c, ldc)

    # A module attribute under its own name: kernels capturing it hash it by reference in their cache
    # key (by value, the ExternalFunction would hash differently in every process: no cache hits).
    gemm.__name__ = gemm.__qualname__ = (f"blas_gemm_{np.dtype(dtype).name}_i{bits}" + ("_acc" if accumulate else "")
                                         + ("_split" if splitting else ""))
    globals()[gemm.__name__] = gemm
    return register_jitable(**_FLAGS)(gemm)


@functools.lru_cache(maxsize=None)
def gemm_accumulate(dtype, bits):
    """C += op(A) · op(B) through NumPy's BLAS (beta = 1), callable from Python: the skip connections'
    GEMMs that add onto what is already in C. Arrays with contiguous rows."""
    gemm = blas_gemm(dtype, bits, True)

    def kernel(trans_a, trans_b, A, B, C):
        gemm(trans_a, trans_b, A, B, C)

    return njit(variant(kernel, "gemm_accumulate", dtype, bits))


@register_jitable(**_FLAGS)
def _leading(A, size):
    """BLAS's leading dimension of a row-major A: its row stride in elements (any value >= its row
    length for one row, whose stride NumPy may leave at 0)."""
    return A.strides[0] // size if A.shape[0] > 1 else max(A.shape[1], 1)


@register_jitable(**_FLAGS)
def _row_sum(dZ, db):
    for i in range(dZ.shape[0]):
        s = 0.0
        for j in range(dZ.shape[1]):
            s += dZ[i, j]
        db[i, 0] = s


@register_jitable(**_FLAGS)
def _block_offset(dims, l, m):
    """Where layer l's (n_l, m) block starts in a flat workspace buffer."""
    o = 0
    for i in range(1, l):
        o += dims[i] * m
    return o


@register_jitable(**_FLAGS)
def _block(flat, dims, l, m):
    """Layer l's (n_l, m) block of a flat workspace buffer (l >= 1)."""
    o, n = _block_offset(dims, l, m), dims[l]
    return _view(flat, o, n, m)


@register_jitable(**_FLAGS)
def _add_rows(Z, S):
    """Z[:r] += S[:r], r = min(n_k, n_l): a skip's identity, zero padding or truncation."""
    for i in range(min(Z.shape[0], S.shape[0])):
        for j in range(Z.shape[1]):
            Z[i, j] += S[i, j]


@register_jitable(**_FLAGS)
def _skip_rows(dZ, dS, accumulate):
    """dS[:r] = dZ[:r] (+= when accumulate), r = min(n_k, n_l); when written, dS[r:] = 0."""
    r = min(dZ.shape[0], dS.shape[0])
    for i in range(r):
        for j in range(dZ.shape[1]):
            if accumulate:
                dS[i, j] += dZ[i, j]
            else:
                dS[i, j] = dZ[i, j]
    if not accumulate:
        dS[r:, :] = 0


@functools.lru_cache(maxsize=None)
def _skip_blocks(dtype, blas_bits):
    """(add_skip, project), jitable: a skip a[s] -> z[k]'s forward, Z[k] += Ws · A[s] (``o``: Ws's offset in θ)
    or, for o = -1, Z[k][:r] += A[s][:r]; and its learned Ws's backward from dZ (dZ[k], or dZ̃[k] on a
    normalized layer): dWs = dZ · A[s]ᵀ and, for s >= 1, dA[s] (+)= Wsᵀ · dZ (written when ``first``)."""
    gemm = loop_gemm if blas_bits is None else blas_gemm(dtype, blas_bits)
    gemm_acc = loop_gemm_acc if blas_bits is None else blas_gemm(dtype, blas_bits, True)

    def add_skip(Z, X, xt, theta, Af, dims, m, s, o):
        n, ns = Z.shape[0], dims[s]
        if o >= 0:
            Ws = _view(theta, o, n, ns)
            if s == 0:
                gemm_acc(False, xt, Ws, X, Z)
            else:
                gemm_acc(False, False, Ws, _block(Af, dims, s, m), Z)
        elif s == 0 and xt:
            _add_rows(Z, X.T)
        elif s == 0:
            _add_rows(Z, X)
        else:
            _add_rows(Z, _block(Af, dims, s, m))

    def project(dZ, X, xt, theta, dtheta, Af, dAf, dims, m, s, o, first):
        n, ns = dZ.shape[0], dims[s]
        dWs = _view(dtheta, o, n, ns)
        if s == 0:
            gemm(False, not xt, dZ, X, dWs)
            return
        gemm(False, True, dZ, _block(Af, dims, s, m), dWs)
        Ws = _view(theta, o, n, ns)
        if first:
            gemm(True, False, Ws, dZ, _block(dAf, dims, s, m))
        else:
            gemm_acc(True, False, Ws, dZ, _block(dAf, dims, s, m))

    return jitable(add_skip, dtype, blas_bits), jitable(project, dtype, blas_bits)


_NO_SKIPS = ((-1,), (-1,), (0,), (0,))
_NO_BATCH_NORM = ((-1,), (-1,), (-1,), (0,), (0,), 0)


@functools.lru_cache(maxsize=None)
def _backprop(hidden, output, loss, dtype, blas_bits, skips=(), batch_norm=()):
    """The forward, cost and backward of one step (the engine's math, engine.py), jitable, for plain,
    residual and batch-normalized networks and their combinations: GEMMs as loops, or through NumPy's BLAS
    when ``blas_bits`` (its integer width) is given.

    backprop(X, xt, Y, theta, dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m, want_cost=True) -> J: X is (n0,
    m), or (m, n0) when ``xt`` (one example per row: the first layer's GEMMs take it transposed); parameters
    are read from the flat θ (W[l] at pofs[l-1], b[l] (β[l]) after it), Z, A, dA from flat work buffers
    (layer l's (n_l, m) block after the layers before it), the batch-norm work from Bf (any array without
    batch norm: never read); dθ is written only when J is finite. Without ``want_cost``, J is computed only
    where the outputs do not prove it finite (``_output_delta``), else 0 is returned. The compile-time plans
    (empty: none; their branches compile away):

    skips = (src, off, first, acc), tuples of L + 1 ints indexed by layer: src[k] the layer l whose output
    skips into z[k] (-1: none); off[k] the offset of its learned Ws (n_k, n_l) in θ (-1: identity or
    padding); first[k] 1 when its gradient is the first written into dA[l]; acc[l] 1 when dA[l] holds skip
    gradients before layer l+1's GEMM (which then accumulates, beta = 1). A plain hidden layer takes the skip
    in its fused passes (bias + skip + activation; dZ + db + the skip's dA); the output layer adds it in a
    pass of its own.

    batch_norm = (gamma_at, mean_at, var_at, stats_at, rows_at, stats_size) (``_numba_batchnorm``): a
    normalized layer: Zn = W·A_prev, the batch's μ, σ² into Bf, Zn normalized, Z̃ = γ·Zn + β (+ a skip's S or
    Ws·S), A = g(Z̃); backward: dZ̃, dβ (in b's slot), dγ, the skip's gradient from dZ̃, then dZ through μ, σ²,
    then the GEMMs. The running statistics' entries of dθ are never written (they stay 0)."""
    from . import _numba_batchnorm as BN
    from .._layout import BN_EPSILON
    gemm = loop_gemm if blas_bits is None else blas_gemm(dtype, blas_bits)
    gemm_acc = loop_gemm_acc if blas_bits is None else blas_gemm(dtype, blas_bits, True)
    forward_hidden, forward_hidden_skip = _bias_activation(hidden, dtype), _bias_skip_activation(hidden, dtype)
    delta_hidden, delta_hidden_skip = _delta_row_sum(hidden, dtype), _delta_row_sum_skip(hidden, dtype)
    if output.name == "softmax":
        forward_output, output_pass = _bias_softmax(dtype), _output_softmax_ce(dtype)
    else:
        forward_output, output_pass = _bias_activation(output, dtype), _output_elementwise(loss, output, dtype)
    output_delta, safe = _output_delta(loss, output, dtype), cost_safe(dtype)
    add_skip, project = _skip_blocks(dtype, blas_bits)
    normalize, shift = BN._batch_norm_activation(hidden, dtype), BN._batch_norm_shift(dtype)
    activate, delta_normalized = BN._activation(hidden, dtype), BN._batch_norm_delta(hidden, dtype)
    batch_stats, normalized_backward = BN._batch_stats, BN._batch_norm_backward
    skipping, normalizing, eps = bool(skips), bool(batch_norm), BN_EPSILON
    src, off, first, acc = skips or _NO_SKIPS
    gamma_at, _, _, stats_at, rows_at, stats_size = batch_norm or _NO_BATCH_NORM

    def backprop(X, xt, Y, theta, dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m, want_cost=True):
        L, m = dims.shape[0] - 1, X.shape[0] if xt else X.shape[1]
        A_prev, wo = X, 0
        for l in range(1, L + 1):
            n, k, po = dims[l], dims[l - 1], pofs[l - 1]
            W = _view(theta, po, n, k)
            b = _view(theta, po + n * k, n, 1)
            Z, A = _view(Zf, wo, n, m), _view(Af, wo, n, m)
            s = src[l] if skipping else -1
            o = off[l] if skipping else -1
            go = gamma_at[l] if normalizing else -1
            if go >= 0:
                so, zo = stats_at[l], stats_size + rows_at[l] * m
                Zn = _view(Bf, zo, n, m)
                mu, var = _view(Bf, so, n, 1), _view(Bf, so + n, n, 1)
                gemm(False, xt and l == 1, W, A_prev, Zn)
                batch_stats(Zn, mu, var)
                gamma = _view(theta, go, n, 1)
                if s < 0:
                    normalize(Zn, mu, var, eps, gamma, b, Z, A)
                else:                                  # ResNet's order: normalize, add the skip, activate
                    shift(Zn, mu, var, eps, gamma, b, Z)
                    add_skip(Z, X, xt, theta, Af, dims, m, s, o)
                    activate(Z, A)
            else:
                gemm(False, xt and l == 1, W, A_prev, Z)
                if s >= 0 and o < 0 and l < L:        # the skip joins the bias + activation pass
                    if s == 0 and xt:
                        forward_hidden_skip(Z, b, X.T, A)
                    elif s == 0:
                        forward_hidden_skip(Z, b, X, A)
                    else:
                        forward_hidden_skip(Z, b, _block(Af, dims, s, m), A)
                else:
                    if s >= 0:
                        add_skip(Z, X, xt, theta, Af, dims, m, s, o)
                    if l < L:
                        forward_hidden(Z, b, A)
                    else:
                        forward_output(Z, b, A)
            A_prev = A
            wo += n * m
        n = dims[L]
        wo -= n * m
        Z, A, dZ = _view(Zf, wo, n, m), _view(Af, wo, n, m), _view(dAf, wo, n, m)
        cost = 0.0
        if want_cost or not output_delta(Z, A, Y, dZ, inv_m) <= safe:
            cost = output_pass(Z, A, Y, dZ, inv_m)
        if not np.isfinite(cost):
            return cost
        for l in range(L, 0, -1):
            n, k, po = dims[l], dims[l - 1], pofs[l - 1]
            dZ = _view(dAf, wo, n, m)
            db = _view(dtheta, po + n * k, n, 1)
            Z, A = _view(Zf, wo, n, m), _view(Af, wo, n, m)
            s = src[l] if skipping else -1
            o = off[l] if skipping else -1
            go = gamma_at[l] if normalizing else -1
            direct = s >= 1 and o < 0                  # identity or padding from a hidden layer: dA[s] gets dZ
            if go >= 0:
                so, zo = stats_at[l], stats_size + rows_at[l] * m
                Zn, var = _view(Bf, zo, n, m), _view(Bf, so + n, n, 1)
                dgamma = _view(dtheta, go, n, 1)
                delta_normalized(dZ, Z, A, Zn, dgamma, db)
                if direct:                             # the skip's gradient is dZ̃, before dZ replaces it
                    _skip_rows(dZ, _block(dAf, dims, s, m), first[l] == 0)
                elif s >= 0 and o >= 0:
                    project(dZ, X, xt, theta, dtheta, Af, dAf, dims, m, s, o, first[l] == 1)
                normalized_backward(dZ, Zn, var, eps, _view(theta, go, n, 1), dgamma, db)
            elif l < L and direct:
                dS = _block(dAf, dims, s, m)
                delta_hidden_skip(dZ, Z, A, db, dS, first[l] == 0)
                if first[l] == 1 and dS.shape[0] > n:
                    dS[n:, :] = 0
            elif l < L:
                delta_hidden(dZ, Z, A, db)
            else:
                _row_sum(dZ, db)
                if direct:
                    _skip_rows(dZ, _block(dAf, dims, s, m), first[l] == 0)
            wp = wo - k * m
            A_prev = X if l == 1 else _view(Af, wp, k, m)
            gemm(False, not (xt and l == 1), dZ, A_prev, _view(dtheta, po, n, k))
            if l > 1 and skipping and acc[l - 1] == 1:
                gemm_acc(True, False, _view(theta, po, n, k), dZ, _view(dAf, wp, k, m))
            elif l > 1:
                gemm(True, False, _view(theta, po, n, k), dZ, _view(dAf, wp, k, m))
            if go < 0 and s >= 0 and o >= 0:
                project(dZ, X, xt, theta, dtheta, Af, dAf, dims, m, s, o, first[l] == 1)
            wo = wp
        return cost

    return jitable(backprop, hidden, output, loss, dtype, blas_bits, *_plans(skips, batch_norm))


def _plans(skips, batch_norm):
    """What names a kernel built for these plans: nothing for a plain network (its names, and so its cache
    entries, as before the plans), else both plans."""
    return (skips, batch_norm) if skips or batch_norm else ()


@functools.lru_cache(maxsize=None)
def _running(dtype, batch_norm):
    """running(thetas, c, Bf, dims): the running μ, σ² update after a step's update and commit
    (``_numba_batchnorm._running_update``); nothing without batch norm. Jitable."""
    if batch_norm:
        from ._numba_batchnorm import _running_update
        return _running_update(dtype, batch_norm)

    def running(thetas, c, Bf, dims):
        pass

    return jitable(running, "no batch norm")


@functools.lru_cache(maxsize=None)
def _whole_step(hidden, output, loss, dtype, with_update, blas_bits, skips, batch_norm):
    backprop = _backprop(hidden, output, loss, dtype, blas_bits, skips, batch_norm)

    def step(X, xt, Y, theta, theta_out, dtheta, dims, pofs, Zf, Af, dAf, Bf, lr, inv_m):
        cost = backprop(X, xt, Y, theta, dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m)
        if with_update and np.isfinite(cost):
            sgd_update(theta, dtheta, lr, theta_out)
        return cost

    return njit(variant(step, hidden, output, loss, dtype, with_update, blas_bits, *_plans(skips, batch_norm)))


def whole_step(hidden, output, loss, dtype, with_update, blas_bits=None, skips=(), batch_norm=()):
    """One training step in one call (``_backprop``; ``skips``, ``batch_norm``: its plans, () for none):
    step(X, xt, Y, theta, theta_out, dtheta, dims, pofs, Zf, Af, dAf, Bf, lr, inv_m) -> J; with_update,
    θ_out = θ - α dθ is written too, only when J is finite. With batch norm the batch's μ, σ² are left in Bf
    for the engine's running-statistics update (after the optimizer's); without, Bf is any array of the
    dtype (never read)."""
    return _whole_step(hidden, output, loss, dtype, with_update, blas_bits, skips, batch_norm)


@functools.lru_cache(maxsize=None)
def _update_and_commit(optimizer, dtype):
    """One optimizer step from slot c to the other slot, then the commit: the other slot's counters
    (t, iteration, epoch) are the current ones plus one step, and ``current`` names it — the last
    store, so the network is always one whole step or the next. Jitable."""
    optimizer_pass = _optimizer_pass(optimizer, dtype)
    corrections = jitable(optimizer.scalar_corrections(), optimizer)
    ftype = np.dtype(dtype).type

    def update(thetas, states1, states2, dtheta, lr, counters, current):
        c = current[0]
        o = 1 - c
        c1, c2 = corrections(counters[c, 0] + 1)
        optimizer_pass(thetas[c], dtheta, states1[c], states2[c], lr, ftype(c1), ftype(c2), thetas[o],
                       states1[o], states2[o])
        for j in range(3):
            counters[o, j] = counters[c, j]
        counters[o, 0] += 1
        counters[o, 1] += 1
        current[0] = o

    return jitable(update, optimizer, dtype)



@functools.lru_cache(maxsize=None)
def _whole_epoch(hidden, output, loss, optimizer, dtype, blas_bits, skips, batch_norm):
    backprop = _backprop(hidden, output, loss, dtype, blas_bits, skips, batch_norm)
    update, running = _update_and_commit(optimizer, dtype), _running(dtype, batch_norm)
    ftype = np.dtype(dtype).type

    def epoch(XT, YT, order, B, thetas, states1, states2, dtheta, dims, pofs, Zf, Af, dAf, Bf, XbT, Ybf, lr,
              counters, current):
        m, n0, nL = XT.shape[0], XT.shape[1], YT.shape[1]
        total = 0.0
        for k, start in enumerate(range(0, m, B)):
            mb = min(B, m - start)
            Xb, Yb = XbT[:mb], _view(Ybf, 0, nL, mb)
            for r in range(mb):
                src = order[start + r]
                for c in range(n0):
                    Xb[r, c] = XT[src, c]
                for i in range(nL):
                    Yb[i, r] = YT[src, i]
            c = current[0]
            cost = backprop(Xb, True, Yb, thetas[c], dtheta, dims, pofs, Zf, Af, dAf, Bf, ftype(1.0 / mb))
            if not np.isfinite(cost):
                return total, k, cost
            update(thetas, states1, states2, dtheta, lr, counters, current)
            running(thetas, c, Bf, dims)
            total += cost * mb / m
        counters[current[0], 2] += 1        # the epoch, counted here: an interrupt cannot fall between
        return total, -1, 0.0

    return njit(variant(epoch, hidden, output, loss, optimizer, dtype, blas_bits, *_plans(skips, batch_norm)))


def whole_epoch(hidden, output, loss, optimizer, dtype, blas_bits=None, skips=(), batch_norm=()):
    """One shuffled mini-batch epoch in one call: for each batch, its rows gathered from the example-major
    data, the step (``_backprop``), the optimizer's update and commit (``_update_and_commit``) and, with
    batch norm, the new slot's running μ, σ².

    epoch(XT, YT, order, B, thetas, states1, states2, dtheta, dims, pofs, Zf, Af, dAf, Bf, XbT, Ybf, lr,
    counters, current) -> (J, diverged at batch, its cost): XT (m, n0), YT (m, nL); order: the
    permutation; batches of B (the last smaller); thetas, states1, states2: the two slots' buffers
    (tuples; unused states any (P,) arrays); Bf: see ``whole_step``; XbT (B, n0) and Ybf (nL B,) gather
    buffers. J is the mean cost over the examples; a batch whose cost is not finite stops the epoch before
    its update (its index returned, else -1): nothing of it is written. A whole epoch ends by counting itself
    in the current slot's counters (the last store: a Ctrl-C, raised once the call returns, finds the epoch
    complete and counted)."""
    return _whole_epoch(hidden, output, loss, optimizer, dtype, blas_bits, skips, batch_norm)


@functools.lru_cache(maxsize=None)
def _whole_loop(hidden, output, loss, optimizer, dtype, blas_bits, skips, batch_norm):
    backprop = _backprop(hidden, output, loss, dtype, blas_bits, skips, batch_norm)
    update, running = _update_and_commit(optimizer, dtype), _running(dtype, batch_norm)
    ftype = np.dtype(dtype).type

    def loop(X, xt, Y, rates, thetas, states1, states2, dtheta, dims, pofs, Zf, Af, dAf, Bf, counters, current):
        inv_m = ftype(1.0 / (X.shape[0] if xt else X.shape[1]))
        first = 0.0
        for i in range(rates.shape[0]):
            c = current[0]
            cost = backprop(X, xt, Y, thetas[c], dtheta, dims, pofs, Zf, Af, dAf, Bf, inv_m, i == 0)
            if i == 0:
                first = cost
            if not np.isfinite(cost):
                return first, i, cost
            update(thetas, states1, states2, dtheta, rates[i], counters, current)
            running(thetas, c, Bf, dims)
        return first, rates.shape[0], 0.0

    return njit(variant(loop, hidden, output, loss, optimizer, dtype, blas_bits, *_plans(skips, batch_norm)))


def whole_loop(hidden, output, loss, optimizer, dtype, blas_bits=None, skips=(), batch_norm=()):
    """k full-batch steps in one call: loop(X, xt, Y, rates, thetas, states1, states2, dtheta, dims, pofs, Zf,
    Af, dAf, Bf, counters, current) -> (first J, steps taken, the diverging cost): ``rates`` holds each
    step's α; a step whose cost is not finite stops before its update (after the first, a step's cost is
    computed only where its outputs do not prove it finite: ``_output_delta``); with batch norm, each update is
    followed by the new slot's running μ, σ². Plans and Bf: see ``whole_step``."""
    return _whole_loop(hidden, output, loss, optimizer, dtype, blas_bits, skips, batch_norm)
