"""Network: the deep L-layer network of the course on any backend, its public face.

X = A[0] (n[0], m); Z[l] = W[l] · A[l-1] + b[l]; A[l] = g[l](Z[l]); A[L] = ŷ; J = (1/m) Σ L(ŷ, y).
With skip connections a[l] -> z[k]: Z[k] = W[k] · A[k-1] + b[k] + A[l] (or Ws · A[l], or A[l] padded).
The network checks the user's arguments and data and holds an ``Engine`` (fastdnn.engine), which owns
the flat buffers and computes; the network knows a Backend, never which library runs it.
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _checks, _layout, io, state
from .activations import ACTIVATIONS, get_activation
from .backends import get_backend
from .backends.base import Backend
from .errors import BackendUnavailableError, DeviceFallbackWarning, ModelFileError
from .distributed import DataParallel
from .engine import Engine
from .history import History
from .initializers import initialize
from .losses import get_loss
from .optimizers import OPTIMIZERS, Optimizer, get_optimizer
from .schedules import get_schedule
from .training import TrainingLoop


DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _on_device(method):
    """Run a public method with the network's device current (GPUs: whatever thread or code made
    another device current, the work goes to this network's device)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.engine.backend.device_scope():
            return method(self, *args, **kwargs)
    return run


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
    try:
        dims = list(layer_dims)
    except TypeError:
        dims = []
    if len(dims) < 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_))
                                and n >= 1 for n in dims):
        raise ValueError(f"layer_dims must be at least two positive integers [n0, ..., nL]; got {layer_dims!r}")
    return [int(n) for n in dims]


def _check_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dt}")
    return dt


