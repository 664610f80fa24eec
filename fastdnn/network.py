"""Network: the deep L-layer network of the course on any backend.

X = A[0] (n[0], m); Z[l] = W[l] · A[l-1] + b[l]; A[l] = g[l](Z[l]); A[L] = ŷ; J = (1/m) Σ L(ŷ, y).
Parameters live in one flat buffer (W[l], b[l] are views), gradients in another, and a
workspace per batch size holds Z, A and dA (overwritten by dZ) for every layer, so a step
writes into preallocated arrays. The network knows a Backend, never which library runs it.
"""
import math

import numpy as np

from . import _checks
from ._layout import flat_layout, workspace_offsets
from ._xp import array_namespace
from .activations import get_activation
from .backends import get_backend
from .distributed import DataParallel, batches
from .errors import TrainingDivergedError
from .initializers import initialize
from .losses import get_loss
from .optimizers import GradientDescent, get_optimizer
from .schedules import get_schedule
from .training import TrainingLoop

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _Workspace:
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


def _layer_activations(hidden, output, L):
    """L activations: hidden for layers 1..L-1 (one name, or a list of L-1, or of L with output None)."""
    if isinstance(hidden, (list, tuple)):
        names = list(hidden)
        if len(names) == L and output is None:
            return [get_activation(a) for a in names]
        if len(names) != L - 1:
            raise ValueError(f"hidden_activation has {len(names)} entries; expected {L - 1} "
                             f"(one per hidden layer), or {L} with output_activation=None")
    else:
        names = [hidden] * (L - 1)
    acts = [get_activation(a) for a in names] + [get_activation("sigmoid" if output is None else output)]
    for l, act in enumerate(acts[:-1], start=1):
        if not act.elementwise:
            raise ValueError(f"layer {l} of {L}: {act.name!r} is only allowed as the output activation")
    return acts


def _check_dims(layer_dims):
    dims = list(layer_dims)
    if len(dims) < 2 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in dims):
        raise ValueError(f"layer_dims must be at least two positive integers [n0, ..., nL]; got {layer_dims!r}")
    return [int(n) for n in dims]


def _check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dt}")
    return dt


