"""The vectorizable tanh / sigmoid / exp / softplus of backends/_fastmath against NumPy in higher
precision: ulp error over samples of every exponent, the special values, the derivative forms, the
loss form, and that a fused loop built from them really compiles to SIMD code without libm calls."""
import functools
import math
import re

import numpy as np
import pytest

from support import BACKENDS

pytestmark = pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")

if "numba" in BACKENDS:
    import llvmlite.binding as llvm
    import numba
    from numba.extending import register_jitable

    from fastdnn.activations import get_activation
    from fastdnn.backends import _fastmath as FM
    from fastdnn.losses import get_loss

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
LD = np.longdouble
EXTENDED = np.finfo(LD).nmant >= 63          # x87 80-bit long double: 11 bits beyond float64

# Max error in ulps of the result, measured (every float32; 3.4M float64 samples) and documented in
# _fastmath's docstring; a little margin for float64, whose sample is not exhaustive.
MAX_ULP = {("tanh", F32): 2.5, ("sigmoid", F32): 2.5, ("exp", F32): 1.1, ("softplus", F32): 2.8,
           ("tanh", F64): 2.75, ("sigmoid", F64): 2.75, ("exp", F64): 1.1, ("softplus", F64): 3.0}


# --- references, written apart from the code under test -----------------------------------------
def ref_tanh(x):
    return np.tanh(x)


