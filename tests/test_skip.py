"""Skip (residual) connections a[l] -> z[k]: Z[k] = W[k]·A[k-1] + b[k] + S, S = A[l] (equal widths), Ws·A[l]
(projection "learned") or A[l] zero-padded / truncated ("pad"). Checked against a float64 forward and
backward written here (not fastdnn's code; activations from tests/oracle.py), by gradient checks, on
every backend x dtype (the GPU backends through the CuPy stand-in and their kernel bodies compiled for
the CPU), through fit, save/load, pickling and ``to``."""
import json
import pickle

import numpy as np
import pytest

import fastdnn
import oracle
from fastdnn import datasets
from support import BACKENDS, allocations, assert_close

ACTS = ["relu", "tanh", "sigmoid", "leaky_relu", "linear"]
X = np.random.default_rng(10).standard_normal((3, 13))
Y = (np.random.default_rng(11).random((1, 13)) > 0.5).astype(np.float64)
# Widths chosen so that every kind of skip occurs: (0, 2) 3 -> 6 (from X, padded up), (1, 3) 4 -> 5 (padded
# up; its gradient is the second into dA[1], added), (2, 4) 6 -> 4 (truncation), (1, 5) 4 -> 4 (identity; the
# first gradient into dA[1], written), (3, 6) 5 -> 1 (into the output layer).
DIMS = [3, 4, 6, 5, 4, 4, 1]
SKIPS = [(0, 2), (1, 3), (2, 4), (1, 5), (3, 6)]


# --- the oracle: a residual network's forward and backward, float64, written for these tests ----------------
def project(S, n, Ws=None):
    """What a skip adds to Z[k] (n rows): Ws·S, or S with zero rows appended / its last rows dropped."""
    if Ws is not None:
        return Ws @ S
    out = np.zeros((n, S.shape[1]))
    r = min(n, S.shape[0])
    out[:r] = S[:r]
    return out


def unproject(dZ, n_s, Ws=None):
    """The transpose of ``project``: the skip's share of dA[l] (n_s rows)."""
    if Ws is not None:
        return Ws.T @ dZ
    out = np.zeros((n_s, dZ.shape[1]))
    r = min(n_s, dZ.shape[0])
    out[:r] = dZ[:r]
    return out


def oracle_forward(params, X, acts, skips, masks=None):
    """([X, A1, ..., AL] as passed on (masked), [None, Z1, ..., ZL])."""
    L, into = len(acts), {k: l for l, k in skips}
    A, Z = [X], [None]
    for k in range(1, L + 1):
        z = params[f"W{k}"] @ A[k - 1] + params[f"b{k}"].reshape(-1, 1)
        if k in into:
            l = into[k]
            z = z + project(A[l], z.shape[0], params.get(f"Ws{l}_{k}"))
        Z.append(z)
        a = oracle.g(acts[k - 1], z)
        if masks and k in masks:
            a = a * masks[k]
        A.append(a)
    return A, Z


def oracle_run(params, X, Y, acts, skips, masks=None, l2=0.0):
    """(J, {'dW1': ..., 'dWs1_3': ...}, A[L]) of a network with skips; acts: L names (the output's last,
    sigmoid + bce or softmax + ce); masks {l: D[l]} (already scaled by 1/keep_prob) for dropout."""
    L, m = len(acts), X.shape[1]
    into = {k: l for l, k in skips}
    A, Z = oracle_forward(params, X, acts, skips, masks)
    AL = A[L]
    if acts[-1] == "softmax":
        J = -np.sum(Y * np.log(AL)) / m
    else:
        J = -np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m
    weights = [k for k in params if k.startswith("W")]
    J += l2 / (2 * m) * sum(np.sum(params[k] ** 2) for k in weights)
    grads = {}
    dA = [np.zeros_like(a) for a in A]       # ∂J/∂(what layer l passes on), summed over every consumer
    dZ = (AL - Y) / m
    for k in range(L, 0, -1):
        if k < L:
            d = dA[k] * masks[k] if masks and k in masks else dA[k]
            Ak = oracle.g(acts[k - 1], Z[k])
            dZ = oracle.dg_times(acts[k - 1], d, Z[k]) if acts[k - 1] != "sigmoid" else d * Ak * (1 - Ak)
        grads[f"dW{k}"] = dZ @ A[k - 1].T
        grads[f"db{k}"] = dZ.sum(axis=1, keepdims=True)
        dA[k - 1] = dA[k - 1] + params[f"W{k}"].T @ dZ
        if k in into:
            l = into[k]
            Ws = params.get(f"Ws{l}_{k}")
            if Ws is not None:
                grads[f"dWs{l}_{k}"] = dZ @ A[l].T
            dA[l] = dA[l] + unproject(dZ, A[l].shape[0], Ws)
    for k in weights:
        grads["d" + k] += l2 / m * params[k]
    return J, grads, AL


