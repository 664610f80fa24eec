"""The step engine: the flat buffers of a network and everything that computes with them.

θ = [W1, b1, W2, b2, ...] lives in one flat buffer on the backend (W[l], b[l] are views), dθ in a
second (with one more entry for the cost, so data-parallel training all-reduces both in one call),
the optimizer's state in more. A workspace per batch size holds Z[l], A[l], dA[l] (dA overwritten by
dZ) for every layer, and what is constant for it (the backend's whole-step callable) is resolved once
when it is made. The engine talks to a Backend only; ``Network`` checks the user's input and calls
the engine; io, training, distributed, gradcheck and the benchmarks use this interface:

  Engine(backend, layer_dims, activations, loss, dtype, parameters, seed, skips, projection, batch_norm)
  .theta, .states, .gradient_buffer      current flat θ, optimizer state buffers, [dθ, J]
  .parameters() / .set_parameters(d)      host dict {'W1': ..., 'b1': ..., 'Ws1_3': ..., 'gamma1': ...} out / in
  .parameter_names(), .state_names()      the learned arrays' names in θ's order; and the running statistics'
  .reference_steps, .evaluate_now(...)    steps run on NumPy while a kernel compiled; evaluate meanwhile
  compiling(), wait_for_compiles()        the background compiles of first calls (BACKGROUND_COMPILE)
  .set_optimizer(spec), .regularize(l2, keep_prob), .t, .iteration, .epoch, .rng, .seed
  .forward(X), .cost(X, Y), .gradients(X, Y), .backprop(X, Y)          prepared backend arrays
  .begin_call(), .train_step(X, Y, α, check), .train_epoch(...), .end_call(), .evaluate(X, Y, ws)
  .workspace(m), .evaluation_workspace(m), .to(backend), .set_parallel(dp) / .parallel
  .skips, .projection, .skip_weights     the skip connections and their learned Ws, {(l, k): Ws} views

Skip (residual) connections a[l] -> z[k] (``skips``, sorted (l, k) pairs, at most one into each layer):
Z[k] = W[k]·A[k-1] + b[k] + S, S = A[l] (equal widths), Ws·A[l] (a learned projection, ``projection``
'learned'; Ws (n_k, n_l) after every W, b in θ) or A[l] zero-padded / truncated to n_k rows ('pad'). A[l]
is what layer l passes on (with dropout: the masked Ad[l], the same the next layer sees). Backward: dA[l]
also receives dZ[k] (or Wsᵀ·dZ[k]), written by layer k's dZ pass (or its GEMM) before layer l+1's GEMM
Wᵀ·dZ accumulates onto it; dWs = dZ[k]·A[l]ᵀ (+ (λ/m) Ws with L2, which covers every weight matrix).

Batch normalization on hidden layers (``batch_norm``, sorted l): Zn = (W·A_prev − μ)/√(σ² + ε), Z = γ·Zn + β,
A = g(Z), β in b's place in θ, every γ after the Ws, then the running μ, σ² (in θ so the slots carry them;
gradient 0, so no optimizer moves them; a step sets the other slot's after the update). Such a network
trains on numba's compiled step, epoch and loop (skips included), op by op elsewhere, and data-parallel with
the whole batch's μ, σ², dβ, dγ (see distributed).
"""
import contextlib
import math
import os
import threading
import time

import numpy as np

from ._layout import (BN_EPSILON, BN_MOMENTUM, batch_norm_layout, batch_norm_names, flat_layout, skip_layout,
                      skip_name, workspace_offsets)
from ._xp import array_namespace
from .distributed import batches
from .errors import TrainingDivergedError
from .optimizers import GradientDescent, get_optimizer


class Workspace:
    """Z[l], A[l], dA[l] (n_l, m) for l = 1..L as views of three flat buffers (Zf, Af, dAf) on the
    backend; index 0 is unused. For each hidden layer l with dropout, D[l] holds the step's mask
    scaled by 1/keep_prob and Ad[l] = A[l] * D[l]. ``fused`` is the backend's whole-step callable."""

    def __init__(self, backend, layer_dims, m, dtype, fused=None, dropout_layers=(), batch_norm=()):
        self.m, self.fused = m, fused
        self._batch_norm_buffer(backend, layer_dims, m, dtype, batch_norm)
        self.D = {l: backend.empty((layer_dims[l], m), dtype) for l in dropout_layers}
        self.Ad = {l: backend.empty((layer_dims[l], m), dtype) for l in dropout_layers}
        offsets = workspace_offsets(layer_dims, m)
        self.Zf, self.Af, self.dAf = (backend.empty((int(offsets[-1]),), dtype) for _ in range(3))
        self.Z, self.A, self.dA = ([None] + [flat[o:o + n * m].reshape(n, m)
                                             for o, n in zip(offsets, layer_dims[1:])]
                                   for flat in (self.Zf, self.Af, self.dAf))

    def _batch_norm_buffer(self, backend, dims, m, dtype, batch_norm):
        """For each batch-normalized layer l: the batch's μ[l], σ²[l] (n_l, 1) and Zn[l] = the normalized
        W·A_prev (n_l, m), views of one flat buffer Bf in the compiled calls' layout (every layer's μ, σ²,
        then every layer's Zn); bn_work = (Bf,), or () without batch norm: what a compiled call takes last."""
        self.Zn, self.mu, self.var, self.bn_work = {}, {}, {}, ()
        if not batch_norm:
            return
        self.Bf, o = backend.empty((sum(dims[l] for l in batch_norm) * (2 + m),), dtype), 0
        for l in batch_norm:
            n = dims[l]
            self.mu[l], self.var[l] = self.Bf[o:o + n].reshape(n, 1), self.Bf[o + n:o + 2 * n].reshape(n, 1)
            o += 2 * n
        for l in batch_norm:
            self.Zn[l] = self.Bf[o:o + dims[l] * m].reshape(dims[l], m)
            o += dims[l] * m
        self.bn_work = (self.Bf,)


# Columns of the per-slot counters: the optimizer's step t, the network's iteration, its epoch.
T, ITERATION, EPOCH = 0, 1, 2

