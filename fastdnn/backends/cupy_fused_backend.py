"""The ``cupy-fused`` backend: cuBLAS GEMMs through CuPy into preallocated ``out`` (inherited), and every
fused pass as a ``cupy.RawKernel`` whose CUDA C source comes from ``_cupy_kernels`` (the same scalar
formulas as the CPU kernels): bias + activation; dZ with its deterministic row sum db; the output
delta with the cost's partial sums and their fixed-order total; the optimizer update over the flat
buffers with the divergence guard; L2 and dropout. CuPy launches each kernel on its current device and
stream with its own arrays (no bridge); the cost stays on the device until it is reported. Batch
normalization too: the batch's μ, σ² (two float64 passes, deterministic row sums), normalize + γ, β +
activation, dZ̃ with dβ and dγ, dZ, and the running averages under a device-side guard (``running_guard``).

Scalars go to the kernels as typed NumPy scalars, exactly as each kernel's C signature says
(``_cupy_kernels`` module docstring); arrays are C-contiguous (workspace, parameter and gradient views).
"""
import numpy as np

from . import _cupy_kernels as K
from .cupy_backend import CupyBackend

# (cupy module, kind, formula object or None, dtype) -> cupy.RawKernel. CuPy compiles a RawKernel
# lazily, once per device, and caches the binary on disk (its kernel cache).
_KERNELS = {}


def kernel(xp, kind, variant, dtype, *extra):
    """The RawKernel of ``_cupy_kernels.<kind>(*variant_args, dtype)``, built once per key."""
    key = (xp, kind, variant, extra, np.dtype(dtype).name)
    k = _KERNELS.get(key)
    if k is None:
        args = [a for a in (*extra, variant) if a is not None]
        source, name = getattr(K, kind)(*args, np.dtype(dtype))
        k = _KERNELS[key] = xp.RawKernel(source, name)
    return k


def _i32(x):
    return np.int32(x)


def _i64(x):
    return np.int64(x)


def _strided(xp, S):
    """(an array whose first element is S's, S's row stride, its column stride) in elements, for a kernel
    that indexes S[i * s_row + j * s_col]: S itself when C-contiguous, its transpose (the same memory) when
    that is, else a C copy."""
    if not S.flags.c_contiguous and S.T.flags.c_contiguous:
        return S.T, 1, S.shape[0]
    if not S.flags.c_contiguous:
        S = xp.ascontiguousarray(S)
    return S, S.shape[1], 1


