"""Batch normalization (issue 12, item 2): the backend ops against a float64 oracle written here —
the forward from its definition, the backward by central differences of a scalar function of Z (not
the closed form the backends use) — on every backend (the GPU ones through the CuPy stand-in) × dtype."""
import numpy as np
import pytest

import oracle
from support import ACTIVATIONS, BACKENDS, DTYPES, assert_close, rounded

EPS = 1e-5
BN_BACKENDS = BACKENDS + ["cupy-stand-in", "cupy-fused-stand-in"]


@pytest.fixture
def backend(request):
    from fastdnn.backends import get_backend
    name = request.param
    if name.endswith("-stand-in"):
        request.getfixturevalue("fake_cupy")
        name = name.replace("-stand-in", "") + ":0"
    return get_backend(name, fallback=False)


def normalize_oracle(Z, gamma, beta, mu=None, var=None):
    """(Zn, Z̃) by the definition: Zn = (Z − μ)/√(σ² + ε) with the batch's μ, σ² unless given."""
    mu = Z.mean(axis=1, keepdims=True) if mu is None else mu
    var = ((Z - mu) ** 2).mean(axis=1, keepdims=True) if var is None else var
    Zn = (Z - mu) / np.sqrt(var + EPS)
    return Zn, gamma * Zn + beta


def data(dtype, n=4, m=9, seed=0):
    rng = np.random.default_rng(seed)
    Z = rounded(rng.standard_normal((n, m)) * 3 + rng.standard_normal((n, 1)), dtype)
    gamma = rounded(1 + 0.5 * rng.standard_normal((n, 1)), dtype)
    beta = rounded(0.5 * rng.standard_normal((n, 1)), dtype)
    dA = rounded(rng.standard_normal((n, m)), dtype)
    return Z, gamma, beta, dA


def forward(be, act, dtype, Z, gamma, beta, mu=None, var=None):
    from fastdnn.activations import get_activation
    n, m = Z.shape
    Zn, Zt, A = (be.asarray(Z.copy(), dtype=dtype), be.empty((n, m), dtype), be.empty((n, m), dtype))
    if mu is None:
        mu_d, var_d = be.empty((n, 1), dtype), be.empty((n, 1), dtype)
        be.batch_stats(Zn, mu_d, var_d)
    else:
        mu_d, var_d = be.asarray(mu, dtype=dtype), be.asarray(var, dtype=dtype)
    be.batch_norm_activation(get_activation(act), Zn, mu_d, var_d, EPS, be.asarray(gamma, dtype=dtype),
                             be.asarray(beta, dtype=dtype), Zt, A)
    return Zn, Zt, A, mu_d, var_d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("backend", BN_BACKENDS, indirect=True)
def test_batch_norm_forward_matches_the_definition(backend, act, dtype):
    Z, gamma, beta, _ = data(dtype)
    Zn, Zt, A, mu, var = forward(backend, act, dtype, Z, gamma, beta)
    Zn_o, Zt_o = normalize_oracle(Z, gamma, beta)
    assert_close(backend.to_numpy(mu), Z.mean(axis=1, keepdims=True), dtype)
    assert_close(backend.to_numpy(var), Z.var(axis=1, keepdims=True), dtype)
    assert_close(backend.to_numpy(Zn), Zn_o, dtype)
    assert_close(backend.to_numpy(Zt), Zt_o, dtype)
    assert_close(backend.to_numpy(A), oracle.g(act, Zt_o), dtype)
    assert backend.to_numpy(A).dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BN_BACKENDS, indirect=True)
def test_batch_norm_with_running_statistics_uses_them_not_the_batch(backend, dtype):
    Z, gamma, beta, _ = data(dtype)
    mu, var = rounded(np.full((4, 1), 0.3), dtype), rounded(np.full((4, 1), 2.0), dtype)
    _, Zt, _, _, _ = forward(backend, "linear", dtype, Z, gamma, beta, mu, var)
    assert_close(backend.to_numpy(Zt), normalize_oracle(Z, gamma, beta, mu, var)[1], dtype)