class Network:
    """An L-layer network layer_dims = [n0, n1, ..., nL], trained on X (n0, m), Y (nL, m)."""

    def __init__(self, layer_dims, hidden_activation="relu", output_activation=None, loss=None,
                 init="he", device="auto", dtype="float32", seed=None, l2=0.0, keep_prob=1.0):
        self.layer_dims = _check_dims(layer_dims)
        self.activations = _layer_activations(hidden_activation, output_activation, self.L)
        self.loss = get_loss(loss, self.activations[-1])
        self.dtype = _check_dtype(dtype)
        self.backend = get_backend(device, _stacklevel=3)
        if isinstance(init, dict):
            dims = _checks.parameter_shapes(init, self.activations)
            if dims != self.layer_dims:
                raise ValueError(f"parameters give layer_dims {dims}, expected {self.layer_dims}")
            parameters = init
        else:
            parameters = initialize(self.layer_dims, init, seed)
        self._set_parameters(parameters)
        self._rng = np.random.default_rng(seed)     # dropout masks
        self.regularize(l2, keep_prob)
        self.iteration = 0          # optimizer steps taken
        self.epoch = 0              # mini-batch epochs completed (each epoch's order depends on it)
        self._parallel = None       # a distributed.DataParallel while fit(comm=...) runs

    @classmethod
    def from_parameters(cls, parameters, hidden_activation="relu", output_activation=None, loss=None,
                        device="auto", dtype=None):
        """A network with these parameters ({'W1': (n1, n0), 'b1': (n1, 1), ...}); dtype None keeps
        theirs (float32 or float64; anything else becomes float64)."""
        dims = _checks.parameter_shapes(parameters)
        if dtype is None:
            dt = np.result_type(parameters["W1"])
            dtype = dt if dt in DTYPES else np.float64
        return cls(dims, hidden_activation, output_activation, loss, init=parameters, device=device,
                   dtype=dtype)

    # --- parameters ------------------------------------------------------------------------
    @property
    def L(self):
        return len(self.layer_dims) - 1

    @property
    def device(self):
        return self.backend.device

    def _views(self, flat):
        """[(W1, b1), ..., (WL, bL)] as views of a flat buffer laid out W1, b1, W2, b2, ..."""
        dims, pofs = flat_layout(self.layer_dims)
        return [(flat[o:o + n * k].reshape(n, k), flat[o + n * k:o + n * k + n].reshape(n, 1))
                for o, k, n in zip(pofs, dims[:-1], dims[1:])]

    def _set_parameters(self, parameters):
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
        self._gbuf = self.backend.zeros((flat.shape[0] + 1,), self.dtype)
        self._dtheta = self._gbuf[:-1]
        self._grads = self._views(self._dtheta)
        self._has_previous = False
        self._set_optimizer(getattr(self, "optimizer", None) or GradientDescent(), reset=True)

    def regularize(self, l2=None, keep_prob=None):
        """Set L2 (J += λ/(2m) Σ ||W[l]||², dW[l] += (λ/m) W[l]) and inverted dropout on the hidden
        layers during training (keep_prob: one value, or one per hidden layer; 1 = off)."""
        if l2 is not None:
            l2 = float(l2)
            if not (math.isfinite(l2) and l2 >= 0):
                raise ValueError(f"l2 must be a finite number >= 0; got {l2}")
            self.l2 = l2
        if keep_prob is not None:
            probs = list(keep_prob) if isinstance(keep_prob, (list, tuple)) else [keep_prob] * (self.L - 1)
            if len(probs) != self.L - 1 or not all(0 < float(p) <= 1 for p in probs):
                raise ValueError(f"keep_prob must be in (0, 1], one value or one per hidden layer "
                                 f"({self.L - 1}); got {keep_prob}")
            self.keep_prob = tuple(float(p) for p in probs)
        self._workspaces = {}
        return self

    def _set_optimizer(self, spec, reset=False):
        """Use this optimizer; its state starts at zero unless it is the one already in use."""
        optimizer = get_optimizer(spec)
        if reset or optimizer != getattr(self, "optimizer", None):
            P = self._dtheta.shape
            self._states = [self.backend.zeros(P, self.dtype) for _ in range(optimizer.n_state)]
            self._t = 0
            self._workspaces = {}
        self.optimizer = optimizer

    @property
    def parameters(self):
        """Host NumPy copies {'W1': (n1, n0), 'b1': (n1, 1), ...} in the network's dtype."""
        return {f"{p}{l}": self.backend.to_numpy(a) for l, Wb in enumerate(self._slots[0][1], 1)
                for p, a in zip("Wb", Wb)}

    def to(self, device):
        """Move the parameters and the optimizer state to another device or backend (in place);
        returns self."""
        parameters, t = self.parameters, self._t
        states = [self.backend.to_numpy(s) for s in self._states]
        self.backend = get_backend(device, _stacklevel=3)
        self._set_parameters(parameters)
        self._states, self._t = [self.backend.asarray(s) for s in states], t
        return self

    def save(self, path):
        """Write the network (parameters, architecture, dtype, optimizer state) to one .npz file,
        atomically; read it back with fastdnn.load(path)."""
        from .io import save
        return save(self, path)

    def __repr__(self):
        acts = "/".join(a.name for a in self.activations)
        return (f"Network({self.layer_dims}, activations={acts}, loss={self.loss.name!r}, "
                f"backend={self.backend.name!r} on {self.device}, dtype={self.dtype.name})")

    # --- the step --------------------------------------------------------------------------
    def _workspace(self, m):
        ws = self._workspaces.get(m)
        if ws is None:
            if len(self._workspaces) >= 2:    # full batch + a last partial one
                self._workspaces.pop(next(iter(self._workspaces)))
            dropout = [l for l, p in enumerate(self.keep_prob, start=1) if p < 1]
            # data-parallel steps update after the all-reduce, never inside the fused call
            optimizer = None if self._parallel else self.optimizer
            fused = None if dropout or self.l2 else self.backend.fused_step(
                self.activations, self.loss, self.layer_dims, m, self.dtype, optimizer)
            try:
                ws = self._workspaces[m] = _Workspace(self.backend, self.layer_dims, m, self.dtype, fused,
                                                      dropout)
            except MemoryError as exc:
                arrays = 3 * sum(self.layer_dims[1:]) + 2 * sum(self.layer_dims[l] for l in dropout)
                need = arrays * m * self.dtype.itemsize
                raise MemoryError(f"the {self.backend.name} workspace for batches of {m} needs {need} bytes "
                                  f"({need / 2**20:.1f} MiB): {exc}") from exc
        return ws

    def _forward(self, X, ws, train=False):
        """Z[l], A[l] for l = 1..L into the workspace; returns A[L] (n_L, m). In training, hidden
        layers with dropout pass on Ad[l] = A[l] * D[l] with a fresh mask D[l]."""
        A = X
        for l, ((W, b), act) in enumerate(zip(self._slots[0][1], self.activations), start=1):
            _, A = self.backend.linear_activation_forward(act, A, W, b, Z=ws.Z[l], A=ws.A[l])
            if train and l in ws.D:
                self.backend.dropout_mask(ws.D[l], self.keep_prob[l - 1], self._rng)
                A = self.backend.multiply(A, ws.D[l], out=ws.Ad[l])
        return A

    def _backward(self, X, ws, train=False):
        """dW[l], db[l] for l = L..1 of the data term of J into the gradient buffer, from dZ[L] in
        ws.dA[L]; with dropout dA[l] is masked like A[l] was."""
        be, params, L = self.backend, self._slots[0][1], self.L
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

    def _l2_cost(self, cost, m):
        """J + (λ/2m) Σ_l ||W[l]||² (J itself without L2)."""
        if not self.l2:
            return cost
        return cost + self.l2 / (2 * m) * sum(self.backend.sum_squares(W) for W, _ in self._slots[0][1])

    def _add_l2(self, cost, m):
        """The L2 terms for m examples: dW[l] += (λ/m) W[l]; returns J + (λ/2m) Σ_l ||W[l]||²."""
        if self.l2:
            for (W, _), (dW, _) in zip(self._slots[0][1], self._grads):
                self.backend.add_scaled(dW, W, self.l2 / m)
        return self._l2_cost(cost, m)

    def _train_step(self, X, Y, learning_rate, iteration, check, m_total=None):
        """One step θ_out = optimizer(θ, dθ), then the two parameter buffers swap roles.
        With check (always for a fused or data-parallel step), a non-finite cost stops before the
        update. Data-parallel: X holds this rank's m of the batch's m_total examples (default: all
        the ranks' examples), and dθ and J become the sums over the ranks of (m/m_total)·dθ, J."""
        ws = self._workspace(X.shape[1])
        theta, theta_out = self._slots[0][0], self._slots[1][0]
        updated = False
        if ws.fused is not None:      # the whole step in one call; no update on a non-finite cost
            cost = ws.fused(X, Y, theta, theta_out, self._dtheta, ws.Zf, ws.Af, ws.dAf, learning_rate)
            updated = ws.fused.updates
        else:
            cost = self._forward_cost_delta(X, Y, ws, train=True)
            self._backward(X, ws, train=True)
        m = ws.m
        if self._parallel is not None:
            m = m_total or self._parallel.m_total
            cost = self._parallel.all_reduce(self._gbuf, cost, ws.m / m)
        cost = self._add_l2(cost, m)
        if check or ws.fused is not None or self._parallel is not None:
            cost = self.backend.scalar(cost)   # read back once; the caller reuses the float
            self._check_finite(cost, iteration)
        if not updated:
            self._update(learning_rate)
        self._t += 1
        self._slots.reverse()
        self._has_previous = True
        self.iteration += 1
        return cost

    def _update(self, learning_rate):
        """θ_out from θ, dθ and the optimizer state, at optimizer step t = 1, 2, ..."""
        self.backend.update(self.optimizer, self._slots[0][0], self._dtheta, self._states, learning_rate,
                            self._t + 1, out=self._slots[1][0])

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

    # --- public API ------------------------------------------------------------------------
    def _prepare(self, X, Y=None):
        Xd = _checks.as_float_array(self.backend, X, "X", self.dtype)
        _checks.check_X(Xd, self._slots[0][1][0][0].shape, self.L, self.activations[0])
        _checks.check_finite(self.backend, Xd, "X")
        if Y is None:
            return Xd
        Yd = _checks.labels(self.backend, Y, self.loss, self.layer_dims[-1], Xd.shape[1], self.L,
                            self.activations[-1], self.dtype)
        return Xd, Yd

    def _result(self, A, like):
        """A copy of A: on the backend for backend-native non-NumPy input, else on the host."""
        if self.backend.xp is not np and self.backend.is_native(like):
            return A.copy()
        return self.backend.to_numpy(A)

    def forward(self, X):
        """A[L] = ŷ for X (n0, m) -> (nL, m)."""
        Xd = self._prepare(X)
        ws = _Workspace(self.backend, self.layer_dims, Xd.shape[1], self.dtype)
        return self._result(self._forward(Xd, ws), X)

    predict_proba = forward

    def cost(self, X, Y):
        """J = (1/m) Σ L(ŷ, y) as a Python float."""
        Xd, Yd = self._prepare(X, Y)
        ws = _Workspace(self.backend, self.layer_dims, Xd.shape[1], self.dtype)
        L = self.L
        self._forward(Xd, ws)
        cost = self.backend.loss_cost(self.loss, ws.Z[L], ws.A[L], Yd)
        return self.backend.scalar(self._l2_cost(cost, ws.m))

    def gradients(self, X, Y):
        """{'dW1': (n1, n0), 'db1': (n1, 1), ...} = ∂J/∂W[l], ∂J/∂b[l], as host NumPy arrays."""
        Xd, Yd = self._prepare(X, Y)
        ws = _Workspace(self.backend, self.layer_dims, Xd.shape[1], self.dtype)
        self._forward_cost_delta(Xd, Yd, ws)
        self._backward(Xd, ws)
        self._add_l2(0.0, ws.m)
        return {f"d{p}{l}": self.backend.to_numpy(a) for l, dWb in enumerate(self._grads, 1)
                for p, a in zip("Wb", dWb)}

    def step(self, X, Y, learning_rate=None, optimizer=None):
        """One optimizer step on (X, Y) (plain gradient descent W[l] -= α dW[l] by default);
        returns J before the step."""
        if optimizer is not None:
            self._set_optimizer(optimizer)
        Xd, Yd = self._prepare(X, Y)
        return self.backend.scalar(self._train_step(Xd, Yd, self._rate(learning_rate), self.iteration,
                                                    check=True))

    def fit(self, X, Y, *, learning_rate=None, iterations=None, epochs=None, batch_size=None,
            shuffle=True, seed=None, optimizer=None, l2=None, keep_prob=None, schedule=None,
            validation_data=None, patience=None, report_every=None, verbose=None, comm=None):
        """Train; returns a History.

        Full batch (the course's first part): ``iterations`` steps (default 3000); the History has J at
        every ``report_every``-th iteration (default 100) and the last, each J taken before its step.
        Mini-batches (its second part): ``epochs`` passes over the examples in a random order
        (``shuffle``) drawn from (``seed``, the network's epoch count), so a resumed run continues the
        same sequence; ``batch_size`` at a time (default: all), the last batch smaller when m does not
        divide; the History has each ``report_every``-th epoch (default 1) and the last, with the
        epoch's mean cost.
        ``optimizer``: a name or a fastdnn.optimizers object; its state carries over between calls
        while it stays the same. ``learning_rate`` defaults to the optimizer's, else 0.0075;
        ``schedule`` (a name or callable from fastdnn.schedules) changes it every epoch/iteration.
        ``l2``, ``keep_prob``: as in ``regularize`` (kept for later calls).
        ``validation_data=(X_val, Y_val)`` adds the validation cost and accuracy to every record;
        with ``patience``, training stops after that many records without a better validation cost
        and the parameters of the best one are restored.
        ``verbose``: None = a progress bar when stderr is a terminal, 0 = silent, 1 = progress bar,
        2 = the course's "Cost after iteration i" lines.
        ``comm``: an MPI communicator (mpi4py) for data-parallel training: X, Y (and validation_data)
        are this rank's examples, every step uses the gradient over all ranks' examples, and
        ``batch_size`` is the global batch (see fastdnn.distributed)."""
        options = dict(learning_rate=learning_rate, iterations=iterations, epochs=epochs,
                       batch_size=batch_size, shuffle=shuffle, seed=seed, optimizer=optimizer, l2=l2,
                       keep_prob=keep_prob, schedule=schedule, validation_data=validation_data,
                       patience=patience, report_every=report_every, verbose=verbose)
        if comm is None:
            return self._training_loop(X, Y, **options).run()
        dp = DataParallel(comm, self)
        if dp.rank:
            options["verbose"] = 0
        loop = dp.agree(lambda: self._training_loop(X, Y, **options))
        dp.start(loop.Xd.shape[1], loop.plan())
        loop.seed = comm.bcast(loop.seed, root=0)
        self._parallel, self._workspaces = dp, {}
        try:
            return dp.run(loop)
        finally:
            self._parallel, self._workspaces = None, {}

    def _training_loop(self, X, Y, *, learning_rate, iterations, epochs, batch_size, shuffle, seed,
                       optimizer, l2, keep_prob, schedule, validation_data, patience, report_every,
                       verbose):
        """fit's arguments checked, its data prepared, its settings applied: a TrainingLoop."""
        if optimizer is not None:
            self._set_optimizer(optimizer)
        if l2 is not None or keep_prob is not None:
            self.regularize(l2, keep_prob)
        learning_rate = self._rate(learning_rate)
        Xd, Yd = self._prepare(X, Y)
        validation = self._prepare(*validation_data) if validation_data is not None else None
        if patience is not None and (validation is None or _count("patience", patience) < 1):
            raise ValueError("patience needs validation_data=(X_val, Y_val)")
        if epochs is None:
            if batch_size is not None:
                raise ValueError("batch_size needs epochs=...; iterations are full-batch steps")
            count, unit, every = _count("iterations", _default(iterations, 3000)), "iteration", 100
        else:
            if iterations is not None:
                raise ValueError("give iterations (full-batch steps) or epochs, not both")
            count, unit, every = _count("epochs", epochs), "epoch", 1
            batch_size = None if batch_size is None else _count("batch_size", batch_size)   # None: all
        return TrainingLoop(self, Xd, Yd, unit, batch_size, shuffle, seed, count, learning_rate,
                            get_schedule(schedule), validation, patience,
                            _count("report_every", _default(report_every, every)), verbose)

    def _rate(self, learning_rate):
        return _check_rate(learning_rate if learning_rate is not None
                           else self.optimizer.learning_rate or 0.0075)

    def _check_every_step(self):
        return not self.device.startswith("cuda")          # no host sync per step on GPUs

    def _epoch(self, Xd, Yd, learning_rate, batch_size, shuffle, seed, buffers):
        """One pass over the examples in mini-batches gathered into preallocated contiguous buffers
        (so the steps allocate nothing); returns the epoch's mean cost (0-d, on the backend)."""
        xp, m, dp = self.backend.xp, Xd.shape[1], self._parallel
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
            cost = self._train_step(Xb, Yb, learning_rate, self.iteration, check=self._check_every_step(),
                                    m_total=m_batch)
            total = total + cost * (m_batch / m_all)
        self.epoch += 1
        return total

    def _new_workspace(self, m):
        """A workspace for m examples, outside the cached training ones (evaluation)."""
        return _Workspace(self.backend, self.layer_dims, m, self.dtype)

    def _evaluate(self, Xd, Yd, ws):
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
        if self._parallel is not None:
            (cost, correct), m = self._parallel.mean((cost, correct), m)
        return self.backend.scalar(self._l2_cost(cost, m)), correct

    def predict(self, X):
        """Class predictions: (A > 0.5) as 0/1 (nL, m) for sigmoid, argmax ids (1, m) for softmax;
        A itself for regression outputs."""
        A = self.forward(X)
        xp = np if isinstance(A, np.ndarray) else self.backend.xp
        name = self.activations[-1].name
        if name == "sigmoid":
            return (A > 0.5).astype(np.int64)
        if name == "softmax":
            return xp.argmax(A, axis=0).reshape(1, -1)
        return A

    def accuracy(self, X, Y):
        """Fraction of correct predictions (all outputs of all examples), a Python float."""
        name = self.activations[-1].name
        if name not in ("sigmoid", "softmax"):
            raise ValueError(f"accuracy needs a sigmoid or softmax output, not {name!r}; use cost()")
        p = self.predict(X)
        p = p if isinstance(p, np.ndarray) else self.backend.to_numpy(p)
        Xd, Yd = self._prepare(X, Y)
        Y1 = self.backend.to_numpy(Yd)
        if name == "softmax":
            Y1 = np.argmax(Y1, axis=0).reshape(1, -1)
        return float(np.mean(p == Y1))


def _default(value, default):
    return default if value is None else value


def _count(name, value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value}")
    return int(value)


def _check_rate(learning_rate):
    lr = float(learning_rate)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning_rate must be a finite number > 0; got {learning_rate}")
    return lr
