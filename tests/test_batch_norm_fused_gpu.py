"""Batch normalization as fused RawKernels on ``cupy-fused`` (issue 12, item 2), without a GPU:

* every kernel body run on the CPU (tests/cuda_on_cpu.py: the exact CUDA source, every thread of every
  block, real barriers, threads also in reverse order) against a float64 NumPy oracle written here, in
  float32 and float64, for every elementwise activation and odd shapes (m = 1, one row, m not a multiple
  of the block, rows split over several blocks, large m) and both geometries of the reductions (one
  launch; partial sums plus the fixed-order final sum);
* every kernel compiled by NVRTC for sm_80 and sm_90 as CuPy compiles it, strictly;
* a batch-normalized network on the CuPy stand-in (tests/fake_cupy.py): fit equal to NumPy (1e-10 in
  float64), the launches per step counted, steps that allocate and synchronize nothing, two runs
  bit-identical.
The activations' g and g' come from tests/oracle.py (float64, written apart from fastdnn)."""
import warnings

import numpy as np
import pytest

import cuda_on_cpu as E
import oracle
import fastdnn
from fastdnn.activations import ACTIVATIONS as REGISTRY, get_activation
from fastdnn.backends import _cupy_kernels as K

needs_compiler = pytest.mark.skipif(E.compiler_unavailable_reason() is not None,
                                    reason=f"cannot compile kernels for the CPU: {E.compiler_unavailable_reason()}")
DTYPES = ("float64", "float32")
ACTS = [name for name, cls in REGISTRY.items() if cls.elementwise]
EPS = 1e-5                               # the engine's ε (fastdnn._layout.BN_EPSILON)
SMALL_2D = (4, 2)                        # small blocks: several blocks in each direction
# (n, m) with the small blocks: m = 1, one row, m not a multiple of 4, and rows that span several blocks
# (more than BN_LANE_COLUMNS = 16 columns per lane: partial sums + the final sum)
SHAPES = [(1, 1), (1, 37), (6, 1), (7, 45), (3, 70), (1, 70), (5, 129)]
# with the geometry plan() picks for a GPU: one launch, and large m over several blocks per row
REAL_SHAPES = [(1, 1), (5, 13), (9, 600), (1, 5000), (2, 20001)]
TOL = {"float64": 1e-12, "float32": 2e-6}


@pytest.fixture(scope="module", autouse=True)
def compiled_once():
    if E.compiler_unavailable_reason() is None:
        E.compile_many([k for dtype in DTYPES for _, _, k in K.batch_norm_catalog(dtype)])


def i32(x):
    return np.int32(x)