# First-call latency. With a cold Numba cache, compiling the whole loop or epoch of even a small
# network takes seconds (measured, 2 busy cores: [2, 4, 1] tanh, 4.1-4.3 s of a 4.5 s first fit of 300
# steps; loading it from a warm cache 0.34 s; a second fit 3 ms), while NumPy's per-op steps of such a
# network take ~90 µs. So a call whose compiled loop or epoch is not compiled yet starts compiling it
# in a background thread and waits only while that may be a load from the disk cache; if it compiles,
# the call's steps run on the reference backend (NumPy ops on the same buffers: nothing to compile)
# and the compiled call takes over between two steps (loop) or two epochs once it is ready. Numba
# holds the GIL for the Python half of a compile (LLVM's passes release it), so both slow down: NumPy
# steps 2-5x, the compile to 5-8 s; the first fit of 300 steps still returns in 0.45 s instead of
# 4.5 s. The two paths agree to rounding (float64 ~1e-15 per step), not bit for bit, and where the
# switch falls depends on timing: FASTDNN_BACKGROUND_COMPILE=0 in the environment makes every call
# wait for its compile instead (bit-reproducible reruns). The thread is not a daemon: a process that
# ends before the compile does waits for it, so the disk cache is written and the next process is warm.
BACKGROUND_COMPILE = os.environ.get("FASTDNN_BACKGROUND_COMPILE", "1") != "0"
CACHE_LOAD_WAIT_S = 3.0       # the longest wait for a load from the disk cache (measured: 0.34 s)
_compile_jobs, _compile_lock = {}, threading.Lock()


class _CompileJob(threading.Thread):
    """One kernel's compile for one signature, in the background; ``seconds`` it took once done (any
    error is left for the caller's own call to raise, on its own thread)."""

    def __init__(self, job, missed):
        super().__init__(name="fastdnn-compile", daemon=False)
        self.job, self.missed, self.seconds, self.started = job, missed, None, time.perf_counter()

    def wait_for_cache(self):
        """Wait while the kernel may still be loading from the disk cache (not once it compiles; not at
        all behind another compile, which holds Numba's compiler lock, and so the cache, for seconds)."""
        start = time.perf_counter()
        while self.is_alive() and not self.missed() and time.perf_counter() - start < CACHE_LOAD_WAIT_S:
            self.join(0.002)

    def run(self):
        start = time.perf_counter()
        try:
            self.job()
        except Exception:       # the call that follows compiles again and raises it where it is seen
            pass
        self.seconds = time.perf_counter() - start


def _compiled_now(call, args):
    """Whether ``call`` (a backend's compiled loop or epoch) can run ``args`` without compiling first.
    A call that says nothing (no ``compile_job``) can; else, the first time, start its background
    compile (one per kernel and signature, shared by every engine) and wait for it while it may be a
    load from Numba's disk cache; later, whether that compile is done (asked once a call is ready no
    more: arguments of another layout later compile on the caller's thread, as without this)."""
    if getattr(call, "ready", True):
        return True
    job = getattr(call, "job", None)
    if job is None:
        if not BACKGROUND_COMPILE or call.compiled(*args):
            call.ready = True
            return True
        key, compile_, missed = call.compile_job(*args)
        with _compile_lock:
            job, behind = _compile_jobs.get(key), any(j.is_alive() for j in _compile_jobs.values())
            if job is None:
                job = _compile_jobs[key] = _CompileJob(compile_, missed)
                job.start()
        call.job = job
        if not behind:
            job.wait_for_cache()
    call.ready = not job.is_alive()
    return call.ready


def compiling():
    """Whether a background compile (see BACKGROUND_COMPILE) is still running."""
    with _compile_lock:
        return any(job.is_alive() for job in _compile_jobs.values())


def wait_for_compiles(since=None):
    """Wait for every background compile (started at or after ``since``, a time.perf_counter() value);
    returns (seconds, loaded from the disk cache) for each, in the order they started."""
    with _compile_lock:
        jobs = [job for job in _compile_jobs.values() if since is None or job.started >= since]
    for job in jobs:
        job.join()
    return [(job.seconds, not job.missed()) for job in jobs]