def as64(net):
    return {k: v.astype(np.float64) for k, v in net.parameters.items()}


def net_of(device="numpy", dtype="float64", dims=DIMS, skips=SKIPS, **kw):
    kw.setdefault("hidden_activation", "tanh")
    return fastdnn.Network(dims, device=device, dtype=dtype, seed=3, skip=skips, **kw)


# --- the API ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims, skip, expected", [
    ([2, 4, 4, 4, 1], 2, [(1, 3)]),
    ([2, 4, 4, 4, 4, 4, 4, 1], 2, [(1, 3), (3, 5)]),
    ([2, 4, 4, 4, 4, 4, 4, 4, 1], 2, [(1, 3), (3, 5), (5, 7)]),
    ([2, 4, 4, 4, 4, 4, 4, 4, 1], 3, [(1, 4), (4, 7)]),
    ([2, 4, 1], None, []), ([2, 4, 1], 0, []), ([2, 4, 1], [], []),
    ([2, 4, 4, 1], [(1, 3), [0, 2]], [(0, 2), (1, 3)]),       # explicit pairs come back sorted by k
], ids=["L4-every-2", "L7-every-2", "L8-every-2", "L8-every-3", "none", "zero", "empty-list", "explicit"])
def test_skip_spellings_give_these_connections(dims, skip, expected):
    assert fastdnn.Network(dims, device="numpy", seed=0, skip=skip).skips == expected