def close(actual, expected, dtype, scale=None):
    """|actual − expected| <= tol·(|expected| + scale), scale = max |expected| (or 1)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0))) if scale is None else scale
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def draw(shape, dtype, seed=0, scale=1.0, offset=0.0):
    """(values in dtype, read-only, C-contiguous; their exact float64 values)."""
    rng = np.random.default_rng(seed)
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    x.flags.writeable = False               # a kernel writing an input raises (cuda_on_cpu)
    return x, x.astype(np.float64)


def ids(shape):
    return f"n{shape[0]}xm{shape[1]}"


# --- the oracle (float64, from the definitions) ---------------------------------------------------------------
def stats_oracle(Z):
    mu = Z.sum(axis=1, keepdims=True) / Z.shape[1]
    return mu, ((Z - mu) ** 2).sum(axis=1, keepdims=True) / Z.shape[1]


def normalize_oracle(Z, mu, var, gamma, beta):
    Zn = (Z - mu) / np.sqrt(var + EPS)
    return Zn, gamma * Zn + beta


def backward_oracle(dZt, Zn, var, gamma):
    """dZ through Zn's dependence on the batch's μ and σ², written from the chain rule."""
    m = dZt.shape[1]
    dZn = dZt * gamma
    inv = 1 / np.sqrt(var + EPS)
    return inv / m * (m * dZn - dZn.sum(axis=1, keepdims=True) - Zn * (dZn * Zn).sum(axis=1, keepdims=True))


# --- the launches, as the backend makes them (typed scalars, plan() geometry) ---------------------------------
def run_batch_stats(Z, block=SMALL_2D, final_block=SMALL_2D, schedule="forward"):
    (n, m), dtype = Z.shape, Z.dtype
    p = K.plan("batch_stats", (n, m), block, final_block)
    mu, var = np.full((n, 1), np.nan, dtype), np.full((n, 1), np.nan, dtype)
    partials = np.full(max(1, p.partials), np.nan)
    src, name = K.batch_stats(dtype)
    for stage in ((0, 1) if p.final is not None else (0,)):
        E.launch(src, name, *p.main, (Z, mu, var, partials, i32(stage), i32(n), i32(m)), schedule=schedule)
    if p.final is not None:
        src, name = K.bn_row_sums(dtype)
        E.launch(src, name, *p.final, (partials, var, var, i32(1), np.float64(m), i32(n), i32(p.final_count)),
                 schedule=schedule)
    return mu, var, p


def run_activation(act, Zn, mu, var, gamma, beta, block=SMALL_2D):
    (n, m), dtype = Zn.shape, Zn.dtype
    src, name = K.batch_norm_activation(get_activation(act), dtype)
    Zn, Z, A = Zn.copy(), np.full((n, m), np.nan, dtype), np.full((n, m), np.nan, dtype)
    E.launch(src, name, *K.plan("batch_norm_activation", (n, m), block).main,
             (Zn, mu, var, np.float64(EPS), gamma, beta, Z, A, i32(n), i32(m)))
    return Zn, Z, A


def run_delta(act, dA, Z, A, Zn, block=SMALL_2D, final_block=SMALL_2D, schedule="forward"):
    (n, m), dtype = dA.shape, dA.dtype
    p = K.plan("batch_norm_delta", (n, m), block, final_block)
    dA, dgamma, dbeta = dA.copy(), np.full((n, 1), np.nan, dtype), np.full((n, 1), np.nan, dtype)
    partials = np.full(max(1, p.partials), np.nan)
    src, name = K.batch_norm_delta(get_activation(act), dtype)
    E.launch(src, name, *p.main, (dA, Z, A, Zn, dgamma, dbeta, partials, i32(n), i32(m)), schedule=schedule)
    if p.final is not None:
        src, name = K.bn_row_sums(dtype)
        E.launch(src, name, *p.final, (partials, dbeta, dgamma, i32(2), np.float64(1.0), i32(n), i32(p.final_count)),
                 schedule=schedule)
    return dA, dgamma, dbeta, p


def run_backward(dZt, Zn, var, gamma, dgamma, dbeta, block=SMALL_2D):
    (n, m), dtype = dZt.shape, dZt.dtype
    src, name = K.batch_norm_backward(dtype)
    dZ = dZt.copy()
    E.launch(src, name, *K.plan("batch_norm_backward", (n, m), block).main,
             (dZ, Zn, var, np.float64(EPS), gamma, dgamma, dbeta, i32(n), i32(m)))
    return dZ


def row_params(n, dtype, seed=1):
    """γ, β, and a positive σ² for n rows: (dtype arrays, their float64 values)."""
    rng = np.random.default_rng(seed)
    gamma = (1 + 0.5 * rng.standard_normal((n, 1))).astype(dtype)
    beta = (0.5 * rng.standard_normal((n, 1))).astype(dtype)
    var = (0.2 + rng.random((n, 1)) * 3).astype(dtype)
    mu = rng.standard_normal((n, 1)).astype(dtype)
    return [(a, a.astype(np.float64)) for a in (gamma, beta, mu, var)]


# --- kernels on the CPU vs the oracle ---------------------------------------------------------------------------
def test_the_shapes_cover_both_reduction_geometries():
    for kind in ("batch_stats", "batch_norm_delta"):
        small = [K.plan(kind, s, SMALL_2D, SMALL_2D).final is None for s in SHAPES]
        real = [K.plan(kind, s).final is None for s in REAL_SHAPES]
        assert any(small) and not all(small) and any(real) and not all(real), kind
    assert K.plan("batch_stats", (2, 20001)).main.grid[0] > 100           # large m: many blocks per row


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, block", [(s, SMALL_2D) for s in SHAPES] + [(s, None) for s in REAL_SHAPES],
                         ids=[ids(s) for s in SHAPES] + [ids(s) + "-real" for s in REAL_SHAPES])
def test_batch_stats_is_the_two_pass_mean_and_variance(shape, block, dtype):
    Z, Z64 = draw(shape, dtype, offset=3.0, scale=2.0)
    mu, var, _ = run_batch_stats(Z, block, block)
    mu_o, var_o = stats_oracle(Z64)
    close(mu, mu_o, dtype)
    close(var, var_o, dtype)
    assert mu.dtype == var.dtype == np.dtype(dtype)


@needs_compiler
@pytest.mark.parametrize("shape", [(3, 45), (3, 70), (2, 20001)], ids=ids)
def test_batch_stats_centres_before_squaring(shape):
    """Values around 1e6 with unit spread: a one-pass E[z²] − E[z]² loses ~1e-4 of σ² in float64; the
    centred second pass keeps it to rounding."""
    Z, Z64 = draw(shape, "float64", scale=1.0, offset=1e6)
    block = None if shape[1] > 10000 else SMALL_2D
    mu, var, _ = run_batch_stats(Z, block, block)
    mu_o, var_o = stats_oracle(Z64)
    np.testing.assert_allclose(var, var_o, rtol=1e-9)
    np.testing.assert_allclose(mu, mu_o, rtol=1e-15)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 45), (5, 129)], ids=ids)
def test_batch_norm_activation_normalizes_scales_shifts_and_activates(shape, act, dtype):
    n, _ = shape
    Zn, Zn64 = draw(shape, dtype, seed=3, scale=3.0, offset=0.5)
    (gamma, g64), (beta, b64), (mu, mu64), (var, var64) = row_params(n, dtype)
    out_Zn, out_Z, A = run_activation(act, Zn, mu, var, gamma, beta)
    Zn_o, Zt_o = normalize_oracle(Zn64, mu64, var64, g64, b64)
    close(out_Zn, Zn_o, dtype)
    close(out_Z, Zt_o, dtype)
    close(A, oracle.g(act, Zt_o), dtype)
    assert A.dtype == np.dtype(dtype)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (6, 1), (3, 70), (9, 600), (1, 5000)], ids=ids)
def test_batch_norm_activation_with_the_batch_statistics_gives_zero_mean_unit_variance(shape, dtype):
    Z, Z64 = draw(shape, dtype, seed=5, scale=2.0, offset=-1.0)
    mu, var, _ = run_batch_stats(Z, None, None)
    n = shape[0]
    ones, zeros = np.ones((n, 1), dtype), np.zeros((n, 1), dtype)
    Zn, Zt, A = run_activation("linear", Z, mu, var, ones, zeros, block=None)
    mu_o, var_o = stats_oracle(Z64)
    close(Zn, normalize_oracle(Z64, mu_o, var_o, 1.0, 0.0)[0], dtype)
    if shape[1] > 1:
        np.testing.assert_allclose(Zn.astype(np.float64).mean(axis=1), 0, atol=1e-5)
        np.testing.assert_allclose((Zn.astype(np.float64) ** 2).mean(axis=1) * (var_o[:, 0] + EPS) / var_o[:, 0],
                                   1, rtol=1e-4)
    np.testing.assert_array_equal(Zt, A)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES[1:5] + [(5, 129)], ids=ids)
def test_batch_norm_delta_writes_dZt_and_both_row_sums(shape, act, dtype):
    n, m = shape
    Zt, Zt64 = draw(shape, dtype, seed=7, scale=2.0)
    A = oracle.g(act, Zt64).astype(dtype)
    Zn, Zn64 = draw(shape, dtype, seed=8)
    dA, dA64 = draw(shape, dtype, seed=9)
    dZt, dgamma, dbeta, _ = run_delta(act, dA, Zt, A, Zn)
    dZt_o = oracle.dg_times(act, dA64, Zt64)
    close(dZt, dZt_o, dtype)
    scale = max(1.0, float(np.abs(dZt_o).max()) * m)                 # a sum of m terms
    close(dbeta, dZt_o.sum(axis=1, keepdims=True), dtype, scale)
    close(dgamma, (dZt_o * Zn64).sum(axis=1, keepdims=True), dtype, scale * max(1.0, float(np.abs(Zn64).max())))


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", REAL_SHAPES, ids=ids)
def test_batch_norm_delta_with_the_real_geometry(shape, dtype):
    Zt, Zt64 = draw(shape, dtype, seed=17)
    A = oracle.g("tanh", Zt64).astype(dtype)
    Zn, Zn64 = draw(shape, dtype, seed=18)
    dA, dA64 = draw(shape, dtype, seed=19)
    dZt, dgamma, dbeta, _ = run_delta("tanh", dA, Zt, A, Zn, None, None)
    dZt_o = oracle.dg_times("tanh", dA64, Zt64)
    scale = float(np.sqrt(shape[1])) * 4                              # the sums' spread
    close(dbeta, dZt_o.sum(axis=1, keepdims=True), dtype, scale)
    close(dgamma, (dZt_o * Zn64).sum(axis=1, keepdims=True), dtype, scale * 4)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (6, 1), (7, 45), (5, 129), (2, 20001)], ids=ids)
def test_batch_norm_backward_is_the_gradient_through_the_batch_statistics(shape, dtype):
    """Forward and backward of a layer (batch_stats, activation, delta, backward kernels) against the chain
    rule written here; for m = 1 the gradient is 0 (Zn is 0 whatever Z)."""
    n, m = shape
    block = None if m > 10000 else SMALL_2D
    Z, Z64 = draw(shape, dtype, seed=11, scale=2.0, offset=1.0)
    (gamma, g64), (beta, b64), _, _ = row_params(n, dtype, seed=12)
    dA, dA64 = draw(shape, dtype, seed=13)
    mu, var, _ = run_batch_stats(Z, block, block)
    Zn, Zt, A = run_activation("sigmoid", Z, mu, var, gamma, beta, block)
    dZt, dgamma, dbeta, _ = run_delta("sigmoid", dA, Zt, A, Zn, block, block)
    dZ = run_backward(dZt, Zn, var, gamma, dgamma, dbeta, block)
    mu_o, var_o = stats_oracle(Z64)
    Zn_o, Zt_o = normalize_oracle(Z64, mu_o, var_o, g64, b64)
    dZ_o = backward_oracle(oracle.dg_times("sigmoid", dA64, Zt_o), Zn_o, var_o, g64)
    tol = {"float64": 1e-9, "float32": 2e-4}[dtype]
    scale = max(float(np.abs(dZ_o).max()), 1e-3)
    np.testing.assert_allclose(dZ, dZ_o, rtol=tol, atol=tol * scale)
    if m == 1:
        assert not np.any(dZ)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_backward_alone_matches_the_formula(dtype):
    shape = (5, 129)
    n, m = shape
    dZt, dZt64 = draw(shape, dtype, seed=21)
    Zn, Zn64 = draw(shape, dtype, seed=22)
    (gamma, g64), _, _, (var, var64) = row_params(n, dtype, seed=23)
    (dgamma, dg64), (dbeta, db64), _, _ = row_params(n, dtype, seed=24)
    dZ = run_backward(dZt, Zn, var, gamma, dgamma, dbeta)
    expected = g64 / (m * np.sqrt(var64 + EPS)) * (m * dZt64 - db64 - Zn64 * dg64)
    close(dZ, expected, dtype)


SENTINEL = -7.25


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 5, 300])
@pytest.mark.parametrize("guard", ["none", "true", "false"])
def test_running_average_under_its_device_guard(guard, size, dtype):
    running, r64 = draw((size, 1), dtype, seed=31)
    batch, b64 = draw((size, 1), dtype, seed=32)
    out = np.full((size, 1), SENTINEL, dtype)
    f = np.dtype(dtype).type
    src, name = K.running_average(dtype)
    go = np.array(guard == "true")
    E.launch(src, name, *K.plan("running_average", (size,), (8,)).main,
             (running, batch, f(0.9), f(1 - 0.9), out, go, i32(guard != "none"), np.int64(size)))
    if guard == "false":
        assert np.all(out == SENTINEL)
    else:
        close(out, 0.9 * r64 + 0.1 * b64, dtype)


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost, halted, expected", [(0.5, 0, True), (np.inf, 0, False), (np.nan, 0, False),
                                                    (0.5, 3, False), (-np.inf, 2, False)])
def test_running_guard_is_finite_cost_and_not_halted(cost, halted, expected, dtype):
    src, name = K.running_guard(dtype)
    for go in (np.array(True), np.array(False)):
        E.launch(src, name, *K.plan("running_guard", ()).main,
                 (np.array(cost, dtype), np.array(halted, np.int64), go))
        assert bool(go) is expected


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, block", [((5, 129), SMALL_2D), ((3, 70), (8, 4)), ((9, 600), None), ((1, 5000), None)],
                         ids=["small-blocks", "8x4", "real", "real-one-row"])
def test_reductions_are_bit_identical_run_to_run_and_in_reverse_thread_order(shape, block, dtype):
    Z, _ = draw(shape, dtype, seed=41, offset=2.0)
    Zn, _ = draw(shape, dtype, seed=42)
    dA, _ = draw(shape, dtype, seed=43)
    A = np.tanh(Z)
    runs = []
    for schedule in ("forward", "forward", "reverse"):
        mu, var, _ = run_batch_stats(Z, block, block, schedule)
        dZt, dgamma, dbeta, _ = run_delta("tanh", dA, Z, A, Zn, block, block, schedule)
        runs.append([mu, var, dZt, dgamma, dbeta])
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


# --- NVRTC: sm_80 and sm_90 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_batch_norm_kernel_is_in_the_catalog_the_compile_test_checks(dtype):
    """tests/test_cupy_kernels_compile.py compiles K.catalog for sm_80 / sm_90 (no spills, registers, barriers
    exactly in the reducing kinds): the batch-norm kernels are part of it, each once."""
    catalog = K.batch_norm_catalog(dtype)
    assert {k for k, _, _ in catalog} == {"batch_stats", "bn_row_sums", "batch_norm_delta", "batch_norm_activation",
                                          "batch_norm_backward", "running_average", "running_guard"}
    assert len(catalog) == 2 * len(ACTS) + 5
    names = [name for _, _, (_, name) in K.catalog(dtype)]
    assert len(set(names)) == len(names)
    assert all(entry in K.catalog(dtype) for entry in catalog)


# --- the network on the CuPy stand-in -----------------------------------------------------------------------------
RNG = np.random.default_rng(5)
X_SMALL, Y_SMALL = RNG.standard_normal((3, 13)), (RNG.random((1, 13)) > 0.5).astype(np.float64)
X_LARGE, Y_LARGE = RNG.standard_normal((3, 600)), (RNG.random((1, 600)) > 0.5).astype(np.float64)
DIMS = [3, 9, 6, 1]                  # hidden widths > 4: 8 rows per block, 32 lanes -> m = 600 spans 19 blocks


def bn_net(device, dtype="float64", act="relu"):
    return fastdnn.Network(DIMS, act, "sigmoid", device=device, dtype=dtype, seed=3, batch_norm=True)


@pytest.fixture
def stand_in():
    pytest.importorskip("cupy", reason="the CuPy stand-in checks names against the real cupy package")
    if E.compiler_unavailable_reason():
        pytest.skip(E.compiler_unavailable_reason())
    import fake_cupy as fc
    with fc.installed(devices=2) as s, warnings.catch_warnings():
        warnings.simplefilter("error", fc.FakeCupyWarning)
        yield s


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "sigmoid"])
@pytest.mark.parametrize("data", ["small", "large"])
def test_fit_on_cupy_fused_equals_numpy(stand_in, data, act):
    X, Y = (X_SMALL, Y_SMALL) if data == "small" else (X_LARGE, Y_LARGE)
    nets = [bn_net(d, act=act) for d in ("cupy-fused", "numpy")]
    fit = dict(iterations=4) if data == "small" else dict(epochs=1, batch_size=256)     # 256, 256, 88
    hs = [n.fit(X, Y, optimizer="adam", learning_rate=0.02, verbose=0, report_every=1, **fit) for n in nets]
    np.testing.assert_allclose([r.cost for r in hs[0]], [r.cost for r in hs[1]], rtol=1e-10)
    for k, v in nets[1].parameters.items():
        np.testing.assert_allclose(nets[0].parameters[k], v, rtol=1e-10, atol=1e-10, err_msg=k)
    np.testing.assert_allclose(nets[0].forward(X), nets[1].forward(X), rtol=1e-10, atol=1e-12)   # running μ, σ²
    assert stand_in.counts["launch:fdnn_batch_stats_f64"] > 0 and stand_in.counts["launch:fdnn_running_average_f64"] > 0


def test_float32_fit_on_cupy_fused_is_close_to_numpy(stand_in):
    nets = [bn_net(d, dtype="float32", act="tanh") for d in ("cupy-fused", "numpy")]
    hs = [n.fit(X_LARGE, Y_LARGE, iterations=3, learning_rate=0.1, verbose=0, report_every=1) for n in nets]
    np.testing.assert_allclose([r.cost for r in hs[0]], [r.cost for r in hs[1]], rtol=1e-5)
    for k, v in nets[1].parameters.items():
        assert nets[0].parameters[k].dtype == np.float32
        np.testing.assert_allclose(nets[0].parameters[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def _per_step(stand_in, net, X, Y, sync_free=True):
    """Counts per step (the difference of a 7- and a 2-step fit, so that the first step's allocations and
    each fit's own work cancel), the steps run under cupyx.allow_synchronize(False) and the stand-in's
    no_sync()."""
    import cupyx
    net.fit(X, Y, iterations=2, verbose=0)
    counts = []
    for steps in (2, 7):
        stand_in.reset_counts()
        Xd, Yd = net.prepare(X, Y)
        with net.backend.device_scope(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "cupyx.allow_synchronize will be removed")
            with cupyx.allow_synchronize(False), stand_in.no_sync():
                net.engine.begin_call()
                for _ in range(steps):
                    net.engine.train_step(Xd, Yd, 0.01, check=False)
        counts.append(dict(stand_in.counts))
    return {k: (counts[1].get(k, 0) - counts[0].get(k, 0)) / 5 for k in set(counts[0]) | set(counts[1])
            if "@" not in k}


# The RawKernel launches of one step of DIMS with batch norm on both hidden layers (L = 3): per normalized
# layer batch_stats (1 launch, or 3 when a row spans several blocks: stage 0, stage 1, bn_row_sums),
# batch_norm_activation 1, batch_norm_delta (1, or 2 with its bn_row_sums), batch_norm_backward 1, and
# running_average 2 (μ and σ²); then the output layer's bias_activation 1, output kernel + sum_partials 2, the
# update 1, mark_divergence 1, running_guard 1.


@pytest.mark.parametrize("data, per_layer", [("small", 1 + 1 + 1 + 1 + 2), ("large", 3 + 1 + 2 + 1 + 2)])
def test_launches_per_step_are_counted(stand_in, data, per_layer):
    X, Y = (X_SMALL, Y_SMALL) if data == "small" else (X_LARGE, Y_LARGE)
    net = bn_net("cupy-fused")
    per_step = _per_step(stand_in, net, X, Y)
    assert per_step["launch"] == 2 * per_layer + 6          # small: 18; large: 24
    names = {"fdnn_batch_stats_f64": 2, "fdnn_batch_norm_activation_relu_f64": 2, "fdnn_batch_norm_delta_relu_f64": 2,
             "fdnn_batch_norm_backward_f64": 2, "fdnn_running_average_f64": 4, "fdnn_bias_activation_sigmoid_f64": 1,
             "fdnn_output_bce_sigmoid_f64": 1, "fdnn_sum_partials_f64": 1, "fdnn_update_gd_f64": 1,
             "fdnn_mark_divergence_f64": 1, "fdnn_running_guard_f64": 1}
    if data == "large":                  # both reductions of both layers: partials and a final bn_row_sums
        names.update(fdnn_batch_stats_f64=4, fdnn_bn_row_sums_f64=4)
    assert {k.split(":")[1]: v for k, v in per_step.items() if k.startswith("launch:") and v} == names
    assert per_step["gemm"] == 3 * 3 - 1 and per_step["sync"] == per_step["d2h"] == 0


def test_the_batch_norm_ops_allocate_and_launch_nothing_else(stand_in):
    """One training step's batch-norm ops (both geometries), run twice: the second run allocates nothing,
    synchronizes nothing and launches no CuPy kernel, only RawKernels."""
    be = fastdnn.backends.get_backend("cupy-fused:0", fallback=False)
    xp, act = be.xp, get_activation("tanh")
    import cupyx
    for n, m in ((6, 13), (9, 600)):
        Z, _ = draw((n, m), "float64", seed=51)
        Zn, Zt, A, dA = be.asarray(Z.copy()), be.empty((n, m), np.float64), be.empty((n, m), np.float64), \
            be.asarray(Z.copy())
        cols = [be.asarray(np.full((n, 1), v)) for v in (0.0, 1.0, 1.2, 0.3, 0.0, 1.0)]
        mu, var, gamma, beta, rmean, rvar = cols
        dgamma, dbeta, out = be.empty((n, 1), np.float64), be.empty((n, 1), np.float64), be.empty((n, 1), np.float64)
        cost, halted = be.asarray(np.array(0.5)), xp.zeros((), np.int64)
        for round_ in range(2):
            stand_in.reset_counts()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "cupyx.allow_synchronize will be removed")
                with cupyx.allow_synchronize(False), stand_in.no_sync():
                    be.batch_stats(Zn, mu, var)
                    be.batch_norm_activation(act, Zn, mu, var, EPS, gamma, beta, Zt, A)
                    be.batch_norm_delta(act, dA, Zt, A, Zn, dgamma, dbeta)
                    be.batch_norm_backward(dA, Zn, var, EPS, gamma, dgamma, dbeta)
                    go = be.running_guard(cost, halted)
                    be.running_average(rmean, mu, 0.9, out, go)
                    be.running_average(rvar, var, 0.9, out, None)
        counts = stand_in.counts
        assert counts["alloc"] == counts["sync"] == counts["kernel"] == counts["d2h"] == 0, dict(counts)
        # 1 each (running_guard included) + 2 running averages; rows over several blocks: +2 (stats), +1 (delta)
        assert counts["launch"] == (7 if m < 100 else 10), dict(counts)


@pytest.mark.parametrize("data", ["small", "large"])
def test_a_batch_normalized_step_allocates_and_synchronizes_nothing(stand_in, data):
    X, Y = (X_SMALL, Y_SMALL) if data == "small" else (X_LARGE, Y_LARGE)
    per_step = _per_step(stand_in, bn_net("cupy-fused"), X, Y)
    assert (per_step["alloc"], per_step["sync"], per_step["d2h"]) == (0, 0, 0)


def test_two_runs_are_bit_identical(stand_in):
    runs = []
    for _ in range(2):
        net = bn_net("cupy-fused", act="tanh")
        h = net.fit(X_LARGE, Y_LARGE, epochs=2, batch_size=300, optimizer="adam", learning_rate=0.02, verbose=0,
                    report_every=1)
        runs.append(([r.cost for r in h], net.parameters))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        np.testing.assert_array_equal(v.view(np.uint8), runs[1][1][k].view(np.uint8), err_msg=k)


def test_a_softmax_hidden_layer_takes_the_reference_path(stand_in):
    """Not elementwise: batch_norm_activation and batch_norm_delta fall back to the CuPy ops, still correct."""
    be = fastdnn.backends.get_backend("cupy-fused:0", fallback=False)
    act = get_activation("softmax")
    Z, Z64 = draw((4, 7), "float64", seed=61)
    n, m = Z.shape
    Zn, Zt, A = be.asarray(Z.copy()), be.empty((n, m), np.float64), be.empty((n, m), np.float64)
    mu, var = be.empty((n, 1), np.float64), be.empty((n, 1), np.float64)
    g, b = be.asarray(np.full((n, 1), 1.5)), be.asarray(np.full((n, 1), 0.25))
    be.batch_stats(Zn, mu, var)
    be.batch_norm_activation(act, Zn, mu, var, EPS, g, b, Zt, A)
    mu_o, var_o = stats_oracle(Z64)
    Zt_o = normalize_oracle(Z64, mu_o, var_o, 1.5, 0.25)[1]
    close(be.to_numpy(A), oracle.g("softmax", Zt_o), "float64")


def test_the_backend_running_average_reads_the_device_guard(stand_in):
    """go as a 0-d bool device array (read by the kernel), None, or a Python bool; and the guard that
    running_guard builds from a non-finite cost or a halt."""
    be = fastdnn.backends.get_backend("cupy-fused:0", fallback=False)
    running, batch = be.asarray(np.full((5, 1), 2.0)), be.asarray(np.full((5, 1), 4.0))
    inf, fine = be.asarray(np.array(np.inf)), be.asarray(np.array(0.5))
    not_halted, halted = be.asarray(np.array(0, np.int64)), be.asarray(np.array(4, np.int64))
    cases = [(lambda: be.asarray(np.array(True)), True), (lambda: be.asarray(np.array(False)), False),
             (lambda: None, True), (lambda: True, True), (lambda: False, False),
             (lambda: be.running_guard(fine, not_halted), True), (lambda: be.running_guard(inf, not_halted), False),
             (lambda: be.running_guard(fine, halted), False)]
    for make_go, moves in cases:
        out = be.asarray(np.full((5, 1), -1.0))
        go = make_go()
        be.running_average(running, running, 0.9, out, go)            # its workspace, the first time
        be.copy_from_host(np.full((5, 1), -1.0), out)
        stand_in.reset_counts()
        be.running_average(running, batch, 0.9, out, go)
        assert stand_in.counts["kernel"] == stand_in.counts["alloc"] == 0
        assert stand_in.counts["launch"] == (0 if go is False else 1)
        np.testing.assert_allclose(be.to_numpy(out), np.full((5, 1), 0.9 * 2.0 + 0.1 * 4.0 if moves else -1.0),
                                   rtol=1e-15)


def test_mixed_dtypes_take_the_reference_path(stand_in):
    """A kernel's pointers carry no dtype: float32 μ, σ² for float64 Z go through the CuPy ops, still right."""
    be = fastdnn.backends.get_backend("cupy-fused:0", fallback=False)
    Z, Z64 = draw((3, 20), "float64", seed=71, offset=1.0)
    mu, var = be.empty((3, 1), np.float32), be.empty((3, 1), np.float32)
    stand_in.reset_counts()
    be.batch_stats(be.asarray(Z.copy()), mu, var)
    assert stand_in.counts["launch"] == 0
    mu_o, var_o = stats_oracle(Z64)
    close(be.to_numpy(mu), mu_o, "float32")
    close(be.to_numpy(var), var_o, "float32")
