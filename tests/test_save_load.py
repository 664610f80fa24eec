"""Save, load, resume: atomic writes, no pickle, clear errors for damaged or foreign files."""
import os

import numpy as np
import pytest

import fastdnn
from fastdnn import ModelFileError, Network, datasets

from support import BACKENDS


def trained(backend="numpy", optimizer="adam", **fit):
    X, Y = datasets.moons(m=60, seed=1)
    net = Network([2, 6, 3, 1], ["leaky_relu", "tanh"], device=backend, dtype="float64", seed=0)
    net.fit(X, Y, learning_rate=0.01, optimizer=optimizer, **(fit or dict(iterations=5)))
    return net, X, Y


@pytest.mark.parametrize("name", BACKENDS)
def test_round_trip_keeps_everything(tmp_path, name):
    net, X, Y = trained(name)
    path = net.save(str(tmp_path / "net.npz"))
    back = fastdnn.load(path, device=name)
    assert back.layer_dims == net.layer_dims and back.dtype == net.dtype
    assert [a.key for a in back.activations] == [a.key for a in net.activations]
    assert back.loss == net.loss and back.optimizer == net.optimizer and back.engine.t == net.engine.t
    for key, value in net.parameters.items():
        np.testing.assert_array_equal(back.parameters[key], value)
    for a, b in zip(net.engine.states, back.engine.states):
        np.testing.assert_array_equal(back.backend.to_numpy(b), net.backend.to_numpy(a))
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))


