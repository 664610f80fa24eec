"""ONNX export: the graph run in onnxruntime equals net.forward(X).T for every activation, output and
dtype; the model passes onnx's checker at the declared opset; the file is written atomically."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastdnn
from fastdnn import datasets, onnx_export
from fastdnn.activations import ACTIVATIONS, Activation, LeakyReLU

from support import BACKENDS, OUTPUTS

RTOL = {"float32": 1e-5, "float64": 1e-12}
HIDDEN = [name for name, cls in ACTIVATIONS.items() if cls.elementwise]
N_OUT = {"sigmoid": 2, "softmax": 3, "linear": 2, "tanh": 1}
SLOPE = 0.2       # not the default, and not exact in float32: a slope rounded to float32 shows in float64


@pytest.fixture
def onnx():
    return pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'fastdnn[onnx]'")


@pytest.fixture
def ort(onnx):
    return pytest.importorskip("onnxruntime", reason="running exported graphs needs onnxruntime: "
                                                     "pip install 'fastdnn[onnx]'")


def hidden_activation(name):
    return LeakyReLU(SLOPE) if name == "leaky_relu" else name


def network(hidden="relu", output="sigmoid", loss=None, dtype="float64", dims=(4, 6, 5), device="numpy",
            seed=0):
    """A network with random W and b (biases far from zero, so a dropped bias shows)."""
    rng = np.random.RandomState(seed)
    layer_dims = list(dims) + [N_OUT[output]]
    parameters = {}
    for l in range(1, len(layer_dims)):
        parameters[f"W{l}"] = rng.randn(layer_dims[l], layer_dims[l - 1]) / np.sqrt(layer_dims[l - 1])
        parameters[f"b{l}"] = rng.randn(layer_dims[l], 1) * 0.5
    return fastdnn.Network(layer_dims, hidden_activation(hidden), output, loss, init=parameters,
                           device=device, dtype=dtype)


def inputs(n0, m, seed=1):
    return np.random.RandomState(seed).randn(n0, m) * 2


def run(ort, path, X, dtype):
    """The graph's outputs {name: array} on X (n0, m), fed as X.T (m, n0) in dtype."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": np.ascontiguousarray(X.T, dtype=dtype)})))