def numeric_dZ(act, Z, gamma, beta, dA, h=1e-6):
    """∂/∂Z of Σ dA ⊙ g(Z̃(Z)) by central differences (float64), μ and σ² depending on Z."""
    def f(Zp):
        return float((dA * oracle.g(act, normalize_oracle(Zp, gamma, beta)[1])).sum())
    grad = np.zeros_like(Z)
    for idx in np.ndindex(Z.shape):
        Zp, Zm = Z.copy(), Z.copy()
        Zp[idx] += h
        Zm[idx] -= h
        grad[idx] = (f(Zp) - f(Zm)) / (2 * h)
    return grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "leaky_relu", "linear"])
@pytest.mark.parametrize("backend", BN_BACKENDS, indirect=True)
def test_batch_norm_backward_matches_central_differences(backend, act, dtype):
    from fastdnn.activations import get_activation
    Z, gamma, beta, dA = data(dtype)
    Zn, Zt, A, mu, var = forward(backend, act, dtype, Z, gamma, beta)
    n = Z.shape[0]
    dAd, dgamma, dbeta = backend.asarray(dA.copy(), dtype=dtype), backend.empty((n, 1), dtype), backend.empty((n, 1), dtype)
    g = backend.asarray(gamma, dtype=dtype)
    backend.batch_norm_delta(get_activation(act), dAd, Zt, A, Zn, dgamma, dbeta)
    backend.batch_norm_backward(dAd, Zn, var, EPS, g, dgamma, dbeta)
    Zn_o, Zt_o = normalize_oracle(Z, gamma, beta)
    dZt_o = oracle.dg_times(act, dA, Zt_o)
    assert_close(backend.to_numpy(dbeta), dZt_o.sum(axis=1, keepdims=True), dtype)
    assert_close(backend.to_numpy(dgamma), (dZt_o * Zn_o).sum(axis=1, keepdims=True), dtype)
    tol = {"float64": 1e-7, "float32": 1e-4}[dtype]
    expected = numeric_dZ(act, Z, gamma, beta, dA)
    np.testing.assert_allclose(backend.to_numpy(dAd), expected, rtol=tol, atol=tol * np.abs(expected).max())


# --- networks with batch normalization ------------------------------------------------------------------
import pickle  # noqa: E402
import warnings  # noqa: E402

import fastdnn  # noqa: E402
from fastdnn import datasets  # noqa: E402

DIMS, BN = [3, 5, 4, 1], [True, True]
GPU = ["cupy", "cupy-fused"]
RNG = np.random.default_rng(11)
Xn = RNG.standard_normal((3, 13))
Yn = (RNG.random((1, 13)) > 0.5).astype(np.float64)


def bn_net(device="numpy", dtype="float64", act="tanh", **kw):
    return fastdnn.Network(DIMS, act, "sigmoid", device=device, dtype=dtype, seed=4, batch_norm=BN, **kw)


def randomized(params, seed=2):
    """The parameters with γ, β, b and the running statistics moved off their initial 1, 0, 0, 0, 1 (a zero b
    after a ReLU layer whose column is all 0 would put Z exactly on the kink)."""
    rng = np.random.default_rng(seed)
    out = {k: np.asarray(v, np.float64) for k, v in params.items()}
    for k, v in out.items():
        if k.startswith(("gamma", "running_var")):
            out[k] = 1 + 0.4 * rng.random(v.shape)
        elif k.startswith(("b", "running_mean")):
            out[k] = 0.5 * rng.standard_normal(v.shape)
    return out


