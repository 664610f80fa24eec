"""Scalar Python formulas -> C device functions: the math is written once, in ``scalar(ftype)``.

``translate(fn, dtype, name)`` reads a scalar function's source (``inspect.getsource`` + ``ast``) and
its closure constants, and writes the same function in C for one float type:

* ``activation.scalar(ftype)`` -> ``T g(T z)`` and ``T dg(T z, T a)``;
* ``loss.scalar(ftype)`` -> ``T cost(T z, T a, T y)``;
* ``optimizer.scalar(ftype)`` -> ``void step(T theta, T g, T s1, T s2, T lr, T c1, T c2,
  T* out0, T* out1, T* out2)``: a tuple return becomes one out-pointer per element.

Supported, exactly what those formulas use: positional parameters; local assignment ``x = e``;
``if``/``else`` statements and ``a if t else b``; ``return e`` or ``return e0, e1, ...``; ``+ - * /``,
unary ``-``/``+``; one comparison (``< <= > >= == !=``) as a test; numeric literals and closure
constants of the function's float type (written as exact typed literals: ``1.0f`` for float32, the
full ``repr`` for float64, hex when the decimal would not round-trip); ``math.exp/log/log1p/tanh/sqrt``
(``expf`` or ``exp``, ...), ``abs`` (``fabsf``/``fabs``), ``max``/``min`` with Python's semantics for
NaN (``max(a, b)`` is ``b > a ? b : a``). Anything else raises :class:`UnsupportedFormula` naming the
function, its file and line, and the construct. Every value is of the float type T; comparisons are
only tests. Numeric literals in the source are taken in T (as Numba would for float64; for float32
this keeps the arithmetic in float32, which is what the constants-of-that-type convention asks for).

The output compiles under NVRTC (``FDNN_DEVICE`` = ``__device__ __forceinline__``) and under a
host C/C++ compiler (``static inline``): :data:`PRELUDE` defines the macro and the max/min helpers;
every kernel source starts with it.
"""
import ast
import builtins
import functools
import inspect
import math
import re
import textwrap
from collections import namedtuple

import numpy as np

PRELUDE = r"""#ifndef FDNN_PRELUDE
#define FDNN_PRELUDE
#if defined(__CUDACC__)
#define FDNN_DEVICE __device__ __forceinline__
#else
#define FDNN_DEVICE static inline
#endif
/* max / min with Python's semantics (the first argument unless the second compares greater / less) */
FDNN_DEVICE float fdnn_maxf(float a, float b) { return b > a ? b : a; }
FDNN_DEVICE float fdnn_minf(float a, float b) { return b < a ? b : a; }
FDNN_DEVICE double fdnn_max(double a, double b) { return b > a ? b : a; }
FDNN_DEVICE double fdnn_min(double a, double b) { return b < a ? b : a; }
#endif
"""

CTYPE = {"float32": "float", "float64": "double"}
SUFFIX = {"float32": "f32", "float64": "f64"}
_MATH = {"exp": ("expf", "exp"), "log": ("logf", "log"), "log1p": ("log1pf", "log1p"),
         "tanh": ("tanhf", "tanh"), "sqrt": ("sqrtf", "sqrt")}
_BUILTINS = {"abs": ("fabsf", "fabs", 1), "max": ("fdnn_maxf", "fdnn_max", 2),
             "min": ("fdnn_minf", "fdnn_min", 2)}
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_RESERVED = set("""auto break case char const continue default do double else enum extern float for goto
if inline int long register restrict return short signed sizeof static struct switch typedef union
unsigned void volatile while bool true false class namespace template this new delete operator private
protected public virtual friend try catch throw typename using asm explicit mutable export nullptr
constexpr decltype noexcept static_assert thread_local alignas alignof char16_t char32_t
threadIdx blockIdx blockDim gridDim warpSize isfinite isnan isinf""".split())
_RESERVED |= {c for pair in _MATH.values() for c in pair} | {c for t in _BUILTINS.values() for c in t[:2]}

CFunction = namedtuple("CFunction", "name source n_args n_out")
CFunction.__doc__ = """A C device function: its name, its source (after PRELUDE), its number of value
parameters, and its number of outputs (1: returned; k > 1: k trailing out-pointer parameters)."""


class UnsupportedFormula(ValueError):
    """A scalar formula uses a construct the C translation does not support (the message says which)."""