def assert_relative(actual, expected, dtype):
    """|actual - expected| <= rtol (|expected| + max |expected|): relative to the output's scale."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    rtol = RTOL[dtype]
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol,
                               atol=rtol * scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output,loss", OUTPUTS, ids=[o for o, _ in OUTPUTS])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_onnxruntime_matches_forward(ort, tmp_path, hidden, output, loss, dtype):
    net = network(hidden, output, loss, dtype)
    X = inputs(4, 37)
    path = onnx_export.to_onnx(net, str(tmp_path / "net.onnx"))
    out = run(ort, path, X, dtype)
    P = out["probabilities"]
    assert P.dtype == np.dtype(dtype)
    assert_relative(P, net.forward(X).T, dtype)
    if output == "sigmoid":
        np.testing.assert_array_equal(out["label"], (P > 0.5).astype(np.int64))
    elif output == "softmax":
        np.testing.assert_array_equal(out["label"], np.argmax(P, axis=1).reshape(-1, 1))
    else:
        assert set(out) == {"probabilities"}
    if "label" in out:
        assert out["label"].dtype == np.int64
        clear = np.abs(net.forward(X).T - 0.5).min(axis=1) > 1e-4     # no example on a boundary
        np.testing.assert_array_equal(out["label"][clear], net.predict(X).T[clear])


@pytest.mark.parametrize("m", [1, 2, 300])
def test_any_batch_size_and_one_feature_one_unit(ort, tmp_path, m):
    net = network("tanh", "tanh", dims=(1, 1), dtype="float32")    # [1, 1, 1]
    X = inputs(1, m)
    out = run(ort, onnx_export.to_onnx(net, str(tmp_path / "n.onnx")), X, "float32")
    assert_relative(out["probabilities"], net.forward(X).T, "float32")


@pytest.mark.parametrize("device", BACKENDS)
def test_export_from_every_backend(ort, tmp_path, device):
    net = network("leaky_relu", "softmax", dtype="float32", device=device)
    X = inputs(4, 20)
    out = run(ort, onnx_export.to_onnx(net, str(tmp_path / "n.onnx")), X, "float32")
    assert_relative(out["probabilities"], np.asarray(net.forward(X)).T, "float32")


def test_trained_network_matches(ort, tmp_path):
    X, Y = datasets.spirals(m=150)
    net = fastdnn.Network([2, 8, 3], "relu", "softmax", device="numpy", seed=2)
    net.fit(X, Y, learning_rate=0.5, iterations=200, verbose=0)
    out = run(ort, onnx_export.to_onnx(net, str(tmp_path / "spirals.onnx")), X, "float32")
    assert_relative(out["probabilities"], net.forward(X).T, "float32")
    np.testing.assert_array_equal(out["label"], net.predict(X).T)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_batch_normalized_network_exports_folded(ort, tmp_path, dtype):
    """Outside training a normalized layer is affine: exported as W' = s·W, b' = β − s·μ (s = γ/√(σ² + ε))."""
    X, Y = datasets.spirals(m=150)
    net = fastdnn.Network([2, 8, 8, 3], "relu", "softmax", device="numpy", seed=2, dtype=dtype,
                          batch_norm=[True, False])
    net.fit(X, Y, learning_rate=0.05, optimizer="adam", iterations=50, verbose=0)
    assert not np.allclose(net.parameters["running_var1"], 1)
    out = run(ort, onnx_export.to_onnx(net, str(tmp_path / "bn.onnx")), X, dtype)
    assert_relative(out["probabilities"], net.forward(X).T, dtype)


def test_a_residual_batch_normalized_network_exports(ort, tmp_path):
    """Skips into normalized layers: the folded layer's Gemm, then the skip's Add, then the activation."""
    X, Y = datasets.spirals(m=150)
    net = fastdnn.Network([2, 8, 8, 8, 8, 3], "relu", "softmax", device="numpy", seed=2, dtype="float64",
                          skip=2, batch_norm=True)
    net.fit(X, Y, learning_rate=0.05, optimizer="adam", iterations=50, verbose=0)
    out = run(ort, onnx_export.to_onnx(net, str(tmp_path / "res.onnx")), X, "float64")
    assert_relative(out["probabilities"], net.forward(X).T, "float64")


def test_graph_passes_the_checker_with_the_declared_layout(onnx, tmp_path):
    net = network("relu", "softmax", dtype="float64", dims=(4, 6, 5))
    model = onnx.load(onnx_export.to_onnx(net, str(tmp_path / "n.onnx")))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", onnx_export.DEFAULT_OPSET)]
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import))

    def shape(value):
        t = value.type.tensor_type
        return t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    DOUBLE, INT64 = onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64
    assert [(v.name, shape(v)) for v in model.graph.input] == [("X", (DOUBLE, ["batch", 4]))]
    assert [(v.name, shape(v)) for v in model.graph.output] == [
        ("probabilities", (DOUBLE, ["batch", 3])), ("label", (INT64, ["batch", 1]))]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for l, (n, n_prev) in enumerate([(6, 4), (5, 6), (3, 5)], 1):
        np.testing.assert_array_equal(inits[f"W{l}"], net.parameters[f"W{l}"])
        np.testing.assert_array_equal(inits[f"b{l}"], net.parameters[f"b{l}"].reshape(n))
        assert inits[f"W{l}"].shape == (n, n_prev) and inits[f"b{l}"].dtype == np.float64
    gemms = [node for node in model.graph.node if node.op_type == "Gemm"]
    assert [onnx.helper.get_node_attr_value(g, "transB") for g in gemms] == [1, 1, 1]
    softmax, = [node for node in model.graph.node if node.op_type == "Softmax"]
    assert onnx.helper.get_node_attr_value(softmax, "axis") == 1
    props = {p.key: p.value for p in model.metadata_props}
    assert props["loss"] == "ce" and props["dtype"] == "float64" and props["layer_dims"] == "[4, 6, 5, 3]"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,output", [("leaky_relu", "sigmoid"), ("relu", "softmax")])
@pytest.mark.parametrize("opset", [13, 17, 21])          # 21: the newest onnxruntime 1.19 runs
def test_declared_opset_is_the_graphs_and_runs(onnx, ort, tmp_path, opset, hidden, output, dtype):
    net = network(hidden, output, dtype=dtype)
    path = onnx_export.to_onnx(net, str(tmp_path / "n.onnx"), opset=opset)
    model = onnx.load(path)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    onnx.checker.check_model(model, full_check=True)
    X = inputs(4, 9)
    out = run(ort, path, X, dtype)
    assert_relative(out["probabilities"], net.forward(X).T, dtype)
    np.testing.assert_array_equal(out["label"], net.predict(X).T)


def test_the_model_in_memory_is_the_file(onnx, tmp_path):
    net = network("tanh", "linear", loss="mse")
    path = onnx_export.to_onnx(net, str(tmp_path / "n.onnx"))
    assert onnx_export.to_model(net).SerializeToString() == open(path, "rb").read()


@pytest.mark.parametrize("opset", [12, 10**6, 17.0, "17", True])
def test_bad_opset_is_refused_and_nothing_written(onnx, tmp_path, opset):
    with pytest.raises(ValueError, match=r"opset must be an integer from 13 to \d+"):
        onnx_export.to_onnx(network(), str(tmp_path / "n.onnx"), opset=opset)
    assert os.listdir(tmp_path) == []


class Swish(Activation):
    name = "swish"


def test_an_activation_without_onnx_form_is_named_and_nothing_is_written(onnx, tmp_path):
    net = network("relu", "sigmoid")
    path = tmp_path / "n.onnx"
    path.write_bytes(b"earlier model")
    net.activations[1] = Swish()
    with pytest.raises(ValueError, match=r"layer 2 of 3 .*activation 'swish' has no ONNX form; "
                                         r"exportable activations: 'leaky_relu', 'linear', 'relu', "
                                         r"'sigmoid', 'softmax', 'tanh'"):
        onnx_export.to_onnx(net, str(path))
    assert os.listdir(tmp_path) == ["n.onnx"] and path.read_bytes() == b"earlier model"


def test_every_registered_activation_has_an_onnx_form():
    assert set(ACTIVATIONS) <= set(onnx_export.EXPORTERS), set(ACTIVATIONS) - set(onnx_export.EXPORTERS)


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_an_interrupted_export_leaves_the_old_file_and_no_temporary(onnx, tmp_path, monkeypatch, where):
    path = tmp_path / "n.onnx"
    path.write_bytes(b"earlier model")

    def broken(*args):
        raise OSError(f"disk failed in {where}")

    monkeypatch.setattr(fastdnn.io.os, where, broken)           # the atomic write is io.replace_file
    with pytest.raises(OSError, match="disk failed"):
        onnx_export.to_onnx(network(), str(path))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["n.onnx"] and path.read_bytes() == b"earlier model"


def test_export_replaces_an_earlier_file_and_accepts_a_path_object(onnx, tmp_path):
    path = tmp_path / "n.onnx"
    path.write_bytes(b"earlier model")
    assert onnx_export.to_onnx(network(), path) == path
    assert os.listdir(tmp_path) == ["n.onnx"]
    onnx.checker.check_model(onnx.load(str(path)))


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'fastdnn\[onnx\]'"):
        onnx_export.to_onnx(network(), str(tmp_path / "n.onnx"))
    assert os.listdir(tmp_path) == []


def test_import_fastdnn_does_not_import_onnx():
    code = ("import sys, fastdnn, fastdnn.onnx_export; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastdnn.__file__))))
    assert result.stdout.strip() == "[]"


def test_fastdnn_train_writes_the_onnx_graph_too(onnx, tmp_path, capsys):
    from fastdnn.cli import main
    path = tmp_path / "m.onnx"
    assert main(["train", "--iterations", "5", "--device", "numpy", "--onnx", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(path)))
