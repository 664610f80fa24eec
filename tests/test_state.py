"""State dicts, pickling, and files that are checked to the last byte: every unreadable or hostile file
is a ModelFileError naming the problem, nothing is decompressed beyond the network's own size, and files
are replaced the way other tools replace them."""
import copy
import io as pyio
import json
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastdnn
from fastdnn import ModelFileError, Network, datasets

from support import BACKENDS


def trained(backend="numpy", optimizer="adam", **kw):
    X, Y = datasets.moons(m=80, seed=1)
    net = Network([2, 6, 3, 1], device=backend, dtype="float64", seed=4, keep_prob=kw.pop("keep_prob", 1.0))
    net.fit(X, Y, learning_rate=0.01, epochs=3, batch_size=16, optimizer=optimizer, **kw)
    return net, X, Y


def same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["config"] == sb["config"]
    assert sa.keys() == sb.keys()
    for k in sa:
        if k != "config":
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "state_dict"])
def test_a_copy_trains_on_bit_identically(backend, how):
    net, X, Y = trained(backend.name, keep_prob=0.8)
    if how == "pickle":
        twin = pickle.loads(pickle.dumps(net))
    elif how == "deepcopy":
        twin = copy.deepcopy(net)
    else:
        twin = Network.from_state_dict(net.state_dict(), device=backend.name)
    assert twin.backend.name == net.backend.name and twin.seed == net.seed
    same(net, twin)
    for n in (net, twin):
        n.fit(X, Y, learning_rate=0.01, epochs=2, batch_size=16, optimizer="adam")
    same(net, twin)
    np.testing.assert_array_equal(net.forward(X), twin.forward(X))


def test_a_state_dict_is_plain_data_and_moves_between_backends():
    net, X, _ = trained()
    state = net.state_dict()
    json.dumps(state["config"])
    assert all(type(v) is np.ndarray for k, v in state.items() if k != "config")
    for name in BACKENDS:
        other = Network.from_state_dict(state, device=name)
        np.testing.assert_allclose(other.forward(X), net.forward(X), rtol=1e-12)
        assert other.iteration == net.iteration and other.epoch == net.epoch and other.optimizer == net.optimizer


def test_unpickling_where_the_backend_is_missing_falls_back_with_the_warning(monkeypatch):
    net, X, _ = trained("numpy")
    data = pickle.dumps(net)
    from fastdnn import backends
    monkeypatch.setitem(backends._REGISTRY, "numpy", ("fastdnn.no_such_module", "X", "cpu"))
    with pytest.warns(fastdnn.DeviceFallbackWarning, match="backend 'numpy' unavailable"):
        back = pickle.loads(data)
    np.testing.assert_allclose(back.forward(X), net.forward(X), rtol=1e-12)


# --- hostile and damaged files -------------------------------------------------------------------------
def saved(tmp_path, optimizer="adam"):
    net, _, _ = trained(optimizer=optimizer)
    path = str(tmp_path / "good.npz")
    net.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return path, json.loads(str(arrays.pop("header"))), arrays


def write(tmp_path, name, header, arrays):
    path = str(tmp_path / name)
    np.savez(path, header=np.array(header if isinstance(header, str) else json.dumps(header)), **arrays)
    return path