def float_name(dtype):
    """'float32' or 'float64' for a float dtype (anything else: ValueError)."""
    name = np.dtype(dtype).name
    if name not in CTYPE:
        raise ValueError(f"CUDA kernels exist for float32 and float64, not {name}")
    return name


def literal(value, dtype):
    """An exact C literal of ``value`` in float type dtype: '0.5f', '1e-08f', '0.9' ('(-0.5f)' if negative)."""
    dtype = float_name(dtype)
    v = np.dtype(dtype).type(value)
    if not np.isfinite(v):
        raise ValueError(f"constant {value!r} is not finite; a C literal needs a finite number")
    text = str(v) if dtype == "float32" else repr(float(v))
    if np.dtype(dtype).type(float(text)) != v:         # not expected; hex is exact in any case
        text = float(v).hex()
    if dtype == "float32":
        text += "f"
    return f"({text})" if text.startswith("-") else text


def c_identifier(text):
    """text made a C identifier (non-word characters -> '_')."""
    text = re.sub(r"\W", "_", str(text))
    return text if not text[:1].isdigit() else "_" + text


def translate(fn, dtype, name):
    """C device function ``name`` computing the scalar Python function fn in float type dtype."""
    return _Translator(fn, float_name(dtype), name).run()


@functools.lru_cache(maxsize=None)
def activation_functions(activation, dtype):
    """(g, dg) of an elementwise activation as CFunctions, named fdnn_g_<name>_<f32|f64> / fdnn_dg_..."""
    dtype = float_name(dtype)
    if not activation.elementwise:
        raise ValueError(f"activation {activation.name!r} is not elementwise; it has no scalar form")
    g, dg = activation.scalar(np.dtype(dtype).type)
    tag = f"{c_identifier(activation.name)}_{SUFFIX[dtype]}"
    return translate(g, dtype, f"fdnn_g_{tag}"), translate(dg, dtype, f"fdnn_dg_{tag}")


@functools.lru_cache(maxsize=None)
def loss_function(loss, dtype):
    """cost(z, a, y) of an elementwise loss as a CFunction named fdnn_cost_<name>_<f32|f64>."""
    dtype = float_name(dtype)
    if not hasattr(loss, "scalar"):
        raise ValueError(f"loss {loss.name!r} is not elementwise; it has no scalar form")
    return translate(loss.scalar(np.dtype(dtype).type), dtype,
                     f"fdnn_cost_{c_identifier(loss.name)}_{SUFFIX[dtype]}")


@functools.lru_cache(maxsize=None)
def optimizer_function(optimizer, dtype):
    """step(θ, g, s1, s2, α, c1, c2, *θ', *s1', *s2') of an optimizer as a CFunction named
    fdnn_step_<name>_<f32|f64>."""
    dtype = float_name(dtype)
    fn = translate(optimizer.scalar(np.dtype(dtype).type), dtype,
                   f"fdnn_step_{c_identifier(optimizer.name)}_{SUFFIX[dtype]}")
    if (fn.n_args, fn.n_out) != (7, 3):
        raise ValueError(f"optimizer {optimizer.name!r}: scalar step must take 7 values and return 3, "
                         f"got {fn.n_args} and {fn.n_out}")
    return fn


