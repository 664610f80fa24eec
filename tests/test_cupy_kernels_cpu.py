"""Every fused GPU kernel body executed on the CPU (tests/cuda_on_cpu.py: the exact CUDA source, every
thread of every block, real barriers) against a float64 NumPy oracle written here and in oracle.py:
each kind x dtype x registered activation / loss / optimizer x shapes (m = 1, n = 1, sizes that are
not multiples of the block, grids of several blocks in each direction, and the real launch geometry),
extreme inputs, the divergence protocol, determinism (bit-identical runs, also with threads and blocks
run in reverse order). No GPU is used; this checks the kernels' logic, not GPU rounding (NVRTC's FMA
contraction and -ftz are not reproduced)."""
import numpy as np
import pytest

import cuda_on_cpu as E
import oracle
from fastdnn.activations import ACTIVATIONS, get_activation
from fastdnn.backends import _cupy_kernels as K
from fastdnn.backends.base import Backend
from fastdnn.losses import get_loss
from fastdnn.optimizers import OPTIMIZERS, get_optimizer
from support import assert_close

pytestmark = pytest.mark.skipif(E.compiler_unavailable_reason() is not None,
                                reason=f"cannot compile kernels for the CPU: {E.compiler_unavailable_reason()}")

DTYPES = ("float64", "float32")
ACTS = [name for name, cls in ACTIVATIONS.items() if cls.elementwise]
OUTPUT_PAIRS = sorted({v for k, v, _ in K.catalog("float32") if k == "output_elementwise"})
SHAPES = [(1, 1), (1, 37), (6, 1), (7, 45), (33, 70)]
SMALL_2D, SMALL_1D = (4, 2), (8,)          # small blocks: several blocks in each direction
REAL = None                                # the geometry plan() chooses for a GPU


@pytest.fixture(scope="module", autouse=True)
def compiled_once():
    """Compile every catalog kernel for the CPU up front, in parallel (then cached on disk)."""
    E.compile_many([k for dtype in DTYPES for _, _, k in K.catalog(dtype)])


def ids(shape):
    return f"n{shape[0]}xm{shape[1]}"


def draw(shape, dtype, seed=0, scale=1.0):
    """float64 values rounded to dtype: (the array in dtype, its exact float64 value)."""
    x = (np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype)
    return x, x.astype(np.float64)


def i32(x):
    return np.int32(x)


def contiguous(*arrays):
    """The kernels take C-contiguous arrays (a pointer to the first element, like CuPy passes)."""
    for a in arrays:
        assert a.flags.c_contiguous, "kernel arguments must be C-contiguous"


# --- how the backend launches each kind (typed scalars, plan() geometry) -------------------------------------
def run_bias_activation(act, Z, b, block=SMALL_2D, schedule="forward"):
    (src, name), (n, m) = K.bias_activation(act, Z.dtype), Z.shape
    contiguous(Z, b)
    p, A = K.plan("bias_activation", (n, m), block), np.full_like(Z, np.nan)
    E.launch(src, name, *p.main, (Z, b, A, i32(n), i32(m)), schedule=schedule)
    return A


def run_bias_softmax(Z, b, block=SMALL_1D, schedule="forward"):
    (src, name), (n, m) = K.bias_softmax(Z.dtype), Z.shape
    contiguous(Z, b)
    p, A = K.plan("bias_softmax", (n, m), block), np.full_like(Z, np.nan)
    E.launch(src, name, *p.main, (Z, b, A, i32(n), i32(m)), schedule=schedule)
    return A


def run_delta_row_sum(act, dA, Z, A, block=SMALL_2D, final_block=SMALL_2D, schedule="forward"):
    (src, name), (n, m) = K.delta_row_sum(act, dA.dtype), dA.shape
    contiguous(dA, Z, A)
    p = K.plan("delta_row_sum", (n, m), block, final_block)
    db, partials = np.full((n, 1), np.nan, dA.dtype), np.full(max(1, p.partials), np.nan)
    E.launch(src, name, *p.main, (dA, Z, A, db, partials, i32(n), i32(m)), schedule=schedule)
    if p.final is not None:
        src, name = K.row_sum_partials(dA.dtype)
        E.launch(src, name, *p.final, (partials, db, i32(n), i32(p.final_count)), schedule=schedule)
    return dA, db