def oracle_forward(params, X, acts, batch_stats, skips=()):
    """The output A[L] in float64: every normalized layer by the definition (normalize_oracle), with X's own
    μ, σ² (batch_stats) or the running ones; a skip (l, k) adds A[l] to layer k's Z̃ after the normalization
    (through params["Ws{l}_{k}"] when given, else zero-padded or truncated to n_k rows)."""
    A, passed, into = X, [X], {k: l for l, k in skips}
    for l, act in enumerate(acts, start=1):
        Z = params[f"W{l}"] @ A
        if f"gamma{l}" in params:
            mu, var = (None, None) if batch_stats else (params[f"running_mean{l}"], params[f"running_var{l}"])
            Z = normalize_oracle(Z, params[f"gamma{l}"], params[f"beta{l}"], mu, var)[1]
        else:
            Z = Z + params[f"b{l}"]
        if l in into:
            S, Ws = passed[into[l]], params.get(f"Ws{into[l]}_{l}")
            if Ws is None:
                r, padded = min(len(S), len(Z)), np.zeros_like(Z)
                padded[:r] = S[:r]
                Z = Z + padded
            else:
                Z = Z + Ws @ S
        A = oracle.g(act, Z)
        passed.append(A)
    return A


def oracle_cost(params, X, Y, acts, skips=()):
    A = oracle_forward(params, X, acts, batch_stats=True, skips=skips)
    return float(-np.mean(Y * np.log(A) + (1 - Y) * np.log(1 - A)))


def oracle_gradients(params, X, Y, acts, h=1e-6, skips=()):
    """Central differences of the training-mode cost over every learned array."""
    grads = {}
    for name, v in params.items():
        if name.startswith("running"):
            continue
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            for sign in (1, -1):
                q = {k: a.copy() for k, a in params.items()}
                q[name][idx] += sign * h
                g[idx] += sign * oracle_cost(q, X, Y, acts, skips) / (2 * h)
        grads["d" + name] = g
    return grads


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_network_matches_the_oracle_on_every_backend(device, dtype):
    """forward (running μ, σ²), the training-mode cost and every gradient vs the float64 oracle."""
    name, _ = device
    params = randomized(bn_net().parameters)
    net = fastdnn.Network.from_parameters(params, "tanh", "sigmoid", device=name, dtype=dtype)
    assert net.batch_norm == [1, 2] and net.backend.name == name
    acts = ["tanh", "tanh", "sigmoid"]
    exact = {k: rounded(v, dtype) for k, v in params.items()}
    assert_close(net.forward(Xn), oracle_forward(exact, Xn, acts, batch_stats=False), dtype)
    Xd, Yd = net.prepare(Xn, Yn)
    with net.backend.device_scope():
        assert net.engine.cost(Xd, Yd, batch_stats=True) == pytest.approx(oracle_cost(exact, Xn, Yn, acts),
                                                                          rel={"float64": 1e-10, "float32": 1e-5}[dtype])
    grads, expected = net.gradients(Xn, Yn), oracle_gradients(exact, Xn, Yn, acts)
    assert grads.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(grads[k], expected[k], rtol=0, atol={"float64": 1e-8, "float32": 2e-4}[dtype],
                                   err_msg=k)


# skips into normalized layers (ResNet's order: normalize, add, activate): from X up-padded or through Ws,
# a truncation or Ws from a wider layer, and the identity into a normalized layer after a plain one
RESIDUAL = {"learned": ([3, 5, 4, 4, 1], [(0, 2), (1, 3)], "learned", True),
            "pad": ([3, 5, 4, 4, 1], [(0, 2), (1, 3)], "pad", True),
            "identity": ([3, 5, 5, 5, 1], [(1, 3)], "learned", [True, False, True])}


def residual_bn_net(config, device="numpy", dtype="float64", act="tanh", **kw):
    dims, skips, projection, norm = RESIDUAL[config]
    return fastdnn.Network(dims, act, "sigmoid", device=device, dtype=dtype, seed=4, skip=skips,
                           projection=projection, batch_norm=norm, **kw)


