"""A network's whole state as plain data, and its checks.

``{"config": {...}, "W1": ..., "b1": ..., ..., "state0": ..., ...}``: the configuration is JSON-able
(format, version, layer_dims, activations, loss, dtype, optimizer and its hyper-parameters, step
counts, L2, keep_prob, seed, the dropout generator's state; for a network with skip connections, ``skip``
[[l, k], ...] and ``projection``, and for batch normalization ``batch_norm`` [l, ...], in format version 3 — a
plain network's file stays version 2, as before);
the arrays are host NumPy arrays — parameters (the learned projections Ws{l}_{k} too) and the optimizer's
state buffers. ``check`` reads one back field by field, so that a
damaged or hostile state is refused with the field it got wrong, before anything is built.
"""
import math

import numpy as np

from ._layout import PROJECTIONS, batch_norm_layout, batch_norm_names, skip_layout, skip_name, skip_pairs
from .activations import ACTIVATIONS
from .losses import LOSSES
from .optimizers import OPTIMIZERS

FORMAT = "fastdnn-network"
VERSION = 2
SKIP_VERSION = 3        # a network with skip connections (older readers refuse it rather than drop them)
READS = (1, 2, 3)       # version 1: no seed; version 3: skip connections
MAX_COUNT = 2**62       # step counts are int64 counters that go on counting


def make(net):
    """The state dict of a network (host copies)."""
    engine = net.engine
    config = dict(format=FORMAT, version=VERSION, layer_dims=list(net.layer_dims),
                  activations=[list(a.key) for a in net.activations], loss=net.loss.name,
                  dtype=net.dtype.name, optimizer=net.optimizer.name,
                  optimizer_args=dict(vars(net.optimizer)), optimizer_step=engine.t,
                  iteration=engine.iteration, epoch=engine.epoch, l2=net.l2, keep_prob=list(net.keep_prob),
                  seed=engine.seed, rng=engine.rng.bit_generator.state)
    if net.skips:
        config.update(version=SKIP_VERSION, skip=[list(p) for p in net.skips], projection=net.projection)
    if net.batch_norm:
        config.update(version=SKIP_VERSION, batch_norm=list(net.batch_norm))
    arrays = dict(net.parameters)
    arrays.update({f"state{i}": net.backend.to_numpy(s) for i, s in enumerate(engine.states)})
    return {"config": config, **arrays}


def expected_arrays(config):
    """{name: shape} of every array a state with this (checked) configuration holds."""
    dims = config["layer_dims"]
    shapes = {}
    normalized = config.get("batch_norm", [])
    for l in range(1, len(dims)):
        shapes[f"W{l}"], shapes[f"beta{l}" if l in normalized else f"b{l}"] = (dims[l], dims[l - 1]), (dims[l], 1)
    skips = [tuple(p) for p in config.get("skip", [])]
    layout, P = skip_layout(dims, skips, config.get("projection", "learned"))
    shapes.update({skip_name(l, k): (dims[k], dims[l]) for l, k, o in layout if o >= 0})
    _, P = batch_norm_layout(dims, normalized, P)
    shapes.update({name: (dims[l], 1) for l in normalized for name in batch_norm_names(l)})
    shapes.update({f"state{i}": (P,) for i in range(OPTIMIZERS[config["optimizer"]].n_state)})
    return shapes


def check_config(config):
    """The configuration, every field checked (ValueError/TypeError naming the field)."""
    if not isinstance(config, dict):
        raise TypeError(f"the configuration must be a JSON object; got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise ValueError(f"not a fastdnn network (format {config.get('format')!r})")
    if not _is_int(config.get("version")) or config["version"] not in READS:
        raise ValueError(f"format version {config.get('version')!r}; this fastdnn reads version "
                         + " or ".join(map(str, READS)))
    dims = _field(config, "layer_dims", list)
    if len(dims) < 2 or not all(_is_int(n) and 1 <= n <= 2**31 for n in dims):
        raise ValueError(f"layer_dims must be at least two integers in [1, 2**31]; got {dims!r}")
    acts = _field(config, "activations", list)
    if len(acts) != len(dims) - 1 or not all(isinstance(a, list) and a and a[0] in ACTIVATIONS for a in acts):
        raise ValueError(f"activations must be {len(dims) - 1} lists [name, parameters...] with names among "
                         f"{sorted(ACTIVATIONS)}; got {acts!r}")
    hidden = [a[0] for a in acts[:-1] if not ACTIVATIONS[a[0]].elementwise]
    if hidden:
        raise ValueError(f"activations: {hidden[0]!r} is only allowed as the output activation; got {acts!r}")
    if _field(config, "loss", str) not in LOSSES:
        raise ValueError(f"unknown loss {config['loss']!r}")
    if _field(config, "dtype", str) not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {config['dtype']!r}")
    if _field(config, "optimizer", str) not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config['optimizer']!r}")
    _field(config, "optimizer_args", dict)
    for name in ("optimizer_step", "iteration", "epoch"):
        if not _is_int(config.get(name)) or not 0 <= config[name] < MAX_COUNT:
            raise ValueError(f"{name} must be an integer in [0, 2**62); got {config.get(name)!r}")
    if config["optimizer_step"] > config["iteration"]:
        raise ValueError(f"optimizer_step {config['optimizer_step']} exceeds iteration {config['iteration']}")
    l2 = config.get("l2")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not (math.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0; got {l2!r}")
    keep = _field(config, "keep_prob", list)
    if len(keep) != len(dims) - 2 or not all(isinstance(p, (int, float)) and not isinstance(p, bool)
                                             and 0 < p <= 1 for p in keep):
        raise ValueError(f"keep_prob must be {len(dims) - 2} numbers in (0, 1]; got {keep!r}")
    seed = config.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**32):
        raise ValueError(f"seed must be an integer in [0, 2**32); got {seed!r}")
    _field(config, "rng", dict)
    _check_skips(config, dims)
    _check_batch_norm(config, dims)
    return config


