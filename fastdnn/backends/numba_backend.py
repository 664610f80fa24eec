"""The ``numba`` backend: BLAS GEMMs (np.matmul into preallocated ``out``, transposes as views)
and Numba-fused passes for everything else — bias + activation, dZ + db, loss + output delta,
and the parameter update. Where it can, the whole step is one compiled call instead, calling NumPy's
BLAS from the compiled code (or, where that BLAS cannot be found, GEMMs as loops for small networks)."""
import os
import threading

import numba
import numpy as np

from ..activations import Linear
from .._layout import flat_layout
from . import _blas
from . import _numba_batchnorm as BN
from . import _numba_kernels as K
from .base import Backend

# The whole step's GEMMs call NumPy's BLAS from the compiled code where that BLAS can be found (see
# _blas): measured faster than GEMMs as loops at every size, from [2, 4, 1] m = 400 (7.7 vs 8.1 µs)
# to 0.7M multiply-adds (20.5 vs 38.3 µs) and up.
BLAS_WHOLE_STEP = True
# Without it, steps of up to this many multiply-adds (3 m Σ n_l n_{l-1}) run with GEMMs as loops,
# larger ones op by op. Measured crossover (relu, float32): 1.3M: loops 64 µs vs per op 71 µs;
# 4.2M: 158 vs 143 µs. (tanh and sigmoid vectorize in ``_fastmath``'s forms: they no longer go op by op on
# large layers: mnist-256 [784, 256, 128, 10] fit loop, tanh / sigmoid vs relu 1.23 / 1.40x -> 1.02 / 1.04x
# float32, 1.43 / 1.34x -> 1.06 / 1.05x float64.)
WHOLE_STEP_MAX_WORK = 2_000_000
TRANSPOSE_MIN_SIZE = 1 << 20     # elements from which ``transposed`` runs the tiled kernel
TRANSPOSE_THREADS = 4            # at most, one per TRANSPOSE_MIN_SIZE elements and per core (memory-bound)