@pytest.mark.parametrize("config", RESIDUAL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_skips_into_normalized_layers_match_the_oracle_on_every_backend(device, dtype, config):
    name, _ = device
    dims, skips, projection, _ = RESIDUAL[config]
    params = randomized(residual_bn_net(config).parameters)
    net = fastdnn.Network.from_parameters(params, "tanh", "sigmoid", device=name, dtype=dtype, skip=skips,
                                          projection=projection)
    assert {k for _, k in skips} <= set(net.batch_norm)
    acts = ["tanh"] * (len(dims) - 2) + ["sigmoid"]
    exact = {k: rounded(v, dtype) for k, v in params.items()}
    assert_close(net.forward(Xn), oracle_forward(exact, Xn, acts, False, skips), dtype)
    grads, expected = net.gradients(Xn, Yn), oracle_gradients(exact, Xn, Yn, acts, skips=skips)
    assert grads.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(grads[k], expected[k], rtol=0, atol={"float64": 1e-8, "float32": 2e-4}[dtype],
                                   err_msg=k)


@pytest.mark.parametrize("config", RESIDUAL)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gradient_check_of_skips_into_normalized_layers(act, config):
    net = residual_bn_net(config, act=act)
    net = fastdnn.Network.from_parameters(randomized(net.parameters, seed=7), act, "sigmoid", skip=net.skips,
                                          projection=RESIDUAL[config][2], dtype="float64").regularize(l2=0.2)
    assert fastdnn.gradient_check(net, Xn, Yn) < 1e-7


@pytest.mark.parametrize("device", [b for b in BACKENDS if b != "numpy"] + GPU, indirect=True)
@pytest.mark.parametrize("config", RESIDUAL)
def test_fit_of_skips_into_normalized_layers_matches_numpy(device, config):
    nets = [residual_bn_net(config, d) for d in (device[0], "numpy")]
    hs = [n.fit(Xn, Yn, epochs=2, batch_size=5, optimizer="adam", learning_rate=0.05, verbose=0, report_every=1)
          for n in nets]
    np.testing.assert_allclose([r.cost for r in hs[0]], [r.cost for r in hs[1]], rtol=1e-10)
    for k, v in nets[1].parameters.items():
        assert_close(nets[0].parameters[k], v, "float64")


def test_normalized_branch_ends_keep_their_he_initialization():
    """Fixup's 1/√B rescaling of W[k] is for plain branch ends only: normalization would undo it."""
    net, plain = residual_bn_net("identity"), fastdnn.Network([3, 5, 5, 5, 1], "tanh", "sigmoid", seed=4,
                                                                    dtype="float64")
    np.testing.assert_array_equal(net.parameters["W3"], plain.parameters["W3"])


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gradient_check_in_training_mode_with_l2(act):
    net = fastdnn.Network.from_parameters(randomized(bn_net(act=act).parameters, seed=7), act, "sigmoid",
                                          dtype="float64").regularize(l2=0.2)
    assert fastdnn.gradient_check(net, Xn, Yn) < 1e-7


def test_running_statistics_are_the_exponential_average_of_the_batches():
    net = bn_net()
    expected = {l: (np.zeros((n, 1)), np.ones((n, 1))) for l, n in ((1, 5), (2, 4))}
    for step in range(4):
        params = net.parameters
        A = Xn
        for l in (1, 2):                  # the batch statistics of this step, from its parameters
            Z = params[f"W{l}"] @ A
            mu, var = Z.mean(axis=1, keepdims=True), Z.var(axis=1, keepdims=True)
            expected[l] = (0.9 * expected[l][0] + 0.1 * mu, 0.9 * expected[l][1] + 0.1 * var)
            A = np.tanh(normalize_oracle(Z, params[f"gamma{l}"], params[f"beta{l}"])[1])
        net.step(Xn, Yn, learning_rate=0.1)
        for l in (1, 2):
            assert_close(net.parameters[f"running_mean{l}"], expected[l][0], "float64")
            assert_close(net.parameters[f"running_var{l}"], expected[l][1], "float64")
    acts, params = ["tanh", "tanh", "sigmoid"], net.parameters           # forward/predict: the running ones
    assert_close(net.forward(Xn), oracle_forward(params, Xn, acts, batch_stats=False), "float64")
    assert not np.allclose(net.forward(Xn), oracle_forward(params, Xn, acts, batch_stats=True))


@pytest.mark.parametrize("device", [b for b in BACKENDS if b != "numpy"] + GPU, indirect=True)
@pytest.mark.parametrize("fit", [dict(iterations=6), dict(epochs=2, batch_size=5)], ids=["full", "mini"])
def test_fit_matches_numpy(device, fit):
    name, _ = device
    dropout = dict(keep_prob=[0.9, 1.0]) if name not in GPU else {}      # CuPy draws its own masks
    nets = [bn_net(d, l2=0.05, **dropout) for d in (name, "numpy")]
    hs = [n.fit(Xn, Yn, optimizer="adam", learning_rate=0.05, verbose=0, report_every=1, **fit) for n in nets]
    np.testing.assert_allclose([r.cost for r in hs[0]], [r.cost for r in hs[1]], rtol=1e-10)
    for k, v in nets[1].parameters.items():
        assert_close(nets[0].parameters[k], v, "float64")
    assert nets[0].parameters["running_var1"].min() != 1.0         # the running statistics moved


@pytest.mark.parametrize("device", BACKENDS + GPU, indirect=True)
def test_a_diverging_first_step_changes_nothing_running_statistics_included(device):
    """The call's first cost is infinite (W3 overflows the output): nothing changes, the running
    statistics included (a finite first cost would not do: batch norm rescales even a 1e300 input)."""
    name, _ = device
    params = bn_net().parameters
    params["W3"] = np.full_like(params["W3"], 1e308)
    net = fastdnn.Network.from_parameters(params, "tanh", "sigmoid", device=name)
    before = net.parameters
    with pytest.raises(fastdnn.errors.TrainingDivergedError), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        net.fit(Xn, Yn, iterations=3, learning_rate=0.1, verbose=0)
    for k, v in before.items():
        np.testing.assert_array_equal(net.parameters[k], v, err_msg=k)


def test_save_load_pickle_and_from_parameters_keep_everything(tmp_path):
    net = bn_net()
    net.fit(Xn, Yn, iterations=5, optimizer="adam", learning_rate=0.05, verbose=0)
    net.save(tmp_path / "bn.npz")
    copies = [fastdnn.load(tmp_path / "bn.npz", device="numpy"), pickle.loads(pickle.dumps(net)),
              fastdnn.Network.from_parameters(net.parameters, "tanh", "sigmoid", device="numpy")]
    for copy in copies:
        assert copy.batch_norm == [1, 2]
        for k, v in net.parameters.items():
            np.testing.assert_array_equal(copy.parameters[k], v, err_msg=k)
        np.testing.assert_array_equal(copy.forward(Xn), net.forward(Xn))
    assert net.state_dict()["config"]["batch_norm"] == [1, 2]
    assert "batch_norm" not in fastdnn.Network(DIMS, seed=1).state_dict()["config"]


@pytest.mark.parametrize("change, message", [
    (lambda s: s["config"].update(batch_norm=[0]), "batch_norm must be a sorted list"),
    (lambda s: s["config"].update(batch_norm=[3]), "batch_norm must be a sorted list"),
    (lambda s: s["config"].update(batch_norm=[2, 1]), "batch_norm must be a sorted list"),
    (lambda s: s["config"].update(batch_norm="all"), "batch_norm"),
    (lambda s: s["config"].update(version=2), "needs version 3"),
    (lambda s: s.update(running_var1=-np.ones((5, 1))), "negative entries"),
    (lambda s: s.pop("gamma2"), "missing"),
    (lambda s: s.update(b1=np.zeros((5, 1))), "not part of"),
])
def test_a_damaged_state_is_refused_naming_the_field(change, message):
    state = bn_net().state_dict()
    change(state)
    with pytest.raises((ValueError, TypeError), match=message):
        fastdnn.Network.from_state_dict(state)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(batch_norm=[True]), ValueError, "2 bools"),
    (dict(batch_norm=[1, 0]), ValueError, "2 bools"),
    (dict(batch_norm="yes"), TypeError, "batch_norm must be True"),
])
def test_bad_batch_norm_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastdnn.Network(DIMS, **kwargs)