def ref_sigmoid(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def ref_exp(x):
    with np.errstate(over="ignore"):
        return np.exp(x)


def ref_softplus(x):
    """log(1 + e^x), as logaddexp(0, x)."""
    return np.logaddexp(np.zeros_like(x), x)


REF = {"tanh": ref_tanh, "sigmoid": ref_sigmoid, "exp": ref_exp, "softplus": ref_softplus}


def ulp_of(r, dtype):
    """The spacing of dtype's floats at |r| (r in a wider type): 2^(e - p) with the exponent e of r,
    no smaller than the subnormal spacing."""
    info = np.finfo(dtype)
    _, e = np.frexp(np.abs(r).astype(LD if dtype == F64 else np.float64))
    e = np.maximum(e - 1, info.minexp)
    return np.ldexp(np.ones_like(r, dtype=LD if dtype == F64 else np.float64), e - info.nmant)


def ulp_error(y, r, dtype):
    """|y - r| in ulps of dtype at r, where r is finite and rounds to a finite dtype value."""
    return np.abs(y.astype(r.dtype) - r) / ulp_of(r, dtype)


@functools.lru_cache(maxsize=None)
def samples(dtype):
    """Finite inputs of every exponent and both signs, plus the ranges where the functions bend."""
    if dtype == F32:
        bits = np.arange(0, 2**32, 2039, dtype=np.uint64).astype(np.uint32)    # 2.1M, every exponent
        x = bits.view(np.float32)
    else:
        rng = np.random.default_rng(5)
        exps = np.arange(2047, dtype=np.uint64)[:, None] << np.uint64(52)
        bits = (rng.integers(0, 2**52, size=(2047, 120), dtype=np.uint64) | exps).ravel()
        x = np.concatenate([bits.view(np.float64), -bits.view(np.float64), rng.uniform(-40, 40, 400_000),
                            rng.uniform(-760, 760, 100_000)])
    x = x[np.isfinite(x)]
    x.flags.writeable = False          # shared by the tests (cached)
    return x


# --- compiled evaluation ------------------------------------------------------------------------
FUNCS = {("tanh", F32): "tanh32", ("tanh", F64): "tanh64", ("sigmoid", F32): "sigmoid32",
         ("sigmoid", F64): "sigmoid64", ("exp", F32): "exp32", ("exp", F64): "exp64",
         ("softplus", F32): "softplus32", ("softplus", F64): "softplus64"}
_compiled = {}


def evaluate(name, dtype, x):
    """FM.<name><bits> over x in a compiled loop."""
    key = (name, dtype)
    if key not in _compiled:
        f = getattr(FM, FUNCS[key])

        @numba.njit
        def run(x):
            out = np.empty_like(x)
            for i in range(x.shape[0]):
                out[i] = f(x[i])
            return out

        _compiled[key] = run
    return _compiled[key](np.ascontiguousarray(x, dtype=dtype))


CASES = [pytest.param(name, dt, id=f"{name}-{dt.name}") for name in REF for dt in (F32, F64)]


@pytest.mark.parametrize("name, dtype", CASES)
def test_ulp_error_within_the_documented_bound_over_every_exponent(name, dtype):
    if dtype == F64 and not EXTENDED:
        pytest.skip("needs an extended long double for a float64 reference")
    x = samples(dtype)
    y = evaluate(name, dtype, x)
    with np.errstate(over="ignore", under="ignore"):
        r = REF[name](x.astype(LD if dtype == F64 else np.float64))
        rounded = r.astype(dtype)
    finite = np.isfinite(rounded)
    assert np.array_equal(y[~finite], rounded[~finite]), "results past the overflow threshold differ"
    err = ulp_error(y[finite], r[finite], dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[(name, dtype)], \
        f"{name} {dtype}: {float(err[worst]):.2f} ulp at x = {x[finite][worst]!r}"


SPECIAL = [   # x, (tanh, sigmoid, exp, softplus) exactly
    (0.0, (0.0, 0.5, 1.0, None)), (-0.0, (-0.0, 0.5, 1.0, None)),
    (math.inf, (1.0, 1.0, math.inf, math.inf)), (-math.inf, (-1.0, 0.0, 0.0, 0.0)),
    (1e4, (1.0, 1.0, math.inf, 1e4)), (-1e4, (-1.0, 0.0, 0.0, 0.0)), (30.0, (1.0, None, None, None)),
    (-30.0, (-1.0, None, None, None))]


@pytest.mark.parametrize("name, dtype", CASES)
def test_special_values_exactly(name, dtype):
    column = list(REF).index(name)
    cases = [(x, want[column]) for x, want in SPECIAL if want[column] is not None]
    y = evaluate(name, dtype, np.array([x for x, _ in cases] + [math.nan, -math.nan]))
    for (x, want), got in zip(cases, y):
        same = got == want and math.copysign(1, got) == math.copysign(1, want)
        assert same, f"{name}({x}) = {got!r}, not {want!r}"
    assert np.isnan(y[-2:]).all(), f"{name}(NaN) must be NaN (the training loop watches for it), got {y[-2:]}"


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_tiny_and_subnormal_inputs(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    below = 2.0 ** (-40 if dtype == F32 else -60)    # 1 + x rounds to 1, tanh x to x
    x = np.array([tiny, -tiny, 1e-30, -1e-30, below, -below, np.finfo(dtype).smallest_normal], dtype)
    assert np.array_equal(evaluate("tanh", dtype, x), x), "tanh x = x below the rounding threshold"
    assert (evaluate("sigmoid", dtype, x) == dtype.type(0.5)).all()
    assert (evaluate("exp", dtype, x) == 1).all()
    assert (evaluate("softplus", dtype, x) == dtype.type(math.log(2))).all()


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_subnormal_results_round_once(dtype):
    """e^x and σ(x) deep in the negative range land on the subnormal grid within one spacing."""
    lo = -103.9 if dtype == F32 else -745.0
    x = np.linspace(lo, lo + 20, 20001).astype(dtype)
    ref = np.exp(x.astype(LD))
    for name in ("exp", "sigmoid", "softplus"):
        y = evaluate(name, dtype, x)
        assert (y[:100] < np.finfo(dtype).smallest_normal).all()
        err = np.abs(y.astype(LD) - ref) / ulp_of(ref, dtype)
        assert err.max() <= 1.0, f"{name}: {float(err.max()):.2f} ulp at {x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_saturation_and_bounds(dtype):
    """tanh and σ stay in [-1, 1] / [0, 1], reach their limits exactly past the rounding threshold;
    over sorted inputs tanh, σ and softplus never step back more than 2 ulps (1 or 2 ulps at a few
    float32 inputs: measured over every float32) and exp never does."""
    x = np.sort(np.concatenate([np.linspace(-50, 50, 400_001), np.linspace(8, 25, 100_001)])).astype(dtype)
    x = np.unique(x)
    t, s = evaluate("tanh", dtype, x), evaluate("sigmoid", dtype, x)
    assert np.abs(t).max() == 1 and (np.abs(t) <= 1).all()
    assert s.min() >= 0 and s.max() == 1 and (s <= 1).all()
    limit = 9.02 if dtype == F32 else 19.1          # tanh rounds to ±1 past 9.011 / 19.06
    assert (t[x >= limit] == 1).all() and (t[x <= -limit] == -1).all()
    for name, y in (("tanh", t), ("sigmoid", s), ("softplus", evaluate("softplus", dtype, x))):
        with np.errstate(over="ignore"):
            back = -np.diff(y) / np.spacing(np.abs(y[1:]))
        assert back.max() <= 2, f"{name} steps back {back.max():.1f} ulp at {x[1 + np.argmax(back)]!r}"
    assert (np.diff(evaluate("exp", dtype, x)) >= 0).all()


# --- fast_scalar / fast_loss_scalar: the forms the kernel generators use --------------------------
def fused(g, dtype):
    """A = g(Z + b) over (n, m), the way _numba_kernels builds its bias + activation pass (g made
    jitable with reassociation allowed, which must not change _fastmath's results)."""
    g = register_jitable(nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})(g)

    @numba.njit(nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
    def kernel(Z, b, A):
        n, m = Z.shape
        for i in range(n):
            bi = b[i, 0]
            for j in range(m):
                z = Z[i, j] + bi
                Z[i, j] = z
                A[i, j] = g(z)

    return kernel


def run_fused(kernel, Z, dtype):
    Z = np.ascontiguousarray(Z, dtype=dtype)
    A = np.empty_like(Z)
    kernel(Z, np.zeros((Z.shape[0], 1), dtype), A)
    return A


@pytest.mark.parametrize("name, dtype", [c for c in CASES if c.values[0] in ("tanh", "sigmoid")])
def test_fast_scalar_forward_matches_the_function_inside_a_fused_loop(name, dtype):
    g, _ = FM.fast_scalar(get_activation(name), dtype)
    Z = np.random.default_rng(0).standard_normal((7, 333)) * 6
    Z[0, :4] = [math.nan, math.inf, -math.inf, -0.0]
    A = run_fused(fused(g, dtype), Z, dtype)
    assert np.array_equal(A, evaluate(name, dtype, Z.ravel()).reshape(Z.shape), equal_nan=True)
    assert np.isnan(A[0, 0]) and A[0, 1] == 1 and A[0, 2] == (-1 if name == "tanh" else 0)


@pytest.mark.parametrize("name, dtype", [c for c in CASES if c.values[0] in ("tanh", "sigmoid")])
def test_derivative_form_matches_the_reference_derivative(name, dtype):
    """g'(z, a) with a = the fast g(z), against 1 - tanh² / σ(1 - σ) in float64 or long double:
    an absolute error of a few ulps of 1 (a's error, times 2a in 1 - a²: the course's forms lose the
    relative accuracy of small derivatives near saturation), and relative in σ's left tail, where
    a(1 - a) ≈ a keeps it."""
    g, dg = FM.fast_scalar(get_activation(name), dtype)
    g, dg = (register_jitable(error_model="numpy", fastmath={"reassoc", "contract"})(f) for f in (g, dg))

    @numba.njit(error_model="numpy", fastmath={"reassoc", "contract"})
    def both(z):
        out = np.empty_like(z)
        for i in range(z.shape[0]):
            out[i] = dg(z[i], g(z[i]))
        return out

    z = np.concatenate([np.linspace(-30, 30, 200_001), -np.geomspace(1e-30, 30, 1001),
                        np.geomspace(1e-30, 30, 1001)]).astype(dtype)
    wide = z.astype(LD if dtype == F64 else np.float64)
    if name == "tanh":
        want = 1 - np.tanh(wide) ** 2
    else:
        s = ref_sigmoid(wide)
        want = s * (1 - s)
    got = both(z).astype(wide.dtype)
    eps = np.finfo(dtype).eps
    assert np.abs(got - want).max() <= 4 * eps, name
    if name == "sigmoid":
        tail = z < -2
        assert (np.abs(got - want)[tail] / want[tail]).max() <= 4 * eps


def test_fast_scalar_falls_back_to_the_activation_s_own_pair():
    for name in ("relu", "leaky_relu", "linear"):
        act = get_activation(name)
        g, dg = FM.fast_scalar(act, np.float32)
        assert not g.__name__.startswith("fast"), name
        assert g(np.float32(-2.0)) == act.scalar(np.float32)[0](np.float32(-2.0))
    g, _ = FM.fast_scalar(get_activation("tanh"), np.float16)
    assert not g.__name__.startswith("fast")
    g, _ = FM.fast_scalar(get_activation("tanh"), np.float32)
    assert g.__name__.startswith("fast_tanh_float32_")


def test_fast_forms_carry_this_file_s_contents_into_numba_s_cache_key():
    """Numba keys a cached kernel on its closures pickled by value; the fast forms are named after a
    hash of _fastmath.py, so an edit there cannot reuse kernels compiled with the old formulas."""
    from numba.core.serialize import dumps
    g, _ = FM.fast_scalar(get_activation("tanh"), np.float32)
    cost = FM.fast_loss_scalar(get_loss("bce", get_activation("sigmoid")), np.float32)
    for f in (g, cost):
        assert FM._SOURCE_KEY.encode() in dumps((f,))


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_fast_bce_cost_matches_the_reference_and_keeps_nan(dtype):
    loss = get_loss("bce", get_activation("sigmoid"))
    as_kernels_do = register_jitable(error_model="numpy", fastmath={"reassoc", "contract"})
    cost = as_kernels_do(FM.fast_loss_scalar(loss, dtype))

    @numba.njit(error_model="numpy", fastmath={"reassoc", "contract"})
    def each(Z, Y):
        out = np.empty(Z.shape[0])
        for i in range(Z.shape[0]):
            out[i] = cost(Z[i], Z[i], Y[i])
        return out

    rng = np.random.default_rng(1)
    Z = np.concatenate([rng.standard_normal(10_000) * 10, [-1e4, 1e4, -100.0, 100.0, 0.0]]).astype(dtype)
    Y = (rng.random(Z.size) < 0.5).astype(dtype)
    z = Z.astype(LD)
    want = np.logaddexp(0, np.where(Y == 1, -z, z))     # -log σ(z) for y = 1, -log(1 - σ(z)) for y = 0
    got = each(Z, Y)
    err = ulp_error(got, want, dtype)
    assert err.max() <= 3, f"{float(err.max()):.2f} ulp at z = {Z[np.argmax(err)]}"
    Z[3] = np.nan
    assert np.isnan(each(Z, Y)[3])
    mse = get_loss("mse", get_activation("linear"))
    assert not FM.fast_loss_scalar(mse, dtype).__name__.startswith("fast")


# --- the point of it all: the fused loop is SIMD code with no libm call ---------------------------
# calls of the C library's scalar functions, of LLVM's math intrinsics (lowered to those), or of a vector
# math library (glibc's libmvec names, _ZGV...): none is needed once the math is arithmetic
LIBM = re.compile(r"call [^@\n]*@(llvm\.(exp|tanh|log)\.|(exp|expf|tanh|tanhf|log1p|log1pf|log|logf)\b|_ZGV)")
VECTOR_DIV = {F32: re.compile(r"fdiv[^\n]*<(\d+) x float>"), F64: re.compile(r"fdiv[^\n]*<(\d+) x double>")}


def kernel_ir(g, dtype):
    kernel = fused(g, dtype)
    run_fused(kernel, np.ones((3, 64)), dtype)
    sig = kernel.signatures[0]
    return kernel.inspect_llvm(sig), kernel.inspect_asm(sig)


@pytest.mark.parametrize("name, dtype", [c for c in CASES if c.values[0] in ("tanh", "sigmoid")])
def test_fused_loop_vectorizes_without_libm_calls(name, dtype):
    ir, asm = kernel_ir(FM.fast_scalar(get_activation(name), dtype)[0], dtype)
    assert not LIBM.search(ir), f"libm call left in the loop: {LIBM.search(ir).group(0)}"
    lanes = [int(n) for n in VECTOR_DIV[dtype].findall(ir)]
    assert lanes and max(lanes) >= 2, "the loop's division is not a vector instruction"
    if llvm.get_host_cpu_features().get("avx2"):
        div = "vdivps" if dtype == F32 else "vdivpd"
        assert re.search(rf"{div}\s+[^\n]*[yz]mm", asm), f"no 256- or 512-bit {div} in the loop"


def test_the_libm_forms_do_not_vectorize():
    """The check above can fail: the activations' own math.tanh / math.exp forms leave libm calls."""
    for name in ("tanh", "sigmoid"):
        ir, _ = kernel_ir(get_activation(name).scalar(np.float32)[0], F32)
        assert LIBM.search(ir), name


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_bce_cost_reduction_vectorizes_without_libm_calls(dtype):
    """The output pass's J = Σ L(z, a, y), accumulated in float64 as _numba_kernels does."""
    flags = dict(error_model="numpy", fastmath={"reassoc", "contract"})
    for loss_scalar, vector in ((FM.fast_loss_scalar, True), (lambda loss, dt: loss.scalar(dt.type), False)):
        cost = register_jitable(**flags)(loss_scalar(get_loss("bce", get_activation("sigmoid")), dtype))

        @numba.njit(**flags)
        def total(Z, A, Y):
            s = 0.0
            for j in range(Z.shape[0]):
                s += cost(Z[j], A[j], Y[j])
            return s

        Z = np.linspace(-5, 5, 101).astype(dtype)
        assert total(Z, Z, (Z > 0).astype(dtype)) > 0
        ir = total.inspect_llvm(total.signatures[0])
        assert bool(LIBM.search(ir)) != vector
        assert bool(VECTOR_DIV[dtype].search(ir)) == vector