class Engine:
    """Flat θ / dθ / optimizer-state buffers, workspaces, and forward / backward / update for an
    L-layer network [n0, ..., nL] on one backend (see the module docstring).

    Two slots each hold a θ, the optimizer's state and their counters (t, iteration, epoch). A step
    reads the current slot and writes the other one, then makes it current with one store; so a step
    that fails, diverges or is interrupted leaves the current slot, and with it the network, whole and
    consistent, and the other slot holds the previous step's parameters for a divergence to go back to
    (only within one call: ``begin_call``)."""

    def __init__(self, backend, layer_dims, activations, loss, dtype, parameters, seed=None, skips=(),
                 projection="learned", batch_norm=()):
        self.backend, self.layer_dims = backend, list(layer_dims)
        self.activations, self.loss, self.dtype = activations, loss, np.dtype(dtype)
        self.L = len(self.layer_dims) - 1
        self.skips, self.projection = [tuple(p) for p in skips], projection
        self._skip_layout, P = skip_layout(self.layer_dims, self.skips, projection)
        self.batch_norm = tuple(sorted(batch_norm))
        self._bn_layout, _ = batch_norm_layout(self.layer_dims, self.batch_norm, P)
        self._plan_skips()
        self.optimizer = GradientDescent()
        self.l2, self.keep_prob = 0.0, (1.0,) * (self.L - 1)
        self.seed = seed            # the default seed of the mini-batch order
        self.rng = np.random.default_rng(seed)      # dropout masks
        self._order_streams = {}    # (seed, rank) -> the mini-batch order's stream (see _epoch_order)
        self.quiet_chunks = {}      # batch size -> full-batch steps per call between reports (training.py)
        self.parallel = None        # a distributed.DataParallel while fit(comm=...) runs
        self._counters = np.zeros((2, 3), np.int64)     # per slot: t, iteration, epoch
        self._current = np.zeros(1, np.int64)           # the current slot, 0 or 1
        self._call_start = 0
        self._halt = None           # (first diverging iteration + 1, its cost) on the device, deferred checks
        self._workspaces, self._compiled_calls = {}, {}
        self.set_parameters(parameters)

    # --- buffers ---------------------------------------------------------------------------
    def _views(self, flat):
        """[(W1, b1), ..., (WL, bL)] as views of a flat buffer laid out W1, b1, W2, b2, ..."""
        dims, pofs = flat_layout(self.layer_dims)
        return [(flat[o:o + n * k].reshape(n, k), flat[o + n * k:o + n * k + n].reshape(n, 1))
                for o, k, n in zip(pofs, dims[:-1], dims[1:])]

    def _skip_views(self, flat):
        """{(l, k): Ws (n_k, n_l)}: the learned projections of the skips, views of a flat buffer."""
        dims = self.layer_dims
        return {(l, k): flat[o:o + dims[k] * dims[l]].reshape(dims[k], dims[l])
                for l, k, o in self._skip_layout if o >= 0}

    def _plan_skips(self):
        """The static plan of the skips: ``_into[k]`` = (l, whether layer k's skip gradient is the first
        written into dA[l]); ``_sources``: the layers l >= 1 whose dA[l] holds skip gradients before layer
        l+1's GEMM (which then accumulates onto it)."""
        self._into, written = {}, set()
        for l, k in sorted(self.skips, key=lambda p: -p[1]):       # the backward's order: k = L..1
            self._into[k] = (l, l not in written)
            written.add(l)
        self._sources = {l for l in written if l >= 1}

    def _fused_skips(self):
        """The skips for a backend's compiled calls: {} without any (the plain call, unchanged), else
        {'skips': ((l, k, offset of Ws in θ or -1, whether its gradient is the first into dA[l]), ...)}."""
        if not self.skips:
            return {}
        return {"skips": tuple((l, k, o, self._into[k][1]) for l, k, o in self._skip_layout)}

    def parameter_names(self):
        """The names of θ's learned arrays in its order: W1, b1, ..., WL, bL (beta{l} for b{l} on a
        batch-normalized layer), then each learned Ws, then each gamma{l}."""
        names = [name for l in range(1, self.L + 1) for name in (f"W{l}", f"beta{l}" if l in self._bn_layout
                                                                  else f"b{l}")]
        names += [skip_name(l, k) for l, k, o in self._skip_layout if o >= 0]
        return names + [batch_norm_names(l)[0] for l in self.batch_norm]

    def state_names(self):
        """parameter_names, then the running μ, σ² of each batch-normalized layer (running_mean{l},
        running_var{l}: in θ, never learned: their gradient is 0, so no optimizer moves them)."""
        return self.parameter_names() + [name for l in self.batch_norm for name in batch_norm_names(l)[1:]]

    def _named_views(self, flat):
        """{name: view} of every array of a flat buffer laid out as θ (state_names)."""
        out = {}
        for l, (W, b) in enumerate(self._views(flat), start=1):
            out[f"W{l}"], out[f"beta{l}" if l in self._bn_layout else f"b{l}"] = W, b
        out.update({skip_name(*key): Ws for key, Ws in self._skip_views(flat).items()})
        for l, offsets in self._bn_layout.items():
            n = self.layer_dims[l]
            out.update({name: flat[o:o + n].reshape(n, 1) for name, o in zip(batch_norm_names(l), offsets)})
        return out

    def _bn_views(self, flat):
        """{l: (γ, running μ, running σ²)} (n_l, 1) views of a flat buffer laid out as θ."""
        named = self._named_views(flat)
        return {l: tuple(named[name] for name in batch_norm_names(l)) for l in self.batch_norm}

    def set_parameters(self, parameters):
        """θ from host or device arrays {'W1': (n1, n0), 'b1': (n1, 1) or (n1,), ..., 'Ws1_3': (n3, n1)}
        (checked finite); the optimizer's state starts again at zero, the iteration and epoch counts stay."""
        chunks = []
        for name in self.state_names():
            a = parameters[name]
            host = np.asarray(a.get() if array_namespace(a) is not np else a)
            if host.dtype.kind not in "biuf" or not np.isfinite(host).all():
                raise ValueError(f"{name} must be finite numbers")
            chunks.append(host.reshape(-1))
        flat = self.backend.asarray(np.concatenate(chunks), dtype=self.dtype)
        spare = self.backend.empty(flat.shape, self.dtype)
        spare[...] = flat
        c = self._slot()
        self._thetas = [flat, spare] if c == 0 else [spare, flat]
        self._layers = [self._views(theta) for theta in self._thetas]
        self._skip_weights = [self._skip_views(theta) for theta in self._thetas]
        self._bn = [self._bn_views(theta) for theta in self._thetas]
        # dθ, and one more entry for the cost: data-parallel training sums both in one all-reduce
        self.gradient_buffer = self.backend.zeros((flat.shape[0] + 1,), self.dtype)
        self._dtheta = self.gradient_buffer[:-1]
        self._grads = self._views(self._dtheta)
        self._skip_grads = self._skip_views(self._dtheta)
        self._bn_grads = self._bn_views(self._dtheta)      # (dγ, 0, 0): the running statistics get none
        self.set_optimizer(self.optimizer, reset=True)

    def _slot(self):
        return int(self._current[0])

    @property
    def theta(self):
        """The current flat θ (P,) on the backend."""
        return self._thetas[self._slot()]

    @property
    def layers(self):
        """[(W1, b1), ..., (WL, bL)]: views of the current θ."""
        return self._layers[self._slot()]

    @property
    def skip_weights(self):
        """{(l, k): Ws}: the learned projections, views of the current θ."""
        return self._skip_weights[self._slot()]

    @property
    def states(self):
        """The optimizer's current state buffers [(P,), ...] (velocity, squares)."""
        return self._states[self._slot()]

    @property
    def dtheta(self):
        """The flat gradient buffer dθ (P,) of the last backprop."""
        return self._dtheta

    def _counter(column, doc):
        def get(self):
            return int(self._counters[self._slot(), column])

        def put(self, value):
            self._counters[self._slot(), column] = value
            self._forget_previous()
        return property(get, put, doc=doc)

    t = _counter(T, "Steps taken by the current optimizer (its bias corrections count them).")
    iteration = _counter(ITERATION, "Optimizer steps taken, over every call.")
    epoch = _counter(EPOCH, "Mini-batch epochs completed (each epoch's order depends on it).")
    del _counter

    def _forget_previous(self):
        """The other slot no longer holds the previous step (the current one was changed otherwise)."""
        self._counters[1 - self._slot(), ITERATION] = -1

    def restore_theta(self, theta):
        """θ = a copy taken earlier (early stopping's best); the optimizer state stays."""
        self.theta[...] = theta
        self._forget_previous()

    def parameters(self):
        """Host NumPy copies {'W1': (n1, n0), 'b1': (n1, 1), ..., 'Ws1_3': (n3, n1), 'gamma1': (n1, 1),
        'running_mean1': (n1, 1), ...} (state_names) in the network's dtype."""
        named = self._named_views(self.theta)
        return {name: self.backend.to_numpy(named[name]) for name in self.state_names()}

    def set_optimizer(self, spec, reset=False):
        """Use this optimizer; its state starts at zero unless it is the one already in use."""
        optimizer = get_optimizer(spec)
        if reset or optimizer != self.optimizer:
            P = self._dtheta.shape
            self._states = [[self.backend.zeros(P, self.dtype) for _ in range(optimizer.n_state)]
                            for _ in range(2)]
            self._counters[self._slot(), T] = 0
            self._forget_previous()
            self._forget_compiled()
        self.optimizer = optimizer

    def settings(self):
        """What a call's settings change, for ``restore_settings``: (slot, iteration, optimizer, its states,
        t, l2, keep_prob)."""
        return self._slot(), self.iteration, self.optimizer, self._states, self.t, self.l2, self.keep_prob

    def restore_settings(self, saved):
        """Back to the optimizer, its state and the regularization of ``settings()`` when no step since
        has lasted (the same slot and iteration); returns whether it did."""
        c, iteration, optimizer, states, t, l2, keep_prob = saved
        if (self._slot(), self.iteration) != (c, iteration):
            return False
        if states is not self._states:                 # set_optimizer made new ones: the old are untouched
            self.optimizer, self._states = optimizer, states
            self._counters[c, T] = t
            self._forget_compiled()
        self.regularize(l2, keep_prob)
        return True

    def regularize(self, l2, keep_prob):
        """Use L2 strength l2 (>= 0) and keep_prob (one per hidden layer), already checked; the workspaces
        and compiled calls are kept when neither changes (every fit call sets them)."""
        if (l2, tuple(keep_prob)) != (self.l2, self.keep_prob):
            self.l2, self.keep_prob = l2, tuple(keep_prob)
            self._forget_compiled()

    def set_parallel(self, parallel):
        """Step data-parallel through ``parallel`` (a distributed.DataParallel), or alone (None)."""
        self.parallel = parallel
        self._forget_compiled()

    def to(self, backend):
        """Move θ and the optimizer state to another backend (in place)."""
        with self.backend.device_scope():
            parameters, t, states = self.parameters(), self.t, [self.backend.to_numpy(s) for s in self.states]
        self.backend = backend
        self._forget_compiled()
        with backend.device_scope():
            self.set_parameters(parameters)
            for s, host in zip(self.states, states):
                s[...] = backend.asarray(host)
        self._counters[self._slot(), T] = t

    # --- workspaces --------------------------------------------------------------------------
    def _forget_compiled(self):
        """Workspaces and compiled calls depend on the optimizer, regularization, parallelism and
        backend: made again after any of them changes."""
        self._workspaces, self._compiled_calls = {}, {}

    def _compiled(self, kind, m):
        """The backend's compiled whole epoch (kind "epoch", batches of m) or loop of full-batch steps
        ("loop", m examples) for this network and optimizer, or None: when a step needs Python between
        its ops (dropout, L2, data-parallel) or the backend has none (or none for this network: batch norm
        where the backend does not compile it, see ``_fused_batch_norm``). Resolved once per setting."""
        if self.parallel is not None or self.l2 or any(p < 1 for p in self.keep_prob):
            return None
        key = (kind, m)
        if key not in self._compiled_calls:
            bn = self._fused_batch_norm()
            make = getattr(self.backend, f"fused_{kind}", None) if bn is not None else None
            self._compiled_calls[key] = make and make(self.activations, self.loss, self.layer_dims, m,
                                                      self.dtype, self.optimizer, **self._fused_skips(), **bn)
        return self._compiled_calls[key]

    def _fused_batch_norm(self):
        """The batch-normalized layers for a backend's compiled calls: {} without any (the plain call,
        unchanged), {'batch_norm': ((l, offset of γ[l], of the running μ[l], of the running σ²[l] in θ), ...)}
        where the backend compiles them (``compiles_batch_norm``), else None (op by op; so also data-parallel,
        where the batch's μ, σ² need an all-reduce inside the forward)."""
        if not self.batch_norm:
            return {}
        if not self.backend.compiles_batch_norm or self.parallel is not None:
            return None
        return {"batch_norm": tuple((l, *self._bn_layout[l]) for l in self.batch_norm)}

    def workspace(self, m):
        """The training workspace for batches of m (the last two sizes are kept; steps on the reference
        backend, see ``_on_reference``, have their own, without the compiled step)."""
        workspaces = self._workspaces if self._reference is None else self._reference_workspaces
        ws = workspaces.get(m)
        if ws is None:
            if len(workspaces) >= 2:    # full batch + a last partial one
                workspaces.pop(next(iter(workspaces)))
            dropout = [l for l, p in enumerate(self.keep_prob, start=1) if p < 1]
            # data-parallel steps update after the all-reduce, never inside the fused call
            optimizer = None if self.parallel else self.optimizer
            bn = self._fused_batch_norm()
            fused = None if dropout or self.l2 or bn is None else self.backend.fused_step(
                self.activations, self.loss, self.layer_dims, m, self.dtype, optimizer, **self._fused_skips(), **bn)
            try:
                ws = workspaces[m] = Workspace(self.backend, self.layer_dims, m, self.dtype, fused, dropout,
                                               self.batch_norm)
            except MemoryError as exc:
                arrays = 3 * sum(self.layer_dims[1:]) + sum(self.layer_dims[l] for l in [*dropout, *dropout,
                                                                                      *self.batch_norm])
                need = arrays * m * self.dtype.itemsize
                raise MemoryError(f"the {self.backend.name} workspace for batches of {m} needs {need} bytes "
                                  f"({need / 2**20:.1f} MiB): {exc}") from exc
        return ws

    def evaluation_workspace(self, m):
        """A workspace for m examples, outside the cached training ones (evaluation)."""
        return Workspace(self.backend, self.layer_dims, m, self.dtype, batch_norm=self.batch_norm)

    # --- forward and backward ------------------------------------------------------------------
    def _forward(self, X, ws, train=False, batch_stats=None):
        """Z[l], A[l] for l = 1..L into the workspace; returns A[L] (n_L, m). In training, hidden
        layers with dropout pass on Ad[l] = A[l] * D[l] with a fresh mask D[l]. A skip a[l] -> z[k] adds
        what layer l passes on (or Ws·that) to Z[k] inside layer k's op (see the module docstring). A
        batch-normalized layer normalizes W·A_prev with the batch's μ, σ² (``batch_stats``, default: in
        training) or the running ones, then Z = γ·Zn + β and A = g(Z)."""
        A, passed = X, [X]
        batch_stats = train if batch_stats is None else batch_stats
        for l, ((W, b), act) in enumerate(zip(self.layers, self.activations), start=1):
            skip = self._skip_forward(l, passed)
            if l in ws.Zn:
                A = self._batch_norm_forward(l, act, A, W, b, ws, batch_stats, skip)
            else:
                _, A = self.backend.linear_activation_forward(act, A, W, b, Z=ws.Z[l], A=ws.A[l], **skip)
            if train and l in ws.D:
                self.backend.dropout_mask(ws.D[l], self.keep_prob[l - 1], self.rng)
                A = self.backend.multiply(A, ws.D[l], out=ws.Ad[l])
            passed.append(A)
        return A

    def _batch_norm_forward(self, l, act, A_prev, W, beta, ws, batch_stats, skip):
        """Zn[l] = W·A_prev normalized, Z[l] = γ·Zn + β (+ a skip's S or Ws·S), A[l] = g(Z[l]); returns A[l]."""
        be, (gamma, running_mean, running_var) = self.backend, self._bn[self._slot()][l]
        be.gemm(W, A_prev, out=ws.Zn[l])
        if batch_stats:
            mu, var = be.batch_stats(ws.Zn[l], ws.mu[l], ws.var[l])
            if self.parallel is not None:         # the whole batch's, over every rank's columns
                self.parallel.batch_stats(mu, var)
        else:
            mu, var = running_mean, running_var
        return be.batch_norm_activation(act, ws.Zn[l], mu, var, BN_EPSILON, gamma, beta, ws.Z[l], ws.A[l],
                                        **skip)[1]

    def _skip_forward(self, k, passed):
        """The keyword arguments of layer k's forward op for its skip: {} without one, else skip=A[l]
        (as passed on by layer l) and Ws=its learned projection or None."""
        if k not in self._into:
            return {}
        l = self._into[k][0]
        return {"skip": passed[l], "Ws": self.skip_weights.get((l, k))}

    def _passed_on(self, l, X, ws, train):
        """What layer l passed on in the forward: X for l = 0, Ad[l] with dropout in training, else A[l]."""
        if l == 0:
            return X
        return ws.Ad[l] if train and l in ws.D else ws.A[l]

    def _backward(self, X, ws, train=False):
        """dW[l], db[l] for l = L..1 of the data term of J into the gradient buffer, from dZ[L] in
        ws.dA[L]; with dropout dA[l] is masked like A[l] was. Skips: layer k's dZ pass (or a GEMM Wsᵀ·dZ[k])
        writes, or adds, dZ[k] into dA[l], and layer l+1's GEMM then accumulates onto it."""
        be, params, L = self.backend, self.layers, self.L
        for l in range(L, 0, -1):
            W, (dW, db) = params[l - 1][0], self._grads[l - 1]
            dropped = train and (l - 1) in ws.D
            A_prev, dA_prev = (X, None) if l == 1 else (ws.Ad[l - 1] if dropped else ws.A[l - 1],
                                                        ws.dA[l - 1])
            extra = {"accumulate": True} if (l - 1) in self._sources else {}
            source, first = self._into.get(l, (None, False))
            Ws = self.skip_weights.get((source, l))
            direct = source is not None and source >= 1 and Ws is None     # identity or padding: in the dZ pass
            if l in ws.Zn:     # batch norm: dZ̃, dβ (db's place), dγ (and the skip's share); dZ; the GEMMs
                gamma, dgamma = self._bn[self._slot()][l][0], self._bn_grads[l][0]
                into = dict(skip_out=ws.dA[source], skip_accumulate=not first) if direct else {}
                dZ = be.batch_norm_delta(self.activations[l - 1], ws.dA[l], ws.Z[l], ws.A[l], ws.Zn[l], dgamma, db,
                                         **into)
                if Ws is not None:                # from dZ̃, before dZ replaces it
                    self._projection_backward(source, l, first, Ws, X, ws, train)
                    Ws = None
                if self.parallel is not None:     # dZ needs the whole batch's dγ, dβ
                    self.parallel.batch_norm_sums(dgamma, db)
                be.batch_norm_backward(dZ, ws.Zn[l], ws.var[l], BN_EPSILON, gamma, dgamma, db)
                be.gemm(dZ, A_prev, out=dW, trans_b=True)
                if l > 1:
                    be.gemm(W, dZ, out=dA_prev, trans_a=True, **extra)
            elif l == L:
                be.linear_backward(ws.dA[L], A_prev, W, dW, db, dA_prev, need_dA_prev=l > 1, **extra)
                if direct:
                    be.skip_gradient(ws.dA[L], ws.dA[source], accumulate=not first)
            else:
                if direct:
                    extra.update(skip_out=ws.dA[source], skip_accumulate=not first)
                be.linear_activation_backward(self.activations[l - 1], ws.dA[l], ws.Z[l], ws.A[l],
                                              A_prev, W, dW, db, dA_prev, need_dA_prev=l > 1, **extra)
            if Ws is not None:
                self._projection_backward(source, l, first, Ws, X, ws, train)
            if dropped:
                be.multiply(ws.dA[l - 1], ws.D[l - 1], out=ws.dA[l - 1])

    def _projection_backward(self, l, k, first, Ws, X, ws, train):
        """A learned skip a[l] -> z[k], from dZ[k] (n_k, m) in ws.dA[k]: dWs = dZ[k]·A[l]ᵀ, and dA[l] (+)= Wsᵀ·dZ[k]
        (written when ``first``)."""
        be = self.backend
        be.gemm(ws.dA[k], self._passed_on(l, X, ws, train), out=self._skip_grads[(l, k)], trans_b=True)
        if l >= 1:
            be.gemm(Ws, ws.dA[k], out=ws.dA[l], trans_a=True, accumulate=not first)

    def _forward_cost_delta(self, X, Y, ws, train=False, batch_stats=None):
        """Forward (see ``_forward``), then the data term of the cost J (0-d, on the backend) and dZ[L]
        into the workspace."""
        self._forward(X, ws, train, batch_stats)
        L = self.L
        return self.backend.output_layer(self.loss, self.activations[-1], ws.Z[L], ws.A[L], Y, ws.dA[L])

    def l2_cost(self, cost, m):
        """J + (λ/2m) Σ_l ||W[l]||² (J itself without L2)."""
        if not self.l2:
            return cost
        weights = [W for W, _ in self.layers] + list(self.skip_weights.values())
        return cost + self.l2 / (2 * m) * sum(self.backend.sum_squares(W) for W in weights)

    def _add_l2(self, cost, m):
        """The L2 terms for m examples: dW[l] += (λ/m) W[l] (and dWs += (λ/m) Ws); returns
        J + (λ/2m) (Σ_l ||W[l]||² + Σ ||Ws||²)."""
        if self.l2:
            pairs = [(W, dW) for (W, _), (dW, _) in zip(self.layers, self._grads)]
            pairs += [(Ws, self._skip_grads[key]) for key, Ws in self.skip_weights.items()]
            for W, dW in pairs:
                self.backend.add_scaled(dW, W, self.l2 / m)
        return self.l2_cost(cost, m)

    def forward(self, X):
        """A[L] = ŷ (n_L, m) for X (n0, m), in a fresh workspace (a backend array)."""
        return self._forward(X, self.evaluation_workspace(X.shape[1]))

    def cost(self, X, Y, batch_stats=False):
        """J = (1/m) Σ L(ŷ, y) (+ the L2 term) as a Python float; batch-normalized layers use the running
        μ, σ² unless ``batch_stats`` (as in training: X's own)."""
        ws = self.evaluation_workspace(X.shape[1])
        self._forward(X, ws, batch_stats=batch_stats)
        cost = self.backend.loss_cost(self.loss, ws.Z[self.L], ws.A[self.L], Y)
        return self.backend.scalar(self.l2_cost(cost, ws.m))

    def gradients(self, X, Y):
        """{'dW1': (n1, n0), 'db1': (n1, 1), ..., 'dWs1_3': (n3, n1), 'dgamma1': ...} = ∂J/∂ of every learned
        array (parameter_names), as host NumPy arrays; batch norm with X's own μ, σ² (as in training)."""
        ws = self.evaluation_workspace(X.shape[1])
        self._forward_cost_delta(X, Y, ws, batch_stats=True)
        self._backward(X, ws)
        self._add_l2(0.0, ws.m)
        named = self._named_views(self._dtheta)
        return {"d" + name: self.backend.to_numpy(named[name]) for name in self.parameter_names()}

    def backprop(self, X, Y, fused=None):
        """J of the data term and dθ into the gradient buffer, as in a training step, without the
        update (``fused``: a backend whole-step callable built without an optimizer, or None)."""
        ws = self.workspace(X.shape[1])
        if fused is not None:
            c = self._slot()
            return fused(X, Y, self._thetas[c], self._thetas[1 - c], self._dtheta, ws.Zf, ws.Af, ws.dAf, 0.0,
                         *ws.bn_work)
        cost = self._forward_cost_delta(X, Y, ws, train=True)
        self._backward(X, ws, train=True)
        return cost

    # --- training ------------------------------------------------------------------------------
    def begin_call(self):
        """A public call (fit, step) starts: a divergence in it goes back at most to here. On a
        backend that defers the divergence check to the device, the other slot starts as a copy of the
        current one and the device's halt flag is cleared (see ``_deferred_step``)."""
        self._call_start = self.iteration
        if self.backend.defers_checks:
            c = self._slot()
            for src, dst in zip([self._thetas[c], *self._states[c]], [self._thetas[1 - c], *self._states[1 - c]]):
                dst[...] = src
            if self._halt is None:
                self._halt = (self.backend.zeros((), np.int64), self.backend.zeros((), self.dtype))
            self._halt[0][...] = 0
            self._counters[1 - c] = self._counters[c]
            self._call_counters = self._counters[c].copy()

    def train_step(self, X, Y, learning_rate, check=True, m_total=None):
        """One step (θ', state') = optimizer(θ, dθ, state) into the other slot, which then becomes
        current. With check (always for a fused or data-parallel step), a non-finite cost stops
        before the update (TrainingDivergedError). Data-parallel: X holds this rank's m of the batch's
        m_total examples (default: all the ranks' examples), and dθ and J become the sums over the
        ranks of (m/m_total)·dθ, J."""
        ws = self.workspace(X.shape[1])
        c = self._slot()
        theta, theta_out = self._thetas[c], self._thetas[1 - c]
        if self.parallel is not None:
            self.parallel.share = ws.m / (m_total or self.parallel.m_total)
        if ws.fused is not None:      # the whole step in one call; no update on a non-finite cost
            cost = ws.fused(X, Y, theta, theta_out, self._dtheta, ws.Zf, ws.Af, ws.dAf, learning_rate, *ws.bn_work)
        else:
            cost = self._forward_cost_delta(X, Y, ws, train=True)
            self._backward(X, ws, train=True)
        m = ws.m
        if self.parallel is not None:
            m = m_total or self.parallel.m_total
            cost = self.parallel.all_reduce(self.gradient_buffer, cost, self.parallel.share)
        cost = self._add_l2(cost, m)
        if self.backend.defers_checks and self.parallel is None:
            return self._deferred_step(cost, c, learning_rate, check, ws)
        if check or ws.fused is not None or self.parallel is not None:
            cost = self.backend.scalar(cost)   # read back once; the caller reuses the float
            if not math.isfinite(cost):
                self._diverged(cost)
        if ws.fused is None or not ws.fused.updates:
            self.backend.update(self.optimizer, theta, self._dtheta, self._states[c], learning_rate,
                                self._counters[c, T] + 1, theta_out, self._states[1 - c])
        self._update_running(c, ws)
        self._commit(c)
        return cost

    def _update_running(self, c, ws, go=None):
        """The other slot's running μ, σ² = BN_MOMENTUM·slot c's + (1 − BN_MOMENTUM)·the batch's, for each
        batch-normalized layer (after the update, which carried them over unchanged: their gradient is 0);
        on a deferred-check backend only where ``go`` (0-d, on the device) is true."""
        for l in self.batch_norm:
            (_, mean, var), (_, mean_out, var_out) = self._bn[c][l], self._bn[1 - c][l]
            self.backend.running_average(mean, ws.mu[l], BN_MOMENTUM, mean_out, go)
            self.backend.running_average(var, ws.var[l], BN_MOMENTUM, var_out, go)

    def _deferred_step(self, cost, c, learning_rate, check, ws):
        """The update and commit of a step whose cost stays on the device (no host sync): the update
        writes nothing when the cost is not finite, and copies θ and the state once a step of this call
        has diverged; the device records the first diverging iteration (the halt flag); ``check_halted``
        reads it (at reports and epoch ends) and puts the network back. Returns the 0-d device cost, or
        its float when ``check``."""
        halted, halted_cost = self._halt
        self.backend.update_guarded(self.optimizer, self._thetas[c], self._dtheta, self._states[c], learning_rate,
                                    self._counters[c, T] + 1, self._thetas[1 - c], self._states[1 - c], cost,
                                    halted)
        if self.batch_norm:          # like the update: only for a finite cost before any divergence
            self._update_running(c, ws, self.backend.running_guard(cost, halted))
        self.backend.mark_divergence(cost, halted, halted_cost, self._counters[c, ITERATION])
        self._commit(c)
        if check:
            self.check_halted()
            cost = self.backend.scalar(cost)
        return cost

    def check_halted(self):
        """On a deferred-check backend: if a step of this call diverged (one read of the device's halt
        flag), set the counters to the parameters the device kept — the step before it, or the call's
        start when it was the call's first — and raise TrainingDivergedError."""
        if not self.backend.defers_checks:
            return
        halted, halted_cost = self._halt
        at = int(self.backend.scalar(halted))
        if at == 0:
            return
        j = at - 1
        t0, start, _ = (int(v) for v in self._call_counters)
        kept = j - 1 if j > start else j
        c = self._slot()
        self._counters[c, T], self._counters[c, ITERATION] = t0 + kept - start, kept
        self._forget_previous()
        raise TrainingDivergedError(j, self.backend.scalar(halted_cost), kept if j > start else None,
                                    self.epoch)

    def train_steps(self, X, Y, rates, check=True):
        """len(rates) full-batch steps, step i with α = rates[i]: one compiled call where the backend has
        one (every cost checked inside), else one by one. Returns the first step's cost (a float when
        ``check``)."""
        loop = self._compiled("loop", X.shape[1])
        if loop is None:
            costs = [self.train_step(X, Y, lr, check=(check and i == 0) or self.checks_every_step())
                     for i, lr in enumerate(rates)]
            return costs[0]
        ws = self.workspace(X.shape[1])

        def arguments(alphas):
            return (X, Y, np.asarray(alphas, self.dtype), tuple(self._thetas), self._states, self._dtheta,
                    ws.Zf, ws.Af, ws.dAf, self._counters, self._current, *ws.bn_work)

        done, first = 0, None
        if not _compiled_now(loop, arguments(rates)):      # steps on NumPy until it is compiled
            done, first = self._reference_steps(X, Y, rates, check, lambda: _compiled_now(loop, arguments(rates)))
            if done == len(rates):
                return first
        cost, taken, bad = loop(*arguments(rates[done:]))
        if taken < len(rates) - done:
            self._diverged(bad)
        return cost if done == 0 else first

    # --- the reference path while a compiled call compiles (see BACKGROUND_COMPILE) ----------------
    _reference = None           # the reference backend while steps run on it (_on_reference)
    reference_steps = 0         # steps this engine ran on the reference backend, over every call

    @contextlib.contextmanager
    def _on_reference(self):
        """Run the ops on the reference backend (NumPy: nothing to compile) on the same host arrays,
        with workspaces of their own, and count the steps taken there."""
        from .backends import get_backend
        backend, self._reference = self.backend, get_backend("numpy")
        if not hasattr(self, "_reference_workspaces"):
            self._reference_workspaces = {}
        iteration, self.backend = self.iteration, self._reference
        try:
            yield
        finally:
            self.backend, self._reference = backend, None
            self.reference_steps += self.iteration - iteration

    def _reference_steps(self, X, Y, rates, check, ready):
        """Full-batch steps with α = rates[i] on the reference backend, until ``ready()`` (asked between
        steps) says the compiled loop can take over. Returns (steps taken, the first one's cost)."""
        first = None
        with self._on_reference():
            for i, learning_rate in enumerate(rates):
                if i and ready():
                    return i, first
                cost = self.train_step(X, Y, learning_rate, check=(check and i == 0) or self.checks_every_step())
                first = cost if i == 0 else first
        return len(rates), first

    def evaluate_now(self, Xd, Yd, ws):
        """``evaluate``, on the reference backend while a background compile runs (the backend's own
        kernels would wait for it, then compile)."""
        if self._reference is None and compiling():
            with self._on_reference():
                return self.evaluate(Xd, Yd, ws)
        return self.evaluate(Xd, Yd, ws)

    def _commit(self, c):
        """Make the other slot current after a step from slot c (its counters first, then one store)."""
        s = 1 - c
        self._counters[s] = self._counters[c]
        self._counters[s, T] += 1
        self._counters[s, ITERATION] += 1
        self._current[0] = s

    def _restorable(self):
        """Whether the other slot holds the previous step of this call."""
        c = self._slot()
        previous = self._counters[1 - c, ITERATION]
        return previous == self._counters[c, ITERATION] - 1 and previous >= self._call_start

    def _diverged(self, cost):
        """Raise TrainingDivergedError for a non-finite cost at the current iteration, going back to the
        previous step's slot (whose cost was finite) when it belongs to this call."""
        iteration, epoch = self.iteration, self.epoch
        restored = None
        if self._restorable():
            self._current[0] = 1 - self._slot()
            restored = self.iteration
        raise TrainingDivergedError(iteration, cost, restored, epoch)

    def end_call(self):
        """A call ends: its last step's θ, whose cost nobody computed, must be finite (NaN-propagating
        min and max, no temporary); if not, go back to the step before (TrainingDivergedError)."""
        self.check_halted()
        theta = self.theta
        if math.isfinite(self.backend.scalar(theta.min())) and math.isfinite(self.backend.scalar(theta.max())):
            return
        self._diverged(math.nan)

    def checks_every_step(self):
        """Whether a training step reads its cost back to check it (yes, unless the backend defers
        the check to the device: no host sync per step)."""
        return not self.backend.defers_checks

    def example_major(self, Xd, Yd):
        """(X (m, n0), Y (m, nL)) C-contiguous copies with one example per row: a mini-batch of random
        examples is then a gather of whole rows (contiguous), not of scattered columns."""
        return self.backend.transposed(Xd), self.backend.transposed(Yd)

    def train_epoch(self, XT, YT, learning_rate, batch_size, shuffle, seed, buffers):
        """One pass over the examples (XT (m, n0), YT (m, nL): example-major, see ``example_major``) in
        mini-batches gathered into preallocated buffers (so the steps allocate nothing); returns the
        epoch's mean cost (0-d, on the backend)."""
        m, dp = XT.shape[0], self.parallel
        order = self._epoch_order(seed, m, dp.rank if dp is not None else 0) if shuffle else np.arange(m)
        epoch = self._compiled("epoch", batch_size or m)
        if epoch is not None:
            total = self._compiled_epoch(epoch, XT, YT, order, learning_rate, batch_size or m, buffers)
            if total is not None:
                return total
            with self._on_reference():      # it compiles meanwhile
                return self._epoch_steps(XT, YT, order, learning_rate, batch_size, buffers)
        return self._epoch_steps(XT, YT, order, learning_rate, batch_size, buffers)

    def _epoch_order(self, seed, m, rank):
        """This epoch's order of the m examples: a permutation drawn from the PCG64 stream of (seed, rank)
        advanced by epoch · 2⁶⁴, so each epoch has a stretch of one stream of its own, a resumed run continues
        the same sequence, and rank 0 orders as one process. The stream is made once per (seed, rank): a
        generator seeded per epoch cost 22 µs, more than a small network's whole epoch (this: 6.5 µs, m = 300)."""
        stream = self._order_streams.get((seed, rank))
        if stream is None:
            bits = np.random.PCG64(np.random.SeedSequence([seed] + ([rank] if rank else [])))
            stream = self._order_streams[(seed, rank)] = (bits, bits.state, np.random.Generator(bits))
        bits, start, generator = stream
        bits.state = start
        bits.advance(int(self.epoch) << 64)
        return generator.permutation(m)

    def _epoch_steps(self, XT, YT, order, learning_rate, batch_size, buffers):
        """``train_epoch`` one step at a time from Python (gathers into ``buffers``)."""
        m, dp = XT.shape[0], self.parallel
        order = self.backend.asarray(order)
        shards, rank = ([m], 0) if dp is None else (dp.shard_sizes, dp.rank)
        m_all = sum(shards)
        sums = buffers.setdefault("cost sums", {})     # m_batch -> Σ J of its batches (0-d, on the backend)
        for s in sums.values():
            s.fill(0)
        for start, stop, m_batch in batches(shards, rank, batch_size or m_all):
            size = stop - start
            if size not in buffers:
                buffers[size] = (self.backend.empty((size, XT.shape[1]), self.dtype),
                                 self.backend.empty((size, YT.shape[1]), self.dtype),
                                 self.backend.empty((YT.shape[1], size), self.dtype))
            XbT, YbT, Yb = buffers[size]
            index = order[start:stop]
            self.backend.gather_rows(XT, index, XbT)
            self.backend.gather_rows(YT, index, YbT)
            Yb[...] = YbT.T
            cost = self.train_step(XbT.T, Yb, learning_rate, check=self.checks_every_step(),
                                   m_total=m_batch)
            if m_batch not in sums:
                sums[m_batch] = self.backend.zeros((), self.dtype)
            sums[m_batch] += cost                # in place: nothing allocated per batch
        self.check_halted()                  # deferred checks: once an epoch
        self._counters[self._slot(), EPOCH] += 1
        return sum(s * (m_batch / m_all) for m_batch, s in sums.items())

    def _compiled_epoch(self, epoch, XT, YT, order, learning_rate, B, buffers):
        """One epoch as one compiled call (gathers, steps, updates and commits inside); its mean cost, or
        None when the call is still compiling (in the background: see BACKGROUND_COMPILE)."""
        ws = self.workspace(B)
        if "compiled" not in buffers:
            buffers["compiled"] = (self.backend.empty((B, XT.shape[1]), self.dtype),
                                   self.backend.empty((YT.shape[1] * B,), self.dtype))
        XbT, Ybf = buffers["compiled"]
        args = (XT, YT, order.astype(np.int64, copy=False), tuple(self._thetas), self._states, self._dtheta,
                ws.Zf, ws.Af, ws.dAf, XbT, Ybf, learning_rate, self._counters, self._current, *ws.bn_work)
        if not _compiled_now(epoch, args):
            return None
        total, bad_batch, bad_cost = epoch(*args)      # counts the epoch itself (an interrupt waits for it)
        if bad_batch >= 0:
            self._diverged(bad_cost)
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
