"""Network files: a state dict (fastdnn.state) as one .npz, written atomically, read without pickle.

The file is a zip of .npy members: ``header.npy`` (the JSON configuration) and one member per array
(W1, b1, ..., state0, ...). Reading checks the zip's directory against the configuration before
decompressing anything: only the expected members, each no larger than its array, so a hostile file
cannot make ``load`` decompress more than the network's own size.
"""
import json
import os
import stat
import tempfile
import zipfile

import numpy as np

from . import state
from .errors import ModelFileError

HEADER_MAX_BYTES = 1 << 20      # the JSON configuration of any sane network fits in far less
NPY_HEADER_MAX_BYTES = 4096     # a .npy member's own header, beside its data


def write_state(path, state_dict):
    """Write a state dict to path (.npz) atomically (``replace_file``)."""
    config = state_dict["config"]
    arrays = {k: v for k, v in state_dict.items() if k != "config"}
    arrays["header"] = np.array(json.dumps(config))
    return replace_file(path, lambda f: np.savez(f, **arrays))


def replace_file(path, write):
    """Replace the file at path by what write(f) writes to a binary file f, atomically: a temporary
    file in the target's folder, fsync, rename, fsync of the folder. Through a symbolic link, the file
    it points to is replaced; an existing file keeps its permissions, a new one gets the default ones
    (umask). An interrupted write leaves any earlier file untouched and no temporary behind."""
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fastdnn-", suffix=".tmp", dir=directory)
    except OSError as exc:          # name the file asked for, not the temporary
        raise OSError(exc.errno, exc.strerror, path) from exc
    try:
        os.fchmod(fd, _mode_for(target))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_directory(directory)
    return path


def _mode_for(target):
    """The permissions of the file being replaced, else the default for a new file (0666 & ~umask)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory):
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_state(path):
    """The state dict in the file at path, its configuration and arrays checked (fastdnn.state);
    ModelFileError naming the problem for a file that is not a zip, truncated, corrupted, not a
    fastdnn network, of an unknown version, or inconsistent. FileNotFoundError if there is none."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if len(members) != len(archive.infolist()):
                raise ModelFileError(f"{path} holds two members of the same name")
            config = _read_header(path, archive, members)
            try:
                state.check_config(config)
            except (TypeError, ValueError) as exc:
                raise ModelFileError(f"{path}: {exc}") from exc
            arrays = _read_arrays(path, archive, members, state.expected_arrays(config), config["dtype"])
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError,
            NotImplementedError, RuntimeError) as exc:        # the last two: compressions, encryption zipfile lacks
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path} is not a readable fastdnn model (.npz) file: "
                             f"{type(exc).__name__}: {exc}") from exc
    try:
        return {"config": config, **state.check_arrays(config, arrays)}
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path} is damaged or inconsistent: {exc}") from exc


def _read_header(path, archive, members):
    info = members.get("header.npy")
    if info is None:
        raise ModelFileError(f"{path} is an .npz file but not a fastdnn model (no header)")
    if info.file_size > HEADER_MAX_BYTES:
        raise ModelFileError(f"{path}: its header declares {info.file_size} bytes; a fastdnn header is "
                             f"under {HEADER_MAX_BYTES}")
    with archive.open(info) as f:
        try:
            shape, _, dtype = _npy_header(path, f, "header")
        except ValueError as exc:               # NumPy could not parse the member's own header
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"{path} has a corrupted header: {exc}") from exc
        if dtype.hasobject:
            raise ModelFileError(f"{path} is not a readable fastdnn model (.npz) file: its header holds "
                                 "Python objects (a pickle), which fastdnn never loads")
        if dtype.kind != "U" or shape != () or dtype.itemsize > HEADER_MAX_BYTES:
            raise ModelFileError(f"{path} has a corrupted header (a {dtype} array of shape {shape})")
        data = f.read(dtype.itemsize)
    if len(data) != dtype.itemsize:
        raise ModelFileError(f"{path} is damaged: its header is truncated")
    try:
        return json.loads(str(np.frombuffer(data, dtype)[0]))
    except ValueError as exc:
        raise ModelFileError(f"{path} has a corrupted header: {exc}") from exc


def _read_arrays(path, archive, members, shapes, dtype):
    """Each expected member, after checking that the zip declares no other member and none larger than
    its array can be."""
    names = {f"{k}.npy" for k in shapes} | {"header.npy"}
    unknown = sorted(set(members) - names)
    if unknown:
        raise ModelFileError(f"{path} holds members {unknown} that are not part of this network")
    arrays = {}
    for name, shape in shapes.items():
        info = members.get(f"{name}.npy")
        if info is None:
            raise ModelFileError(f"{path} is damaged or inconsistent: array {name} is missing")
        limit = int(np.prod(shape)) * 8 + NPY_HEADER_MAX_BYTES       # 8: the widest dtype we read
        if info.file_size > limit:
            raise ModelFileError(f"{path}: member {name} declares {info.file_size} bytes; an array of shape "
                                 f"{shape} needs at most {limit}")
        with archive.open(info) as f:
            arrays[name] = _read_npy(path, f, name, shape)
    return arrays


def _read_npy(path, f, name, shape):
    """One .npy member whose own header must declare a numeric dtype and this array's shape (so
    nothing is allocated for a shape the architecture does not have)."""
    found, fortran, dtype = _npy_header(path, f, name)
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise ModelFileError(f"{path} is damaged or inconsistent: {name} has dtype {dtype}, not a number")
    if found != shape and not (name[0] == "b" and found == shape[:1]):
        raise ModelFileError(f"{path} is damaged or inconsistent: {name} has shape {found}, expected {shape}")
    array = np.empty(found, dtype, order="F" if fortran else "C")        # read into it: one copy in memory
    view = memoryview(array.reshape(-1, order="A")).cast("B")
    filled = 0
    while filled < len(view):
        n = f.readinto(view[filled:])
        if not n:
            raise ModelFileError(f"{path} is damaged: member {name} is truncated")
        filled += n
    return array


def _npy_header(path, f, name):
    """(shape, fortran_order, dtype) from a .npy member's own header (format 1.0 or 2.0), before its data."""
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ModelFileError(f"{path}: member {name} has .npy format version {version}")
    return readers[version](f)