def _check_batch_norm(config, dims):
    """batch_norm: a non-empty sorted list of distinct hidden layers, in a version-3 file, none of them a
    layer a skip connection goes into."""
    if "batch_norm" not in config:
        return
    if config["version"] < SKIP_VERSION:
        raise ValueError(f"batch_norm in a format version {config['version']} file (it needs version {SKIP_VERSION})")
    layers = _field(config, "batch_norm", list)
    if (not layers or not all(_is_int(l) and 1 <= l <= len(dims) - 2 for l in layers)
            or layers != sorted(set(layers))):
        raise ValueError(f"batch_norm must be a sorted list of distinct hidden layers in [1, {len(dims) - 2}]; "
                         f"got {layers!r}")


def _check_skips(config, dims):
    """skip: [[l, k], ...] valid for layer_dims (as Network takes them) and projection among the choices;
    both only in a version-3 file."""
    if "skip" not in config and "projection" not in config:
        return
    if config["version"] < SKIP_VERSION:
        raise ValueError(f"skip connections in a format version {config['version']} file (they need version "
                         f"{SKIP_VERSION})")
    skip = _field(config, "skip", list)
    if config.get("projection") not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(map(repr, PROJECTIONS))}; "
                         f"got {config.get('projection')!r}")
    if not all(isinstance(p, list) for p in skip):
        raise TypeError(f"skip must be a list of [l, k] pairs; got {skip!r}")
    try:
        pairs = skip_pairs([tuple(p) for p in skip], dims)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"skip: {exc}") from exc
    if not pairs or [list(p) for p in pairs] != skip:
        raise ValueError(f"skip must be a non-empty list of [l, k] pairs sorted by k; got {skip!r}")


def check_arrays(config, arrays):
    """The arrays a checked configuration needs, each of its shape, numeric and finite; the optimizer's
    squared-gradient averages >= 0; nothing else (ValueError naming the array)."""
    shapes = expected_arrays(config)
    extra, missing = sorted(set(arrays) - set(shapes)), sorted(set(shapes) - set(arrays))
    if extra or missing:
        raise ValueError(f"arrays {extra} are not part of a {config['layer_dims']} network with "
                         f"optimizer {config['optimizer']!r}" if extra else f"arrays {missing} are missing")
    nonnegative = {f"state{i}" for i in OPTIMIZERS[config["optimizer"]].nonnegative_states}
    nonnegative |= {batch_norm_names(l)[2] for l in config.get("batch_norm", [])}
    for name, shape in shapes.items():
        a = arrays[name]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be a numeric NumPy array; got {type(a).__name__}"
                            + (f" of dtype {a.dtype}" if isinstance(a, np.ndarray) else ""))
        if a.shape != shape and not (shape[1:] == (1,) and not name.startswith("W") and a.shape == shape[:1]):
            raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
        with np.errstate(over="ignore"):                # a float64 beyond float32's range becomes inf
            if not np.isfinite(a.astype(config["dtype"], copy=False)).all():
                raise ValueError(f"{name} contains NaN or infinity (as {config['dtype']})")
        if name in nonnegative and (a < 0).any():
            raise ValueError(f"{name} (a mean of squares) has negative entries")
    return {name: arrays[name] for name in shapes}


def _field(config, name, kind):
    value = config.get(name)
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}; got {type(value).__name__}")
    return value


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)
