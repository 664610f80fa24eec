"""tanh, sigmoid, exp and softplus as branch-free arithmetic that LLVM vectorizes in Numba loops.

Numba compiles ``math.tanh`` / ``math.exp`` to calls of the C library, one element at a time
(~10 ns each, measured), so a fused loop that calls them runs scalar. The functions here use only
clamps, selects, polynomials, divisions and the float's exponent bits (``np.float32(t).view``),
which LLVM turns into SIMD code (8 float32 or 4 float64 lanes with AVX2). The integer trick: adding
1.5·2^23 (2^52) rounds t = v·log2(e) to an integer k held in the low mantissa bits, and shifting
those bits into the exponent field builds 2^k — no float→int conversion (whose NaN result LLVM calls
poison), and NaN propagates through the arithmetic with no extra select.

Max error in ulps of the result, against float64 (for float32: every one of the 2^32 inputs) and
long double (float64: 3.4M inputs, every exponent); tests/test_fastmath.py checks these bounds on
samples, and ±0, ±inf, NaN, subnormals, saturation:

    tanh32 2.46   sigmoid32 2.40   exp32 1.10   softplus32 2.80
    tanh64 2.41   sigmoid64 2.25   exp64 0.98   softplus64 2.66

(NumPy's own are within 1 ulp.) exp is monotone; tanh, sigmoid and softplus step back by 1 or 2 ulps
at some inputs (float32: 1.6M of the 1.1e9 in [0, 9.5] for tanh), never more. The formulas:

* exp: e^v = 2^k e^r, r = v - k ln2 in two parts (Cody-Waite; k ln2_hi is exact), e^r = 1 + r + r²Q(r)
  with Q a near-minimax polynomial. For v <= 0 (sigmoid, softplus) the result is (e^r 2^(k+24)) 2^-24
  (2^(k+53) 2^-53 in float64), so subnormal results round once, as they should; exp32 / exp64 take
  any v and scale by 2^(k/2) 2^(k - k/2), which also overflows to inf where it should.
* sigmoid: e = e^-|x|, σ = 1/(1+e) for x >= 0 and e/(1+e) below: no overflow, no cancellation.
* tanh32: T = 2 tanh(x/2) as x + x s R(s)/Q(s) (s = x², near-minimax rational on |x| <= 9.2, past
  which tanh rounds to 1), then tanh x = T/(1 + T²/4): the doubling damps the rational's error near
  saturation, where a single rational evaluated in float32 is ~5 ulp off.
* tanh64: tanh|x| = E/(E+2), E = e^(2|x|) - 1 from the exp core without cancellation; |x| <= 20.
* softplus: log(1+e^x) = max(x, 0) + log1p(e^-|x|), log1p(f) = 2 atanh(w) with w = f/(2+f) on
  f in [-1/4, 1/2) (f = (e-1)/2 plus ln2 where e >= 1/2): the binary cross-entropy's log term.

Coefficients: near-minimax fits of the relative error (Chebyshev fits with mpmath for the
polynomials, Lawson-weighted least squares for the rational), rounded to the dtype.

Each is its own compiled function with ``fastmath={"contract"}`` only (LLVM inlines it into the
caller's loop and keeps each instruction's flags): FMA contraction helps, but reassociation would
undo the rounding trick and the two-part ln2, and no-NaN / no-inf flags would drop the NaN the
training loop watches for. ``fast_scalar`` / ``fast_loss_scalar`` hand these to the kernel generators
in the shape of ``Activation.scalar`` / ``Loss.scalar``. Call them from compiled code only (the
integer steps rely on Numba's wrap-around int32 / int64 arithmetic).
"""
import hashlib
import math
from pathlib import Path

import numpy as np
from numba.extending import register_jitable

_jit = register_jitable(error_model="numpy", fastmath={"contract"})

# Kernels that inline these functions are cached on disk by Numba, keyed by their own source and
# the *values* captured in their closures; the closures returned by fast_scalar carry this key in
# their name, so editing this file cannot leave stale compiled copies of the old formulas.
_SOURCE_KEY = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

f32 = np.float32