@pytest.mark.parametrize("skip, message", [
    ([(1, 2)], r"skip connection \(1, 2\): k must be at least l \+ 2"),
    ([(2, 1)], r"skip connection \(2, 1\): k must be at least l \+ 2"),
    ([(-1, 2)], r"skip connection \(-1, 2\) is out of range: need 0 <= l and k <= L = 4"),
    ([(1, 5)], r"skip connection \(1, 5\) is out of range"),
    ([(1, 3), (1, 3)], r"skip connection \(1, 3\) is given twice"),
    ([(0, 3), (1, 3)], r"skip connections \(0, 3\) and \(1, 3\) both go into layer 3"),
    ([(1, 3.0)], r"skip connection \(1, 3.0\) must be a pair of integers"),
    ([(1, 3, 4)], r"must be a pair of integers"),
    ([(True, 3)], r"must be a pair of integers"),
    (1, r"skip=1: a residual block spans at least 2 layers"),
    (-2, r"skip=-2: a residual block spans at least 2 layers"),
    (4, r"skip=4 needs at least 5 hidden layers .* has 3"),
    (True, r"skip must be an int .* or a list of pairs"),
    ("2", r"skip must be an int"),
])
def test_bad_skip_specs_are_refused_naming_the_pair_and_the_reason(skip, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fastdnn.Network([2, 4, 4, 4, 1], device="numpy", seed=0, skip=skip)


def test_an_unknown_projection_lists_the_choices():
    with pytest.raises(ValueError, match="unknown projection 'zero'; expected one of 'learned', 'pad'"):
        fastdnn.Network([2, 4, 4, 4, 1], device="numpy", skip=2, projection="zero")


def test_learned_projections_exist_only_where_widths_differ_and_start_as_the_padding_map():
    net = net_of()
    names = sorted(k for k in net.parameters if k.startswith("Ws"))
    assert names == ["Ws0_2", "Ws1_3", "Ws2_4", "Ws3_6"]              # (1, 5) is 4 -> 4: the identity
    np.testing.assert_array_equal(net.parameters["Ws2_4"], np.eye(4, 6))
    assert net.parameters["Ws0_2"].dtype == np.float64
    assert not [k for k in net_of(projection="pad").parameters if k.startswith("Ws")]
    grads = net.gradients(X, Y)
    assert sorted(k for k in grads if k.startswith("dWs")) == ["dWs0_2", "dWs1_3", "dWs2_4", "dWs3_6"]
    assert "skip=[(0, 2), (1, 3), (2, 4), (1, 5), (3, 6)]" in repr(net)


def test_a_network_without_skips_is_unchanged():
    plain = fastdnn.Network([3, 4, 4, 1], device="numpy", dtype="float64", seed=3)
    assert sorted(plain.parameters) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert plain.engine.theta.shape == (4 * 3 + 4 + 4 * 4 + 4 + 4 + 1,)
    params = as64(plain)
    J, grads, AL = oracle_run(params, X, Y, ["relu", "relu", "sigmoid"], [])
    assert_close(plain.forward(X), AL, "float64")
    assert_close(plain.cost(X, Y), J, "float64")


def test_given_parameters_may_carry_the_projections_and_bad_ones_are_refused():
    params = net_of().parameters
    params["Ws2_4"] = np.full((4, 6), 0.25)
    net = net_of(init=params)
    np.testing.assert_array_equal(net.parameters["Ws2_4"], params["Ws2_4"])
    with pytest.raises(ValueError, match=r"Ws2_4 has shape \(6, 4\), expected \(4, 6\)"):
        net_of(init={**params, "Ws2_4": np.zeros((6, 4))})
    with pytest.raises(ValueError, match="parameter 'Ws1_5' is not a learned projection"):
        net_of(init={**params, "Ws1_5": np.zeros((4, 4))})


def test_from_parameters_rebuilds_a_residual_network():
    net = net_of("numpy", projection="learned")
    back = fastdnn.Network.from_parameters(net.parameters, "tanh", device="numpy", skip=SKIPS)
    assert back.skips == SKIPS and back.dtype == np.float64
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    assert back.engine.parameter_names()[-4:] == ["Ws0_2", "Ws1_3", "Ws2_4", "Ws3_6"]
    with pytest.raises(ValueError, match="parameter 'Ws0_2' is not a learned projection"):
        fastdnn.Network.from_parameters(net.parameters, "tanh", device="numpy")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("projection", ["learned", "pad"])
def test_onnx_export_of_a_residual_network_runs_like_forward(tmp_path, projection, dtype):
    """Every kind of skip of SKIPS (from X, padded up, truncated, identity, into the output) in the graph;
    trained, so the learned projections moved off the padding map."""
    ort = pytest.importorskip("onnxruntime", reason="running exported graphs needs onnxruntime")
    net = net_of("numpy", dtype, projection=projection)
    net.fit(X, Y, iterations=20, learning_rate=0.1, optimizer="adam", verbose=0)
    assert projection == "pad" or not np.array_equal(net.parameters["Ws0_2"][:3], np.eye(3))
    session = ort.InferenceSession(str(net.to_onnx(tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    out = session.run(["probabilities"], {"X": np.ascontiguousarray(X.T, dtype=dtype)})[0]
    expected, rtol = net.forward(X).T, {"float64": 1e-12, "float32": 1e-5}[dtype]
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


# --- gradient checks -------------------------------------------------------------------------------------
def numerical_gradients(net_factory, params, eps=1e-6):
    out = {}
    for name, v in params.items():
        num = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            for sign in (1, -1):
                q = {k: a.copy() for k, a in params.items()}
                q[name][idx] += sign * eps
                num[idx] += sign * net_factory(q).cost(X, Y) / (2 * eps)
        out["d" + name] = num
    return out


@pytest.mark.parametrize("projection", ["learned", "pad", "identity"])
@pytest.mark.parametrize("act", ACTS)
def test_gradient_check_with_l2(act, projection):
    dims, skips = ([3, 4, 5, 3, 2, 1], [(0, 2), (1, 3), (2, 5)]) if projection != "identity" else \
        ([3, 4, 4, 4, 4, 1], [(1, 3), (2, 4)])
    kw = dict(dims=dims, skips=skips, hidden_activation=act, projection=projection if projection != "identity"
              else "learned", l2=0.3)
    params = as64(net_of(**kw))
    rng = np.random.default_rng(5)
    params.update({k: rng.normal(0, 0.3, v.shape) for k, v in params.items() if k[0] == "b"})
    net = net_of(init=params, **kw)
    if act in ("relu", "leaky_relu"):        # away from the kink, where finite differences are wrong
        _, Z = oracle_forward(params, X, [act] * (len(dims) - 2) + ["sigmoid"], skips)
        assert min(np.abs(z).min() for z in Z[1:]) > 1e-4
    analytic = net.gradients(X, Y)
    numeric = numerical_gradients(lambda q: net_of(init=q, **kw), params)
    assert analytic.keys() == numeric.keys()
    assert max(np.abs(analytic[k] - numeric[k]).max() for k in numeric) < 1e-7


@pytest.mark.parametrize("projection", ["learned", "pad"])
def test_fastdnn_gradient_check_covers_the_skips(projection):
    """fastdnn.gradient_check (its float64 copy keeps the skips and their Ws) on a residual network."""
    net = net_of(dims=[3, 4, 5, 3, 2, 1], skips=[(0, 2), (1, 3), (2, 5)], hidden_activation="tanh",
                 projection=projection, l2=0.3)
    assert fastdnn.gradient_check(net, X, Y) < 1e-7          # 0.6 when its copy dropped the skips


# --- every backend x dtype against the oracle -------------------------------------------------------------
GPU = ["cupy", "cupy-fused"]


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
@pytest.mark.parametrize("projection", ["learned", "pad"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_cost_gradients_match_the_oracle(device, dtype, projection, output):
    name, stand_in = device
    dims = DIMS[:-1] + ([3] if output == "softmax" else [1])
    Yo = np.eye(3)[:, np.arange(13) % 3] if output == "softmax" else Y
    net = net_of(name, dtype, dims=dims, projection=projection, output_activation=output, l2=0.2)
    params = as64(net)
    J, grads, AL = oracle_run(params, X, Yo, ["tanh"] * 5 + [output], SKIPS, l2=0.2)
    assert_close(net.forward(X), AL, dtype)
    assert_close(net.cost(X, Yo), J, dtype)
    got = net.gradients(X, Yo)
    assert got.keys() == grads.keys()
    for k in grads:
        assert_close(got[k], grads[k], dtype)
    if name == "cupy-fused":    # the skip add and the skip gradient ran inside the fused kernels
        launched = {k for k in stand_in.counts if k.startswith("launch:")}
        assert any("bias_skip_activation" in k for k in launched)
        assert any("delta_row_sum_skip" in k for k in launched)


def test_a_training_step_with_dropout_matches_the_oracle_with_the_same_masks(device):
    """The skip carries the masked A[l] (the same Ad[l] the next layer sees), and dA[l] is masked after
    the skip gradients joined it."""
    name, _ = device
    keep = [0.7, 1.0, 0.6, 0.8, 0.9]
    net = net_of(name, "float64", keep_prob=keep, hidden_activation="relu")
    params = as64(net)
    cost = net.step(X, Y, learning_rate=0.5)
    ws = net.engine.workspace(X.shape[1])         # the step's masks (each backend draws its own)
    masks = {l: net.backend.to_numpy(D) for l, D in ws.D.items()}
    assert sorted(masks) == [1, 3, 4, 5] and all(0 < (D == 0).mean() < 0.6 for D in masks.values())
    J, grads, _ = oracle_run(params, X, Y, ["relu"] * 5 + ["sigmoid"], SKIPS, masks=masks)
    assert_close(cost, J, "float64")
    for k, v in net.parameters.items():
        assert_close(v, params[k] - 0.5 * grads["d" + k], "float64")


# --- training: numba == numpy, every optimizer, full batch and mini-batches ------------------------------------
# each case compiles its own kernels (seconds with a cold cache): every optimizer once, the projections in turn
@pytest.mark.parametrize("optimizer, projection", [("gd", "learned"), ("momentum", "pad"), ("rmsprop", "learned"),
                                                   ("adam", "pad"), ("adagrad", "learned")])
def test_fit_on_numba_equals_fit_on_numpy(optimizer, projection, path):
    if "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    runs = []
    for d in ("numba", "numpy"):
        net = net_of(d, projection=projection, hidden_activation="relu")
        full = net.fit(X, Y, iterations=7, optimizer=optimizer, learning_rate=0.01, report_every=3, verbose=0)
        mini = net.fit(X, Y, epochs=3, batch_size=5, optimizer=optimizer, learning_rate=0.01, seed=4, verbose=0)
        runs.append((net, [r.cost for r in full], [r.cost for r in mini]))
    (a, fa, ma), (b, fb, mb) = runs
    np.testing.assert_allclose(fa, fb, rtol=1e-10)
    np.testing.assert_allclose(ma, mb, rtol=1e-10)
    for k, v in b.parameters.items():
        assert_close(a.parameters[k], v, "float64")
    compiled = [c for c in a.engine._compiled_calls.values() if c is not None]
    assert bool(compiled) == (path != "per-op")     # the compiled epoch and loop took the residual network


def test_fit_with_l2_and_dropout_on_numba_equals_numpy():
    if "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    runs = []
    for d in ("numba", "numpy"):
        net = net_of(d, hidden_activation="relu", l2=0.1, keep_prob=[0.8, 1.0, 0.7, 0.9, 1.0])
        full = net.fit(X, Y, iterations=5, optimizer="momentum", learning_rate=0.01, report_every=2, verbose=0)
        mini = net.fit(X, Y, epochs=2, batch_size=4, optimizer="rmsprop", learning_rate=0.01, verbose=0)
        runs.append((net, [r.cost for r in full] + [r.cost for r in mini]))
    (a, ca), (b, cb) = runs
    np.testing.assert_allclose(ca, cb, rtol=1e-10)
    for k, v in b.parameters.items():
        assert_close(a.parameters[k], v, "float64")


@pytest.mark.parametrize("projection, output, dtype", [("learned", "sigmoid", "float64"), ("pad", "softmax", "float64"),
                                                       ("learned", "softmax", "float32"), ("pad", "sigmoid", "float32")])
def test_steps_on_numba_match_numpy_with_skips_into_the_output(projection, output, dtype, path):
    """The compiled whole step (or the ops) of a network whose last skip ends in the output layer."""
    if "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    dims = DIMS[:-1] + ([3] if output == "softmax" else [1])
    Yo = np.eye(3)[:, np.arange(13) % 3] if output == "softmax" else Y
    nets = [net_of(d, dtype, dims=dims, projection=projection, output_activation=output, hidden_activation="relu")
            for d in ("numba", "numpy")]
    costs = [[n.step(X, Yo, learning_rate=0.05) for _ in range(3)] for n in nets]
    assert_close(costs[0], costs[1], dtype)
    for k, v in nets[1].parameters.items():
        assert_close(nets[0].parameters[k], v, dtype)
    fused = [ws.fused for ws in nets[0].engine._workspaces.values()]
    assert (fused[0] is not None) == (path != "per-op")


@pytest.mark.parametrize("projection", ["learned", "pad"])
@pytest.mark.parametrize("compiled", [True, False], ids=["blas-step", "per-op"])
def test_a_numba_residual_step_allocates_nothing_after_the_first(compiled, projection, monkeypatch):
    if "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    import fastdnn.backends.numba_backend as nb
    monkeypatch.setattr(nb, "BLAS_WHOLE_STEP", compiled)
    monkeypatch.setattr(nb, "WHOLE_STEP_MAX_WORK", 0)
    dims, m = [30, 64, 64, 48, 64, 1], 300
    rng = np.random.RandomState(0)
    net = fastdnn.Network(dims, device="numba", dtype="float32", seed=0, projection=projection,
                          skip=[(0, 2), (1, 3), (2, 4), (3, 5)])
    Xd, Yd = net.prepare(rng.randn(dims[0], m), rng.randint(0, 2, (1, m)))
    net.engine.train_step(Xd, Yd, 0.01, check=True)            # first step: workspace, JIT
    assert (net.engine.workspace(m).fused is not None) == compiled
    grown, peak = allocations(lambda: [net.engine.train_step(Xd, Yd, 0.01, check=True) for _ in range(10)])
    assert grown < 64 * 1024
    assert peak < 48 * m * 4                # not even one temporary hidden-layer array


def test_a_cupy_fused_residual_step_allocates_and_synchronizes_nothing():
    pytest.importorskip("cupy", reason="the CuPy stand-in checks names against the real cupy package")
    import cuda_on_cpu
    if cuda_on_cpu.compiler_unavailable_reason():
        pytest.skip(cuda_on_cpu.compiler_unavailable_reason())
    import fake_cupy as fc
    with fc.installed(devices=2) as stand_in:
        net = net_of("cupy-fused", "float32", projection="learned")
        net.fit(X, Y, iterations=2, verbose=0)
        counts = []
        for steps in (2, 7):
            stand_in.reset_counts()
            net.fit(X, Y, iterations=steps, report_every=10**6, verbose=0)
            counts.append(dict(stand_in.counts))
        per_step = {k: (counts[1].get(k, 0) - counts[0].get(k, 0)) / 5 for k in ("sync", "alloc", "gemm", "d2h")}
        L = len(DIMS) - 1
        learned = [(l, k) for l, k in SKIPS if DIMS[l] != DIMS[k]]        # Ws·A[l], dWs, and Wsᵀ·dZ unless l = 0
        gemms = 3 * L - 1 + sum(3 if l else 2 for l, _ in learned)
        assert per_step == {"sync": 0, "alloc": 0, "gemm": gemms, "d2h": 0}


def test_fit_on_the_gpu_backends_equals_numpy(device):
    name, stand_in = device
    nets = [net_of(d, projection="learned", l2=0.05, keep_prob=1.0) for d in (name, "numpy")]
    hs = [n.fit(X, Y, epochs=2, batch_size=5, optimizer="adam", learning_rate=0.01, seed=2, verbose=0)
          for n in nets]
    np.testing.assert_allclose([r.cost for r in hs[0]], [r.cost for r in hs[1]], rtol=1e-10)
    for k, v in nets[1].parameters.items():
        assert_close(nets[0].parameters[k], v, "float64")


def test_a_deep_residual_network_trains():
    """12 hidden layers of width 8, a residual block every two of them, on spirals: the cost falls to a
    tenth and nearly every example is right."""
    Xs, Ys = datasets.spirals(m=300, classes=2, noise=0.1, seed=0)
    net = fastdnn.Network([2] + [8] * 12 + [1], device="cpu", dtype="float64", seed=1, skip=2)
    assert net.skips == [(1, 3), (3, 5), (5, 7), (7, 9), (9, 11)]
    hist = net.fit(Xs, Ys, epochs=150, batch_size=64, optimizer="adam", learning_rate=0.003, verbose=0)
    assert hist[-1].cost < 0.1 * hist[0].cost and net.accuracy(Xs, Ys) > 0.95, (hist[0].cost, hist[-1].cost)


# --- save, load, pickle, to ---------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_the_skips(tmp_path):
    net = net_of("numpy", projection="learned", hidden_activation="relu")
    net.fit(X, Y, iterations=3, optimizer="adam", verbose=0)
    net.save(tmp_path / "r.npz")
    back = fastdnn.load(tmp_path / "r.npz", device="numpy")
    assert back.skips == SKIPS and back.projection == "learned"
    assert back.parameters.keys() == net.parameters.keys()
    for k, v in net.parameters.items():
        np.testing.assert_array_equal(back.parameters[k], v)
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    a, b = [n.fit(X, Y, iterations=2, verbose=0) for n in (net, back)]      # the optimizer state came too
    np.testing.assert_allclose([r.cost for r in a], [r.cost for r in b], rtol=1e-12)
    pad = net_of("numpy", projection="pad")
    pad.save(tmp_path / "p.npz")
    assert fastdnn.load(tmp_path / "p.npz").projection == "pad"


def test_pickle_and_to_keep_the_skips():
    net = net_of("numpy", projection="learned")
    net.fit(X, Y, iterations=2, verbose=0)
    back = pickle.loads(pickle.dumps(net))
    assert back.skips == SKIPS
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    if "numba" in BACKENDS:
        moved = back.to("numba")
        assert moved.backend.name == "numba" and moved.parameters.keys() == net.parameters.keys()
        np.testing.assert_allclose(moved.forward(X), net.forward(X), rtol=1e-12)
        np.testing.assert_array_equal(moved.predict(X), net.predict(X))


def test_a_plain_networks_state_is_as_before():
    config = fastdnn.Network([3, 4, 1], device="numpy", seed=1).state_dict()["config"]
    assert config["version"] == 2 and "skip" not in config and "projection" not in config
    assert sorted(config) == sorted(["format", "version", "layer_dims", "activations", "loss", "dtype",
                                     "optimizer", "optimizer_args", "optimizer_step", "iteration", "epoch",
                                     "l2", "keep_prob", "seed", "rng"])
    skipped = net_of("numpy").state_dict()["config"]
    assert skipped["version"] == 3 and skipped["skip"] == [list(p) for p in SKIPS]


@pytest.mark.parametrize("field, value, message", [
    ("skip", "2", "skip must be a list"),
    ("skip", [[1, 2]], r"skip: skip connection \(1, 2\): k must be at least l \+ 2"),
    ("skip", [[1, 3], [1, 3]], "given twice"),
    ("skip", [[0, 9]], "out of range"),
    ("skip", [[1, 3.5]], "must be a pair of integers"),
    ("skip", [1, 3], "skip must be a list of \\[l, k\\] pairs"),
    ("skip", [], "non-empty list"),
    ("skip", [[1, 3], [0, 2]], "sorted by k"),
    ("projection", "zeros", "projection must be one of 'learned', 'pad'"),
    ("projection", None, "projection must be one of"),
    ("version", 2, "skip connections in a format version 2 file"),
])
def test_hostile_skip_configurations_are_refused_naming_the_field(tmp_path, field, value, message):
    net = net_of("numpy")
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        data = dict(f)
    config = json.loads(str(data["header"]))
    config[field] = value
    data["header"] = np.array(json.dumps(config))
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(fastdnn.ModelFileError, match=message):
        fastdnn.load(tmp_path / "bad.npz")
    state = net.state_dict()
    state["config"] = dict(state["config"], **{field: value})
    with pytest.raises((ValueError, TypeError), match=message):
        fastdnn.Network.from_state_dict(state)


def test_a_missing_or_extra_projection_array_is_refused():
    state = net_of("numpy").state_dict()
    del state["Ws2_4"]
    with pytest.raises(ValueError, match=r"arrays \['Ws2_4'\] are missing"):
        fastdnn.Network.from_state_dict(state)
    state = net_of("numpy", projection="pad").state_dict()
    state["Ws2_4"] = np.eye(4, 6)
    with pytest.raises(ValueError, match=r"arrays \['Ws2_4'\] are not part"):
        fastdnn.Network.from_state_dict(state)


# --- the GPU kernels' bodies, compiled for the CPU, against the oracle ------------------------------------
KERNEL_SHAPES = [((1, 1), 1), ((7, 45), 7), ((7, 45), 3), ((5, 33), 9), ((33, 70), 33)]     # (n, m), n_s


@pytest.fixture(scope="module")
def E():
    import cuda_on_cpu
    if cuda_on_cpu.compiler_unavailable_reason():
        pytest.skip(cuda_on_cpu.compiler_unavailable_reason())
    return cuda_on_cpu


@pytest.mark.parametrize("f_order", [False, True], ids=["S-C-order", "S-F-order"])
@pytest.mark.parametrize("shape, n_s", KERNEL_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ACTS)
def test_the_bias_skip_activation_kernel_matches_the_oracle(E, act, dtype, shape, n_s, f_order):
    from fastdnn.activations import get_activation
    from fastdnn.backends import _cupy_kernels as K
    n, m = shape
    rng = np.random.default_rng(n * 100 + n_s)
    Z, b, S = (rng.normal(size=s).astype(dtype) for s in ((n, m), (n, 1), (n_s, m)))
    expected = Z.astype(np.float64) + b + project(S.astype(np.float64), n)
    S_arg, s_row, s_col = (np.asfortranarray(S).T, 1, n_s) if f_order else (S, m, 1)
    src, name = K.bias_skip_activation(get_activation(act), np.dtype(dtype))
    A = np.full_like(Z, np.nan)
    p = K.plan("bias_skip_activation", (n, m), (4, 2))          # several blocks in each direction
    E.launch(src, name, *p.main, (Z, b, S_arg, np.int64(s_row), np.int64(s_col), np.int32(n_s), A,
                                  np.int32(n), np.int32(m)))
    assert_close(Z, expected, dtype)
    assert_close(A, oracle.g(act, expected), dtype)


@pytest.mark.parametrize("accumulate", [False, True], ids=["write", "add"])
@pytest.mark.parametrize("shape, n_s", KERNEL_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ACTS)
def test_the_delta_row_sum_skip_kernel_matches_the_oracle(E, act, dtype, shape, n_s, accumulate):
    from fastdnn.activations import get_activation
    from fastdnn.backends import _cupy_kernels as K
    n, m = shape
    rng = np.random.default_rng(n * 100 + n_s + 1)
    dA, Z, dS = (rng.normal(size=s).astype(dtype) for s in ((n, m), (n, m), (n_s, m)))
    A = oracle.g(act, Z.astype(np.float64)).astype(dtype)
    dZ = oracle.dg_times(act, dA.astype(np.float64), Z.astype(np.float64))
    r = min(n, n_s)
    expected_dS = dS.astype(np.float64).copy()
    expected_dS[:r] = (expected_dS[:r] if accumulate else 0) + dZ[:r]
    p = K.plan("delta_row_sum_skip", (n, m), (4, 2), (4, 2))
    db, partials = np.full((n, 1), np.nan, dtype), np.full(max(1, p.partials), np.nan)
    src, name = K.delta_row_sum_skip(get_activation(act), np.dtype(dtype))
    E.launch(src, name, *p.main, (dA, Z, A, db, partials, dS, np.int32(n_s), np.int32(accumulate), np.int32(n),
                                  np.int32(m)))
    if p.final is not None:
        src, name = K.row_sum_partials(np.dtype(dtype))
        E.launch(src, name, *p.final, (partials, db, np.int32(n), np.int32(p.final_count)))
    assert_close(dA, dZ, dtype)
    assert_close(db, dZ.sum(axis=1, keepdims=True), dtype)
    assert_close(dS, expected_dS, dtype)


def test_residual_branches_start_scaled_so_deep_networks_keep_their_scale():
    """Fixup's rescaling: with B skips, the W[k] a skip goes into starts as its He draw / √B, the other
    layers as He draws; a 30-layer residual network then starts near ln 3 (16 without the scaling)."""
    from fastdnn.initializers import initialize
    dims = [2] + [8] * 30 + [3]
    net = fastdnn.Network(dims, "relu", "softmax", seed=0, dtype="float64", skip=2)
    he, B = initialize(dims, "he", 0), len(net.skips)
    targets = {k for _, k in net.skips}
    for l in range(1, 32):
        expected = he[f"W{l}"] / np.sqrt(B) if l in targets else he[f"W{l}"]
        np.testing.assert_allclose(net.parameters[f"W{l}"], expected, rtol=1e-15, err_msg=f"W{l}")
    X3, Y3 = datasets.spirals(m=600, classes=3, seed=0)
    assert net.cost(X3, Y3) < 1.5
    given = fastdnn.Network(dims, "relu", "softmax", dtype="float64", skip=2, init=he)
    np.testing.assert_array_equal(given.parameters["W3"], he["W3"])          # given arrays are used as they are