def test_data_parallel_batch_norm_uses_the_whole_batch_statistics(monkeypatch):
    """DataParallel.batch_stats / batch_norm_sums combine per-rank (μ_r, σ²_r) and (dγ_r, dβ_r) into the
    whole batch's: checked against the definition on the concatenated columns with a fake 3-rank sum."""
    from fastdnn.distributed import DataParallel
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((4, 30)) * 3 + 1
    pieces = [Z[:, :5], Z[:, 5:17], Z[:, 17:]]
    means = [p.mean(axis=1, keepdims=True) for p in pieces]
    variances = [p.var(axis=1, keepdims=True) for p in pieces]
    shares = [p.shape[1] / 30 for p in pieces]
    calls = []

    class Sum:                  # Allreduce over 3 ranks: rank 0's buffer + what ranks 1 and 2 contribute
        def __init__(self, others):
            self.others = iter(others)

        def Allreduce(self, _, buffer, op=None):
            calls.append(buffer.shape)
            buffer += next(self.others)

    dp = DataParallel.__new__(DataParallel)
    dp.engine, dp.staged, dp.share = fastdnn.Network(DIMS, device="numpy").engine, False, shares[0]
    mu_all = Z.mean(axis=1, keepdims=True)
    others = [sum(s * m for s, m in zip(shares[1:], means[1:])),
              sum(s * (v + (m - mu_all) ** 2) for s, m, v in zip(shares[1:], means[1:], variances[1:]))]
    dp.comm, dp.MPI = Sum(others), type("MPI", (), {"IN_PLACE": None, "SUM": None})
    mu, var = means[0].copy(), variances[0].copy()
    dp.batch_stats(mu, var)
    np.testing.assert_allclose(mu, mu_all, rtol=1e-13)
    np.testing.assert_allclose(var, Z.var(axis=1, keepdims=True), rtol=1e-13)
    dgammas, dbetas = rng.standard_normal((3, 4, 1)), rng.standard_normal((3, 4, 1))
    dp.comm = Sum([np.concatenate([sum(s * d for s, d in zip(shares[1:], g[1:])) for g in (dgammas, dbetas)])])
    dgamma, dbeta = dgammas[0].copy(), dbetas[0].copy()
    dp.batch_norm_sums(dgamma, dbeta)
    np.testing.assert_allclose(dgamma, sum(s * d for s, d in zip(shares, dgammas)), rtol=1e-13)
    np.testing.assert_allclose(dbeta, sum(s * d for s, d in zip(shares, dbetas)), rtol=1e-13)
    assert calls == [(4, 1), (4, 1), (8, 1)]        # two all-reduces in the forward, one in the backward


def test_a_deep_network_trains_with_batch_norm():
    X, Y = datasets.spirals(m=300, classes=3, seed=0)
    net = fastdnn.Network([2] + [16] * 6 + [3], "relu", "softmax", dtype="float64", seed=1, batch_norm=True)
    history = net.fit(X, Y, iterations=300, optimizer="adam", learning_rate=0.01, verbose=0, report_every=100)
    assert history[-1].cost < 0.1 * history[0].cost
    assert np.mean(net.predict(X).reshape(-1) == Y.reshape(-1)) > 0.95