# --- float32 constants --------------------------------------------------------------------------
ZERO32, HALF32, ONE32, TWO32, QUARTER32 = f32(0.0), f32(0.5), f32(1.0), f32(2.0), f32(0.25)
LOG2E32 = f32(1.4426950408889634)
LN2HI32, LN2LO32 = f32(0.693145751953125), f32(1.428606765330187e-06)   # ln2 = hi + lo, hi has 16 bits
ROUND32 = f32(1.5 * 2.0 ** 23)                 # v·log2e + ROUND32 rounds to an integer (low bits)
EXP_LO32, EXP_HI32 = f32(-104.0), f32(89.0)    # e^v rounds to 0 below, overflows to inf above
SUBNORMAL32 = f32(2.0 ** -24)                  # (e^r 2^(k+24)) 2^-24: one rounding below 2^-126
# e^r = 1 + r + r² Q(r) on |r| <= ln2/2; relative error 1.9e-8
EQ32 = (f32(0.5), f32(0.16666576266288757), f32(0.041666556149721146), f32(0.008363178931176662),
        f32(0.0013926184037700295))
# 2 tanh(x/2) = x + x s R(s)/Q(s), s = x², |x| <= TANH_CLAMP32 (tanh rounds to 1 from 9.011)
TANH_CLAMP32 = f32(9.2)
TR32 = (f32(-0.08333326876163483), f32(-0.0009740497334860265), f32(-6.91890420512209e-08))
TQ32 = (f32(0.1116877868771553), f32(0.0010508116101846099))
# log1p(f) = w2 (1 + y L(y)), w2 = 2f/(2+f), y = w2², |w2| <= 0.4
LL32 = (f32(0.08333339542150497), f32(0.012493441812694073), f32(0.002340292790904641))

# --- float64 constants --------------------------------------------------------------------------
ZERO64, HALF64, ONE64, TWO64 = 0.0, 0.5, 1.0, 2.0
LOG2E64 = 1.4426950408889634
LN2HI64, LN2LO64 = 0.6931471803691238, 1.9082149292705877e-10     # hi has 32 bits
ROUND64 = 1.5 * 2.0 ** 52
EXP_LO64, EXP_HI64 = -746.0, 710.0
SUBNORMAL64 = 2.0 ** -53
TANH_CLAMP64 = 40.0                            # on 2|x|: tanh rounds to 1 from |x| = 19.06
# e^r = 1 + r + r² Q(r) on |r| <= ln2/2; relative error 4e-19
EQ64 = (0.5, 0.1666666666666667, 0.04166666666666667, 0.008333333333326136, 0.0013888888888883748,
        0.00019841269874820627, 2.4801587325547743e-05, 2.7557255400206422e-06, 2.75572736431103e-07,
        2.5105217004720745e-08, 2.0914686968086876e-09)
LL64 = (0.08333333333333333, 0.01250000000000244, 0.002232142856823178, 0.00043402779371536933,
        8.877801963726662e-05, 1.878520019465384e-05, 4.031474130920309e-06, 1.037919330344922e-06)


# --- exp cores: v -> (e^r, k) with e^v = e^r 2^k ------------------------------------------------
@_jit
def _exp_reduce32(v):
    """r, t for v (|v| <= 150): e^v = e^r 2^k, |r| <= ln2/2, k in the low bits of t."""
    t = v * LOG2E32 + ROUND32
    k = t - ROUND32
    r = v - k * LN2HI32
    return r - k * LN2LO32, t


@_jit
def _expm1_r32(r):
    """e^r - 1 for |r| <= ln2/2."""
    q = EQ32[0] + r * (EQ32[1] + r * (EQ32[2] + r * (EQ32[3] + r * EQ32[4])))
    return r + (r * r) * q


@_jit
def _pow2_32(t, bias):
    """2^(k + bias - 127) for the k held in t's low bits (bias - 127 + k in [-126, 127])."""
    return np.int32((np.float32(t).view(np.int32) + bias) << 23).view(np.float32)


@_jit
def _exp_reduce64(v):
    t = v * LOG2E64 + ROUND64
    k = t - ROUND64
    r = v - k * LN2HI64
    return r - k * LN2LO64, t