BAD_HEADERS = {
    "a JSON list": lambda h: [1, 2],
    "iteration a string": lambda h: {**h, "iteration": "x"},
    "iteration negative": lambda h: {**h, "iteration": -5},
    "epoch missing": lambda h: {k: v for k, v in h.items() if k != "epoch"},
    "optimizer_step a float": lambda h: {**h, "optimizer_step": 1.5},
    "optimizer_step past iteration": lambda h: {**h, "optimizer_step": h["iteration"] + 1},
    "l2 a string": lambda h: {**h, "l2": "a"},
    "l2 negative": lambda h: {**h, "l2": -1},
    "keep_prob too short": lambda h: {**h, "keep_prob": [1.0]},
    "keep_prob zero": lambda h: {**h, "keep_prob": [0, 1]},
    "rng garbage": lambda h: {**h, "rng": {"bit_generator": "PCG64", "state": 3}},
    "rng not an object": lambda h: {**h, "rng": 7},
    "seed too large": lambda h: {**h, "seed": 2**40},
    "unknown activation": lambda h: {**h, "activations": [["swish"]] * 3},
    "unknown optimizer": lambda h: {**h, "optimizer": "sgd"},
    "bad optimizer argument": lambda h: {**h, "optimizer_args": {"beta1": 2.0}},
    "unknown optimizer argument": lambda h: {**h, "optimizer_args": {"gamma": 2.0}},
    "layer_dims not ints": lambda h: {**h, "layer_dims": [2, "6", 3, 1]},
    "dtype float16": lambda h: {**h, "dtype": "float16"},
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_every_bad_header_field_is_a_model_file_error(tmp_path, case):
    _, header, arrays = saved(tmp_path)
    path = write(tmp_path, "bad.npz", BAD_HEADERS[case](header), arrays)
    with pytest.raises(ModelFileError):
        fastdnn.load(path)


def test_bad_arrays_are_model_file_errors(tmp_path):
    _, header, arrays = saved(tmp_path)
    cases = {
        "an extra W4": (dict(arrays, W4=np.ones((1, 1))), "not part of"),
        "a missing b2": ({k: v for k, v in arrays.items() if k != "b2"}, "b2"),
        "a NaN Adam state": (dict(arrays, state0=np.full_like(arrays["state0"], np.nan)), "NaN"),
        "a negative second moment": (dict(arrays, state1=-np.ones_like(arrays["state1"])), "negative"),
        "a broadcastable (1,) state": (dict(arrays, state0=np.zeros(1)), "state0 has shape"),
        "a string array": (dict(arrays, W1=np.array(["a"])), "dtype"),
        "an object array": (dict(arrays, W1=np.array([{}], dtype=object)), "dtype"),
    }
    for name, (bad, message) in cases.items():
        path = write(tmp_path, "bad.npz", header, bad)
        with pytest.raises(ModelFileError, match=message):
            fastdnn.load(path)


def test_other_files_are_model_file_errors(tmp_path):
    npy = str(tmp_path / "a.npy")
    np.save(npy, np.ones(3))
    with pytest.raises(ModelFileError, match="not a readable fastdnn model"):
        fastdnn.load(npy)
    path, header, arrays = saved(tmp_path)
    with pytest.raises(ModelFileError, match="corrupted header"):
        fastdnn.load(write(tmp_path, "h.npz", "{not json", arrays))
    with zipfile.ZipFile(str(tmp_path / "extra.npz"), "w") as z:
        with zipfile.ZipFile(path) as good:
            for info in good.infolist():
                z.writestr(info, good.read(info))
        z.writestr("payload.bin", b"x" * 10)
    with pytest.raises(ModelFileError, match=r"members \['payload.bin'\]"):
        fastdnn.load(str(tmp_path / "extra.npz"))


def test_an_array_declaring_a_huge_shape_allocates_nothing(tmp_path):
    path, header, arrays = saved(tmp_path)
    buffer = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10**6, 10**6)})
    with zipfile.ZipFile(str(tmp_path / "huge.npz"), "w") as z:
        with zipfile.ZipFile(path) as good:
            for info in good.infolist():
                z.writestr(info, buffer.getvalue() if info.filename == "W1.npy" else good.read(info))
    tracemalloc.start()
    with pytest.raises(ModelFileError, match=r"W1 has shape \(1000000, 1000000\)"):
        fastdnn.load(str(tmp_path / "huge.npz"))
    assert tracemalloc.get_traced_memory()[1] < 8 << 20
    tracemalloc.stop()


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_deflated_bomb_is_refused_before_it_is_decompressed(tmp_path):
    path, header, arrays = saved(tmp_path)
    with zipfile.ZipFile(str(tmp_path / "bomb.npz"), "w", compression=zipfile.ZIP_DEFLATED) as z:
        with zipfile.ZipFile(path) as good:
            for info in good.infolist():
                if info.filename != "state0.npy":
                    z.writestr(info.filename, good.read(info))
        z.writestr("state0.npy", b"\0" * (64 << 20))        # a 64 MB member in ~64 KB
    assert os.path.getsize(tmp_path / "bomb.npz") < 1 << 20
    tracemalloc.start()
    with pytest.raises(ModelFileError, match="declares"):
        fastdnn.load(str(tmp_path / "bomb.npz"))
    assert tracemalloc.get_traced_memory()[1] < 8 << 20
    tracemalloc.stop()


# --- replacing files like other tools ---------------------------------------------------------------------
def test_a_new_file_follows_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path):
    net, _, _ = trained()
    old = os.umask(0o022)
    try:
        path = str(tmp_path / "n.npz")
        net.save(path)
        assert os.stat(path).st_mode & 0o777 == 0o644
        os.chmod(path, 0o640)
        net.save(path)
        assert os.stat(path).st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_saving_through_a_symlink_replaces_its_target(tmp_path):
    net, X, _ = trained()
    target, link = tmp_path / "real.npz", tmp_path / "link.npz"
    net.save(str(target))
    os.symlink(target, link)
    net.fit(X, datasets.moons(m=80, seed=1)[1], learning_rate=0.01, iterations=2)
    net.save(str(link))
    assert os.path.islink(link)
    same(fastdnn.load(str(target)), net)


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    net, _, _ = trained()
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else True)
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    net.save(str(tmp_path / "n.npz"))
    assert synced[-1] is True and False in synced          # the file, then its folder


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_member_twice_is_refused(tmp_path):
    path, header, arrays = saved(tmp_path)
    with zipfile.ZipFile(str(tmp_path / "twice.npz"), "w") as z:
        with zipfile.ZipFile(path) as good:
            for info in good.infolist():
                z.writestr(info.filename, good.read(info))
            z.writestr("W1.npy", good.read("W1.npy"))
    with pytest.raises(ModelFileError, match="two members of the same name"):
        fastdnn.load(str(tmp_path / "twice.npz"))
