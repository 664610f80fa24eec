"""ONNX export: a trained Network as a standard ONNX graph (Gemm + activation per layer, Add for skips).

The course's layout is X (n0, m), one example per column; ONNX consumers (onnxruntime, ONNX-based
servers, converters) expect one example per row. The exported graph therefore takes the transpose:

    input  X              ("batch", n0)   float32 or float64, as the network's dtype
    output probabilities  ("batch", nL)   A[L]ᵀ, i.e. net.forward(X.T).T
    output label          ("batch", nL) int64 for a sigmoid output (A > 0.5), ("batch", 1) int64 for
                          softmax (argmax per example), i.e. net.predict(X.T).T; absent for
                          regression outputs (linear, tanh)

Layer l is Z[l]ᵀ = Gemm(A[l-1]ᵀ, W[l], b[l], transB=1) = A[l-1]ᵀ · W[l]ᵀ + b[l], with W[l] stored as
the (n_l, n_{l-1}) initializer ``W{l}`` and b[l] as the 1-D (n_l,) initializer ``b{l}`` (broadcast
over the batch rows); a skip connection a[j] -> z[l] adds A[j]ᵀ (equal widths) or
MatMul(A[j]ᵀ, Ws{j}_{l}) with the (n_j, n_l) initializer Wsᵀ — the learned projection, or for
"pad" the fixed padding map (ones on the diagonal: zero-padding or truncation, exact for finite
values); then A[l]ᵀ = g[l](Z[l]ᵀ): Sigmoid, Tanh, Relu, Identity (linear),
Softmax(axis=1) (the per-example axis of the transposed layout), and for leaky_relu
Where(Z > 0, Z, Z * slope), the formula fastdnn computes.

leaky_relu is not exported as LeakyRelu, whose ``alpha`` is a 32-bit float attribute that would
round the slope of a float64 network (0.01 -> 0.009999999776), nor as PRelu with a slope tensor,
which onnxruntime's CPU provider (1.19 to 1.32) runs in float64 only at opsets 16 to 18. Greater,
Mul and Where, like every other op used here, run in float32 and float64 there at every opset from
13 on (checked by tests/test_onnx.py).

``import fastdnn`` does not import onnx; it is imported when an export runs (the ``onnx`` extra).
"""
import json

import numpy as np

from . import io

DEFAULT_OPSET = 17
MIN_OPSET = 13          # Softmax(axis=1) means "per example" from opset 13 on

_TENSOR_TYPES = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE"}


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx package: pip install 'fastdnn[onnx]'") from exc
    return onnx


# --- one exporter per activation name: (onnx, activation, Z, A, dtype) -> (nodes, initializers) -----
def _unary(op_type, **attributes):
    def export(onnx, activation, Z, A, dtype):
        return [onnx.helper.make_node(op_type, [Z], [A], name=f"{A}_{op_type}", **attributes)], []
    return export


def _leaky_relu(onnx, activation, Z, A, dtype):
    """A = Where(Z > 0, Z, Z * slope), with slope and 0 as scalar tensors of the network's dtype."""
    make_node, from_array = onnx.helper.make_node, onnx.numpy_helper.from_array
    slope, zero, positive, scaled = f"{A}_slope", f"{A}_zero", f"{A}_positive", f"{A}_scaled"
    nodes = [make_node("Greater", [Z, zero], [positive], name=f"{A}_Greater"),
             make_node("Mul", [Z, slope], [scaled], name=f"{A}_Mul"),
             make_node("Where", [positive, Z, scaled], [A], name=f"{A}_Where")]
    return nodes, [from_array(np.array(activation.slope, dtype=dtype), slope),
                   from_array(np.array(0, dtype=dtype), zero)]


EXPORTERS = {
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "relu": _unary("Relu"),
    "leaky_relu": _leaky_relu,
    "linear": _unary("Identity"),
    "softmax": _unary("Softmax", axis=1),
}


def _check_opset(onnx, opset):
    if opset is None:
        return DEFAULT_OPSET
    newest = onnx.defs.onnx_opset_version()
    integer = isinstance(opset, (int, np.integer)) and not isinstance(opset, bool)
    if not (integer and MIN_OPSET <= opset <= newest):
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (the newest this onnx "
                         f"knows); got {opset!r}")
    return int(opset)