@_jit
def _expm1_r64(r):
    """e^r - 1 for |r| <= ln2/2: r + r² Q(r), Q of degree 10 evaluated by Estrin's scheme (pairs, then
    pairs of pairs with r², r⁴, r⁸): a chain of 5 dependent multiply-adds instead of Horner's 11, so a
    vectorized loop is not held up by their latency (measured here: float64 tanh 3.0 -> 1.8 ns, sigmoid
    2.3 -> 1.9 ns per element; the max errors above unchanged but exp64's, 0.95 -> 0.98 ulp)."""
    r2 = r * r
    r4 = r2 * r2
    p01, p23, p45 = EQ64[0] + r * EQ64[1], EQ64[2] + r * EQ64[3], EQ64[4] + r * EQ64[5]
    p67, p89 = EQ64[6] + r * EQ64[7], EQ64[8] + r * EQ64[9]
    p03, p47 = p01 + r2 * p23, p45 + r2 * p67
    p8a = p89 + r2 * EQ64[10]
    q = p03 + r4 * (p47 + r4 * p8a)
    return r + r2 * q


@_jit
def _pow2_64(t, bias):
    return np.int64((np.float64(t).view(np.int64) + bias) << 52).view(np.float64)


@_jit
def _exp_nonpos32(v):
    """e^v for v <= 0 (or NaN), subnormal results rounded once. float32."""
    v = EXP_LO32 if v < EXP_LO32 else v
    r, t = _exp_reduce32(v)
    return (ONE32 + _expm1_r32(r)) * _pow2_32(t, 127 + 24) * SUBNORMAL32


@_jit
def _exp_nonpos64(v):
    """e^v for v <= 0 (or NaN), subnormal results rounded once. float64."""
    v = EXP_LO64 if v < EXP_LO64 else v
    r, t = _exp_reduce64(v)
    return (ONE64 + _expm1_r64(r)) * _pow2_64(t, 1023 + 53) * SUBNORMAL64


# --- the public functions -----------------------------------------------------------------------
@_jit
def exp32(x):
    """e^x, float32 -> float32, any x (0 below -103.97, inf above 88.72, NaN kept)."""
    v = EXP_LO32 if x < EXP_LO32 else x
    v = EXP_HI32 if v > EXP_HI32 else v
    r, t = _exp_reduce32(v)
    k = np.float32(t).view(np.int32) - np.int32(0x4B400000)
    k1 = k >> 1
    s1 = np.int32((k1 + 127) << 23).view(np.float32)
    s2 = np.int32((k - k1 + 127) << 23).view(np.float32)
    return (ONE32 + _expm1_r32(r)) * s1 * s2


@_jit
def exp64(x):
    """e^x, float64 -> float64, any x (0 below -745.13, inf above 709.78, NaN kept)."""
    v = EXP_LO64 if x < EXP_LO64 else x
    v = EXP_HI64 if v > EXP_HI64 else v
    r, t = _exp_reduce64(v)
    k = np.float64(t).view(np.int64) - np.int64(0x4338000000000000)
    k1 = k >> 1
    s1 = np.int64((k1 + 1023) << 52).view(np.float64)
    s2 = np.int64((k - k1 + 1023) << 52).view(np.float64)
    return (ONE64 + _expm1_r64(r)) * s1 * s2


@_jit
def sigmoid32(x):
    """σ(x) = 1/(1 + e^-x), float32."""
    e = _exp_nonpos32(-abs(x))
    return (ONE32 if x >= ZERO32 else e) / (ONE32 + e)


@_jit
def sigmoid64(x):
    """σ(x) = 1/(1 + e^-x), float64."""
    e = _exp_nonpos64(-abs(x))
    return (ONE64 if x >= ZERO64 else e) / (ONE64 + e)


@_jit
def tanh32(x):
    """tanh x, float32."""
    c = TANH_CLAMP32 if x > TANH_CLAMP32 else x
    c = -TANH_CLAMP32 if c < -TANH_CLAMP32 else c
    s = c * c
    r = TR32[0] + s * (TR32[1] + s * TR32[2])
    q = ONE32 + s * (TQ32[0] + s * TQ32[1])
    T = c + (c * s) * r / q                   # 2 tanh(c/2)
    a = T / (ONE32 + QUARTER32 * (T * T))     # tanh c = 2t/(1 + t²), t = T/2
    return x if s == ZERO32 else a            # below 1e-19 tanh x = x, and -0 stays -0


@_jit
def tanh64(x):
    """tanh x, float64."""
    v = abs(x) + abs(x)
    v = TANH_CLAMP64 if v > TANH_CLAMP64 else v
    r, t = _exp_reduce64(v)
    s = _pow2_64(t, 1023)
    E = s * _expm1_r64(r) - (ONE64 - s)       # e^v - 1: -(1 - s) keeps -0 for v = -0
    return math.copysign(E / (E + TWO64), x)


