"""The scalar Python formulas translated to C (``_scalar_c``): every registered activation, loss and
optimizer, in float32 and float64, compiled by the host C compiler (the ``static inline`` side of the
FDNN_DEVICE macro) and evaluated on a grid of inputs, extremes included, against the Python function
itself run on NumPy scalars of the same type; exact literals; and a clear error for every construct
the translation does not support."""
import ctypes
import functools
import math
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from fastdnn.activations import ACTIVATIONS, LeakyReLU
from fastdnn.backends import _scalar_c as S
from fastdnn.losses import LOSSES
from fastdnn.optimizers import OPTIMIZERS

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                reason="no C++ compiler (g++ or $CXX) to compile the translations")

DTYPES = ("float32", "float64")
ULPS = {"float32": 4, "float64": 0}      # libm's float functions may round differently from math.*


def registered(dtype):
    """[(label, python_fn, CFunction)] for every registered scalar formula in dtype."""
    ftype, out = np.dtype(dtype).type, []
    for name, cls in ACTIVATIONS.items():
        if cls.elementwise:
            g, dg = cls().scalar(ftype)
            cg, cdg = S.activation_functions(cls(), dtype)
            out += [(f"{name}.g", g, cg), (f"{name}.dg", dg, cdg)]
    g, dg = LeakyReLU(slope=0.2).scalar(ftype)            # a parameter other than the default
    out += [("leaky_relu(0.2).g", g, S.translate(g, dtype, "leaky02_g")),
            ("leaky_relu(0.2).dg", dg, S.translate(dg, dtype, "leaky02_dg"))]
    for name, cls in LOSSES.items():
        if hasattr(cls, "scalar"):
            out.append((f"{name}.cost", cls().scalar(ftype), S.loss_function(cls(), dtype)))
    for name, cls in OPTIMIZERS.items():
        out.append((f"{name}.step", cls().scalar(ftype), S.optimizer_function(cls(), dtype)))
    return out


def _wrapper(fn, ctype):
    """extern "C" void apply_NAME(const T** ins, T** outs, long n): fn over arrays."""
    args = ", ".join(f"ins[{k}][i]" for k in range(fn.n_args))
    if fn.n_out == 1:
        body = f"outs[0][i] = {fn.name}({args});"
    else:
        body = f"{fn.name}({args}, {', '.join(f'&outs[{k}][i]' for k in range(fn.n_out))});"
    return (f'extern "C" void apply_{fn.name}(const {ctype}** ins, {ctype}** outs, long n) '
            f"{{ for (long i = 0; i < n; i++) {{ {body} }} }}\n")