class _Translator:
    """One function's translation (see the module docstring for what is supported)."""

    def __init__(self, fn, dtype, name):
        self.fn, self.dtype, self.name = fn, dtype, name
        self.ctype, self.is32 = CTYPE[dtype], dtype == "float32"
        self.where = f"{getattr(fn, '__qualname__', fn)!r}"
        code = getattr(fn, "__code__", None)
        if code is None:
            raise UnsupportedFormula(f"cannot translate {self.where} to C: not a Python function")
        self.where += f" ({code.co_filename}:{code.co_firstlineno})"
        self.constants = self._constants(code)
        self.names = {}                   # Python name -> C name (parameters and locals)

    # --- errors and names ---------------------------------------------------------------------
    def fail(self, node, what):
        line = getattr(node, "lineno", None)
        at = "" if line is None else f" at line {line + self.fn.__code__.co_firstlineno - 1}"
        raise UnsupportedFormula(f"cannot translate {self.where} to C: {what}{at}; supported: "
                                 "parameters, local assignment, if/else, conditional expressions, "
                                 "return (a value or a tuple), + - * /, comparisons as tests, "
                                 "math.exp/log/log1p/tanh/sqrt, abs, max, min, numeric literals and "
                                 "closure constants of the function's float type")

    def cname(self, pyname):
        c = pyname if pyname not in _RESERVED and not pyname.startswith(("fdnn_", "__")) else f"py_{pyname}"
        if c in self.names.values() and self.names.get(pyname) != c:
            raise UnsupportedFormula(f"cannot translate {self.where} to C: name {pyname!r} clashes with "
                                     f"another name once made a C identifier ({c!r})")
        self.names[pyname] = c
        return c

    def _constants(self, code):
        values = {}
        for var, cell in zip(code.co_freevars, self.fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:
                raise UnsupportedFormula(f"cannot translate {self.where} to C: closure variable "
                                         f"{var!r} is not bound yet") from None
            typed = isinstance(value, (float, np.floating)) and np.asarray(value).dtype.name == self.dtype
            if not typed:
                raise UnsupportedFormula(
                    f"cannot translate {self.where} to C: closure constant {var!r} = {value!r} is "
                    f"{type(value).__name__}, expected a {self.dtype} number (make it with ftype(...))")
            values[var] = value
        return values

    # --- the function ---------------------------------------------------------------------------
    def run(self):
        try:
            source = textwrap.dedent(inspect.getsource(self.fn))
        except (OSError, TypeError) as exc:
            raise UnsupportedFormula(f"cannot translate {self.where} to C: its source is not "
                                     f"available ({exc})") from None
        tree = ast.parse(source)
        fdef = tree.body[0] if len(tree.body) == 1 else None
        if not isinstance(fdef, ast.FunctionDef):
            self.fail(tree.body[0] if tree.body else tree, "a function that is not a plain 'def'")
        self._check_signature(fdef)
        params = [a.arg for a in fdef.args.posonlyargs + fdef.args.args]
        body = fdef.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]                                       # docstring
        self.n_out = self._arity(fdef)
        if not self._always_returns(body):
            self.fail(fdef, "a path that reaches the end of the function without a return")
        cparams = [f"{self.ctype} {self.cname(p)}" for p in params]
        cparams += [f"{self.ctype}* fdnn_out{k}" for k in range(self.n_out)] if self.n_out > 1 else []
        assigned = [t.id for node in ast.walk(fdef) if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
        local_names = list(dict.fromkeys(n for n in assigned if n not in params))
        lines = [f"const {self.ctype} {self.cname(c)} = {literal(v, self.dtype)};"
                  for c, v in self.constants.items()]
        lines += [f"{self.ctype} {self.cname(n)};" for n in local_names]
        for stmt in body:
            lines += self.statement(stmt)
        result = "void" if self.n_out > 1 else self.ctype
        text = [f"/* {getattr(self.fn, '__module__', '?')}: {self.fn.__qualname__}, {self.dtype} */",
                f"FDNN_DEVICE {result} {self.name}({', '.join(cparams)}) {{"]
        text += ["    " + line for line in lines] + ["}"]
        return CFunction(self.name, "\n".join(text) + "\n", len(params), self.n_out)

    def _check_signature(self, fdef):
        a = fdef.args
        if fdef.decorator_list:
            self.fail(fdef, "a decorator")
        if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.kw_defaults:
            self.fail(fdef, "*args, **kwargs, keyword-only parameters or default values")
        if fdef.returns is not None or any(p.annotation is not None for p in a.posonlyargs + a.args):
            self.fail(fdef, "annotations")

    def _arity(self, fdef):
        arities = set()
        for node in ast.walk(fdef):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)) \
                    and node is not fdef:
                self.fail(node, "a nested function, lambda or class")
            if isinstance(node, ast.Return):
                if node.value is None:
                    self.fail(node, "a bare 'return' (no value)")
                arities.add(len(node.value.elts) if isinstance(node.value, ast.Tuple) else 1)
        if len(arities) != 1:
            self.fail(fdef, "returns of different lengths" if arities else "no return")
        (n,) = arities
        return n

    def _always_returns(self, stmts):
        if not stmts:
            return False
        last = stmts[-1]
        if isinstance(last, ast.Return):
            return True
        return isinstance(last, ast.If) and self._always_returns(last.body) and self._always_returns(last.orelse)

    # --- statements -------------------------------------------------------------------------------
    def statement(self, node):
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                self.fail(node, "an assignment to something other than one name")
            target = node.targets[0].id
            if target in self.constants:
                self.fail(node, f"an assignment to closure constant {target!r}")
            return [f"{self.names.get(target) or self.cname(target)} = {self.value(node.value)};"]
        if isinstance(node, ast.If):
            out = [f"if ({self.test(node.test)}) {{"]
            for s in node.body:
                out += ["    " + line for line in self.statement(s)]
            if node.orelse:
                out.append("} else {")
                for s in node.orelse:
                    out += ["    " + line for line in self.statement(s)]
            return out + ["}"]
        if isinstance(node, ast.Return):
            if self.n_out == 1:
                return [f"return {self.value(node.value)};"]
            return [f"*fdnn_out{k} = {self.value(e)};" for k, e in enumerate(node.value.elts)] + ["return;"]
        self.fail(node, f"a {type(node).__name__} statement")

    # --- expressions ------------------------------------------------------------------------------
    def value(self, node):
        """C text of a float-valued expression."""
        code, kind = self.expr(node)
        if kind != "value":
            self.fail(node, "a comparison used as a value")
        return code

    def test(self, node):
        """C text of a test (a single comparison)."""
        code, kind = self.expr(node)
        if kind != "test":
            self.fail(node, "a test that is not a comparison (truthiness of a number)")
        return code

    def expr(self, node):
        if isinstance(node, ast.Name):
            return self.name_ref(node), "value"
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                self.fail(node, f"the constant {node.value!r}")
            return literal(node.value, self.dtype), "value"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return f"(-{self.value(node.operand)})", "value"
            if isinstance(node.op, ast.UAdd):
                return self.value(node.operand), "value"
            self.fail(node, f"the unary operator {type(node.op).__name__}")
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                self.fail(node, f"the operator {type(node.op).__name__}")
            return f"({self.value(node.left)} {op} {self.value(node.right)})", "value"
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                self.fail(node, "a chained comparison")
            op = _CMPOPS.get(type(node.ops[0]))
            if op is None:
                self.fail(node, f"the comparison {type(node.ops[0]).__name__}")
            return f"({self.value(node.left)} {op} {self.value(node.comparators[0])})", "test"
        if isinstance(node, ast.IfExp):
            return (f"({self.test(node.test)} ? {self.value(node.body)} : {self.value(node.orelse)})",
                    "value")
        if isinstance(node, ast.Call):
            return self.call(node), "value"
        self.fail(node, f"a {type(node).__name__} expression")

    def name_ref(self, node):
        name = node.id
        if name in self.names:
            return self.names[name]
        if name in self.constants:
            return self.cname(name)
        self.fail(node, f"the name {name!r} (not a parameter, an assigned local or a closure constant)")

    def call(self, node):
        if node.keywords:
            self.fail(node, "a call with keyword arguments")
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math":
            if self.fn.__globals__.get("math") is not math or "math" in self.names or "math" in self.constants:
                self.fail(node, "'math' that is not the math module")
            if func.attr not in _MATH:
                self.fail(node, f"math.{func.attr}")
            cfun, arity = _MATH[func.attr][0 if self.is32 else 1], 1
        elif isinstance(func, ast.Name) and func.id in _BUILTINS:
            shadowed = func.id in self.names or func.id in self.constants or func.id in self.fn.__globals__
            if shadowed or getattr(builtins, func.id) is not {"abs": abs, "max": max, "min": min}[func.id]:
                self.fail(node, f"{func.id!r} that is not the builtin")
            f32, f64, arity = _BUILTINS[func.id]
            cfun = f32 if self.is32 else f64
        else:
            self.fail(node, f"a call to {ast.unparse(func)}")
        args = [self.value(a) for a in node.args]
        if arity == 1:
            if len(args) != 1:
                self.fail(node, f"{ast.unparse(func)} with {len(args)} arguments (expected 1)")
            return f"{cfun}({args[0]})"
        if len(args) < 2:
            self.fail(node, f"{ast.unparse(func)} with {len(args)} argument(s) (expected 2 or more)")
        text = args[0]
        for a in args[1:]:                      # max(a, b, c) = max(max(a, b), c), as Python compares
            text = f"{cfun}({text}, {a})"
        return text
