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