@functools.lru_cache(maxsize=None)
def library(dtype, extra=()):
    """One shared library with every registered translation (and `extra` CFunctions) of dtype."""
    fns = [c for _, _, c in registered(dtype)] + list(extra)
    text = S.PRELUDE + "#include <math.h>\n" + "".join(f.source + _wrapper(f, S.CTYPE[dtype]) for f in fns)
    folder = tempfile.mkdtemp(prefix="fastdnn-scalar-c-")
    with open(os.path.join(folder, "f.cpp"), "w") as f:
        f.write(text)
    result = subprocess.run([os.environ.get("CXX", "g++"), "-std=c++17", "-O1", "-fPIC", "-shared", "-Wall",
                             "-Werror", "-Wno-unused-function", "-Wno-unused-parameter", "f.cpp", "-o", "f.so"],
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(os.path.join(folder, "f.so"))


def run_c(dtype, fn, inputs, extra=()):
    """fn (a CFunction) applied elementwise by the compiled library: list of n_out arrays."""
    lib, ct = library(dtype, extra), {"float32": ctypes.c_float, "float64": ctypes.c_double}[dtype]
    n = len(inputs[0])
    ins = [np.ascontiguousarray(x, dtype) for x in inputs]
    outs = [np.full(n, np.nan, dtype) for _ in range(fn.n_out)]
    P = ctypes.POINTER(ct)
    cin = (P * len(ins))(*[x.ctypes.data_as(P) for x in ins])
    cout = (P * len(outs))(*[x.ctypes.data_as(P) for x in outs])
    getattr(lib, f"apply_{fn.name}")(cin, cout, ctypes.c_long(n))
    return outs


def run_python(fn, inputs, dtype, n_out):
    ftype = np.dtype(dtype).type
    rows = [fn(*[ftype(x[i]) for x in inputs]) for i in range(len(inputs[0]))]
    rows = [r if n_out > 1 else (r,) for r in rows]
    return [np.array([ftype(r[k]) for r in rows], dtype) for k in range(n_out)]


Z = np.concatenate([np.linspace(-30, 30, 121), [-1e4, -1e3, -100.0, -1e-30, -0.0, 1e-30, 100.0, 1e3, 1e4]])


def inputs_for(label, fn, dtype):
    rng = np.random.default_rng(0)
    z = Z.astype(dtype)
    if label.endswith(".g"):
        return [z]
    if label.endswith(".dg"):
        return [z, np.tanh(z.astype(np.float64)).astype(dtype) if "tanh" in label
                else (0.5 * (1 + np.tanh(0.5 * z.astype(np.float64)))).astype(dtype)]
    if label.endswith(".cost"):
        a = (0.5 * (1 + np.tanh(0.5 * z.astype(np.float64)))).astype(dtype)
        return [z, a, np.resize(np.array([0.0, 1.0, 0.3]), z.size).astype(dtype)]
    n = 200
    theta, g = rng.normal(size=n), rng.normal(size=n) * np.logspace(-6, 2, n)
    s1, s2 = rng.uniform(0, 2, n), rng.uniform(0, 2, n)
    return [x.astype(dtype) for x in (theta, g, s1, s2, np.full(n, 0.01), np.full(n, 1 / (1 - 0.9 ** 3)),
                                      np.full(n, 1 / (1 - 0.999 ** 3)))]


def _ulp_close(actual, expected, dtype, where):
    both_nan = np.isnan(actual) & np.isnan(expected)
    assert not (np.isnan(actual) ^ np.isnan(expected)).any(), where
    a, e = actual[~both_nan], expected[~both_nan]
    spacing = np.spacing(np.maximum(np.abs(a), np.abs(e)).astype(dtype))
    assert (np.abs(a.astype(np.float64) - e) <= ULPS[dtype] * spacing.astype(np.float64)).all(), \
        (where, a[np.abs(a - e) > ULPS[dtype] * spacing][:5], e[np.abs(a - e) > ULPS[dtype] * spacing][:5])


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_registered_formula_computes_in_c_what_it_computes_in_python(dtype):
    cases = registered(dtype)
    assert len(cases) >= 2 * 5 + 2 + 2 + 5
    for label, fn, cfn in cases:
        inputs = inputs_for(label, fn, dtype)
        for k, (c, p) in enumerate(zip(run_c(dtype, cfn, inputs), run_python(fn, inputs, dtype, cfn.n_out))):
            assert c.dtype == np.dtype(dtype)
            _ulp_close(c, p, dtype, f"{label} {dtype} output {k}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_float32_translations_use_float32_literals_and_functions(dtype):
    import re
    for label, _, cfn in registered(dtype):
        body = cfn.source.split("\n", 1)[1]                # after the comment line
        literals = re.findall(r"(?<![\w.])(\d+\.\d*(?:e[-+]?\d+)?|\d+e[-+]?\d+)(f?)", body)
        calls = re.findall(r"\b(exp|log|log1p|tanh|sqrt|fabs|fdnn_max|fdnn_min)(f?)\(", body)
        want = "f" if dtype == "float32" else ""
        assert all(suffix == want for _, suffix in literals + calls), (label, body)


def test_leaky_relu_slope_is_in_the_c_source():
    g, _ = S.activation_functions(LeakyReLU(slope=0.2), "float32")
    assert "0.2f" in g.source and "0.01f" not in g.source


@pytest.mark.parametrize("value", [1.0, 0.1, 0.01, 1e-8, 0.999, 1 / 3, -0.5, 2.5e-45, 3.4e38, 1e-300, 0.0, -0.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_literals_are_exact(value, dtype):
    ftype = np.dtype(dtype).type
    if not np.isfinite(ftype(value)):
        return
    text = S.literal(value, dtype)
    body = text.strip("()")
    assert body.endswith("f") == (dtype == "float32")
    number = body[:-1] if dtype == "float32" else body
    parsed = float.fromhex(number) if "0x" in number else float(number)
    assert ftype(parsed) == ftype(value) and np.signbit(ftype(parsed)) == np.signbit(ftype(value))


def test_non_finite_constants_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        S.literal(float("inf"), "float32")
    with pytest.raises(ValueError, match="float32 and float64"):
        S.translate(lambda z: z, "int32", "f")


# --- max / min keep Python's semantics, NaN included ------------------------------------------------------
def pick_max(a, b):
    return max(a, b)


def pick_min3(a, b, c):
    return min(a, b, c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_min_follow_python_with_nan(dtype):
    fmax, fmin = S.translate(pick_max, dtype, "t_max"), S.translate(pick_min3, dtype, "t_min3")
    nan = float("nan")
    a = np.array([1.0, nan, 2.0, nan, -1.0, 3.0])
    b = np.array([nan, 1.0, 2.0, nan, 5.0, -3.0])
    c = np.array([0.0, 0.0, nan, 1.0, -7.0, 9.0])
    for fn, cfn, ins in ((pick_max, fmax, [a, b]), (pick_min3, fmin, [a, b, c])):
        got = run_c(dtype, cfn, ins, extra=(fmax, fmin))[0]
        want = run_python(fn, ins, dtype, 1)[0]
        np.testing.assert_array_equal(got, want)


# --- clear errors for what is not supported ----------------------------------------------------------------
def uses_pow(z):
    return z ** 2


def uses_loop(z):
    for _ in range(2):
        z = z * z
    return z


def uses_chain(z):
    return z if 0 < z < 1 else z


def uses_sin(z):
    return math.sin(z)


def uses_boolop(z):
    return z if z > 0 and z < 1 else z


def uses_truthiness(z):
    return z if z else z


def uses_augassign(z):
    z += 1
    return z


def uses_subscript(z):
    return z[0]


def uses_global(z):
    return z * DTYPES


def misses_a_return(z):
    if z > 0:
        return z


def mixed_returns(z):
    if z > 0:
        return z, z
    return z


def compares_as_value(z):
    return z > 0


def uses_keyword(z):
    return max(z, z, key=abs)


def make_closure(value):
    def closes_over(z):
        return z * value
    return closes_over


BAD = {"uses_pow": "operator Pow", "uses_loop": "For statement", "uses_chain": "chained comparison",
       "uses_sin": "math.sin", "uses_boolop": "BoolOp expression", "uses_truthiness": "truthiness",
       "uses_augassign": "AugAssign statement", "uses_subscript": "Subscript expression",
       "uses_global": "name 'DTYPES'", "misses_a_return": "without a return",
       "mixed_returns": "returns of different lengths", "compares_as_value": "comparison used as a value",
       "uses_keyword": "keyword arguments"}


@pytest.mark.parametrize("name", BAD)
def test_unsupported_construct_names_the_function_and_the_construct(name):
    with pytest.raises(S.UnsupportedFormula) as info:
        S.translate(globals()[name], "float64", "f")
    message = str(info.value)
    assert name in message and BAD[name] in message and "test_scalar_c.py" in message, message


@pytest.mark.parametrize("value,dtype,fragment", [
    (np.float64(0.5), "float32", "is float64, expected a float32"),
    (0.5, "float32", "is float, expected a float32"),
    (2, "float64", "is int, expected a float64"),
])
def test_closure_constant_of_another_type_is_refused(value, dtype, fragment):
    with pytest.raises(S.UnsupportedFormula, match=fragment):
        S.translate(make_closure(value), dtype, "f")
    S.translate(make_closure(np.dtype(dtype).type(value)), dtype, "f")        # the right type is fine


def test_a_lambda_is_refused():
    with pytest.raises(S.UnsupportedFormula):
        S.translate(lambda z: z, "float32", "f")