@_jit
def _log1p_unit32(e):
    """log(1 + e) for e in [0, 1] (or NaN), float32."""
    big = e >= HALF32
    f = (e - ONE32) * HALF32 if big else e    # exact for e in [1/2, 1]; 1 + e = 2 (1 + f)
    w2 = (f + f) / (TWO32 + f)                # 2 atanh^-1 argument, |w2| <= 0.4
    y = w2 * w2
    p = w2 + (w2 * y) * (LL32[0] + y * (LL32[1] + y * LL32[2]))
    return (LN2HI32 + p) + LN2LO32 if big else p


@_jit
def _log1p_unit64(e):
    """log(1 + e) for e in [0, 1] (or NaN), float64."""
    big = e >= HALF64
    f = (e - ONE64) * HALF64 if big else e
    w2 = (f + f) / (TWO64 + f)
    y = w2 * w2
    q = LL64[7]
    q = LL64[6] + y * q
    q = LL64[5] + y * q
    q = LL64[4] + y * q
    q = LL64[3] + y * q
    q = LL64[2] + y * q
    q = LL64[1] + y * q
    q = LL64[0] + y * q
    p = w2 + (w2 * y) * q
    return (LN2HI64 + p) + LN2LO64 if big else p


@_jit
def log1p_exp32(v):
    """log(1 + e^v) for v <= 0 (or NaN), float32."""
    return _log1p_unit32(_exp_nonpos32(v))


@_jit
def log1p_exp64(v):
    """log(1 + e^v) for v <= 0 (or NaN), float64."""
    return _log1p_unit64(_exp_nonpos64(v))


@_jit
def bce32(z, y):
    """max(z, 0) - z y + log1p(e^-|z|) = -[y log σ(z) + (1 - y) log(1 - σ(z))], float32: its own
    function, so a caller's reassociation cannot move log1p's small term before the cancellation."""
    return ((z if z > ZERO32 else ZERO32) - z * y) + log1p_exp32(-abs(z))


@_jit
def bce64(z, y):
    """max(z, 0) - z y + log1p(e^-|z|) = -[y log σ(z) + (1 - y) log(1 - σ(z))], float64."""
    return ((z if z > ZERO64 else ZERO64) - z * y) + log1p_exp64(-abs(z))


@_jit
def softplus32(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|), float32."""
    return (x if x > ZERO32 else ZERO32) + log1p_exp32(-abs(x))


@_jit
def softplus64(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|), float64."""
    return (x if x > ZERO64 else ZERO64) + log1p_exp64(-abs(x))


FAST = {("tanh", np.dtype(np.float32)): tanh32, ("tanh", np.dtype(np.float64)): tanh64,
        ("sigmoid", np.dtype(np.float32)): sigmoid32, ("sigmoid", np.dtype(np.float64)): sigmoid64}
BCE = {np.dtype(np.float32): bce32, np.dtype(np.float64): bce64}


def _named(fn, *key):
    """fn, renamed after key and this file's contents (see _SOURCE_KEY)."""
    fn.__name__ = "_".join(map(str, ("fast",) + key + (_SOURCE_KEY,)))
    fn.__qualname__ = fn.__name__
    return fn


def fast_scalar(activation, dtype):
    """(g(z), g'(z, a)) like ``activation.scalar(ftype)``, with g vectorizable where this module has
    a form for it (tanh, sigmoid in float32 / float64); other activations' own pair otherwise."""
    dtype = np.dtype(dtype)
    g_slow, dg = activation.scalar(dtype.type)
    fast = FAST.get((activation.name, dtype))
    if fast is None:
        return g_slow, dg

    def g(z):
        return fast(z)

    return _named(g, activation.name, dtype.name), dg


def fast_loss_scalar(loss, dtype):
    """L(z, a, y) like ``loss.scalar(ftype)``, vectorizable for the binary cross-entropy (its formula,
    max(z, 0) - z y + log1p(e^-|z|), which cancels exactly where a single softplus(z) - z y would
    not); the loss's own otherwise."""
    dtype = np.dtype(dtype)
    bce = BCE.get(dtype)
    if loss.name != "bce" or bce is None:
        return loss.scalar(dtype.type)

    def cost(z, a, y):
        return bce(z, y)

    return _named(cost, loss.name, dtype.name)