def _check_activations(net):
    """Raise, before anything is built or written, for an activation without an ONNX form."""
    for l, activation in enumerate(net.activations, 1):
        name = getattr(activation, "name", None)
        if name not in EXPORTERS:
            listed = ", ".join(repr(n) for n in sorted(EXPORTERS))
            raise ValueError(f"cannot export layer {l} of {net.L} to ONNX: activation {name!r} has no "
                             f"ONNX form; exportable activations: {listed}")


def _folded(net):
    """W[l], b[l] of every layer in float64, a batch-normalized layer's folded in: outside training it is
    the affine map γ·(W·a − μ)/√(σ² + ε) + β = W'·a + b' with W' = s·W, b' = β − s·μ, s = γ/√(σ² + ε)."""
    from ._layout import BN_EPSILON
    p = {k: np.asarray(v, np.float64) for k, v in net.parameters.items()}
    out = {}
    for l in range(1, net.L + 1):
        if l in net.batch_norm:
            scale = p[f"gamma{l}"] / np.sqrt(p[f"running_var{l}"] + BN_EPSILON)
            out[f"W{l}"], out[f"b{l}"] = scale * p[f"W{l}"], p[f"beta{l}"] - scale * p[f"running_mean{l}"]
        else:
            out[f"W{l}"], out[f"b{l}"] = p[f"W{l}"], p[f"b{l}"]
    return out


def _skip(onnx, net, j, l, Z_in, Z, dtype):
    """Nodes and initializers of Z[l]ᵀ = Z_in + A[j]ᵀ (equal widths) or + A[j]ᵀ · Wsᵀ (a learned
    projection, or the fixed padding map)."""
    make_node = onnx.helper.make_node
    S = "X" if j == 0 else f"A{j}"
    n_j, n_l = net.layer_dims[j], net.layer_dims[l]
    if n_j == n_l:
        return [make_node("Add", [Z_in, S], [Z], name=f"{Z}_Add")], []
    name = f"Ws{j}_{l}"
    Ws = net.parameters[name] if net.projection == "learned" else np.eye(n_l, n_j)
    projected = f"{Z}_skip"
    nodes = [make_node("MatMul", [S, name], [projected], name=f"{projected}_MatMul"),
             make_node("Add", [Z_in, projected], [Z], name=f"{Z}_Add")]
    return nodes, [onnx.numpy_helper.from_array(np.ascontiguousarray(np.asarray(Ws).T, dtype=dtype), name)]


def _layers(onnx, net, dtype):
    """Nodes and initializers of A[l]ᵀ = g[l](A[l-1]ᵀ · W[l]ᵀ + b[l] (+ a skip's)) for l = 1..L; the
    last A is named 'probabilities'."""
    parameters, nodes, initializers = _folded(net), [], []
    into = {k: j for j, k in net.skips}
    A_prev = "X"
    for l, activation in enumerate(net.activations, 1):
        W = np.ascontiguousarray(parameters[f"W{l}"], dtype=dtype)
        b = np.ascontiguousarray(parameters[f"b{l}"], dtype=dtype).reshape(-1)
        initializers += [onnx.numpy_helper.from_array(W, f"W{l}"), onnx.numpy_helper.from_array(b, f"b{l}")]
        Z, A = f"Z{l}", ("probabilities" if l == net.L else f"A{l}")
        Z_gemm = f"{Z}_gemm" if l in into else Z
        nodes.append(onnx.helper.make_node("Gemm", [A_prev, f"W{l}", f"b{l}"], [Z_gemm], name=f"{Z}_Gemm",
                                           transB=1))
        if l in into:
            more_nodes, more_initializers = _skip(onnx, net, into[l], l, Z_gemm, Z, dtype)
            nodes += more_nodes
            initializers += more_initializers
        more_nodes, more_initializers = EXPORTERS[activation.name](onnx, activation, Z, A, dtype)
        nodes += more_nodes
        initializers += more_initializers
        A_prev = A
    return nodes, initializers