def _sum(kind, partials, p, scale, dtype, schedule):
    out = np.full((), np.nan, dtype)
    src, name = K.sum_partials(dtype)
    E.launch(src, name, *p.final, (partials, i32(p.final_count), np.dtype(dtype).type(scale), out),
             schedule=schedule)
    return out


def run_output(loss, act, Z, A, Y, block=SMALL_2D, final_block=SMALL_1D, schedule="forward"):
    (n, m), dtype = Z.shape, Z.dtype
    contiguous(Z, A, Y)
    if act.name == "softmax":
        kind, (src, name) = "output_softmax_ce", K.output_softmax_ce(dtype)
        block = SMALL_1D if block == SMALL_2D else block
    else:
        kind, (src, name) = "output_elementwise", K.output_elementwise(loss, act, dtype)
    p = K.plan(kind, (n, m), block, final_block)
    dZ, partials, inv_m = np.full_like(Z, np.nan), np.full(p.partials, np.nan), dtype.type(1.0 / m)
    E.launch(src, name, *p.main, (Z, A, Y, dZ, inv_m, partials, i32(n), i32(m)), schedule=schedule)
    return dZ, _sum(kind, partials, p, inv_m, dtype, schedule)


SENTINEL = -7.25


def run_update(opt, theta, dtheta, s1, s2, lr, t, cost=0.5, halted=0, block=SMALL_1D, schedule="forward"):
    """(θ_out, s1_out, s2_out) from out buffers prefilled with SENTINEL; the inputs must stay as they were."""
    dtype, f = theta.dtype, theta.dtype.type
    src, name = K.optimizer_update(opt, dtype)
    p = K.plan("optimizer_update", theta.shape, block)
    outs = [np.full_like(theta, SENTINEL) for _ in range(3)]
    before = [x.copy() for x in (theta, dtheta, s1, s2)]
    c1, c2 = opt.corrections(t)
    E.launch(src, name, *p.main, (theta, dtheta, s1, s2, f(lr), f(c1), f(c2), *outs, np.full((), cost, dtype),
                                  np.full((), halted, np.int64), np.int64(theta.size)), schedule=schedule)
    for x, y in zip(before, (theta, dtheta, s1, s2)):
        np.testing.assert_array_equal(x, y)                 # inputs never written
    return outs


# --- forward ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("act_name", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_activation_matches_oracle(dtype, act_name, shape):
    Z, Z64 = draw(shape, dtype, 1, 3.0)
    b, b64 = draw((shape[0], 1), dtype, 2)
    A = run_bias_activation(get_activation(act_name), Z, b)
    assert_close(Z, Z64 + b64, dtype)
    assert_close(A, oracle.g(act_name, Z64 + b64), dtype)


@pytest.mark.parametrize("shape", SHAPES[1:], ids=ids)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_softmax_matches_oracle(dtype, shape):
    Z, Z64 = draw(shape, dtype, 3, 4.0)
    b, b64 = draw((shape[0], 1), dtype, 4)
    A = run_bias_softmax(Z, b)
    assert_close(Z, Z64 + b64, dtype)
    assert_close(A, oracle.g("softmax", Z64 + b64), dtype)


