"""Backend: every op of a training step, written once against an array namespace ``xp``.

The ops take course-named arrays, write into ``out`` when given, and return the result.
Backward ops work with ∂J/∂· of the *mean* cost J: the output delta already carries 1/m,
so dW = dZ · A_prevᵀ and db = Σ_cols dZ need no further scaling.
Faster backends override the composed ops (``linear_activation_forward``, ``delta_row_sum``,
``output_layer``, ``update``) with fused passes; the composition here is the reference.

Skip connections a[l] -> z[k] ride on the same ops: the forward op takes ``skip=S`` (S = A[l] (n_l, m),
added to Z's first min(n_k, n_l) rows: the identity, or zero padding / truncation) or ``Ws`` too (then
Z += Ws·S by a GEMM with beta = 1 before the bias + activation pass); the dZ pass takes ``skip_out``
(dA[l]: its first min rows get dZ written or added, the rest zeroed when written) and the backward GEMM
Wᵀ·dZ takes ``accumulate`` (beta = 1) to add onto what the skips wrote there.
"""
import contextlib

import numpy as np


class Backend:
    name = "base"
    xp = np
    defers_checks = False     # True: a training step does not read its cost back (see the GPU backend)

    def __init__(self, device="cpu"):
        self.device = device
        self.counters = {"gemm": 0}      # GEMM calls, pinned by the tests (3L - 1 per step)

    def __repr__(self):
        return f"<fastdnn backend {self.name!r} on {self.device}>"

    def device_scope(self):
        """A context manager making this backend's device current for the work inside (GPUs); nothing
        on the CPU."""
        return contextlib.nullcontext()

    # --- arrays ----------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        """x as an array of this backend (copied to the device if needed)."""
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        """A host NumPy copy of x (never a view of backend memory)."""
        return np.array(x, copy=True)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def host_buffer(self, shape, dtype):
        """A host NumPy array for copies to and from the device (page-locked on GPUs)."""
        return np.empty(shape, dtype=dtype)

    def copy_to_host(self, x, host):
        """host[...] = x, a device-to-host copy into an existing host array."""
        host[...] = x

    def copy_from_host(self, host, x):
        """x[...] = host, a host-to-device copy into an existing device array."""
        x[...] = host

    def is_native(self, x):
        """Whether x is an array this backend computes on without a copy."""
        return isinstance(x, self.xp.ndarray)

    def synchronize(self):
        """Wait until queued work is done (no-op on the CPU)."""

    def scalar(self, x):
        """A 0-d array as a Python float (a device-to-host copy on GPUs)."""
        return float(x)

    def transposed(self, A):
        """Aᵀ as a new C-contiguous array. A (n, m) -> (m, n)."""
        return self.xp.ascontiguousarray(A.T)

    def gather_rows(self, A, index, out):
        """out = A[index], whole rows. A (m, n), index (k,) of ints in [0, m) -> out (k, n)."""
        if self.xp is np:        # mode="raise" (the default) would buffer the result: a temporary
            return np.take(A, index, axis=0, out=out, mode="clip")
        return self.xp.take(A, index, axis=0, out=out)

    # --- primitives ------------------------------------------------------------------------
    def gemm(self, A, B, out=None, trans_a=False, trans_b=False, accumulate=False):
        """op(A) · op(B), op = transpose when asked, or out += op(A) · op(B) when ``accumulate`` (BLAS's
        beta = 1). (n, k) · (k, m) -> (n, m)."""
        self.counters["gemm"] += 1
        product = self.xp.matmul(A.T if trans_a else A, B.T if trans_b else B, out=None if accumulate else out)
        if accumulate:
            return self.xp.add(out, product, out=out)
        return product

    def add_skip(self, Z, S):
        """Z[:r] += S[:r], r = min(n_k, n_l): the identity, or S zero-padded (n_l < n_k) or truncated
        (n_l > n_k). Z (n_k, m), S (n_l, m)."""
        r = min(Z.shape[0], S.shape[0])
        Z[:r] += S[:r]
        return Z

    def skip_gradient(self, dZ, dS, accumulate=False):
        """The skip's share of dA[l]: dS[:r] = dZ[:r] and dS[r:] = 0 (or dS[:r] += dZ[:r] when
        ``accumulate``), r = min(n_k, n_l) (the transpose of ``add_skip``). dZ (n_k, m), dS (n_l, m)."""
        r = min(dZ.shape[0], dS.shape[0])
        if accumulate:
            dS[:r] += dZ[:r]
        else:
            dS[:r] = dZ[:r]
            dS[r:] = 0
        return dS

    def add_bias(self, Z, b, out=None):
        """Z + b, b broadcast over the m columns. Z (n_l, m), b (n_l, 1) -> (n_l, m)."""
        return self.xp.add(Z, b, out=out)

    def row_sum(self, dZ, out=None):
        """Σ_cols dZ. dZ (n_l, m) -> (n_l, 1)."""
        return self.xp.sum(dZ, axis=1, keepdims=True, out=out)

    def activation_forward(self, activation, Z, out=None):
        """A = g(Z). (n_l, m) -> (n_l, m)."""
        return activation.forward(self.xp, Z, out)

    def activation_backward(self, activation, dA, Z, A, out=None):
        """dZ = dA * g'(Z) (the Jacobian product for softmax). (n_l, m) -> (n_l, m)."""
        return activation.backward(self.xp, dA, Z, A, out)

    # --- composed ops (fused by faster backends) -------------------------------------------
    def linear_activation_forward(self, activation, A_prev, W, b, Z=None, A=None, skip=None, Ws=None):
        """Z = W · A_prev + b (+ S or Ws · S), A = g(Z). W (n_l, n_{l-1}), A_prev (n_{l-1}, m), a skip's
        S (n_s, m), Ws (n_l, n_s) -> Z, A (n_l, m). S without Ws is added to the first min(n_l, n_s) rows."""
        Z = self.gemm(W, A_prev, out=Z)
        if Ws is not None:
            self.gemm(Ws, skip, out=Z, accumulate=True)
            skip = None
        self.add_bias(Z, b, out=Z)
        if skip is not None:
            self.add_skip(Z, skip)
        return Z, self.activation_forward(activation, Z, out=A)

    def delta_row_sum(self, activation, dA, Z, A, db, skip_out=None, skip_accumulate=False):
        """dZ = dA * g'(Z) written over dA, and db = Σ_cols dZ. (n_l, m), db (n_l, 1). Returns dZ. With
        ``skip_out`` (n_s, m), dZ also goes into it as ``skip_gradient`` says (written, or added)."""
        dZ = self.activation_backward(activation, dA, Z, A, out=dA)
        self.row_sum(dZ, out=db)
        if skip_out is not None:
            self.skip_gradient(dZ, skip_out, skip_accumulate)
        return dZ

    def linear_activation_backward(self, activation, dA, Z, A, A_prev, W, dW, db, dA_prev=None,
                                   need_dA_prev=True, accumulate=False, skip_out=None, skip_accumulate=False):
        """dZ = dA * g'(Z) and db = Σ_cols dZ (one pass on fused backends); dW = dZ · A_prevᵀ;
        dA_prev = Wᵀ · dZ (if needed; dA_prev += Wᵀ · dZ when ``accumulate``). dA (n_l, m) is overwritten
        with dZ; ``skip_out``: see ``delta_row_sum``. Returns (dA_prev or None, dW, db)."""
        extra = {} if skip_out is None else {"skip_out": skip_out, "skip_accumulate": skip_accumulate}
        dZ = self.delta_row_sum(activation, dA, Z, A, db, **extra)
        self.gemm(dZ, A_prev, out=dW, trans_b=True)
        if need_dA_prev:
            dA_prev = self.gemm(W, dZ, out=dA_prev, trans_a=True, accumulate=accumulate)
        return dA_prev, dW, db

    def linear_backward(self, dZ, A_prev, W, dW, db, dA_prev=None, need_dA_prev=True, accumulate=False):
        """dW = dZ · A_prevᵀ (n_l, n_{l-1}); db = Σ_cols dZ (n_l, 1); dA_prev = Wᵀ · dZ (n_{l-1}, m), or
        dA_prev += Wᵀ · dZ when ``accumulate``."""
        self.gemm(dZ, A_prev, out=dW, trans_b=True)
        self.row_sum(dZ, out=db)
        if need_dA_prev:
            dA_prev = self.gemm(W, dZ, out=dA_prev, trans_a=True, accumulate=accumulate)
        return dA_prev, dW, db

    def dropout_mask(self, D, keep_prob, rng):
        """D = (u < keep_prob) / keep_prob with u uniform in [0, 1) from rng, in place. (n_l, m)."""
        rng.random(dtype=D.dtype, out=D)
        self.xp.less(D, keep_prob, out=D)
        D *= 1 / keep_prob
        return D

    def multiply(self, A, D, out=None):
        """A * D elementwise. (n, m)."""
        return self.xp.multiply(A, D, out=out)

    def add_scaled(self, dW, W, c):
        """dW += c W. (n_l, n_{l-1})."""
        dW += c * W
        return dW

    def sum_squares(self, W):
        """||W||² = Σ W², a 0-d array."""
        return self.xp.vdot(W.reshape(-1), W.reshape(-1))

    def loss_cost(self, loss, Z, A, Y):
        """J = (1/m) Σ L(a, y), a 0-d array of Z's dtype (the sum in float64). Z, A, Y (n_L, m) -> ()."""
        return self.xp.asarray(loss.total(self.xp, Z, A, Y) / Y.shape[1], dtype=Z.dtype)

    def output_delta(self, loss, activation, Z, A, Y, out=None):
        """dZ[L] = ∂J/∂Z[L] = (A - Y)/m for the loss's canonical activation, else dA * g'(Z)."""
        m = Y.shape[1]
        if activation.name == loss.canonical:
            dZ = self.xp.subtract(A, Y, out=out)
        else:
            dZ = self.activation_backward(activation, loss.dA(self.xp, A, Y), Z, A, out=out)
        dZ *= 1 / m
        return dZ

    def output_layer(self, loss, activation, Z, A, Y, dZ):
        """The cost J and dZ[L] (written into dZ), in one pass on fused backends."""
        cost = self.loss_cost(loss, Z, A, Y)
        self.output_delta(loss, activation, Z, A, Y, out=dZ)
        return cost

    # whether fused_step (and fused_epoch / fused_loop, where the backend has them) take ``batch_norm``
    compiles_batch_norm = False

    def fused_step(self, activations, loss, layer_dims, m, dtype, optimizer, skips=()):
        """A callable doing a whole training step in one call for this network and batch size,
        step(X, Y, θ, θ_out, dθ, Zf, Af, dAf, α) -> J, or None to use the ops one by one. Its
        ``updates`` attribute says whether it also applied the optimizer's update (never when
        optimizer is None). ``skips``: the skip connections, (l, k, offset of Ws in θ or -1, whether its
        gradient is the first into dA[l]) each (see engine.py). A backend with ``compiles_batch_norm``
        also takes ``batch_norm`` ((l, offset of γ[l], of the running μ[l], σ²[l] in θ) per normalized
        layer; its calls then take the workspace's Bf last)."""
        return None

    def update_guarded(self, optimizer, theta, dtheta, states, learning_rate, t, out, states_out, cost, halted):
        """``update`` under the device-side divergence protocol (no host sync): when ``halted`` (0-d int)
        is set, out and states_out become copies of θ and states; else, when the cost (0-d) is not
        finite, nothing is written; else the update."""
        xp = self.xp
        new, new_states = xp.empty_like(out), [xp.empty_like(s) for s in states_out]
        self.update(optimizer, theta, dtheta, states, learning_rate, t, new, new_states)
        halt = halted != 0
        go = xp.logical_and(xp.isfinite(cost), xp.logical_not(halt))
        for dst, src, old in zip([out, *states_out], [new, *new_states], [theta, *states]):
            xp.copyto(dst, src, where=go)
            xp.copyto(dst, old, where=halt)
        return out

    def mark_divergence(self, cost, halted, halted_cost, iteration):
        """halted = iteration + 1 and halted_cost = cost when halted is 0 and the cost is not finite
        (0-d device arrays; no host sync)."""
        xp = self.xp
        first = xp.logical_and(halted == 0, xp.logical_not(xp.isfinite(cost)))
        xp.copyto(halted_cost, cost, where=first)
        xp.copyto(halted, int(iteration) + 1, where=first)

    def update(self, optimizer, theta, dtheta, states, learning_rate, t, out, states_out):
        """out = the optimizer's θ' and states_out its state' from θ, dθ and its state at step t
        (out of place: θ and states are only read). Flat (P,) buffers."""
        c1, c2 = optimizer.corrections(t)
        return optimizer.update(self.xp, theta, dtheta, states, states_out, learning_rate, c1, c2, out)

    # --- batch normalization (course 2, week 3): Z̃ = γ·(Z − μ)/√(σ² + ε) + β over the batch ---------
    def batch_stats(self, Z, mu, var):
        """μ = (1/m) Σ_cols Z and σ² = (1/m) Σ_cols (Z − μ)² (two passes). Z (n_l, m) -> mu, var (n_l, 1)."""
        xp = self.xp
        mu[...] = xp.mean(Z, axis=1, keepdims=True)
        var[...] = xp.mean(xp.square(Z - mu), axis=1, keepdims=True)
        return mu, var

    def batch_norm_activation(self, activation, Zn, mu, var, eps, gamma, beta, Z, A, skip=None, Ws=None):
        """Zn = (Zn − μ)/√(σ² + ε) in place (Zn holds W·A_prev on entry), Z = γ·Zn + β (the course's
        z̃) and A = g(Z). Zn, Z, A (n_l, m); μ, σ², γ, β (n_l, 1). With the batch's μ, σ² in training,
        the running ones outside it. A skip into the layer adds S (or Ws·S) to Z before g, as in
        ``linear_activation_forward`` (ResNet's order: normalize, add, activate). Returns (Z, A)."""
        xp = self.xp
        inv_std = 1 / xp.sqrt(var + eps)
        xp.subtract(Zn, mu, out=Zn)
        xp.multiply(Zn, inv_std.astype(Zn.dtype, copy=False), out=Zn)
        xp.multiply(Zn, gamma, out=Z)
        xp.add(Z, beta, out=Z)
        if Ws is not None:
            self.gemm(Ws, skip, out=Z, accumulate=True)
        elif skip is not None:
            self.add_skip(Z, skip)
        return Z, self.activation_forward(activation, Z, out=A)

    def batch_norm_delta(self, activation, dA, Z, A, Zn, dgamma, dbeta, skip_out=None, skip_accumulate=False):
        """dZ̃ = dA * g'(Z̃) written over dA, dβ = Σ_cols dZ̃ and dγ = Σ_cols dZ̃·Zn; ``skip_out``: dZ̃ also
        goes into it (see ``delta_row_sum``). Returns dZ̃."""
        dZt = self.delta_row_sum(activation, dA, Z, A, dbeta, skip_out=skip_out, skip_accumulate=skip_accumulate)
        dgamma[...] = self.xp.sum(dZt * Zn, axis=1, keepdims=True)
        return dZt

    def batch_norm_backward(self, dZt, Zn, var, eps, gamma, dgamma, dbeta):
        """dZ = γ/(m √(σ² + ε)) · (m dZ̃ − dβ − Zn·dγ) written over dZ̃ (n_l, m): the gradient through
        the batch's own μ and σ²."""
        xp, m = self.xp, dZt.shape[1]
        c = (gamma / (m * xp.sqrt(var + eps))).astype(dZt.dtype, copy=False)
        dZt *= m
        dZt -= dbeta
        dZt -= Zn * dgamma
        dZt *= c
        return dZt

    def running_guard(self, cost, halted):
        """go = isfinite(cost) and halted == 0, a 0-d bool on the backend (no host sync): whether a deferred
        step may update the running statistics."""
        xp = self.xp
        return xp.logical_and(xp.isfinite(cost), halted == 0)

    def running_average(self, running, batch, momentum, out, go=None):
        """out = momentum·running + (1 − momentum)·batch ((n, 1): the running μ or σ²); with ``go`` (a 0-d
        bool on the backend) only where it is true (no host sync)."""
        new = momentum * running + (1 - momentum) * batch
        if go is None:
            out[...] = new
        else:
            self.xp.copyto(out, new, where=go)
        return out