def _label(onnx, net, dtype):
    """Nodes, initializers and output info of 'label' = net.predict(X.T).T, or None for regression."""
    make_node, TensorProto = onnx.helper.make_node, onnx.TensorProto
    name = net.activations[-1].name
    if name == "sigmoid":
        half = onnx.numpy_helper.from_array(np.array(0.5, dtype=dtype), "half")
        nodes = [make_node("Greater", ["probabilities", "half"], ["above_half"], name="label_Greater"),
                 make_node("Cast", ["above_half"], ["label"], name="label_Cast", to=TensorProto.INT64)]
        return nodes, [half], ["batch", net.layer_dims[-1]]
    if name == "softmax":
        node = make_node("ArgMax", ["probabilities"], ["label"], name="label_ArgMax", axis=1, keepdims=1)
        return [node], [], ["batch", 1]
    return None


def to_model(net, opset=None):
    """The ONNX ModelProto of net: X ("batch", n0) -> probabilities ("batch", nL) = A[L]ᵀ.

    The graph takes examples as rows, the transpose of the course's X (n0, m); see the module
    docstring for the layers and the optional 'label' output. Checked with onnx.checker."""
    onnx = _import_onnx()
    helper, TensorProto = onnx.helper, onnx.TensorProto
    opset = _check_opset(onnx, opset)
    _check_activations(net)
    dtype = np.dtype(net.dtype)
    if dtype not in _TENSOR_TYPES:
        raise ValueError(f"ONNX export supports float32 and float64 networks; got dtype {dtype}")
    elem = getattr(TensorProto, _TENSOR_TYPES[dtype])
    n0, nL = net.layer_dims[0], net.layer_dims[-1]

    nodes, initializers = _layers(onnx, net, dtype)
    outputs = [helper.make_tensor_value_info("probabilities", elem, ["batch", nL])]
    label = _label(onnx, net, dtype)
    if label is not None:
        label_nodes, label_initializers, shape = label
        nodes += label_nodes
        initializers += label_initializers
        outputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, shape))
    graph = helper.make_graph(nodes, "fastdnn_network",
                              [helper.make_tensor_value_info("X", elem, ["batch", n0])], outputs,
                              initializer=initializers)
    opset_id = helper.make_opsetid("", opset)
    model = helper.make_model(graph, opset_imports=[opset_id], producer_name="fastdnn",
                              producer_version=_version(),
                              ir_version=helper.find_min_ir_version_for([opset_id]),
                              doc_string="fastdnn Network; X (batch, n0) is the course's X (n0, m) "
                                         "transposed, probabilities (batch, nL) is A[L] transposed")
    helper.set_model_props(model, {
        "layout": "examples as rows: X (batch, n0) = course X (n0, m) transposed",
        "layer_dims": json.dumps(list(net.layer_dims)),
        "activations": json.dumps([list(a.key) for a in net.activations]),
        "skip": json.dumps([list(pair) for pair in net.skips]),
        "loss": net.loss.name,
        "dtype": dtype.name,
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(net, path, opset=None):
    """Write net to path as ONNX: X ("batch", n0) -> probabilities ("batch", nL) = net.forward(X.T).T.

    ONNX consumers take examples as rows, so the graph's input is the transpose of the course's
    X (n0, m): run it on X.T and transpose the output back to compare with net.forward(X). Layer l
    is Gemm(A[l-1]ᵀ, W[l] (n_l, n_{l-1}), b[l] (n_l,), transB=1) then the activation; a sigmoid or
    softmax network also has a 'label' output equal to net.predict(X.T).T. Tensors keep the
    network's dtype (float32 or float64). ``opset`` defaults to DEFAULT_OPSET (17); any from
    MIN_OPSET (13) to the newest the installed onnx knows is accepted.

    The file is written atomically (a temporary file in the same folder, fsync, rename): a failed
    export leaves no temporary behind and any earlier file at path untouched. Returns path.
    Needs the ``onnx`` extra (pip install 'fastdnn[onnx]'); run the file with onnxruntime."""
    data = to_model(net, opset).SerializeToString()
    return io.replace_file(path, lambda f: f.write(data))


def _version():
    from . import __version__
    return __version__