@pytest.mark.parametrize("act_name", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_stay_finite_for_huge_inputs(dtype, act_name):
    Z = np.array([[-1e4, -1e3, -100.0, -1e-30, 0.0, 1e-30, 100.0, 1e3, 1e4]] * 3, dtype)
    A = run_bias_activation(get_activation(act_name), Z.copy(), np.zeros((3, 1), dtype))
    assert np.isfinite(A).all()
    if act_name == "sigmoid":
        assert A[0, 0] == 0.0 and A[0, -1] == 1.0
    dA, db = run_delta_row_sum(get_activation(act_name), np.ones_like(Z), Z, A)
    assert np.isfinite(dA).all() and np.isfinite(db).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_logits_200_apart_is_finite_and_normalised(dtype):
    Z = np.array([[0.0, 200.0, -100.0], [200.0, 0.0, 100.0], [100.0, 0.0, 0.0]], dtype)
    A = run_bias_softmax(Z.copy(), np.zeros((3, 1), dtype))
    assert np.isfinite(A).all()
    assert_close(A.sum(axis=0), np.ones(3), dtype)
    assert_close(A, oracle.g("softmax", Z.astype(np.float64)), dtype)


# --- backward -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("act_name", ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_delta_row_sum_matches_oracle(dtype, act_name, shape):
    Z, Z64 = draw(shape, dtype, 5, 2.0)
    dA, dA64 = draw(shape, dtype, 6)
    A = oracle.g(act_name, Z64).astype(dtype)
    dZ, db = run_delta_row_sum(get_activation(act_name), dA, Z, A)
    want = oracle.dg_times(act_name, dA64, Z64)
    assert_close(dZ, want, dtype)
    assert_close(db, want.sum(axis=1, keepdims=True), dtype, scale=max(1.0, np.abs(want).sum(axis=1).max()))


@pytest.mark.parametrize("shape", [(3, 700), (70, 300), (600, 5), (1, 2000)], ids=ids)
@pytest.mark.parametrize("dtype", DTYPES)
def test_delta_row_sum_with_the_real_geometry(dtype, shape):
    p = K.plan("delta_row_sum", shape)
    assert p.main.block[0] * p.main.block[1] == K.THREADS
    Z, Z64 = draw(shape, dtype, 7)
    dA, dA64 = draw(shape, dtype, 8)
    A = oracle.g("tanh", Z64).astype(dtype)
    dZ, db = run_delta_row_sum(get_activation("tanh"), dA, Z, A, block=REAL, final_block=REAL)
    want = oracle.dg_times("tanh", dA64, Z64)
    assert_close(db, want.sum(axis=1, keepdims=True), dtype, scale=max(1.0, np.abs(want).sum(axis=1).max()))
    assert_close(dZ, want, dtype)


# --- output layer and cost ---------------------------------------------------------------------------------
def stable_cost(loss_name, Z64, A64, Y64):
    """J from float64, written apart from the kernels: bce via softplus, mse from A, ce via log-softmax."""
    m = Z64.shape[1]
    if loss_name == "bce":
        return np.sum(np.logaddexp(0.0, Z64) - Z64 * Y64) / m
    if loss_name == "mse":
        return np.sum((A64 - Y64) ** 2) / (2 * m)
    shifted = Z64 - Z64.max(axis=0)
    return -np.sum(Y64 * (shifted - np.log(np.exp(shifted).sum(axis=0)))) / m


def output_case(loss_name, act_name, shape, dtype, seed=9, scale=2.0):
    Z, Z64 = draw(shape, dtype, seed, scale)
    A = oracle.g(act_name, Z64).astype(dtype)
    if loss_name == "ce":
        Y = np.eye(shape[0])[:, np.random.default_rng(seed).integers(0, shape[0], shape[1])]
    elif loss_name == "bce":
        Y = (np.random.default_rng(seed).random(shape) < 0.5) * 1.0
    else:
        Y = np.random.default_rng(seed).normal(size=shape)
    return Z, A, np.ascontiguousarray(Y, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=ids)
@pytest.mark.parametrize("pair", OUTPUT_PAIRS + ["ce-softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_layer_matches_oracle(dtype, pair, shape):
    loss_name, act_name = pair.split("-", 1)
    if act_name == "softmax" and shape[0] == 1:
        shape = (2, shape[1])
    act = get_activation(act_name)
    Z, A, Y = output_case(loss_name, act_name, shape, dtype)
    dZ, J = run_output(get_loss(loss_name, act), act, Z, A, Y)
    Z64, A64, Y64, m = Z.astype(np.float64), A.astype(np.float64), Y.astype(np.float64), shape[1]
    if act_name == get_loss(loss_name, act).canonical:
        want = (A64 - Y64) / m
    else:
        want = oracle.dg_times(act_name, A64 - Y64, Z64) / m
    assert J.shape == () and J.dtype == np.dtype(dtype)
    assert_close(dZ, want, dtype)
    assert_close(J, stable_cost(loss_name, Z64, A64, Y64), dtype)


@pytest.mark.parametrize("shape", [(1, 3000), (10, 700)], ids=ids)
@pytest.mark.parametrize("pair", ["bce-sigmoid", "ce-softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_layer_with_the_real_geometry(dtype, pair, shape):
    loss_name, act_name = pair.split("-")
    shape = (max(shape[0], 2), shape[1]) if act_name == "softmax" else shape
    act = get_activation(act_name)
    Z, A, Y = output_case(loss_name, act_name, shape, dtype, seed=11)
    dZ, J = run_output(get_loss(loss_name, act), act, Z, A, Y, block=REAL, final_block=REAL)
    Z64, A64, Y64 = Z.astype(np.float64), A.astype(np.float64), Y.astype(np.float64)
    assert_close(dZ, (A64 - Y64) / shape[1], dtype)
    assert_close(J, stable_cost(loss_name, Z64, A64, Y64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_outputs_give_finite_costs(dtype):
    # sigmoid + bce at z = ±1e4, wrong labels: cost 1e4 per wrong entry, finite
    Z = np.array([[-1e4, 1e4, 30.0, -30.0]], dtype)
    A, Y = oracle.g("sigmoid", Z.astype(np.float64)).astype(dtype), np.array([[1.0, 0.0, 0.0, 1.0]], dtype)
    dZ, J = run_output(get_loss("bce", get_activation("sigmoid")), get_activation("sigmoid"), Z, A, Y)
    assert np.isfinite(J) and np.isfinite(dZ).all()
    assert_close(J, stable_cost("bce", Z.astype(np.float64), A.astype(np.float64), Y.astype(np.float64)), dtype)
    # softmax + ce with logits 200 apart: the true class gets a = 0 in float32 -> log a from the logits
    Z = np.array([[0.0, 200.0], [200.0, 0.0], [-5.0, 1.0]], dtype)
    A = run_bias_softmax(Z.copy(), np.zeros((3, 1), dtype))
    Y = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype)
    assert A[0, 0] < 1e-30 and A[2, 1] < 1e-30                  # underflowed (exactly 0 in float32)
    dZ, J = run_output(get_loss("ce", get_activation("softmax")), get_activation("softmax"), Z, A, Y)
    Z64 = Z.astype(np.float64)
    assert np.isfinite(J)
    assert_close(J, stable_cost("ce", Z64, None, Y.astype(np.float64)), dtype)
    assert float(J) > 100


@pytest.mark.parametrize("dtype", DTYPES)
def test_ce_reads_log_a_from_the_logits_exactly_where_the_cpu_kernel_does(dtype):
    # a <= 1e-30: log a = z - logsumexp(z) (here log 0.5), whatever A says; above: log a itself
    act = get_activation("softmax")
    Z, Y = np.zeros((2, 2), dtype), np.array([[1.0, 1.0], [0.0, 0.0]], dtype)
    A = np.array([[1e-31, 2e-30], [1.0, 1.0]], dtype)
    _, J = run_output(get_loss("ce", act), act, Z, A, Y)
    assert_close(J, (-np.log(0.5) - np.log(float(A[0, 1]))) / 2, dtype)


def test_non_canonical_output_needs_a_loss_whose_delta_is_a_minus_y():
    class Odd(type(get_loss("mse", get_activation("tanh")))):
        def dA(self, xp, A, Y):
            return 2 * (A - Y)
    with pytest.raises(ValueError, match="no fused output kernel"):
        K.output_elementwise(Odd(), get_activation("tanh"), "float32")


# --- update and the divergence protocol ---------------------------------------------------------------
def one_step(name, h, theta, g, s1, s2, lr, t):
    """(θ', s1', s2') of one step in float64, from the optimizers' published formulas."""
    if name == "gd":
        return theta - lr * g, s1, s2
    if name == "momentum":
        v = h["beta"] * s1 + (1 - h["beta"]) * g
        return theta - lr * v, v, s2
    if name == "rmsprop":
        s = h["beta"] * s1 + (1 - h["beta"]) * g * g
        return theta - lr * g / (np.sqrt(s) + h["epsilon"]), s, s2
    if name == "adam":
        v = h["beta1"] * s1 + (1 - h["beta1"]) * g
        s = h["beta2"] * s2 + (1 - h["beta2"]) * g * g
        v_hat, s_hat = v / (1 - h["beta1"] ** t), s / (1 - h["beta2"] ** t)
        return theta - lr * v_hat / (np.sqrt(s_hat) + h["epsilon"]), v, s
    if name == "adagrad":
        G = s1 + g * g
        return theta - lr * g / (np.sqrt(G) + h["epsilon"]), G, s2
    raise KeyError(name)


def update_case(size, dtype, seed=12):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=size).astype(dtype)
    dtheta = (rng.normal(size=size) * np.logspace(-4, 1, size)).astype(dtype)
    s1, s2 = rng.uniform(0.0, 0.5, size).astype(dtype), rng.uniform(0.0, 0.5, size).astype(dtype)
    return theta, dtheta, s1, s2


@pytest.mark.parametrize("size", [1, 7, 100, 1000])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_update_matches_oracle_out_of_place(dtype, opt_name, size):
    opt = get_optimizer(opt_name)
    theta, dtheta, s1, s2 = update_case(size, dtype)
    outs = run_update(opt, theta, dtheta, s1, s2, 0.01, t=3, block=SMALL_1D if size < 1000 else REAL)
    want = one_step(opt_name, vars(opt), *(x.astype(np.float64) for x in (theta, dtheta, s1, s2)), 0.01, 3)
    assert_close(outs[0], want[0], dtype)
    for k in range(1, 3):
        if k <= opt.n_state:
            assert_close(outs[k], want[k], dtype)
        else:
            assert (outs[k] == SENTINEL).all(), f"state {k} of {opt_name} is unused and must not be written"


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_three_steps_through_swapped_buffers(dtype, opt_name):
    opt = get_optimizer(opt_name)
    theta, grads = draw(50, dtype, 13)[0], [draw(50, dtype, 14 + t)[0] for t in range(3)]
    s1, s2 = np.zeros(50, dtype), np.zeros(50, dtype)
    for t, g in enumerate(grads, start=1):
        theta, n1, n2 = run_update(opt, theta, g, s1, s2, 0.05, t)
        s1 = n1 if opt.n_state >= 1 else s1
        s2 = n2 if opt.n_state >= 2 else s2
    want = oracle.optimizer_steps(opt_name, draw(50, dtype, 13)[1], [g.astype(np.float64) for g in grads], 0.05)
    assert_close(theta, want, dtype)


@pytest.mark.parametrize("cost", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_update_writes_nothing_when_the_cost_is_not_finite(dtype, opt_name, cost):
    theta, dtheta, s1, s2 = update_case(37, dtype)
    outs = run_update(get_optimizer(opt_name), theta, dtheta, s1, s2, 0.01, 2, cost=cost, halted=0)
    assert all((o == SENTINEL).all() for o in outs)
    outs = run_update(get_optimizer(opt_name), theta, dtheta, s1, s2, 0.01, 2, cost=cost, halted=5)
    np.testing.assert_array_equal(outs[0], theta)          # halted earlier: the kept θ travels on


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_update_copies_when_halted(dtype, opt_name):
    opt = get_optimizer(opt_name)
    theta, dtheta, s1, s2 = update_case(37, dtype)
    outs = run_update(opt, theta, dtheta, s1, s2, 0.01, 2, cost=1.0, halted=3)
    np.testing.assert_array_equal(outs[0], theta)
    for k, s in ((1, s1), (2, s2)):
        if k <= opt.n_state:
            np.testing.assert_array_equal(outs[k], s)
        else:
            assert (outs[k] == SENTINEL).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_mark_divergence_records_the_first_non_finite_iteration(dtype):
    src, name = K.mark_divergence(dtype)
    p = K.plan("mark_divergence", (1,))
    halted, halted_cost = np.zeros((), np.int64), np.zeros((), dtype)
    for iteration, cost in ((4, 1.0), (5, np.inf), (6, np.nan), (7, 2.0)):
        E.launch(src, name, *p.main, (np.full((), cost, dtype), halted, halted_cost, np.int64(iteration)))
        assert int(halted) == (0 if iteration < 5 else 6)
        assert float(halted_cost) == (0.0 if iteration < 5 else np.inf)
    halted = np.zeros((), np.int64)
    E.launch(src, name, (3, 1), (4, 1), (np.full((), np.nan, dtype), halted, halted_cost, np.int64(9)))
    assert int(halted) == 10                 # any launch geometry: one thread writes


# --- L2 and dropout -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 13, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_scaled_and_sum_squares(dtype, size):
    dW, dW64 = draw(size, dtype, 20)
    W, W64 = draw(size, dtype, 21, 3.0)
    f, block = np.dtype(dtype).type, SMALL_1D if size < 1000 else REAL
    src, name = K.add_scaled(dtype)
    E.launch(src, name, *K.plan("add_scaled", (size,), block).main, (dW, W, f(0.3), np.int64(size)))
    assert_close(dW, dW64 + float(f(0.3)) * W64, dtype)
    p = K.plan("sum_squares", (size,), block, block)
    partials = np.full(p.partials, np.nan)
    src, name = K.sum_squares(dtype)
    E.launch(src, name, *p.main, (W, np.int64(size), partials))
    total = _sum("sum_squares", partials, p, 1.0, dtype, "forward")
    assert total.dtype == np.dtype(dtype)
    assert_close(total, np.sum(W64 ** 2), dtype)


class _Uniform:
    """A generator stand-in whose random(out=) writes given draws (as base.Backend.dropout_mask asks)."""

    def __init__(self, u):
        self.u = u

    def random(self, dtype, out):
        out[...] = self.u
        return out


@pytest.mark.parametrize("keep_prob", [0.5, 0.8, 0.3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_is_exactly_the_reference_mask(dtype, keep_prob):
    u = np.random.default_rng(22).random((7, 45)).astype(dtype)
    u[0, :3] = np.dtype(dtype).type(keep_prob)                    # the boundary: u == keep_prob is dropped
    want = Backend().dropout_mask(np.empty_like(u), keep_prob, _Uniform(u))
    D, f = u.copy(), np.dtype(dtype).type
    src, name = K.dropout_mask(dtype)
    E.launch(src, name, *K.plan("dropout_mask", (D.size,), SMALL_1D).main,
             (D, f(keep_prob), f(1 / keep_prob), np.int64(D.size)))
    np.testing.assert_array_equal(D, want)


# --- determinism -----------------------------------------------------------------------------------------
def _all_reductions(dtype, schedule):
    out = []
    Z, Z64 = draw((9, 130), dtype, 30)
    dA = draw((9, 130), dtype, 31)[0]
    A = oracle.g("sigmoid", Z64).astype(dtype)
    out += run_delta_row_sum(get_activation("sigmoid"), dA, Z, A, schedule=schedule)
    act = get_activation("sigmoid")
    out += run_output(get_loss("bce", act), act, *output_case("bce", "sigmoid", (9, 130), dtype), schedule=schedule)
    act = get_activation("softmax")
    out += run_output(get_loss("ce", act), act, *output_case("ce", "softmax", (9, 130), dtype), schedule=schedule)
    W = draw(999, dtype, 32)[0]
    p = K.plan("sum_squares", (999,), SMALL_1D, SMALL_1D)
    partials = np.full(p.partials, np.nan)
    src, name = K.sum_squares(dtype)
    E.launch(src, name, *p.main, (W, np.int64(999), partials), schedule=schedule)
    out.append(_sum("sum_squares", partials, p, 1.0, dtype, schedule))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_are_bit_identical_run_to_run_and_in_reverse_order(dtype):
    first, again, reverse = (_all_reductions(dtype, s) for s in ("forward", "forward", "reverse"))
    for a, b, c in zip(first, again, reverse):
        assert a.tobytes() == b.tobytes() == c.tobytes()


# --- any grid and block is correct (grid-stride loops, trees of any width) ----------------------------------
ODD_GEOMETRIES = [((2, 2, 1), (3, 3, 1)), ((1, 1, 1), (5, 1, 1)), ((3, 1, 1), (1, 7, 1))]


@pytest.mark.parametrize("grid,block", ODD_GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_any_grid_and_block_give_the_same_results(dtype, grid, block):
    n, m = 17, 29
    Z, Z64 = draw((n, m), dtype, 40)
    dA, dA64 = draw((n, m), dtype, 41)
    b, b64 = draw((n, 1), dtype, 42)
    act = get_activation("sigmoid")
    results = {}
    for schedule in ("forward", "reverse"):
        Zc, dAc = Z.copy(), dA.copy()
        src, name = K.bias_activation(act, dtype)
        A = np.full_like(Z, np.nan)
        E.launch(src, name, grid, block, (Zc, b, A, i32(n), i32(m)), schedule=schedule)
        src, name = K.delta_row_sum(act, dtype)
        db, partials = np.full((n, 1), np.nan, dtype), np.full(n * grid[0], np.nan)
        E.launch(src, name, grid, block, (dAc, Zc, A, db, partials, i32(n), i32(m)), schedule=schedule)
        if grid[0] > 1:
            src, name = K.row_sum_partials(dtype)
            E.launch(src, name, grid, block, (partials, db, i32(n), i32(grid[0])), schedule=schedule)
        src, name = K.output_elementwise(get_loss("bce", act), act, dtype)
        Y = (draw((n, m), dtype, 43)[0] > 0).astype(dtype)
        dZ, partials = np.full_like(Z, np.nan), np.full(grid[0] * grid[1], np.nan)
        E.launch(src, name, grid, block, (Zc, A, Y, dZ, np.dtype(dtype).type(1 / m), partials, i32(n), i32(m)),
                 schedule=schedule)
        J = np.full((), np.nan, dtype)
        src, name = K.sum_partials(dtype)
        E.launch(src, name, 1, block, (partials, i32(partials.size), np.dtype(dtype).type(1 / m), J),
                 schedule=schedule)
        results[schedule] = (Zc, A, dAc, db, dZ, J)
    for x, y in zip(*results.values()):
        assert x.tobytes() == y.tobytes()
    Zb = Z64 + b64
    Zc, A, dAc, db, dZ, J = results["forward"]
    assert_close(A, oracle.g("sigmoid", Zb), dtype)
    want = oracle.dg_times("sigmoid", dA64, Zb)
    assert_close(dAc, want, dtype)
    assert_close(db, want.sum(axis=1, keepdims=True), dtype, scale=max(1.0, np.abs(want).sum(axis=1).max()))
    Y64 = (draw((n, m), dtype, 43)[0] > 0).astype(np.float64)
    assert_close(J, stable_cost("bce", Zc.astype(np.float64), None, Y64), dtype)


# --- launch geometry -----------------------------------------------------------------------------------
SMS = 132          # an H100's streaming multiprocessors


@pytest.mark.parametrize("shape", [(n, 10 ** 5) for n in range(1, 11)] + [(4096, 64), (4096, 1000), (512, 512)],
                         ids=ids)
def test_row_sums_keep_a_large_gpu_busy(shape):
    p = K.plan("delta_row_sum", shape)
    gx, gy, _ = p.main.grid
    assert gx * gy >= 2 * SMS, p
    assert p.main.block[0] * p.main.block[1] == K.THREADS and p.main.block[0] % 32 == 0
    assert gx <= K.MAX_PARTIAL_BLOCKS and gy <= K.MAX_GRID
    if gx == 1:
        assert p.final is None and p.partials == 0
    else:
        assert p.partials == shape[0] * gx and p.final_count == gx and p.final.grid[0] == 1


def test_small_outputs_skip_the_final_row_sum():
    assert K.plan("delta_row_sum", (4096, 64)).final is None


@pytest.mark.parametrize("kind", ["bias_activation", "delta_row_sum", "output_elementwise", "bias_softmax",
                                  "output_softmax_ce", "optimizer_update", "add_scaled", "dropout_mask",
                                  "sum_squares", "mark_divergence"])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 1), (70000, 3), (3, 10 ** 8)], ids=ids)
def test_plans_stay_within_cuda_limits(kind, shape):
    flat = kind in ("optimizer_update", "add_scaled", "dropout_mask", "sum_squares", "mark_divergence")
    p = K.plan(kind, (shape[0] * shape[1],) if flat else shape)
    for launch in filter(None, (p.main, p.final)):
        assert all(1 <= g <= K.MAX_GRID for g in launch.grid)
        assert all(b >= 1 for b in launch.block) and np.prod(launch.block) <= K.MAX_THREADS
    assert p.partials <= max(shape[0], 1) * K.MAX_PARTIAL_BLOCKS


def test_plan_rejects_bad_requests():
    with pytest.raises(ValueError, match="unknown kernel kind 'bias'; expected one of .*add_scaled"):
        K.plan("bias", (1, 1))
    with pytest.raises(ValueError, match=r"shape \(2,\) must have 2"):
        K.plan("bias_activation", (2,))
    with pytest.raises(ValueError, match="2\\*\\*30"):
        K.plan("add_scaled", (2 ** 31,))
    with pytest.raises(ValueError, match="bad block"):
        K.plan("bias_activation", (4, 4), block=(64, 32))
    with pytest.raises(ValueError, match="bad block"):
        K.plan("add_scaled", (4,), block=(4, 2))


# --- the emulator itself: barriers, races, memory, argument types ------------------------------------------
HEADER = K.PRELUDE + K.KERNEL_PRELUDE
NEIGHBOUR = """
extern "C" __global__ void neighbour(int* out, int sync) {
    __shared__ int sh[64];
    const unsigned int t = threadIdx.x;
    sh[t] = (int)t + 100 * (int)blockIdx.x;
    if (sync) { __syncthreads(); }
    out[blockIdx.x * blockDim.x + t] = sh[(t + 1) % blockDim.x];
}
"""


def test_syncthreads_is_a_real_barrier_and_races_show_in_reverse_order():
    good = np.zeros(32, np.int32)
    E.launch(NEIGHBOUR, "neighbour", 2, 16, (good, np.int32(1)))
    np.testing.assert_array_equal(good, [(t + 1) % 16 + 100 * b for b in range(2) for t in range(16)])
    fwd, rev = np.zeros(32, np.int32), np.zeros(32, np.int32)
    E.launch(NEIGHBOUR, "neighbour", 2, 16, (fwd, np.int32(0)))
    E.launch(NEIGHBOUR, "neighbour", 2, 16, (rev, np.int32(0)), schedule="reverse")
    assert fwd.tobytes() != rev.tobytes()                      # the race is visible


RACY_SUM = HEADER + """
extern "C" __global__ void racy(double* out) {
    __shared__ double sh[64];
    const unsigned int t = threadIdx.x;
    for (int round = 0; round < 2; round++) {
        sh[t] = (double)(t + 1 + round);
        for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
            __syncthreads();
            if (t < half) { sh[t] += sh[t + half]; }
        }
        if (t == 0) { out[round] = sh[0]; }     /* no barrier before the next round writes sh */
    }
}
"""


def test_a_missing_barrier_in_a_tree_sum_is_caught():
    fwd, rev = np.zeros(2), np.zeros(2)
    E.launch(RACY_SUM, "racy", 1, 8, (fwd,))
    E.launch(RACY_SUM, "racy", 1, 8, (rev,), schedule="reverse")
    assert fwd.tolist() != rev.tolist()


def test_barrier_divergence_is_an_error():
    src = """extern "C" __global__ void k(int* x) { if (threadIdx.x == 0) { return; } __syncthreads(); x[0] = 1; }"""
    with pytest.raises(E.KernelError, match="barrier divergence"):
        E.launch(src, "k", 1, 4, (np.zeros(1, np.int32),))


COPY = """extern "C" __global__ void copy(const float* x, float* y, int n) {
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) { y[i] = x[i] + 1.0f; }
}
"""


def test_out_of_bounds_access_is_caught_and_named():
    x, y = np.zeros(10, np.float32), np.zeros(9, np.float32)
    with pytest.raises(MemoryError, match=r"argument\(s\) \[1\]: 0 bytes past the end"):
        E.launch(COPY, "copy", 2, 8, (x, y, np.int32(10)))


def test_arguments_are_checked_against_the_kernel_signature():
    x, y = np.zeros(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="argument 2 is long long .*Python int.*parameter 2 is int"):
        E.launch(COPY, "copy", 1, 4, (x, y, 4))
    with pytest.raises(TypeError, match="argument 1 is double .*parameter 1 is a pointer"):
        E.launch(COPY, "copy", 1, 4, (x, 1.0, np.int32(4)))
    with pytest.raises(TypeError, match="takes 3 arguments"):
        E.launch(COPY, "copy", 1, 4, (x, y))
    E.launch(COPY, "copy", 1, 4, (x, y, np.int32(4)))
    np.testing.assert_array_equal(y, 1.0)


def test_aliasing_arguments_share_memory_as_on_a_device():
    a = np.arange(6, dtype=np.float32)
    E.launch(COPY, "copy", 1, 8, (a, a, np.int32(6)))                 # in place
    np.testing.assert_array_equal(a, np.arange(6) + 1)
    b = np.zeros(8, np.float32)
    E.launch(COPY, "copy", 1, 1, (b[:-1], b[1:], np.int32(1)))        # overlapping views
    np.testing.assert_array_equal(b[:3], [0, 1, 0])


def test_writing_a_read_only_array_is_an_error():
    x, y = np.zeros(4, np.float32), np.zeros(4, np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        E.launch(COPY, "copy", 1, 4, (x, y, np.int32(4)))


def test_dynamic_shared_memory_is_refused_clearly():
    src = 'extern "C" __global__ void k(float* x) { extern __shared__ float s[]; s[0] = 1.0f; x[0] = s[0]; }'
    with pytest.raises(NotImplementedError, match="dynamic shared memory"):
        E.launch(src, "k", 1, 1, (np.zeros(1, np.float32),))