def _cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class NumbaBackend(Backend):
    name = "numba"
    xp = np
    # fused_step / fused_epoch / fused_loop take ``batch_norm`` (the engine asks before passing it)
    compiles_batch_norm = True

    @staticmethod
    def probe(device_index=None):
        return None          # importing this module (and so numba) succeeded

    def add_bias(self, Z, b, out=None):
        """Z + b in one compiled pass (NumPy's broadcast add buffers through a temporary)."""
        out = np.empty_like(Z) if out is None else out
        K.add_bias(Z, b, out)
        return out

    def add_scaled(self, dW, W, c):
        """dW += c W in one compiled pass (no temporary)."""
        K.add_scaled(dW, W, dW.dtype.type(c))
        return dW

    def gemm(self, A, B, out=None, trans_a=False, trans_b=False, accumulate=False):
        """op(A) · op(B) into out (np.matmul's BLAS); with ``accumulate``, out += op(A) · op(B) in one
        BLAS call with beta = 1 (``_blas``), else (no callable BLAS, or a layout it cannot take) through
        a temporary."""
        if not accumulate:
            return super().gemm(A, B, out, trans_a, trans_b)
        bits = _blas.int_bits()
        Ar, ta = _row_major(A, trans_a)
        Br, tb = _row_major(B, trans_b)
        if bits is None or Ar is None or Br is None or not out.flags.c_contiguous:
            return super().gemm(A, B, out, trans_a, trans_b, accumulate=True)
        self.counters["gemm"] += 1
        K.gemm_accumulate(out.dtype, bits)(ta, tb, Ar, Br, out)
        return out

    def transposed(self, A):
        """Aᵀ, copied in cache-sized tiles where A is large, column blocks on threads (the kernels release
        the GIL); smaller ones by NumPy (nothing to compile on a first call). Rows of a multiple of 4096
        bytes (m = 16384 float32) take 8 x 8 tiles: 32 x 32 ones conflict in the L1 cache there, and are
        faster elsewhere. Measured on 2 cores (ms, fresh output; NumPy's copy of A.T / one thread / two):
        (784, 16384) float32 78 / 21 / 12 (32 x 32 tiles: 46); (784, 16384) float64 89 / 33 / 19;
        (64, 2²⁰) float32 239 / 93 / 51; (3072, 50000) float32 968 / 239 / 130 (8 x 8: 487 on one);
        (784, 60000) float32 67 / 71 / 38."""
        if A.ndim != 2 or not A.flags.c_contiguous or A.size < TRANSPOSE_MIN_SIZE:
            return super().transposed(A)
        n, m = A.shape
        out = np.empty((m, n), A.dtype)
        kernel = K.transpose_into_8 if m * A.itemsize % 4096 == 0 else K.transpose_into
        parts = max(1, min(TRANSPOSE_THREADS, _cores(), A.size // TRANSPOSE_MIN_SIZE, m // 128))
        edges = [m * k // parts // 128 * 128 for k in range(parts)] + [m]      # blocks of 128 columns
        threads = [threading.Thread(target=kernel, args=(A, out, a, b)) for a, b in zip(edges[1:-1], edges[2:])]
        for t in threads:
            t.start()
        kernel(A, out, edges[0], edges[1])
        for t in threads:
            t.join()
        return out

    def linear_activation_forward(self, activation, A_prev, W, b, Z=None, A=None, skip=None, Ws=None):
        """Z = W · A_prev (BLAS; + Ws · S by a second GEMM with beta = 1), then Z += b (+ S) and A = g(Z)
        in one fused pass (tanh and sigmoid in the vectorizing forms of ``_fastmath``); a softmax output
        with a skip into it takes the reference path."""
        if activation.name == "softmax" and skip is not None:
            return super().linear_activation_forward(activation, A_prev, W, b, Z, A, skip, Ws)
        Z = self.gemm(W, A_prev, out=Z)
        A = np.empty_like(Z) if A is None else A   # only for callers outside a workspace
        if Ws is not None:
            self.gemm(Ws, skip, out=Z, accumulate=True)
            skip = None
        if activation.name == "softmax":
            K.bias_softmax(Z.dtype)(Z, b, A)
        elif skip is None:
            K.bias_activation(activation, Z.dtype)(Z, b, A)
        else:
            K.bias_skip_activation(activation, Z.dtype)(Z, b, skip, A)
        return Z, A

    def delta_row_sum(self, activation, dA, Z, A, db, skip_out=None, skip_accumulate=False):
        """dZ = dA * g'(Z) and db = Σ_cols dZ in one fused pass (which also writes, or adds, dZ into a
        skip's ``skip_out``)."""
        if not activation.elementwise:
            return super().delta_row_sum(activation, dA, Z, A, db, skip_out, skip_accumulate)
        if skip_out is None:
            K.delta_row_sum(activation, dA.dtype)(dA, Z, A, db)
            return dA
        K.delta_row_sum_skip(activation, dA.dtype)(dA, Z, A, db, skip_out, skip_accumulate)
        if not skip_accumulate:
            skip_out[dA.shape[0]:] = 0           # truncation: the rows of a[l] that z[k] never saw
        return dA

    def output_layer(self, loss, activation, Z, A, Y, dZ):
        """J and dZ[L] = (A - Y)/m (times g'(Z) for a non-canonical pair) in one fused pass."""
        inv_m = Z.dtype.type(1.0 / Z.shape[1])
        if activation.name == "softmax":
            if loss.name != "ce":
                return super().output_layer(loss, activation, Z, A, Y, dZ)
            return K.output_softmax_ce(Z.dtype)(Z, A, Y, dZ, inv_m)
        return K.output_elementwise(loss, activation, Z.dtype)(Z, A, Y, dZ, inv_m)

    def batch_stats(self, Z, mu, var):
        """μ, σ² of each row in one compiled pass per row (float64 sums)."""
        BN.batch_stats(Z, mu, var)
        return mu, var

    def batch_norm_activation(self, activation, Zn, mu, var, eps, gamma, beta, Z, A, skip=None, Ws=None):
        """Normalize, scale/shift and activate in one fused pass (composed ops with a skip into the layer)."""
        if not activation.elementwise or skip is not None:
            return super().batch_norm_activation(activation, Zn, mu, var, eps, gamma, beta, Z, A, skip, Ws)
        BN.batch_norm_activation(activation, Z.dtype)(Zn, mu, var, eps, gamma, beta, Z, A)
        return Z, A

    def batch_norm_delta(self, activation, dA, Z, A, Zn, dgamma, dbeta, skip_out=None, skip_accumulate=False):
        """dZ̃, dβ and dγ in one fused pass (composed ops with a skip into the layer)."""
        if not activation.elementwise or skip_out is not None:
            return super().batch_norm_delta(activation, dA, Z, A, Zn, dgamma, dbeta, skip_out, skip_accumulate)
        BN.batch_norm_delta(activation, dA.dtype)(dA, Z, A, Zn, dgamma, dbeta)
        return dA

    def batch_norm_backward(self, dZt, Zn, var, eps, gamma, dgamma, dbeta):
        """dZ from dZ̃, dβ, dγ in one pass."""
        BN.batch_norm_backward(dZt, Zn, var, eps, gamma, dgamma, dbeta)
        return dZt

    def _whole(self, activations, loss, layer_dims, m):
        """(hidden activation, output, blas_bits) when a step of m examples can run as one compiled
        call: the hidden layers share one elementwise activation (not softmax with another loss than
        CE), and BLAS can be called from compiled code or the step is small; else None."""
        hidden, output = activations[:-1] or [Linear()], activations[-1]
        if len(set(hidden)) > 1 or (output.name == "softmax" and loss.name != "ce"):
            return None
        large = 3 * m * sum(a * b for a, b in zip(layer_dims[:-1], layer_dims[1:])) > WHOLE_STEP_MAX_WORK
        blas_bits = _blas.int_bits() if BLAS_WHOLE_STEP else None
        if large and blas_bits is None:
            return None
        return hidden[0], output, blas_bits

    def fused_step(self, activations, loss, layer_dims, m, dtype, optimizer, skips=(), batch_norm=()):
        """The whole step in one compiled call (``_numba_kernels.whole_step``) for networks ``_whole`` accepts
        (GEMMs through BLAS, else as loops for small networks); None otherwise. It applies plain gradient
        descent itself; other optimizers follow as one fused update pass. ``skips``: the skip connections
        (``_skip_plan``); ``batch_norm``: the normalized layers (``_batch_norm_plan``; then run(..., α, Bf)
        takes the flat batch-norm buffer last and leaves the batch's μ, σ² in it)."""
        whole = self._whole(activations, loss, layer_dims, m)
        if whole is None:
            return None
        hidden, output, blas_bits = whole
        updates = optimizer is not None and optimizer.name == "gd"
        ftype = np.dtype(dtype).type
        dims, pofs = flat_layout(layer_dims)
        inv_m = ftype(1.0 / m)
        step = K.whole_step(hidden, output, loss, np.dtype(dtype), updates, blas_bits, *_plans(layer_dims, skips,
                                                                                                batch_norm))

        def run(X, Y, theta, theta_out, dtheta, Zf, Af, dAf, learning_rate, Bf=None):
            X, xt = _rows(X)
            return step(X, xt, Y, theta, theta_out, dtheta, dims, pofs, Zf, Af, dAf, Zf if Bf is None else Bf,
                        ftype(learning_rate), inv_m)

        run.updates = updates
        return run

    def fused_epoch(self, activations, loss, layer_dims, batch_size, dtype, optimizer, skips=(), batch_norm=()):
        """A whole shuffled mini-batch epoch — gathers, steps, updates, commits — in one compiled call
        (``_numba_kernels.whole_epoch``), for networks ``_whole`` accepts at this batch size; else None.
        epoch(XT, YT, order, thetas, states, dθ, Zf, Af, dAf, XbT, Ybf, α, counters, current), with
        ``batch_norm`` the flat batch-norm buffer Bf last."""
        whole = self._whole(activations, loss, layer_dims, batch_size)
        if whole is None:
            return None
        hidden, output, blas_bits = whole
        kernel = K.whole_epoch(hidden, output, loss, optimizer, np.dtype(dtype), blas_bits,
                               *_plans(layer_dims, skips, batch_norm))
        ftype, (dims, pofs) = np.dtype(dtype).type, flat_layout(layer_dims)

        def arguments(XT, YT, order, thetas, states, dtheta, Zf, Af, dAf, XbT, Ybf, learning_rate, counters, current,
                      Bf=None):
            s1, s2 = _state_pairs(states, dtheta)
            return (XT, YT, order, batch_size, thetas, s1, s2, dtheta, dims, pofs, Zf, Af, dAf,
                    Zf if Bf is None else Bf, XbT, Ybf, ftype(learning_rate), counters, current)
        return _compilable(kernel, arguments)

    def fused_loop(self, activations, loss, layer_dims, m, dtype, optimizer, skips=(), batch_norm=()):
        """k full-batch steps with their updates and commits in one compiled call
        (``_numba_kernels.whole_loop``), for networks ``_whole`` accepts; else None.
        loop(X, Y, rates, thetas, states, dθ, Zf, Af, dAf, counters, current), with ``batch_norm`` the flat
        batch-norm buffer Bf last."""
        whole = self._whole(activations, loss, layer_dims, m)
        if whole is None:
            return None
        hidden, output, blas_bits = whole
        kernel = K.whole_loop(hidden, output, loss, optimizer, np.dtype(dtype), blas_bits,
                              *_plans(layer_dims, skips, batch_norm))
        dims, pofs = flat_layout(layer_dims)

        def arguments(X, Y, rates, thetas, states, dtheta, Zf, Af, dAf, counters, current, Bf=None):
            X, xt = _rows(X)
            s1, s2 = _state_pairs(states, dtheta)
            return (X, xt, Y, rates, thetas, s1, s2, dtheta, dims, pofs, Zf, Af, dAf, Zf if Bf is None else Bf,
                    counters, current)
        return _compilable(kernel, arguments)

    def update(self, optimizer, theta, dtheta, states, learning_rate, t, out, states_out):
        """The optimizer's update in one fused pass over the flat parameter, gradient and state buffers."""
        ftype = theta.dtype.type
        s1, s2 = (list(states) + [dtheta, dtheta])[:2]
        s1_out, s2_out = (list(states_out) + [dtheta, dtheta])[:2]    # unused: never written
        c1, c2 = optimizer.corrections(t)
        K.optimizer_update(optimizer, theta.dtype)(theta, dtheta, s1, s2, ftype(learning_rate),
                                                   ftype(c1), ftype(c2), out, s1_out, s2_out)
        return out


def _plans(layer_dims, skips, batch_norm):
    """The compiled calls' plans as the extra arguments of ``_numba_kernels.whole_*``: () for a plain network
    (the plain call, its kernels and cache keys unchanged), else (skip plan, batch-norm plan), each () where
    the network has none."""
    if not skips and not batch_norm:
        return ()
    return _skip_plan(layer_dims, skips), _batch_norm_plan(layer_dims, batch_norm)


def _skip_plan(layer_dims, skips):
    """The compiled calls' view of the skip connections: (src, off, first, acc), tuples of L + 1 ints (see
    ``_numba_kernels._backprop``), from the engine's (l, k, offset of Ws or -1, first gradient into dA[l]) per
    skip; () without skips."""
    if not skips:
        return ()
    L = len(layer_dims) - 1
    src, off, first, acc = [-1] * (L + 1), [-1] * (L + 1), [0] * (L + 1), [0] * (L + 1)
    for l, k, o, f in skips:
        src[k], off[k], first[k] = int(l), int(o), int(bool(f))
        if l >= 1:
            acc[l] = 1
    return tuple(src), tuple(off), tuple(first), tuple(acc)


def _batch_norm_plan(layer_dims, batch_norm):
    """The compiled calls' view of the batch-normalized layers (the ``plan`` of ``_numba_batchnorm``), from the
    engine's (l, offset of γ[l], of the running μ[l], of the running σ²[l] in θ) per normalized layer, sorted:
    (gamma_at, mean_at, var_at, stats_at, rows_at, stats_size), tuples of L + 1 ints (-1 / 0 where a layer
    is not normalized) and the size of the batch statistics at the start of the flat buffer Bf; () without."""
    if not batch_norm:
        return ()
    L = len(layer_dims) - 1
    gamma_at, mean_at, var_at, stats_at, rows_at = [-1] * (L + 1), [-1] * (L + 1), [-1] * (L + 1), [0] * (L + 1), \
        [0] * (L + 1)
    rows = 0
    for l, g, mu, var in batch_norm:
        n = int(layer_dims[l])
        gamma_at[l], mean_at[l], var_at[l], stats_at[l], rows_at[l] = int(g), int(mu), int(var), 2 * rows, rows
        rows += n
    return tuple(gamma_at), tuple(mean_at), tuple(var_at), tuple(stats_at), tuple(rows_at), 2 * rows


def _row_major(M, trans):
    """(M, trans) for BLAS's row-major calls: M itself when its rows are contiguous, else its transpose
    with the flag flipped when that one's are (an F-ordered X); (None, trans) when neither."""
    item = M.dtype.itemsize
    if M.strides[1] == item or M.shape[1] == 1:
        return M, trans
    if M.strides[0] == item or M.shape[0] == 1:
        return M.T, not trans
    return None, trans


def _compilable(kernel, arguments):
    """call(*args) = kernel(*arguments(*args)), with what a caller needs to keep compiling off its path
    (a cold Numba cache compiles a whole loop or epoch in seconds; see ``engine.BACKGROUND_COMPILE``):
    call.compiled(*args): whether the kernel is compiled (in memory; see below);
    call.compile_job(*args): (key, job, missed) — job() compiles the kernel for them, or loads it from
    Numba's disk cache, without running it; missed() says whether it has found no usable cache entry
    (and so compiles); key names the kernel and signature (one job per key);
    call.ready: False until a caller has found it compiled (the caller's to set)."""
    def call(*args):
        return kernel(*arguments(*args))

    if not isinstance(kernel, numba.core.dispatcher.Dispatcher):     # NUMBA_DISABLE_JIT: nothing compiles
        return call

    def signature(*args):
        return tuple(kernel.typeof_pyval(a) for a in arguments(*args))

    def compile_job(*args):
        sig = signature(*args)
        misses = kernel.stats.cache_misses[sig]
        return (kernel, sig), lambda: kernel.compile(sig), lambda: kernel.stats.cache_misses[sig] > misses

    # Typing the arguments costs ~0.25 ms, more than a small epoch: "compiled" asks only whether the kernel
    # has any compiled version (an engine's arguments keep their types; another layout of Y compiles on
    # the caller's thread, as it did before background compiles).
    call.compiled = lambda *args: bool(kernel.overloads)
    call.compile_job, call.ready = compile_job, False
    return call


def _rows(X):
    """(X with contiguous rows, xt): X itself (n0, m), or its transpose (m, n0) with xt when X is an
    F-ordered view of example-major data, or a C copy of any other layout (BLAS and the loops need it)."""
    if not X.flags.c_contiguous and X.flags.f_contiguous:
        return X.T, True
    return (X if X.flags.c_contiguous else np.ascontiguousarray(X)), False


def _state_pairs(states, dtheta):
    """(s1 of slot 0, s1 of slot 1), (s2 ...): each slot's first two state buffers, dθ standing in for
    the unused ones (read, never written)."""
    padded = [list(slot) + [dtheta, dtheta] for slot in states]
    return (padded[0][0], padded[1][0]), (padded[0][1], padded[1][1])
