"""The step engine: the flat buffers of a network and everything that computes with them.

θ = [W1, b1, W2, b2, ...] lives in one flat buffer on the backend (W[l], b[l] are views), dθ in a
second (with one more entry for the cost, so data-parallel training all-reduces both in one call),
the optimizer's state in more. A workspace per batch size holds Z[l], A[l], dA[l] (dA overwritten by
dZ) for every layer, and what is constant for it (the backend's whole-step callable) is resolved once
when it is made. The engine talks to a Backend only; ``Network`` checks the user's input and calls
the engine; io, training, distributed, gradcheck and the benchmarks use this interface:

  Engine(backend, layer_dims, activations, loss, dtype, parameters)
  .theta, .states, .gradient_buffer      current flat θ, optimizer state buffers, [dθ, J]
  .parameters() / .set_parameters(d)      host dict {'W1': ..., 'b1': ...} out / in
  .set_optimizer(spec), .regularize(l2, keep_prob), .t, .iteration, .epoch, .rng
  .forward(X), .cost(X, Y), .gradients(X, Y), .backprop(X, Y)          prepared backend arrays
  .train_step(X, Y, α, check, m_total=None), .train_epoch(...), .evaluate(X, Y, ws)
  .workspace(m), .evaluation_workspace(m), .to(backend), .set_parallel(dp) / .parallel
"""
import math

import numpy as np

from ._layout import flat_layout, workspace_offsets
from ._xp import array_namespace
from .distributed import batches
from .errors import TrainingDivergedError
from .optimizers import GradientDescent, get_optimizer


class Workspace:
    """Z[l], A[l], dA[l] (n_l, m) for l = 1..L as views of three flat buffers (Zf, Af, dAf) on the
    backend; index 0 is unused. For each hidden layer l with dropout, D[l] holds the step's mask
    scaled by 1/keep_prob and Ad[l] = A[l] * D[l]. ``fused`` is the backend's whole-step callable."""

    def __init__(self, backend, layer_dims, m, dtype, fused=None, dropout_layers=()):
        self.m, self.fused = m, fused
        self.D = {l: backend.empty((layer_dims[l], m), dtype) for l in dropout_layers}
        self.Ad = {l: backend.empty((layer_dims[l], m), dtype) for l in dropout_layers}
        offsets = workspace_offsets(layer_dims, m)
        self.Zf, self.Af, self.dAf = (backend.empty((int(offsets[-1]),), dtype) for _ in range(3))
        self.Z, self.A, self.dA = ([None] + [flat[o:o + n * m].reshape(n, m)
                                             for o, n in zip(offsets, layer_dims[1:])]
                                   for flat in (self.Zf, self.Af, self.dAf))