@pytest.mark.parametrize("fit", [dict(iterations=7), dict(epochs=3, batch_size=16, seed=4)],
                         ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_resume_is_bit_identical_on_numpy(tmp_path, optimizer, fit):
    X, Y = datasets.moons(m=60, seed=1)
    whole = Network([2, 6, 1], device="numpy", dtype="float64", seed=0)
    twice = dict(fit, **({"iterations": 2 * fit["iterations"]} if "iterations" in fit else {"epochs": 2 * fit["epochs"]}))
    whole.fit(X, Y, learning_rate=0.05, optimizer=optimizer, **twice)
    first = Network([2, 6, 1], device="numpy", dtype="float64", seed=0)
    first.fit(X, Y, learning_rate=0.05, optimizer=optimizer, **fit)
    path = first.save(str(tmp_path / "half.npz"))
    resumed = fastdnn.load(path, device="numpy")
    resumed.fit(X, Y, learning_rate=0.05, **fit)
    for key, value in whole.parameters.items():
        np.testing.assert_array_equal(resumed.parameters[key], value)


def test_an_interrupted_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    net, _, _ = trained()
    path = str(tmp_path / "net.npz")
    net.save(path)
    before = open(path, "rb").read()

    def broken(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(KeyboardInterrupt):
        net.save(path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["net.npz"]


def test_truncated_corrupted_and_foreign_files_are_refused(tmp_path):
    net, _, _ = trained()
    good = open(net.save(str(tmp_path / "good.npz")), "rb").read()
    (tmp_path / "truncated.npz").write_bytes(good[:len(good) // 2])
    (tmp_path / "noise.npz").write_bytes(np.random.RandomState(0).bytes(2000))
    np.savez(tmp_path / "foreign.npz", weights=np.ones(3))
    np.savez(tmp_path / "pickled.npz", header=np.array([{"a": 1}], dtype=object))
    for name, message in [("truncated", "not a readable fastdnn model"), ("noise", "not a readable fastdnn model"),
                          ("foreign", "not a fastdnn model"), ("pickled", "not a readable fastdnn model")]:
        with pytest.raises(ModelFileError, match=message):
            fastdnn.load(str(tmp_path / f"{name}.npz"))
    with pytest.raises(FileNotFoundError):
        fastdnn.load(str(tmp_path / "missing.npz"))


def test_damaged_contents_and_unknown_versions_are_refused(tmp_path):
    net, _, _ = trained()
    data = dict(np.load(net.save(str(tmp_path / "a.npz"))))
    bad_shape = dict(data, W2=np.ones((4, 4)))
    np.savez(tmp_path / "shape.npz", **bad_shape)
    with pytest.raises(ModelFileError, match=r"damaged or inconsistent: W2 has shape \(4, 4\), expected \(3, 6\)"):
        fastdnn.load(str(tmp_path / "shape.npz"))
    newer = dict(data, header=np.array(str(data["header"]).replace('"version": 2', '"version": 99')))
    np.savez(tmp_path / "newer.npz", **newer)
    with pytest.raises(ModelFileError, match="format version 99; this fastdnn reads version 1 or 2"):
        fastdnn.load(str(tmp_path / "newer.npz"))


def test_load_onto_cuda_falls_back_with_the_warning(tmp_path):
    net, X, _ = trained()
    with pytest.warns(fastdnn.DeviceFallbackWarning):
        back = fastdnn.load(net.save(str(tmp_path / "n.npz")), device="cuda")
    assert back.device == "cpu"


def _rewritten(tmp_path, name, good, header=None, compression=None, flag=None, **arrays):
    """good's file with its header (a .npy member's bytes), some arrays, or the zip's compression method /
    general-purpose flags replaced: what a hostile or damaged file can hold."""
    import io
    import zipfile
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    path = tmp_path / f"{name}.npz"
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            if n == "header.npy" and header is not None:
                data = header
            elif n[:-4] in arrays:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, arrays[n[:-4]])
                data = buffer.getvalue()
            z.writestr(n, data)
    raw = bytearray(path.read_bytes())
    for signature, flags_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        i = raw.find(signature)
        while i >= 0:
            if flag is not None:
                raw[i + flags_at] |= flag
            if compression is not None:
                raw[i + method_at:i + method_at + 2] = compression.to_bytes(2, "little")
            i = raw.find(signature, i + 4)
    path.write_bytes(bytes(raw))
    return str(path)


def test_hostile_headers_counters_and_members_are_refused_with_the_reason(tmp_path):
    """Each a ModelFileError naming what is wrong, before anything large is allocated or built: a header
    whose own .npy header declares 10¹¹ characters (a 400-byte file), step counts beyond int64, a random
    generator state out of range, an encrypted member or one in a compression zipfile cannot read, a
    float64 weight beyond float32's range in a float32 network (it would load as inf), softmax as a
    hidden activation (Network refuses it), and a JSON true as the version."""
    import json
    import struct
    net, _, _ = trained()
    good = net.save(str(tmp_path / "good.npz"))
    config = json.loads(str(np.load(good)["header"]))

    def header(**changes):
        import io
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.array(json.dumps({**config, **changes})))
        return buffer.getvalue()
    huge = b"{'descr': '<U1', 'fortran_order': False, 'shape': (100000000000,), }"
    huge += b" " * (63 - (10 + len(huge)) % 64) + b"\n"
    cases = [
        ("huge", dict(header=b"\x93NUMPY\x01\x00" + struct.pack("<H", len(huge)) + huge + b"abcd"),
         "corrupted header"),
        ("iteration", dict(header=header(iteration=2**63)), r"iteration must be an integer in \[0, 2\*\*62\)"),
        ("rng", dict(header=header(rng={**config["rng"], "state": {"state": 2**300, "inc": 1}})), "rng"),
        ("encrypted", dict(flag=1), "not a readable fastdnn model"),
        ("compression", dict(compression=99), "not a readable fastdnn model"),
        ("range", dict(header=header(dtype="float32"), W1=np.full((6, 2), 1e300)),
         r"W1 contains NaN or infinity \(as float32\)"),
        ("softmax", dict(header=header(activations=[["softmax"], ["tanh"], ["sigmoid"]])),
         "'softmax' is only allowed as the output activation"),
        ("version", dict(header=header(version=True)), "format version True"),
    ]
    for name, changes, message in cases:
        with pytest.raises(ModelFileError, match=message):
            fastdnn.load(_rewritten(tmp_path, name, good, **changes), device="numpy")
    assert fastdnn.load(_rewritten(tmp_path, "same", good), device="numpy").iteration == net.iteration


def test_the_callers_mistakes_are_not_blamed_on_the_file(tmp_path):
    """A bad device is the caller's error, raised as for Network; a save into a missing folder names the
    path given, not the hidden temporary beside it."""
    net, _, _ = trained()
    good = net.save(str(tmp_path / "good.npz"))
    with pytest.raises(ValueError, match="unknown device 'tpu'") as e:
        fastdnn.load(good, device="tpu")
    assert not isinstance(e.value, ModelFileError)
    missing = str(tmp_path / "no" / "net.npz")
    with pytest.raises(FileNotFoundError) as e:
        net.save(missing)
    assert e.value.filename == missing