class CupyFusedBackend(CupyBackend):
    name = "cupy-fused"
    defers_checks = True      # a step never reads its cost back: divergence is marked on the device

    def __init__(self, device="cuda:0", xp=None):
        super().__init__(device, xp)
        self._scratch = {}    # (purpose, shape, dtype) -> device buffer kept between steps

    @staticmethod
    def probe(device_index=0):
        from . import _cuda_device
        return _cuda_device.probe(device_index) or _cuda_device.probe_nvrtc(device_index)

    # --- plumbing -----------------------------------------------------------------------------
    def _launch(self, k, launch, *args):
        self.counters["launch"] += 1
        k(tuple(launch.grid), tuple(launch.block), args)

    def _buffer(self, purpose, shape, dtype, zero=False):
        """A device buffer kept between steps (partial sums, 0-d results, constants)."""
        key = (purpose, tuple(shape), np.dtype(dtype))
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = (self.zeros if zero else self.empty)(key[1], key[2])
        return buf

    def _partials(self, plan):
        """The float64 partial sums of a reducing kernel: one buffer, grown to the largest plan seen."""
        need = max(1, plan.partials)
        buf = self._scratch.get("partials")
        if buf is None or buf.shape[0] < need:
            buf = self._scratch["partials"] = self.empty((need,), np.float64)
        return buf

    def _total(self, partials, plan, scale, dtype, purpose):
        """out = scale · Σ partials in a fixed order (one block); out: a 0-d buffer of dtype, reused."""
        out = self._buffer(purpose, (), dtype)
        self._launch(kernel(self.xp, "sum_partials", None, dtype), plan.final, partials,
                     _i32(plan.final_count), dtype.type(scale), out)
        return out

    # --- forward ------------------------------------------------------------------------------
    def gemm(self, A, B, out=None, trans_a=False, trans_b=False, accumulate=False):
        """op(A) · op(B) into out (cuBLAS through cupy.matmul); with ``accumulate``, out += op(A) · op(B)
        through a product buffer kept between steps (nothing allocated per step)."""
        if not accumulate:
            return super().gemm(A, B, out, trans_a, trans_b)
        product = self._buffer("gemm-accumulate", out.shape, out.dtype)
        super().gemm(A, B, product, trans_a, trans_b)
        return self.xp.add(out, product, out=out)

    def linear_activation_forward(self, activation, A_prev, W, b, Z=None, A=None, skip=None, Ws=None):
        """Z = W · A_prev (cuBLAS; + Ws · S, accumulated), then one kernel: Z += b (+ S, a skip's A[l] on
        the first min(n_l, n_s) rows), A = g(Z). W (n_l, n_{l-1}), A_prev (n_{l-1}, m) -> Z, A (n_l, m). A
        softmax output with a skip into it takes the reference path."""
        if activation.name == "softmax" and skip is not None:
            return super().linear_activation_forward(activation, A_prev, W, b, Z, A, skip, Ws)
        Z = self.gemm(W, A_prev, out=Z)
        A = self.xp.empty_like(Z) if A is None else A
        if Ws is not None:
            self.gemm(Ws, skip, out=Z, accumulate=True)
            skip = None
        n, m = Z.shape
        if skip is not None:
            S, s_row, s_col = _strided(self.xp, skip)
            k = kernel(self.xp, "bias_skip_activation", activation, Z.dtype)
            self._launch(k, K.plan("bias_skip_activation", (n, m)).main, Z, b, S, _i64(s_row), _i64(s_col),
                         _i32(skip.shape[0]), A, _i32(n), _i32(m))
            return Z, A
        kind = "bias_softmax" if activation.name == "softmax" else "bias_activation"
        k = kernel(self.xp, kind, None if kind == "bias_softmax" else activation, Z.dtype)
        self._launch(k, K.plan(kind, (n, m)).main, Z, b, A, _i32(n), _i32(m))
        return Z, A

    # --- backward -----------------------------------------------------------------------------
    def delta_row_sum(self, activation, dA, Z, A, db, skip_out=None, skip_accumulate=False):
        """dZ = dA * g'(Z) over dA and db = Σ_cols dZ (fixed order). dA, Z, A (n_l, m), db (n_l, 1). The same
        kernel writes (or adds) dZ into a skip's ``skip_out`` (n_s, m) on its first min(n_l, n_s) rows."""
        if not activation.elementwise:
            return super().delta_row_sum(activation, dA, Z, A, db, skip_out, skip_accumulate)
        n, m = dA.shape
        kind = "delta_row_sum" if skip_out is None else "delta_row_sum_skip"
        plan = K.plan(kind, (n, m))
        partials = self._partials(plan)
        extra = () if skip_out is None else (skip_out, _i32(skip_out.shape[0]), _i32(bool(skip_accumulate)))
        self._launch(kernel(self.xp, kind, activation, dA.dtype), plan.main,
                     dA, Z, A, db, partials, *extra, _i32(n), _i32(m))
        if skip_out is not None and not skip_accumulate and skip_out.shape[0] > n:
            skip_out[n:] = 0                     # truncation: the rows of a[l] that z[k] never saw
        if plan.final is not None:
            self._launch(kernel(self.xp, "row_sum_partials", None, dA.dtype), plan.final,
                         partials, db, _i32(n), _i32(plan.final_count))
        return dA

    def output_layer(self, loss, activation, Z, A, Y, dZ):
        """dZ[L] = ∂J/∂Z[L] (written into dZ) and J = (1/m) Σ L(a, y) as a 0-d device array (valid until
        the next call, which reuses its buffer): partial sums in one kernel, their fixed-order total
        in a second. Z, A, Y, dZ (n_L, m)."""
        kind, variant = self._output_kernel(loss, activation)
        if kind is None:
            return super().output_layer(loss, activation, Z, A, Y, dZ)
        if not Y.flags.c_contiguous:
            Y = self.xp.ascontiguousarray(Y)
        n, m = Z.shape
        dtype = Z.dtype
        plan = K.plan(kind, (n, m))
        partials = self._partials(plan)
        inv_m = dtype.type(1.0 / m)
        self._launch(kernel(self.xp, kind, variant, dtype, *(() if variant is None else (loss,))),
                     plan.main, Z, A, Y, dZ, inv_m, partials, _i32(n), _i32(m))
        return self._total(partials, plan, inv_m, dtype, "cost")

    @staticmethod
    def _output_kernel(loss, activation):
        """(kind, activation or None) of the fused output kernel, or (None, None): use the reference."""
        if activation.name == "softmax":
            return ("output_softmax_ce", None) if loss.name == "ce" else (None, None)
        if not activation.elementwise or not hasattr(loss, "scalar"):
            return None, None
        try:
            K._check_delta_is_a_minus_y(loss, activation) if activation.name != loss.canonical else None
        except ValueError:
            return None, None
        return "output_elementwise", activation

    # --- update and the divergence guard -------------------------------------------------------
    def update(self, optimizer, theta, dtheta, states, learning_rate, t, out, states_out):
        """out, states_out = the optimizer's step from θ, dθ, states (flat (P,), out of place), with a
        finite cost and no halt: the synchronous (data-parallel) path."""
        dtype = theta.dtype
        cost = self._buffer("finite", (), dtype, zero=True)
        halted = self._buffer("not-halted", (), np.int64, zero=True)
        return self.update_guarded(optimizer, theta, dtheta, states, learning_rate, t, out, states_out,
                                   cost, halted)

    def update_guarded(self, optimizer, theta, dtheta, states, learning_rate, t, out, states_out, cost, halted):
        """One kernel over the flat (P,) buffers: halted (0-d int64) != 0 -> copies θ, states into out,
        states_out; else cost (0-d device array of θ's dtype) not finite -> nothing written; else the
        optimizer's update."""
        dtype = theta.dtype
        f = dtype.type
        s1, s2 = (list(states) + [dtheta, dtheta])[:2]
        s1_out, s2_out = (list(states_out) + [dtheta, dtheta])[:2]     # unused ones are never written
        c1, c2 = optimizer.corrections(t)
        self._launch(kernel(self.xp, "optimizer_update", optimizer, dtype), K.plan("optimizer_update", theta.shape).main,
                     theta, dtheta, s1, s2, f(learning_rate), f(c1), f(c2), out, s1_out, s2_out, cost, halted,
                     _i64(theta.shape[0]))
        return out

    def mark_divergence(self, cost, halted, halted_cost, iteration):
        """halted = iteration + 1, halted_cost = cost when halted is 0 and the cost (0-d) is not finite;
        one thread, on the device (no host sync)."""
        self._launch(kernel(self.xp, "mark_divergence", None, halted_cost.dtype), K.plan("mark_divergence", ()).main,
                     cost, halted, halted_cost, _i64(iteration))

    # --- L2 and dropout ---------------------------------------------------------------------------
    def add_scaled(self, dW, W, c):
        """dW += c W elementwise. dW, W (n_l, n_{l-1})."""
        self._launch(kernel(self.xp, "add_scaled", None, dW.dtype), K.plan("add_scaled", (dW.size,)).main,
                     dW, W, dW.dtype.type(c), _i64(dW.size))
        return dW

    def sum_squares(self, W):
        """||W||² = Σ W² in a fixed order, a 0-d device array (valid until the next call). W (n_l, n_{l-1})."""
        plan = K.plan("sum_squares", (W.size,))
        partials = self._partials(plan)
        self._launch(kernel(self.xp, "sum_squares", None, W.dtype), plan.main, W, _i64(W.size), partials)
        return self._total(partials, plan, 1.0, W.dtype, "sum_squares")

    def dropout_mask(self, D, keep_prob, rng):
        """D = (u < keep_prob) / keep_prob, u uniform in [0, 1) drawn into D by the device generator
        (seeded once from rng), then one kernel in place. D (n_l, m); nothing allocated."""
        if not hasattr(self, "_rng"):
            self._rng = self.xp.random.default_rng(int(rng.integers(2**31)))
        self._rng.random(D.shape, dtype=D.dtype, out=D)
        f = D.dtype.type
        self._launch(kernel(self.xp, "dropout_mask", None, D.dtype), K.plan("dropout_mask", (D.size,)).main,
                     D, f(keep_prob), f(1 / keep_prob), _i64(D.size))
        return D

    # --- batch normalization ------------------------------------------------------------------------
    def _bn_sums(self, kind, plan, k, args, first, second, regions, divisor, dtype):
        """Launch a batch-norm reduction ``k`` (its ``args`` end before n, m) and, with several columns of
        blocks, its fixed-order final ``bn_row_sums`` into first (and second)."""
        n, m = args[0].shape
        partials = self._partials(plan)
        if kind == "batch_stats":
            for stage in ((0, 1) if plan.final is not None else (0,)):
                self._launch(k, plan.main, *args, partials, _i32(stage), _i32(n), _i32(m))
        else:
            self._launch(k, plan.main, *args, partials, _i32(n), _i32(m))
        if plan.final is not None:
            self._launch(kernel(self.xp, "bn_row_sums", None, dtype), plan.final, partials, first, second,
                         _i32(regions), np.float64(divisor), _i32(n), _i32(plan.final_count))

    def batch_stats(self, Z, mu, var):
        """μ = (1/m) Σ_cols Z and σ² = (1/m) Σ_cols (Z − μ)², two passes summed in float64 in a fixed order:
        one launch while a lane sums at most ``BN_LANE_COLUMNS`` columns of a row, else three (Σ Z per block;
        μ and Σ (Z − μ)² per block; σ²). Z (n_l, m) -> mu, var (n_l, 1)."""
        if not _contiguous(Z, mu, var):
            return super().batch_stats(Z, mu, var)
        plan = K.plan("batch_stats", Z.shape)
        self._bn_sums("batch_stats", plan, kernel(self.xp, "batch_stats", None, Z.dtype), (Z, mu, var),
                      var, var, 1, float(Z.shape[1]), Z.dtype)
        return mu, var

    def batch_norm_activation(self, activation, Zn, mu, var, eps, gamma, beta, Z, A, skip=None, Ws=None):
        """One pass: Zn = (Zn − μ)/√(σ² + ε) in place, Z = γ·Zn + β, A = g(Z). Zn, Z, A (n_l, m); μ, σ², γ, β
        (n_l, 1) — the batch's or the running ones. A softmax layer, or one a skip goes into, takes the
        reference path."""
        if not activation.elementwise or skip is not None or not _contiguous(Zn, mu, var, gamma, beta, Z, A):
            return super().batch_norm_activation(activation, Zn, mu, var, eps, gamma, beta, Z, A, skip, Ws)
        n, m = Zn.shape
        self._launch(kernel(self.xp, "batch_norm_activation", activation, Zn.dtype),
                     K.plan("batch_norm_activation", (n, m)).main,
                     Zn, mu, var, np.float64(eps), gamma, beta, Z, A, _i32(n), _i32(m))
        return Z, A

    def batch_norm_delta(self, activation, dA, Z, A, Zn, dgamma, dbeta, skip_out=None, skip_accumulate=False):
        """One pass: dZ̃ = dA * g'(Z̃) over dA with both row sums dβ = Σ_cols dZ̃ and dγ = Σ_cols dZ̃·Zn (float64,
        fixed order; a final launch adds the blocks' partials when a row spans several). Returns dZ̃. With a
        skip out of the layer's input (``skip_out``), the reference path."""
        if not activation.elementwise or skip_out is not None or not _contiguous(dA, Z, A, Zn, dgamma, dbeta):
            return super().batch_norm_delta(activation, dA, Z, A, Zn, dgamma, dbeta, skip_out, skip_accumulate)
        plan = K.plan("batch_norm_delta", dA.shape)
        self._bn_sums("batch_norm_delta", plan, kernel(self.xp, "batch_norm_delta", activation, dA.dtype),
                      (dA, Z, A, Zn, dgamma, dbeta), dbeta, dgamma, 2, 1.0, dA.dtype)
        return dA

    def batch_norm_backward(self, dZt, Zn, var, eps, gamma, dgamma, dbeta):
        """One pass: dZ = γ/(m √(σ² + ε)) · (m dZ̃ − dβ − Zn·dγ) over dZ̃ (n_l, m)."""
        if not _contiguous(dZt, Zn, var, gamma, dgamma, dbeta):
            return super().batch_norm_backward(dZt, Zn, var, eps, gamma, dgamma, dbeta)
        n, m = dZt.shape
        self._launch(kernel(self.xp, "batch_norm_backward", None, dZt.dtype),
                     K.plan("batch_norm_backward", (n, m)).main,
                     dZt, Zn, var, np.float64(eps), gamma, dgamma, dbeta, _i32(n), _i32(m))
        return dZt

    def running_average(self, running, batch, momentum, out, go=None):
        """out = momentum·running + (1 − momentum)·batch ((n, 1)) in one launch; with ``go`` (a 0-d bool device
        array) the kernel reads it and writes nothing when it is false (no host sync, nothing allocated)."""
        xp = self.xp
        guarded = go is not None and not isinstance(go, (bool, np.bool_))
        if (guarded and not (isinstance(go, xp.ndarray) and go.dtype == np.bool_ and go.size == 1)) \
                or not _contiguous(running, batch, out):
            return super().running_average(running, batch, momentum, out, go)
        if go is not None and not guarded and not go:
            return out
        f = out.dtype.type
        flag = go if guarded else self._buffer("unguarded", (), np.bool_, zero=True)
        self._launch(kernel(self.xp, "running_average", None, out.dtype),
                     K.plan("running_average", (out.size,)).main, running, batch, f(momentum), f(1 - momentum), out, flag, _i32(guarded), _i64(out.size))
        return out

    def running_guard(self, cost, halted):
        """go = isfinite(cost) and halted == 0 as a 0-d bool device array (one thread on the device; the
        buffer is reused, valid until the next call): the running statistics' guard under the divergence
        protocol, without the three temporaries of the xp expression."""
        xp = self.xp
        if not (isinstance(cost, xp.ndarray) and cost.dtype in (np.float32, np.float64) and cost.size == 1
                and isinstance(halted, xp.ndarray) and halted.dtype == np.int64 and halted.size == 1):
            return xp.logical_and(xp.isfinite(cost), halted == 0)
        go = self._buffer("running-guard", (), np.bool_)
        self._launch(kernel(self.xp, "running_guard", None, cost.dtype), K.plan("running_guard", ()).main,
                     cost, halted, go)
        return go


def _contiguous(*arrays):
    """Whether every array is C-contiguous and of the first one's dtype (what a RawKernel indexes; its pointers
    carry no dtype)."""
    return all(a.flags.c_contiguous and a.dtype == arrays[0].dtype for a in arrays)