class Engine:
    """Flat θ / dθ / optimizer-state buffers, workspaces, and forward / backward / update for an
    L-layer network [n0, ..., nL] on one backend (see the module docstring)."""

    def __init__(self, backend, layer_dims, activations, loss, dtype, parameters, seed=None):
        self.backend, self.layer_dims = backend, list(layer_dims)
        self.activations, self.loss, self.dtype = activations, loss, np.dtype(dtype)
        self.L = len(self.layer_dims) - 1
        self.optimizer = GradientDescent()
        self.l2, self.keep_prob = 0.0, (1.0,) * (self.L - 1)
        self.rng = np.random.default_rng(seed)      # dropout masks
        self.iteration = 0          # optimizer steps taken
        self.epoch = 0              # mini-batch epochs completed (each epoch's order depends on it)
        self.parallel = None        # a distributed.DataParallel while fit(comm=...) runs
        self._workspaces = {}
        self.set_parameters(parameters)

    # --- buffers ---------------------------------------------------------------------------
    def _views(self, flat):
        """[(W1, b1), ..., (WL, bL)] as views of a flat buffer laid out W1, b1, W2, b2, ..."""
        dims, pofs = flat_layout(self.layer_dims)
        return [(flat[o:o + n * k].reshape(n, k), flat[o + n * k:o + n * k + n].reshape(n, 1))
                for o, k, n in zip(pofs, dims[:-1], dims[1:])]

    def set_parameters(self, parameters):
        """θ from host or device arrays {'W1': (n1, n0), 'b1': (n1, 1) or (n1,), ...} (checked finite);
        the optimizer's state starts again at zero."""
        chunks = []
        for l in range(1, self.L + 1):
            for name in (f"W{l}", f"b{l}"):
                a = parameters[name]
                host = np.asarray(a.get() if array_namespace(a) is not np else a)
                if host.dtype.kind not in "biuf" or not np.isfinite(host).all():
                    raise ValueError(f"{name} must be finite numbers")
                chunks.append(host.reshape(-1))
        flat = self.backend.asarray(np.concatenate(chunks), dtype=self.dtype)
        self._slots = [(flat, self._views(flat))]
        spare = self.backend.empty(flat.shape, self.dtype)
        spare[...] = flat
        self._slots.append((spare, self._views(spare)))
        # dθ, and one more entry for the cost: data-parallel training sums both in one all-reduce
        self.gradient_buffer = self.backend.zeros((flat.shape[0] + 1,), self.dtype)
        self._dtheta = self.gradient_buffer[:-1]
        self._grads = self._views(self._dtheta)
        self._has_previous = False
        self.set_optimizer(self.optimizer, reset=True)

    @property
    def theta(self):
        """The current flat θ (P,) on the backend."""
        return self._slots[0][0]

    @property
    def layers(self):
        """[(W1, b1), ..., (WL, bL)]: views of the current θ."""
        return self._slots[0][1]

    @property
    def dtheta(self):
        """The flat gradient buffer dθ (P,) of the last backprop."""
        return self._dtheta

    def parameters(self):
        """Host NumPy copies {'W1': (n1, n0), 'b1': (n1, 1), ...} in the network's dtype."""
        return {f"{p}{l}": self.backend.to_numpy(a) for l, Wb in enumerate(self.layers, 1)
                for p, a in zip("Wb", Wb)}

    def set_optimizer(self, spec, reset=False):
        """Use this optimizer; its state starts at zero unless it is the one already in use."""
        optimizer = get_optimizer(spec)
        if reset or optimizer != self.optimizer:
            P = self._dtheta.shape
            self.states = [self.backend.zeros(P, self.dtype) for _ in range(optimizer.n_state)]
            self.t = 0
            self._workspaces = {}
        self.optimizer = optimizer

    def regularize(self, l2, keep_prob):
        """Use L2 strength l2 (>= 0) and keep_prob (one per hidden layer), already checked."""
        self.l2, self.keep_prob = l2, tuple(keep_prob)
        self._workspaces = {}

    def set_parallel(self, parallel):
        """Step data-parallel through ``parallel`` (a distributed.DataParallel), or alone (None)."""
        self.parallel, self._workspaces = parallel, {}

    def to(self, backend):
        """Move θ and the optimizer state to another backend (in place)."""
        parameters, t, states = self.parameters(), self.t, [self.backend.to_numpy(s) for s in self.states]
        self.backend = backend
        self._workspaces = {}
        self.set_parameters(parameters)
        self.states, self.t = [backend.asarray(s) for s in states], t

    # --- workspaces --------------------------------------------------------------------------
    def workspace(self, m):
        """The training workspace for batches of m (the last two sizes are kept)."""
        ws = self._workspaces.get(m)
        if ws is None:
            if len(self._workspaces) >= 2:    # full batch + a last partial one
                self._workspaces.pop(next(iter(self._workspaces)))
            dropout = [l for l, p in enumerate(self.keep_prob, start=1) if p < 1]
            # data-parallel steps update after the all-reduce, never inside the fused call
            optimizer = None if self.parallel else self.optimizer
            fused = None if dropout or self.l2 else self.backend.fused_step(
                self.activations, self.loss, self.layer_dims, m, self.dtype, optimizer)
            try:
                ws = self._workspaces[m] = Workspace(self.backend, self.layer_dims, m, self.dtype, fused,
                                                     dropout)
            except MemoryError as exc:
                arrays = 3 * sum(self.layer_dims[1:]) + 2 * sum(self.layer_dims[l] for l in dropout)
                need = arrays * m * self.dtype.itemsize
                raise MemoryError(f"the {self.backend.name} workspace for batches of {m} needs {need} bytes "
                                  f"({need / 2**20:.1f} MiB): {exc}") from exc
        return ws

    def evaluation_workspace(self, m):
        """A workspace for m examples, outside the cached training ones (evaluation)."""
        return Workspace(self.backend, self.layer_dims, m, self.dtype)

    # --- forward and backward ------------------------------------------------------------------
    def _forward(self, X, ws, train=False):
        """Z[l], A[l] for l = 1..L into the workspace; returns A[L] (n_L, m). In training, hidden
        layers with dropout pass on Ad[l] = A[l] * D[l] with a fresh mask D[l]."""
        A = X
        for l, ((W, b), act) in enumerate(zip(self.layers, self.activations), start=1):
            _, A = self.backend.linear_activation_forward(act, A, W, b, Z=ws.Z[l], A=ws.A[l])
            if train and l in ws.D:
                self.backend.dropout_mask(ws.D[l], self.keep_prob[l - 1], self.rng)
                A = self.backend.multiply(A, ws.D[l], out=ws.Ad[l])
        return A

    def _backward(self, X, ws, train=False):
        """dW[l], db[l] for l = L..1 of the data term of J into the gradient buffer, from dZ[L] in
        ws.dA[L]; with dropout dA[l] is masked like A[l] was."""
        be, params, L = self.backend, self.layers, self.L
        for l in range(L, 0, -1):
            W, (dW, db) = params[l - 1][0], self._grads[l - 1]
            dropped = train and (l - 1) in ws.D
            A_prev, dA_prev = (X, None) if l == 1 else (ws.Ad[l - 1] if dropped else ws.A[l - 1],
                                                        ws.dA[l - 1])
            if l == L:
                be.linear_backward(ws.dA[L], A_prev, W, dW, db, dA_prev, need_dA_prev=l > 1)
            else:
                be.linear_activation_backward(self.activations[l - 1], ws.dA[l], ws.Z[l], ws.A[l],
                                              A_prev, W, dW, db, dA_prev, need_dA_prev=l > 1)
            if dropped:
                be.multiply(ws.dA[l - 1], ws.D[l - 1], out=ws.dA[l - 1])

    def _forward_cost_delta(self, X, Y, ws, train=False):
        """Forward, then the data term of the cost J (0-d, on the backend) and dZ[L] into the
        workspace."""
        self._forward(X, ws, train)
        L = self.L
        return self.backend.output_layer(self.loss, self.activations[-1], ws.Z[L], ws.A[L], Y, ws.dA[L])

    def l2_cost(self, cost, m):
        """J + (λ/2m) Σ_l ||W[l]||² (J itself without L2)."""
        if not self.l2:
            return cost
        return cost + self.l2 / (2 * m) * sum(self.backend.sum_squares(W) for W, _ in self.layers)

    def _add_l2(self, cost, m):
        """The L2 terms for m examples: dW[l] += (λ/m) W[l]; returns J + (λ/2m) Σ_l ||W[l]||²."""
        if self.l2:
            for (W, _), (dW, _) in zip(self.layers, self._grads):
                self.backend.add_scaled(dW, W, self.l2 / m)
        return self.l2_cost(cost, m)

    def forward(self, X):
        """A[L] = ŷ (n_L, m) for X (n0, m), in a fresh workspace (a backend array)."""
        return self._forward(X, self.evaluation_workspace(X.shape[1]))

    def cost(self, X, Y):
        """J = (1/m) Σ L(ŷ, y) (+ the L2 term) as a Python float."""
        ws = self.evaluation_workspace(X.shape[1])
        self._forward(X, ws)
        cost = self.backend.loss_cost(self.loss, ws.Z[self.L], ws.A[self.L], Y)
        return self.backend.scalar(self.l2_cost(cost, ws.m))

    def gradients(self, X, Y):
        """{'dW1': (n1, n0), 'db1': (n1, 1), ...} = ∂J/∂W[l], ∂J/∂b[l], as host NumPy arrays."""
        ws = self.evaluation_workspace(X.shape[1])
        self._forward_cost_delta(X, Y, ws)
        self._backward(X, ws)
        self._add_l2(0.0, ws.m)
        return {f"d{p}{l}": self.backend.to_numpy(a) for l, dWb in enumerate(self._grads, 1)
                for p, a in zip("Wb", dWb)}

    def backprop(self, X, Y, fused=None):
        """J of the data term and dθ into the gradient buffer, as in a training step, without the
        update (``fused``: a backend whole-step callable built without an optimizer, or None)."""
        ws = self.workspace(X.shape[1])
        if fused is not None:
            theta, theta_out = self._slots[0][0], self._slots[1][0]
            return fused(X, Y, theta, theta_out, self._dtheta, ws.Zf, ws.Af, ws.dAf, 0.0)
        cost = self._forward_cost_delta(X, Y, ws, train=True)
        self._backward(X, ws, train=True)
        return cost

    # --- training ------------------------------------------------------------------------------
    def train_step(self, X, Y, learning_rate, iteration, check, m_total=None):
        """One step θ_out = optimizer(θ, dθ), then the two parameter buffers swap roles.
        With check (always for a fused or data-parallel step), a non-finite cost stops before the
        update. Data-parallel: X holds this rank's m of the batch's m_total examples (default: all
        the ranks' examples), and dθ and J become the sums over the ranks of (m/m_total)·dθ, J."""
        ws = self.workspace(X.shape[1])
        theta, theta_out = self._slots[0][0], self._slots[1][0]
        updated = False
        if ws.fused is not None:      # the whole step in one call; no update on a non-finite cost
            cost = ws.fused(X, Y, theta, theta_out, self._dtheta, ws.Zf, ws.Af, ws.dAf, learning_rate)
            updated = ws.fused.updates
        else:
            cost = self._forward_cost_delta(X, Y, ws, train=True)
            self._backward(X, ws, train=True)
        m = ws.m
        if self.parallel is not None:
            m = m_total or self.parallel.m_total
            cost = self.parallel.all_reduce(self.gradient_buffer, cost, ws.m / m)
        cost = self._add_l2(cost, m)
        if check or ws.fused is not None or self.parallel is not None:
            cost = self.backend.scalar(cost)   # read back once; the caller reuses the float
            self._check_finite(cost, iteration)
        if not updated:
            self._update(learning_rate)
        self.t += 1
        self._slots.reverse()
        self._has_previous = True
        self.iteration += 1
        return cost

    def _update(self, learning_rate):
        """θ_out from θ, dθ and the optimizer state, at optimizer step t = 1, 2, ..."""
        self.backend.update(self.optimizer, self._slots[0][0], self._dtheta, self.states, learning_rate,
                            self.t + 1, out=self._slots[1][0])

    def _check_finite(self, cost, iteration):
        """Raise TrainingDivergedError for a non-finite cost, restoring the previous parameters
        (whose cost was finite) when there are any."""
        if math.isfinite(cost):
            return
        restored = None
        if self._has_previous:
            self._slots.reverse()
            self._has_previous, restored = False, iteration - 1
        raise TrainingDivergedError(iteration, cost, restored)

    def checks_every_step(self):
        """Whether a training step reads its cost back to check it (not on GPUs: no host sync)."""
        return not self.backend.device.startswith("cuda")

    def train_epoch(self, Xd, Yd, learning_rate, batch_size, shuffle, seed, buffers):
        """One pass over the examples in mini-batches gathered into preallocated contiguous buffers
        (so the steps allocate nothing); returns the epoch's mean cost (0-d, on the backend)."""
        xp, m, dp = self.backend.xp, Xd.shape[1], self.parallel
        key = [seed, self.epoch] + ([dp.rank] if dp is not None and dp.rank else [])   # rank 0: as one process
        order = np.random.RandomState(key).permutation(m) if shuffle else np.arange(m)
        order = self.backend.asarray(order)
        total = 0.0
        shards, rank = ([m], 0) if dp is None else (dp.shard_sizes, dp.rank)
        m_all = sum(shards)
        for start, stop, m_batch in batches(shards, rank, batch_size or m_all):
            index = order[start:stop]
            size = index.shape[0]
            if size not in buffers:
                buffers[size] = (self.backend.empty((Xd.shape[0], size), self.dtype),
                                 self.backend.empty((Yd.shape[0], size), self.dtype))
            Xb, Yb = buffers[size]
            xp.take(Xd, index, axis=1, out=Xb, mode="clip")    # mode="raise" would buffer
            xp.take(Yd, index, axis=1, out=Yb, mode="clip")
            cost = self.train_step(Xb, Yb, learning_rate, self.iteration, check=self.checks_every_step(),
                                   m_total=m_batch)
            total = total + cost * (m_batch / m_all)
        self.epoch += 1
        return total

    def evaluate(self, Xd, Yd, ws):
        """(J, accuracy or None) on prepared data, without dropout, as Python floats; data-parallel,
        over every rank's data."""
        A, L = self._forward(Xd, ws), self.L
        cost = self.backend.scalar(self.backend.loss_cost(self.loss, ws.Z[L], A, Yd))
        name, xp = self.activations[-1].name, self.backend.xp
        correct = None
        if name == "sigmoid":
            correct = self.backend.scalar(xp.mean((A > 0.5) == (Yd > 0.5)))
        elif name == "softmax":
            correct = self.backend.scalar(xp.mean(xp.argmax(A, axis=0) == xp.argmax(Yd, axis=0)))
        m = ws.m
        if self.parallel is not None:
            (cost, correct), m = self.parallel.mean((cost, correct), m)
        return self.backend.scalar(self.l2_cost(cost, m)), correct