class Network:
    """An L-layer network layer_dims = [n0, n1, ..., nL], trained on X (n0, m), Y (nL, m)."""

    def __init__(self, layer_dims: Sequence[int], hidden_activation: str | Sequence[str] = "relu",
                 output_activation: str | None = None, loss: str | None = None,
                 init: str | Mapping[str, ArrayLike] = "he", device: str = "auto", dtype: DTypeLike = "float32",
                 seed: int | None = None, l2: float = 0.0, keep_prob: float | Sequence[float] = 1.0,
                 skip: int | Sequence[tuple[int, int]] | None = None, projection: str = "learned",
                 batch_norm: bool | Sequence[bool] = False) -> None:
        """``skip``: residual (skip) connections a[l] -> z[k], Z[k] = W[k]·A[k-1] + b[k] + A[l]: an int s
        (skip=2: a block every two hidden layers, a[1] -> z[3], a[3] -> z[5], ... while k <= L - 1; X
        starts no block and the output layer ends none), or explicit pairs [(l, k), ...] with 0 <= l,
        l + 2 <= k <= L (at most one into each layer). Where n_l != n_k, ``projection`` says what joins
        them: "learned" (default): a matrix Ws (n_k, n_l), ``parameters['Ws{l}_{k}']``, trained by every
        optimizer (L2 included), initialised to the padding map I (n_k, n_l) (ones on the diagonal), so
        it starts as "pad" does; "pad": fixed, A[l] zero-padded (n_l < n_k) or truncated (n_l > n_k).
        Equal widths always use the identity (no Ws). With B skips, the initial W[k] of each layer a
        skip goes into is scaled by 1/√B (Fixup's rescaling: the activations keep their scale through
        the blocks; without it He-initialized blocks double their variance each), unless layer k is
        batch-normalized (normalization undoes any scale of W[k]).

        ``batch_norm``: True (every hidden layer), or one bool per hidden layer: the layer computes
        Zn = (W·A_prev − μ)/√(σ² + ε), Z̃ = γ·Zn + β, A = g(Z̃) (ε = 1e-5), μ and σ² over the batch's examples
        in training and running averages outside it (predict, cost, forward: running ← 0.9·running +
        0.1·the batch's, every training step). γ (``gamma{l}``, starts at 1) and β (``beta{l}``, starts at 0)
        are learned by every optimizer and β replaces b[l]; ``running_mean{l}`` and ``running_var{l}`` (start
        at 0 and 1) are in ``parameters`` too, never learned. On a layer a skip goes into, the skip is added
        after the normalization: Z̃ = γ·Zn + β + S (or Ws·S), A = g(Z̃) (ResNet's order)."""
        self.layer_dims = _check_dims(layer_dims)
        self.skips = _layout.skip_pairs(skip, self.layer_dims)
        self.projection = _layout.check_projection(projection)
        self.batch_norm = _layout.batch_norm_layers(batch_norm, self.layer_dims)
        self.activations = _layer_activations(hidden_activation, output_activation, self.L)
        if self.activations[-1].name == "softmax" and self.layer_dims[-1] < 2:
            raise ValueError(f"a softmax output needs at least 2 units (classes); layer_dims {self.layer_dims} "
                             "has 1: use a sigmoid output for two classes")
        self.loss = get_loss(loss, self.activations[-1])
        self.dtype = _check_dtype(dtype)
        # a seed is always drawn and kept, so every run (init, dropout, mini-batch order) can be repeated
        seed = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else _check_seed(seed)
        backend = get_backend(device, _stacklevel=3)
        if isinstance(init, dict):
            parameters = self._given_parameters(init)
        else:
            parameters = self._scaled_branches(initialize(self.layer_dims, init, seed))
        parameters = {**self._initial_projections(), **self._initial_batch_norm(parameters), **parameters}
        with backend.device_scope():
            self.engine = Engine(backend, self.layer_dims, self.activations, self.loss, self.dtype, parameters,
                                 seed, self.skips, self.projection, self.batch_norm)
        self.regularize(l2, keep_prob)
        self.history = None         # the History of the last fit, filled as it runs

    def _given_parameters(self, init):
        """init's W[l], b[l] (beta{l} in b's place on a normalized layer) checked against layer_dims, and
        the optional extras checked against their shapes: each learned skip's Ws, each normalized layer's
        gamma, running_mean, running_var ((n_l, 1) or (n_l,)); any other such name is refused."""
        dims = self.layer_dims
        expected = {_layout.skip_name(l, k): (dims[k], dims[l])
                    for l, k, o in _layout.skip_layout(dims, self.skips, self.projection)[0] if o >= 0}
        expected.update({name: (dims[l], 1) for l in self.batch_norm for name in _layout.batch_norm_names(l)})
        layers = {}
        for name, value in init.items():
            name = str(name)
            if name.startswith(("Ws", "gamma", "running_")):
                if name not in expected:
                    raise ValueError(f"parameter {name!r} is not a learned projection of this network's skips "
                                     f"nor an array of a batch-normalized layer (expected among "
                                     f"{sorted(expected) or 'none'})")
                if np.shape(value) not in (expected[name], expected[name][:1]):
                    raise ValueError(f"{name} has shape {np.shape(value)}, expected {expected[name]}")
            elif name.startswith("beta"):
                if name[4:] not in {str(l) for l in self.batch_norm}:
                    raise ValueError(f"parameter {name!r}: layer {name[4:]} is not batch-normalized "
                                     f"(batch_norm layers: {self.batch_norm or 'none'})")
                layers["b" + name[4:]] = value
            else:
                layers[name] = value
        missing = [f"beta{l}" for l in self.batch_norm if f"beta{l}" not in init and f"b{l}" not in init]
        if missing:
            raise ValueError(f"parameters miss {missing} (or b{{l}}) for the batch-normalized layers")
        given = _checks.parameter_shapes(layers, self.activations)
        if given != dims:
            raise ValueError(f"parameters give layer_dims {given}, expected {dims}")
        return init

    def _scaled_branches(self, parameters):
        """With B skip connections, the W[k] of each layer k a skip goes into (the last layer of a
        residual branch) scaled by 1/√B: every block then adds to the variance of the activations a
        fraction 1/B of it instead of doubling it, so the output keeps its scale however many blocks
        there are (the rescaling of Fixup: Zhang, Dauphin and Ma, ICLR 2019)."""
        if not self.skips:
            return parameters
        scale = 1 / np.sqrt(len(self.skips))
        return {**parameters, **{f"W{k}": parameters[f"W{k}"] * scale for _, k in self.skips
                                 if k not in self.batch_norm}}

    def _initial_batch_norm(self, parameters):
        """For each normalized layer l: γ = 1, β = b[l] when given (else 0), running μ = 0 and σ² = 1."""
        out = {}
        for l in self.batch_norm:
            n = (self.layer_dims[l], 1)
            gamma, mean, var = _layout.batch_norm_names(l)
            out.update({gamma: np.ones(n), f"beta{l}": parameters.get(f"b{l}", np.zeros(n)), mean: np.zeros(n),
                        var: np.ones(n)})
        return out

    def _initial_projections(self):
        """{'Ws{l}_{k}': I (n_k, n_l)} for the learned skips: the padding / truncation map."""
        dims = self.layer_dims
        return {_layout.skip_name(l, k): np.eye(dims[k], dims[l])
                for l, k, o in _layout.skip_layout(dims, self.skips, self.projection)[0] if o >= 0}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, ArrayLike], hidden_activation: str | Sequence[str] = "relu",
                        output_activation: str | None = None, loss: str | None = None, device: str = "auto",
                        dtype: DTypeLike | None = None, skip: int | Sequence[tuple[int, int]] | None = None,
                        projection: str = "learned") -> Network:
        """A network with these parameters ({'W1': (n1, n0), 'b1': (n1, 1), ..., with skips 'Ws1_3': (n3, n1)
        ..., batch-normalized layers with beta{l} for b{l}, gamma{l} and optionally running_mean{l},
        running_var{l}}); dtype None keeps theirs (float32 or float64; anything else becomes float64)."""
        names = [str(k) for k in parameters]
        normalized = sorted(int(k[4:]) for k in names if k.startswith("beta") and k[4:].isdigit())
        layers = {("b" + k[4:] if k.startswith("beta") else k): v for k, v in parameters.items()
                  if not str(k).startswith(("Ws", "gamma", "running_"))}
        dims = _checks.parameter_shapes(layers)
        if dtype is None:
            dt = np.asarray(parameters["W1"]).dtype
            dtype = dt if dt in DTYPES else np.float64
        batch_norm = [l in normalized for l in range(1, len(dims) - 1)]
        return cls(dims, hidden_activation, output_activation, loss, init=dict(parameters), device=device,
                   dtype=dtype, skip=skip, projection=projection, batch_norm=batch_norm)

    # --- state -----------------------------------------------------------------------------
    @property
    def L(self) -> int:
        return len(self.layer_dims) - 1

    @property
    def backend(self) -> Backend:
        return self.engine.backend

    @property
    def device(self) -> str:
        return self.engine.backend.device

    @property
    def optimizer(self) -> Optimizer:
        return self.engine.optimizer

    @property
    def l2(self) -> float:
        return self.engine.l2

    @property
    def keep_prob(self) -> tuple[float, ...]:
        return self.engine.keep_prob

    @property
    def seed(self) -> int:
        """The network's seed (drawn when none was given): initial parameters, dropout masks and the
        default mini-batch order all follow from it."""
        return self.engine.seed

    @property
    def iteration(self) -> int:
        """Optimizer steps taken so far (over every fit/step call)."""
        return self.engine.iteration

    @property
    def epoch(self) -> int:
        """Mini-batch epochs completed so far (each epoch's order depends on it)."""
        return self.engine.epoch

    @property
    @_on_device
    def parameters(self) -> dict[str, np.ndarray]:
        """Host NumPy copies {'W1': (n1, n0), 'b1': (n1, 1), ...} in the network's dtype."""
        return self.engine.parameters()

    def regularize(self, l2: float | None = None, keep_prob: float | Sequence[float] | None = None) -> Network:
        """Set L2 (J += λ/(2m) Σ ||W[l]||², dW[l] += (λ/m) W[l]) and inverted dropout on the hidden
        layers during training (keep_prob: one value, or one per hidden layer; 1 = off). None keeps
        the current value."""
        self.engine.regularize(*self._regularization(l2, keep_prob))
        return self

    def _regularization(self, l2, keep_prob):
        """(l2, keep_prob per hidden layer) checked, None meaning the current ones; changes nothing."""
        if l2 is None:
            l2 = self.l2
        else:
            l2 = _checks.number("l2", l2)
            if not (math.isfinite(l2) and l2 >= 0):
                raise ValueError(f"l2 must be a finite number >= 0; got {l2}")
        if keep_prob is None:
            return l2, self.keep_prob
        probs = list(keep_prob) if isinstance(keep_prob, (list, tuple)) else [keep_prob] * (self.L - 1)
        given = keep_prob if isinstance(keep_prob, (list, tuple)) else [keep_prob]
        if self.L == 1 and not all(_checks.number("keep_prob", p) == 1 for p in given):
            raise ValueError(f"keep_prob={keep_prob} has no hidden layer to drop units from "
                             f"(layer_dims {self.layer_dims})")
        if len(probs) != self.L - 1 or not all(0 < _checks.number("keep_prob", p) <= 1 for p in probs):
            raise ValueError(f"keep_prob must be in (0, 1], one value or one per hidden layer "
                             f"({self.L - 1}); got {keep_prob}")
        return l2, tuple(float(p) for p in probs)

    def to(self, device: str) -> Network:
        """Move the parameters and the optimizer state to another device or backend (in place);
        returns self."""
        self.engine.to(get_backend(device, _stacklevel=3))
        return self

    @_on_device
    def save(self, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
        """Write the network (its state_dict: parameters, architecture, dtype, optimizer state, counters,
        seed) to one .npz file, atomically; read it back with fastdnn.load(path)."""
        return io.write_state(path, self.state_dict())

    @_on_device
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the network, as plain data: {'config': a JSON-able dict
        (architecture, dtype, optimizer and its hyper-parameters, counters, L2, keep_prob, seed, the
        dropout generator's state), 'W1': ..., 'b1': ..., ..., 'state0': ...: host NumPy arrays}."""
        return state.make(self)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], device: str = "auto") -> Network:
        """The network a ``state_dict()`` describes, on ``device``; every field checked first
        (ValueError/TypeError naming it)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"a state dict must be a dict; got {type(state_dict).__name__}")
        config = state.check_config(state_dict.get("config"))
        arrays = state.check_arrays(config, {k: v for k, v in state_dict.items() if k != "config"})
        activations = [ACTIVATIONS[key[0]](*key[1:]) for key in config["activations"]]
        net = cls(config["layer_dims"], activations, None, config["loss"], device=device, dtype=config["dtype"],
                  init={k: v for k, v in arrays.items() if not k.startswith("state")}, seed=config.get("seed"),
                  l2=config["l2"], keep_prob=config["keep_prob"], skip=[tuple(p) for p in config.get("skip", [])],
                  projection=config.get("projection", "learned"),
                  batch_norm=[l in config.get("batch_norm", []) for l in range(1, len(config["layer_dims"]) - 1)])
        engine = net.engine
        with net.backend.device_scope():
            engine.set_optimizer(OPTIMIZERS[config["optimizer"]](**config["optimizer_args"]))
            for i, s in enumerate(engine.states):
                s[...] = net.backend.asarray(arrays[f"state{i}"], dtype=net.dtype)
        engine.t, engine.iteration, engine.epoch = (config[k] for k in ("optimizer_step", "iteration", "epoch"))
        try:
            engine.rng.bit_generator.state = config["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"rng is not a state of NumPy's {type(engine.rng.bit_generator).__name__}: "
                             f"{type(exc).__name__}: {exc}") from exc
        return net

    def __getstate__(self):
        """Pickling: the state dict (no compiled kernel, no device buffer) and where it ran."""
        return {"state": self.state_dict(), "backend": self.backend.name, "device": self.device,
                "history": self.history}

    def __setstate__(self, pickled):
        """Unpickling: rebuilt from its state dict on the same backend, or, where that cannot run here,
        the CPU (a DeviceFallbackWarning says so; CUDA devices fall back as for ``device="cuda"``)."""
        device = pickled["device"]
        if device.startswith("cuda"):
            backend = get_backend(device, _stacklevel=3)
        else:
            try:
                backend = get_backend(pickled["backend"])
            except BackendUnavailableError as exc:
                backend = get_backend("cpu")
                warnings.warn(f"{exc}; using backend {backend.name!r} on cpu", DeviceFallbackWarning,
                              stacklevel=2)
        self.__dict__.update(Network.from_state_dict(pickled["state"], device=backend).__dict__)
        self.history = pickled.get("history")

    @_on_device
    def to_onnx(self, path: str | os.PathLike[str], opset: int | None = None) -> str | os.PathLike[str]:
        """Write the network as an ONNX graph, X (batch, n0) -> probabilities (batch, nL) = forward(X.T).T
        (fastdnn.onnx_export.to_onnx; needs the onnx extra); returns path."""
        from .onnx_export import to_onnx
        return to_onnx(self, path, opset)

    def __repr__(self):
        acts = "/".join(a.name for a in self.activations)
        skips = f", skip={self.skips}, projection={self.projection!r}" if self.skips else ""
        skips += f", batch_norm={self.batch_norm}" if self.batch_norm else ""
        return (f"Network({self.layer_dims}, activations={acts}, loss={self.loss.name!r}{skips}, "
                f"backend={self.backend.name!r} on {self.device}, dtype={self.dtype.name})")

    # --- public API ------------------------------------------------------------------------
    @_on_device
    def prepare(self, X: ArrayLike, Y: ArrayLike | None = None) -> Any:
        """X (n0, m) (and Y (nL, m), or class ids for softmax) checked, converted to the network's
        dtype and moved to its backend: what every method does with its data first. Prepare data
        once to call ``step`` many times without copying it again."""
        Xd = _checks.as_float_array(self.backend, X, "X", self.dtype)
        _checks.check_X(Xd, self.engine.layers[0][0].shape, self.L, self.activations[0])
        _checks.check_finite(self.backend, Xd, "X", X if isinstance(X, np.ndarray) else None)
        if Y is None:
            return Xd
        Yd = _checks.labels(self.backend, Y, self.loss, self.layer_dims[-1], Xd.shape[1], self.L,
                            self.activations[-1], self.dtype)
        return Xd, Yd

    def _labelled(self, X, Y):
        """prepare(X, Y) for a call that needs the labels: Y None is an error naming it."""
        if Y is None:
            raise TypeError("Y is required (the labels of X's examples); got None")
        return self.prepare(X, Y)

    def _result(self, A, like):
        """A copy of A: on the backend for backend-native non-NumPy input, else on the host."""
        if self.backend.xp is not np and self.backend.is_native(like):
            return A.copy()
        return self.backend.to_numpy(A)

    @_on_device
    def forward(self, X: ArrayLike) -> Any:
        """A[L] = ŷ for X (n0, m) -> (nL, m)."""
        return self._result(self.engine.forward(self.prepare(X)), X)

    predict_proba = forward

    @_on_device
    def cost(self, X: ArrayLike, Y: ArrayLike) -> float:
        """J = (1/m) Σ L(ŷ, y) as a Python float."""
        return self.engine.cost(*self._labelled(X, Y))

    @_on_device
    def gradients(self, X: ArrayLike, Y: ArrayLike) -> dict[str, np.ndarray]:
        """{'dW1': (n1, n0), 'db1': (n1, 1), ...} = ∂J/∂W[l], ∂J/∂b[l], as host NumPy arrays."""
        return self.engine.gradients(*self._labelled(X, Y))

    @_on_device
    def step(self, X: ArrayLike, Y: ArrayLike, learning_rate: float | None = None,
             optimizer: str | Optimizer | None = None) -> float:
        """One optimizer step on (X, Y) (plain gradient descent W[l] -= α dW[l] by default);
        returns J before the step. A step that raises leaves the network as it was."""
        new_optimizer = None if optimizer is None else get_optimizer(optimizer)
        learning_rate = self._rate(learning_rate, new_optimizer)
        Xd, Yd = self._labelled(X, Y)
        if new_optimizer is not None:
            self.engine.set_optimizer(new_optimizer)
        self.engine.begin_call()
        cost = self.backend.scalar(self.engine.train_step(Xd, Yd, learning_rate))
        self.engine.end_call()
        return cost

    @_on_device
    def fit(self, X: ArrayLike, Y: ArrayLike, *, learning_rate: float | None = None, iterations: int | None = None,
            epochs: int | None = None, batch_size: int | None = None, shuffle: bool = True, seed: int | None = None,
            optimizer: str | Optimizer | None = None, l2: float | None = None,
            keep_prob: float | Sequence[float] | None = None,
            schedule: str | Callable[[float, int], float] | None = None,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, patience: int | None = None,
            report_every: int | None = None, verbose: int | None = None, comm: Any = None) -> History:
        """Train; returns a History.

        Full batch (the course's first part): ``iterations`` steps (default 3000); the History has J at
        every ``report_every``-th iteration (default 100) and the last, each J taken before its step.
        Mini-batches (its second part): ``epochs`` passes over the examples in a random order
        (``shuffle``) drawn from (``seed``, default the network's, and the network's epoch count), so a
        resumed run continues the same sequence; ``batch_size`` at a time (default: all), the last
        batch smaller when m does not divide; the History has each ``report_every``-th epoch (default
        1) and the last, with the epoch's mean cost.
        ``optimizer``: a name or a fastdnn.optimizers object; its state carries over between calls
        while it stays the same. ``learning_rate`` defaults to the optimizer's, else 0.0075;
        ``schedule`` (a name or callable from fastdnn.schedules) changes it every epoch/iteration,
        counting the network's epochs/iterations, so N then M of them equal N + M in one call.
        A fit that raises before training changed nothing; one that diverges raises
        TrainingDivergedError (see there) and never leaves non-finite parameters; an interrupted one
        leaves the network consistent (its last whole step) and ``net.history`` with what it recorded;
        one that ends (diverged or interrupted) before its first step also keeps the optimizer, its
        state, l2, keep_prob and the History it had.
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
            saved, history = self.engine.settings(), self.history
            loop = self._training_loop(X, Y, **options)
            self.history = loop.history
            try:
                return loop.run()
            except BaseException:       # no step taken (none recorded, none kept): the network as it was
                if len(loop.history) == 0 and self.engine.restore_settings(saved):
                    self.history = history
                raise
        dp = DataParallel(comm, self.engine)
        if dp.rank:
            options["verbose"] = 0
        loop = dp.agree(lambda: self._training_loop(X, Y, **options))
        self.history = loop.history
        dp.start(loop.m, loop.plan())
        loop.seed = comm.bcast(loop.seed, root=0)
        return dp.run(loop)

    def _training_loop(self, X, Y, *, learning_rate, iterations, epochs, batch_size, shuffle, seed,
                       optimizer, l2, keep_prob, schedule, validation_data, patience, report_every,
                       verbose):
        """fit's arguments checked and its data prepared, then (only then) its settings applied: a
        TrainingLoop."""
        new_optimizer = None if optimizer is None else get_optimizer(optimizer)
        l2, keep_prob = self._regularization(l2, keep_prob)
        learning_rate = self._rate(learning_rate, new_optimizer)
        schedule = get_schedule(schedule)
        seed = None if seed is None else _check_seed(seed)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False; got {shuffle!r}")
        if isinstance(verbose, str) or verbose not in (None, 0, 1, 2):
            raise ValueError(f"verbose must be None, 0, 1 or 2; got {verbose!r}")
        if epochs is None:
            if batch_size is not None:
                raise ValueError("batch_size needs epochs=...; iterations are full-batch steps")
            count, unit, every = _count("iterations", _default(iterations, 3000)), "iteration", 100
        else:
            if iterations is not None:
                raise ValueError("give iterations (full-batch steps) or epochs, not both")
            count, unit, every = _count("epochs", epochs), "epoch", 1
            batch_size = None if batch_size is None else _count("batch_size", batch_size)   # None: all
        report_every = _count("report_every", _default(report_every, every))
        if patience is not None and (validation_data is None or _count("patience", patience) < 1):
            raise ValueError("patience needs validation_data=(X_val, Y_val)")
        if validation_data is not None and not (isinstance(validation_data, (tuple, list))
                                                and len(validation_data) == 2):
            raise TypeError("validation_data must be a pair (X_val, Y_val); got "
                            f"{type(validation_data).__name__}")
        Xd, Yd = self._labelled(X, Y)
        validation = None if validation_data is None else self._validation(validation_data)
        if new_optimizer is not None:
            self.engine.set_optimizer(new_optimizer)
        self.engine.regularize(l2, keep_prob)
        return TrainingLoop(self.engine, Xd, Yd, unit, batch_size, shuffle, seed, count, learning_rate,
                            schedule, validation, patience, report_every, verbose)

    def _validation(self, validation_data):
        """validation_data prepared like X, Y; its errors say that it is the validation data they are about."""
        try:
            return self._labelled(*validation_data)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"validation_data: {exc}") from exc

    def _rate(self, learning_rate, optimizer=None):
        """α: the one given, else the optimizer's (the new one, if any), else 0.0075; checked."""
        optimizer = optimizer or self.optimizer
        return _check_rate(learning_rate if learning_rate is not None else optimizer.learning_rate or 0.0075)

    @_on_device
    def predict(self, X: ArrayLike) -> Any:
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

    @_on_device
    def accuracy(self, X: ArrayLike, Y: ArrayLike) -> float:
        """Fraction of correct predictions (all outputs of all examples), a Python float."""
        name = self.activations[-1].name
        if name not in ("sigmoid", "softmax"):
            raise ValueError(f"accuracy needs a sigmoid or softmax output, not {name!r}; use cost()")
        Xd, Yd = self._labelled(X, Y)
        p = self.predict(X)
        p = p if isinstance(p, np.ndarray) else self.backend.to_numpy(p)
        Y1 = self.backend.to_numpy(Yd)
        if name == "softmax":
            Y1 = np.argmax(Y1, axis=0).reshape(1, -1)
        return float(np.mean(p == Y1))


def load(path: str | os.PathLike[str], device: str = "auto") -> Network:
    """The Network saved at path (``Network.save``), on ``device``, with its optimizer state and
    counters; ModelFileError naming the problem for a file that is truncated, corrupted, hostile, not a
    fastdnn network or of an unknown version."""
    backend = get_backend(device, _stacklevel=3)      # the caller's mistakes are not the file's
    state_dict = io.read_state(path)
    try:
        return Network.from_state_dict(state_dict, backend)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(f"{path} is damaged or inconsistent: {type(exc).__name__}: {exc}") from exc


def _default(value, default):
    return default if value is None else value


def _count(name, value):
    """value as an int >= 1 (an integral float too), or ValueError naming the argument."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or int(value) != value or value < 1):
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def _check_seed(seed):
    """A seed: an integer in [0, 2**32), as NumPy's generators take."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32); got {seed!r}")
    return int(seed)


def _check_rate(learning_rate):
    lr = _checks.number("learning_rate", learning_rate)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning_rate must be a finite number > 0; got {learning_rate}")
    return lr
