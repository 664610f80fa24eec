"""Saving and loading networks: one .npz, written atomically, read without pickle.

The file holds the parameters W1, b1, ..., the optimizer's state buffers, and a JSON header (format
version, layer_dims, activations, loss, dtype, optimizer and its hyper-parameters, step counts).
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .activations import ACTIVATIONS
from .errors import ModelFileError
from .optimizers import OPTIMIZERS

FORMAT = "fastdnn-network"
VERSION = 1


def save(net, path):
    """Write net to path (.npz) atomically: a temporary file in the same folder, fsync, rename.
    An interrupted save leaves any earlier file at path untouched and no temporary behind."""
    engine = net.engine
    header = dict(format=FORMAT, version=VERSION, layer_dims=net.layer_dims,
                  activations=[list(a.key) for a in net.activations], loss=net.loss.name,
                  dtype=net.dtype.name, optimizer=net.optimizer.name,
                  optimizer_args={k: v for k, v in vars(net.optimizer).items()},
                  optimizer_step=engine.t, iteration=engine.iteration, epoch=engine.epoch, l2=net.l2,
                  keep_prob=list(net.keep_prob), rng=engine.rng.bit_generator.state)
    arrays = dict(net.parameters)
    arrays.update({f"state{i}": net.backend.to_numpy(s) for i, s in enumerate(engine.states)})
    arrays["header"] = np.array(json.dumps(header))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastdnn-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load(path, device="auto"):
    """The Network saved at path, on ``device``, with its optimizer state; ModelFileError for a file
    that is truncated, corrupted, not a fastdnn network or of an unknown version."""
    from .network import Network
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ModelFileError(f"{path} is not a readable fastdnn model (.npz) file: "
                             f"{type(exc).__name__}: {exc}") from exc
    header = _header(path, arrays)
    try:
        activations = [ACTIVATIONS[key[0]](*key[1:]) for key in header["activations"]]
        parameters = {k: arrays[k] for k in arrays if k[0] in "Wb" and k[1:].isdigit()}
        net = Network(header["layer_dims"], activations, None, header["loss"], init=parameters,
                      device=device, dtype=header["dtype"])
        engine = net.engine
        engine.set_optimizer(OPTIMIZERS[header["optimizer"]](**header["optimizer_args"]))
        states = [arrays[f"state{i}"] for i in range(net.optimizer.n_state)]
        for i, s in enumerate(states):
            if s.shape != engine.states[i].shape:
                raise ValueError(f"state{i} has shape {s.shape}, expected {engine.states[i].shape}")
            engine.states[i][...] = net.backend.asarray(s, dtype=net.dtype)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path} is damaged or inconsistent: {type(exc).__name__}: {exc}") from exc
    engine.t, engine.iteration, engine.epoch = (int(header[k]) for k in ("optimizer_step", "iteration", "epoch"))
    net.regularize(header["l2"], header["keep_prob"])
    engine.rng.bit_generator.state = header["rng"]
    return net


def _header(path, arrays):
    if "header" not in arrays:
        raise ModelFileError(f"{path} is an .npz file but not a fastdnn model (no header)")
    try:
        header = json.loads(str(arrays["header"]))
    except ValueError as exc:
        raise ModelFileError(f"{path} has a corrupted header: {exc}") from exc
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a fastdnn model (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path} has format version {header.get('version')}; this fastdnn reads "
                             f"version {VERSION}")
    return header
