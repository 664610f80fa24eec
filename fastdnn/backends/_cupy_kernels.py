"""CUDA C sources of the fused GPU kernels (for ``cupy.RawKernel``), and how to launch them.

Every elementwise formula comes from the same scalar Python as the CPU kernels
(``activation.scalar``, ``loss.scalar``, ``optimizer.scalar``, translated by ``_scalar_c``); one source
per (kernel kind, activation / loss / optimizer, dtype), with a unique ``extern "C"`` kernel name.
Each ``<kind>(...)`` function returns ``(source, kernel_name)``; :func:`plan` gives the launch
geometry for a shape. Nothing here imports CuPy: the sources are plain strings, compiled by NVRTC
(``_nvrtc``, in CI) or by CuPy at the first launch, and by a host compiler for the CPU check
(``tests/cuda_on_cpu.py``).

Memory layout: arrays are C-contiguous; an (n, m) array has rows = units and columns = examples,
element (i, j) at ``i * m + j``; ``b``/``db`` (n, 1) are n contiguous values; parameters, gradients and
optimizer state are flat (P,). 2-D kernels put x (the fast thread index) along the m columns, so a warp
reads contiguous memory, and y along the rows; every loop is grid-stride, so any grid is correct and
:func:`plan` caps grids. Offsets are 64-bit products ``(long long)i * m + j``; grid-stride loops are
not unrolled (FDNN_NO_UNROLL), so the PTX holds no integer divide or remainder at all (checked by
tests/test_cupy_kernels_compile.py). Shapes must satisfy n, m < 2**30 (checked by :func:`plan`).

Block sizes: every kernel is correct for ANY block shape (blockDim.z must be 1) of at most 1024
threads; reductions use a fixed-order pairwise tree that works for any width, in a static
``__shared__ double[1024]`` (8 KiB) array — no dynamic shared memory (launch with shared_mem=0).
The result of a reduction depends on the launch geometry (the order of the sum), never on timing:
for the geometry :func:`plan` returns (a function of the shape only) results are bit-identical run
to run. No floating-point atomics anywhere. Sums accumulate in double (float64), as the CPU kernels do.

Argument types (what to pass to ``RawKernel(grid, block, args)``): arrays are CuPy arrays of the
kernel's dtype T (float32 -> C ``float``, float64 -> ``double``) unless said otherwise; ``partials``
are float64 arrays; scalars MUST be typed NumPy scalars, because CuPy passes a Python float as a C
double and a Python int as a C long long: ``T`` -> ``np.float32``/``np.float64`` (the kernel's
dtype), ``double`` -> ``np.float64`` (whatever T), ``int`` -> ``np.int32``, ``long long`` -> ``np.int64``;
a ``bool*`` is a 0-d CuPy bool array.

=====================  ========================================================================
kernel (kind)          arguments
=====================  ========================================================================
bias_activation        T* Z, const T* b, T* A, int n, int m
bias_softmax           T* Z, const T* b, T* A, int n, int m
bias_skip_activation   T* Z, const T* b, const T* S, long long s_row, long long s_col, int n_s, T* A, int n, int m
delta_row_sum          T* dA, const T* Z, const T* A, T* db, double* partials, int n, int m
delta_row_sum_skip     T* dA, const T* Z, const T* A, T* db, double* partials, T* dS, int n_s, int accumulate,
                       int n, int m         (dS: C-contiguous (n_s, m))
row_sum_partials       const double* partials, T* db, int n, int count      (count = plan.final_count)
output_elementwise     const T* Z, const T* A, const T* Y, T* dZ, T inv_m, double* partials, int n, int m
output_softmax_ce      const T* Z, const T* A, const T* Y, T* dZ, T inv_m, double* partials, int n, int m
sum_partials           const double* partials, int count, T scale, T* out   (out: a 0-d T array)
optimizer_update       const T* theta, const T* dtheta, const T* s1, const T* s2, T lr, T c1, T c2,
                       T* theta_out, T* s1_out, T* s2_out, const T* cost, const long long* halted,
                       long long P
mark_divergence        const T* cost, long long* halted_at, T* halted_cost, long long iteration
add_scaled             T* dW, const T* W, T c, long long size
sum_squares            const T* W, long long size, double* partials
dropout_mask           T* D, T keep_prob, T scale, long long size
batch_stats            const T* Z, T* mu, T* var, double* partials, int stage, int n, int m
bn_row_sums            const double* partials, T* out0, T* out1, int regions, double divisor, int n, int count
batch_norm_activation  T* Zn, const T* mu, const T* var, double eps, const T* gamma, const T* beta, T* Z, T* A,
                       int n, int m
batch_norm_delta       T* dA, const T* Z, const T* A, const T* Zn, T* dgamma, T* dbeta, double* partials,
                       int n, int m
batch_norm_backward    T* dZt, const T* Zn, const T* var, double eps, const T* gamma, const T* dgamma,
                       const T* dbeta, int n, int m
running_average        const T* running, const T* batch, T a, T c, T* out, const bool* go, int guarded,
                       long long size       (go: a 0-d bool array, read only when guarded != 0)
running_guard          const T* cost, const long long* halted, bool* go     (go: a 0-d bool array)
=====================  ========================================================================

The divergence protocol (no host sync per step): ``halted``/``halted_at`` is ONE int64 (C long long)
0-d device array, 0 until the first step whose cost is not finite; ``mark_divergence`` (one thread)
then stores that step's iteration + 1 there. ``optimizer_update`` reads the step's 0-d cost and that
array: cost not finite -> it writes nothing at all; else halted != 0 -> it copies θ -> θ_out and the
used state buffers s -> s_out; else the normal update. Launch ``mark_divergence`` after the step's
update (either order works: the update checks the cost first).

Note: CuPy compiles RawKernels with ``-ftz=true`` (float32 subnormals flush to zero on the GPU) and
NVRTC contracts a * b + c into FMAs by default; the CPU check (tests/cuda_on_cpu.py) does neither, so
GPU results may differ from it in the last bits (the reductions' ORDER is the same: it is set by the
launch geometry).
"""
import math
from collections import namedtuple

import numpy as np

from ._scalar_c import (CTYPE, PRELUDE, SUFFIX, activation_functions, c_identifier, float_name, literal,
                        loss_function, optimizer_function)

MAX_THREADS = 1024            # per block (CUDA's limit; the size of the shared reduction array)
THREADS = 256                 # threads per block that plan() uses
MAX_GRID = 65535              # plan() keeps every grid dimension at most this (gridDim.y's limit)
MAX_PARTIAL_BLOCKS = 1024     # blocks of a kernel that writes one partial sum per block
ROW_SUM_BLOCKS = 512          # delta_row_sum: about this many blocks in all before splitting rows
BN_LANE_COLUMNS = 16          # batch_stats, batch_norm_delta: one launch while a lane sums at most this many columns
MAX_DIM = 2 ** 30             # n, m, sizes: int indices plus a grid stride cannot overflow

KERNEL_PRELUDE = r"""#ifndef FDNN_KERNEL_PRELUDE
#define FDNN_KERNEL_PRELUDE
#define FDNN_MAX_THREADS 1024
/* Grid-stride loops are not unrolled: unrolling makes each thread divide by the stride once to count
   its iterations (a 64-bit divide for 64-bit indices), about the cost of the work itself when a
   thread has one element. */
#if defined(__CUDACC__)
#define FDNN_NO_UNROLL _Pragma("unroll 1")
#else
#define FDNN_NO_UNROLL
#endif
/* Sum of v over the `width` lanes (any width >= 1) that share sh[base .. base + width), in a fixed
   pairwise order: lane k adds lane k + ceil(w / 2) while w > 1. Every thread of the block must call
   it (it holds barriers); the sum is returned in lane 0 (0.0 elsewhere). */
FDNN_DEVICE double fdnn_tree_sum(double* sh, double v, unsigned int lane, unsigned int width,
                                 unsigned int base) {
    sh[base + lane] = v;
    for (unsigned int w = width; w > 1u; ) {
        const unsigned int half = (w + 1u) / 2u;
        __syncthreads();
        if (lane < w - half) {
            sh[base + lane] += sh[base + lane + half];
        }
        w = half;
    }
    __syncthreads();
    return lane == 0u ? sh[base] : 0.0;
}
#endif
"""

Launch = namedtuple("Launch", "grid block")
Plan = namedtuple("Plan", "main final partials final_count")
Plan.__doc__ = """How to launch one kernel kind: ``main`` (Launch) for the kernel itself; ``final``
(Launch, or None) for its fixed-order final sum (``row_sum_partials`` or ``sum_partials``);
``partials``: how many float64 partial sums the main kernel writes (size of the partials buffer, 0:
none); ``final_count``: the ``count`` argument of the final kernel."""


def _t(dtype):
    dtype = float_name(dtype)
    return CTYPE[dtype], SUFFIX[dtype], dtype


def _source(*parts):
    return PRELUDE + KERNEL_PRELUDE + "".join(parts)


_ROWS = "FDNN_NO_UNROLL for (int i = (int)(blockIdx.y * blockDim.y + threadIdx.y); i < n; i += (int)(gridDim.y * blockDim.y))"
_COLS = "FDNN_NO_UNROLL for (int j = (int)(blockIdx.x * blockDim.x + threadIdx.x); j < m; j += (int)(gridDim.x * blockDim.x))"
_FLAT = ("FDNN_NO_UNROLL for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < {size}; "
         "p += (long long)gridDim.x * blockDim.x)")
_TID = "const unsigned int tid = threadIdx.y * blockDim.x + threadIdx.x;"


# --- forward ---------------------------------------------------------------------------------------
def bias_activation(activation, dtype):
    """Z += b (b (n, 1) broadcast over the m columns), A = g(Z), one pass. Z, A (n, m)."""
    T, s, dtype = _t(dtype)
    g, _ = activation_functions(activation, dtype)
    name = f"fdnn_bias_activation_{c_identifier(activation.name)}_{s}"
    return _source(g.source, f"""
extern "C" __global__ void {name}({T}* Z, const {T}* b, {T}* A, int n, int m) {{
    {_ROWS} {{
        const {T} bi = b[i];
        const long long row = (long long)i * m;
        {_COLS} {{
            const {T} z = Z[row + j] + bi;
            Z[row + j] = z;
            A[row + j] = {g.name}(z);
        }}
    }}
}}
"""), name


def bias_skip_activation(activation, dtype):
    """Z += b + S, A = g(Z), one pass: a skip connection's S (n_s, m) added to the first min(n, n_s) rows
    (identity, zero padding or truncation), element (i, j) of S at i * s_row + j * s_col (strides in
    elements: S may be an F-ordered X). Z, A (n, m), b (n, 1)."""
    T, s, dtype = _t(dtype)
    g, _ = activation_functions(activation, dtype)
    name = f"fdnn_bias_skip_activation_{c_identifier(activation.name)}_{s}"
    return _source(g.source, f"""
extern "C" __global__ void {name}({T}* Z, const {T}* b, const {T}* S, long long s_row, long long s_col, int n_s,
                                  {T}* A, int n, int m) {{
    {_ROWS} {{
        const {T} bi = b[i];
        const long long row = (long long)i * m;
        const bool skip = i < n_s;
        {_COLS} {{
            {T} z = Z[row + j] + bi;
            if (skip) {{
                z += S[(long long)i * s_row + (long long)j * s_col];
            }}
            Z[row + j] = z;
            A[row + j] = {g.name}(z);
        }}
    }}
}}
"""), name


def bias_softmax(dtype):
    """Z += b, A[:, j] = exp(Z[:, j] - max) / Σ exp(Z[:, j] - max) per column: one thread per column.
    Z, A (C, m), b (C, 1)."""
    T, s, dtype = _t(dtype)
    name = f"fdnn_bias_softmax_{s}"
    fmax = "fdnn_maxf" if T == "float" else "fdnn_max"
    exp = "expf" if T == "float" else "exp"
    return _source(f"""
extern "C" __global__ void {name}({T}* Z, const {T}* b, {T}* A, int n, int m) {{
    if (n < 1) {{
        return;
    }}
    {_COLS} {{
        {T} zmax = Z[j] + b[0];
        for (int i = 0; i < n; i++) {{
            const long long k = (long long)i * m + j;
            const {T} z = Z[k] + b[i];
            Z[k] = z;
            zmax = {fmax}(zmax, z);
        }}
        {T} sum = {literal(0.0, dtype)};
        for (int i = 0; i < n; i++) {{
            const long long k = (long long)i * m + j;
            const {T} e = {exp}(Z[k] - zmax);
            A[k] = e;
            sum += e;
        }}
        for (int i = 0; i < n; i++) {{
            const long long k = (long long)i * m + j;
            A[k] = A[k] / sum;
        }}
    }}
}}
"""), name


# --- backward ----------------------------------------------------------------------------------------
def delta_row_sum(activation, dtype):
    """dZ = dA * g'(Z, A) written over dA, and the row sums Σ_j dZ[i, j] (in double): into db when
    the grid has one column of blocks, else per block into partials[i * gridDim.x + blockIdx.x] for
    ``row_sum_partials``. dA, Z, A (n, m), db (n, 1), partials (plan.partials,) float64 (when
    plan.final is None it is not touched: pass any float64 array)."""
    return _delta_row_sum(activation, dtype, "delta_row_sum", "", "", "")


def delta_row_sum_skip(activation, dtype):
    """``delta_row_sum`` that also passes dZ to a skip connection's dA[l]: dS[i, j] = dZ[i, j] (or += when
    ``accumulate`` != 0) for rows i < min(n, n_s). dS (n_s, m) C-contiguous; the rest as delta_row_sum."""
    T = _t(dtype)[0]
    return _delta_row_sum(activation, dtype, "delta_row_sum_skip", f", {T}* dS, int n_s, int accumulate",
                          "const bool skip = i < n_s;", """if (skip) {
                    dS[row + j] = accumulate ? dS[row + j] + d : d;
                }""")


def _delta_row_sum(activation, dtype, kind, params, per_row, per_element):
    """The source of ``delta_row_sum`` and its variants: ``params`` after partials, ``per_row`` at the start of
    a row (i < n), ``per_element`` after d is written (d, row, j in scope)."""
    T, s, dtype = _t(dtype)
    _, dg = activation_functions(activation, dtype)
    name = f"fdnn_{kind}_{c_identifier(activation.name)}_{s}"
    return _source(dg.source, f"""
extern "C" __global__ void {name}({T}* dA, const {T}* Z, const {T}* A, {T}* db, double* partials{params},
                                  int n, int m) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    FDNN_NO_UNROLL for (int i0 = (int)(blockIdx.y * blockDim.y); i0 < n; i0 += (int)(gridDim.y * blockDim.y)) {{
        const int i = i0 + (int)threadIdx.y;
        double sum = 0.0;
        if (i < n) {{
            const long long row = (long long)i * m;
            {per_row}
            {_COLS} {{
                const {T} d = dA[row + j] * {dg.name}(Z[row + j], A[row + j]);
                dA[row + j] = d;
                sum += (double)d;
                {per_element}
            }}
        }}
        sum = fdnn_tree_sum(sh, sum, threadIdx.x, blockDim.x, threadIdx.y * blockDim.x);
        if (threadIdx.x == 0u && i < n) {{
            if (gridDim.x == 1u) {{
                db[i] = ({T})sum;
            }} else {{
                partials[(long long)i * gridDim.x + blockIdx.x] = sum;
            }}
        }}
    }}
}}
"""), name


def row_sum_partials(dtype):
    """db[i] = Σ_c partials[i * count + c] in a fixed order (lanes along x, rows along y). db (n, 1)."""
    T, s, _ = _t(dtype)
    name = f"fdnn_row_sum_partials_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const double* partials, {T}* db, int n, int count) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    FDNN_NO_UNROLL for (int i0 = (int)(blockIdx.y * blockDim.y); i0 < n; i0 += (int)(gridDim.y * blockDim.y)) {{
        const int i = i0 + (int)threadIdx.y;
        double sum = 0.0;
        if (i < n) {{
            FDNN_NO_UNROLL for (int c = (int)threadIdx.x; c < count; c += (int)blockDim.x) {{
                sum += partials[(long long)i * count + c];
            }}
        }}
        sum = fdnn_tree_sum(sh, sum, threadIdx.x, blockDim.x, threadIdx.y * blockDim.x);
        if (threadIdx.x == 0u && i < n) {{
            db[i] = ({T})sum;
        }}
    }}
}}
"""), name


# --- output layer and cost ------------------------------------------------------------------------
def output_elementwise(loss, activation, dtype):
    """dZ = (A - Y) * inv_m (times g'(Z, A) unless the activation is the loss's canonical one) and
    per block the partial cost Σ L(z, a, y) (double) into partials[blockIdx.y * gridDim.x +
    blockIdx.x]; then ``sum_partials`` with scale inv_m writes J. Z, A, Y, dZ (n, m)."""
    T, s, dtype = _t(dtype)
    cost = loss_function(loss, dtype)
    canonical = activation.name == loss.canonical
    if not canonical:
        _check_delta_is_a_minus_y(loss, activation)
    _, dg = activation_functions(activation, dtype)
    name = f"fdnn_output_{c_identifier(loss.name)}_{c_identifier(activation.name)}_{s}"
    delta = "a - y" if canonical else f"(a - y) * {dg.name}(z, a)"
    return _source(cost.source, "" if canonical else dg.source, f"""
extern "C" __global__ void {name}(const {T}* Z, const {T}* A, const {T}* Y, {T}* dZ, {T} inv_m,
                                  double* partials, int n, int m) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    {_TID}
    double sum = 0.0;
    {_ROWS} {{
        const long long row = (long long)i * m;
        {_COLS} {{
            const {T} z = Z[row + j], a = A[row + j], y = Y[row + j];
            sum += (double){cost.name}(z, a, y);
            const {T} d = {delta};
            dZ[row + j] = d * inv_m;
        }}
    }}
    sum = fdnn_tree_sum(sh, sum, tid, blockDim.x * blockDim.y, 0u);
    if (tid == 0u) {{
        partials[blockIdx.y * gridDim.x + blockIdx.x] = sum;
    }}
}}
"""), name


def _check_delta_is_a_minus_y(loss, activation):
    """A non-canonical output's kernel computes dZ = (A - Y) g'(Z): right only for losses whose
    ∂L/∂A is A - Y (checked on a few values); otherwise a clear error."""
    A, Y = np.array([0.2, 0.7, 0.9]), np.array([0.0, 1.0, 0.5])
    try:
        ok = np.allclose(loss.dA(np, A, Y), A - Y, rtol=1e-12, atol=0.0)
    except (AttributeError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"no fused output kernel for loss {loss.name!r} with output activation "
                         f"{activation.name!r}: its dZ is not (A - Y) g'(Z)")


def output_softmax_ce(dtype):
    """dZ = (A - Y) * inv_m and per block the partial Σ_i -y log a (double) over its columns into
    partials[blockIdx.x]; log a is log(double(a)) when a > 1e-30, else z - logsumexp(Z[:, j]) in
    double, so saturated logits stay finite; then ``sum_partials`` with scale inv_m. One thread per
    column (1-D grid over m). Z, A, Y, dZ (C, m)."""
    T, s, dtype = _t(dtype)
    name = f"fdnn_output_ce_softmax_{s}"
    return _source(f"""
/* log a[i, j] from the logits: (z_ij - max_r z_rj) - log Σ_r exp(z_rj - max), in double */
FDNN_DEVICE double fdnn_log_softmax_{s}(const {T}* Z, int i, int j, int n, int m) {{
    double zmax = (double)Z[j];
    for (int r = 0; r < n; r++) {{
        zmax = fdnn_max(zmax, (double)Z[(long long)r * m + j]);
    }}
    double sum = 0.0;
    for (int r = 0; r < n; r++) {{
        sum += exp((double)Z[(long long)r * m + j] - zmax);
    }}
    return ((double)Z[(long long)i * m + j] - zmax) - log(sum);
}}

extern "C" __global__ void {name}(const {T}* Z, const {T}* A, const {T}* Y, {T}* dZ, {T} inv_m,
                                  double* partials, int n, int m) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    const {T} tiny = {literal(1e-30, dtype)};
    {_TID}
    double sum = 0.0;
    {_COLS} {{
        for (int i = 0; i < n; i++) {{
            const long long k = (long long)i * m + j;
            const {T} a = A[k], y = Y[k];
            dZ[k] = (a - y) * inv_m;
            if (y != {literal(0.0, dtype)}) {{
                sum -= (double)y * (a > tiny ? log((double)a) : fdnn_log_softmax_{s}(Z, i, j, n, m));
            }}
        }}
    }}
    sum = fdnn_tree_sum(sh, sum, tid, blockDim.x * blockDim.y, 0u);
    if (tid == 0u) {{
        partials[blockIdx.y * gridDim.x + blockIdx.x] = sum;
    }}
}}
"""), name


def sum_partials(dtype):
    """*out = (T)(scale * Σ_k partials[k]) in a fixed order: ONE block (grid (1, 1, 1)). out: 0-d T."""
    T, s, _ = _t(dtype)
    name = f"fdnn_sum_partials_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const double* partials, int count, {T} scale, {T}* out) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    {_TID}
    const unsigned int threads = blockDim.x * blockDim.y;
    double sum = 0.0;
    FDNN_NO_UNROLL for (int k = (int)tid; k < count; k += (int)threads) {{
        sum += partials[k];
    }}
    sum = fdnn_tree_sum(sh, sum, tid, threads, 0u);
    if (tid == 0u && blockIdx.x == 0u && blockIdx.y == 0u) {{
        *out = ({T})(sum * (double)scale);
    }}
}}
"""), name


# --- update, divergence ----------------------------------------------------------------------------
def optimizer_update(optimizer, dtype):
    """θ_out, s1_out, s2_out = the optimizer's step(θ, dθ, s1, s2, α, c1, c2) per parameter, out of
    place (inputs never written; only the first optimizer.n_state state buffers are read or written,
    the others may be any pointer). A copy θ -> θ_out, s -> s_out when *halted != 0 (an earlier step
    diverged: the kept parameters travel on whatever comes); else nothing written when *cost is not
    finite (this step diverges: the other slot keeps the last good ones). Flat (P,) buffers."""
    T, s, dtype = _t(dtype)
    step = optimizer_function(optimizer, dtype)
    n_state = optimizer.n_state
    name = f"fdnn_update_{c_identifier(optimizer.name)}_{s}"
    zero = literal(0.0, dtype)
    s1 = "s1[p]" if n_state >= 1 else zero
    s2 = "s2[p]" if n_state >= 2 else zero
    copy = ["theta_out[p] = theta[p];"] + [f"s{k}_out[p] = s{k}[p];" for k in range(1, n_state + 1)]
    write = ["theta_out[p] = t;"] + [f"s{k}_out[p] = {v};" for k, v in zip((1, 2), "uv")][:n_state]
    loop = _FLAT.format(size="P")
    return _source(step.source, f"""
extern "C" __global__ void {name}(const {T}* theta, const {T}* dtheta, const {T}* s1, const {T}* s2,
                                  {T} lr, {T} c1, {T} c2, {T}* theta_out, {T}* s1_out, {T}* s2_out,
                                  const {T}* cost, const long long* halted, long long P) {{
    if (*halted != 0) {{
        {loop} {{
            {" ".join(copy)}
        }}
        return;
    }}
    if (!isfinite(*cost)) {{
        return;
    }}
    {loop} {{
        {T} t, u, v;
        {step.name}(theta[p], dtheta[p], {s1}, {s2}, lr, c1, c2, &t, &u, &v);
        {" ".join(write)}
    }}
}}
"""), name


def mark_divergence(dtype):
    """*halted_at = iteration + 1 and *halted_cost = *cost if *halted_at is still 0 and *cost is not
    finite (one thread writes, any geometry; plan: (1, 1, 1)). cost, halted_cost: 0-d T; halted_at: 0-d
    int64. Launched after the step's update, so the diverging step's update still sees 0."""
    T, s, _ = _t(dtype)
    name = f"fdnn_mark_divergence_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const {T}* cost, long long* halted_at, {T}* halted_cost,
                                  long long iteration) {{
    if (blockIdx.x == 0u && threadIdx.x == 0u && *halted_at == 0 && !isfinite(*cost)) {{
        *halted_at = iteration + 1;
        *halted_cost = *cost;
    }}
}}
"""), name


# --- batch normalization -------------------------------------------------------------------------------
# Z̃ = γ·(Z − μ)/√(σ² + ε) + β over the m columns of each row. The two reductions (batch_stats and
# batch_norm_delta) put the lanes of a block's x along the columns of a row, like delta_row_sum. With one
# column of blocks (plan.final is None) a block owns whole rows and finishes them in one launch; with
# gridDim.x > 1 each block writes its float64 partial sums (region r of partials at r * n * gridDim.x,
# row i's at i * gridDim.x + blockIdx.x) and ``bn_row_sums`` adds them up in a fixed order.
_BN_ROWS = ("FDNN_NO_UNROLL for (int i0 = (int)(blockIdx.y * blockDim.y); i0 < n; "
            "i0 += (int)(gridDim.y * blockDim.y))")


def batch_stats(dtype):
    """μ[i] = (1/m) Σ_j Z[i, j], then σ²[i] = (1/m) Σ_j (Z[i, j] − μ[i])² (two passes, float64 sums with
    μ kept in double between them, as the CPU kernel). Z (n, m); mu, var (n, 1). ``stage`` 0: one column
    of blocks -> both, in one launch; several -> region 1 of partials gets each block's Σ Z. ``stage`` 1
    (several columns of blocks only): every block adds up row i's region-1 partials (a fixed order: the
    same μ in every block), block column 0 writes μ, and region 0 gets each block's Σ (Z − μ)²; then
    ``bn_row_sums`` (regions 1, divisor m) writes σ². partials: (plan.partials,) float64."""
    T, s, _ = _t(dtype)
    name = f"fdnn_batch_stats_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const {T}* Z, {T}* mu, {T}* var, double* partials, int stage, int n, int m) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    const unsigned int base = threadIdx.y * blockDim.x;
    const long long count = (long long)gridDim.x;
    const long long region = (long long)n * count;
    const double md = (double)m;
    {_BN_ROWS} {{
        const int i = i0 + (int)threadIdx.y;
        const long long row = (long long)i * m;
        double sum = 0.0;
        if (i < n) {{
            if (stage == 0) {{
                {_COLS} {{
                    sum += (double)Z[row + j];
                }}
            }} else {{
                FDNN_NO_UNROLL for (int c = (int)threadIdx.x; c < (int)gridDim.x; c += (int)blockDim.x) {{
                    sum += partials[region + (long long)i * count + c];
                }}
            }}
        }}
        fdnn_tree_sum(sh, sum, threadIdx.x, blockDim.x, base);
        if (stage == 0 && gridDim.x > 1u) {{
            if (threadIdx.x == 0u && i < n) {{
                partials[region + (long long)i * count + blockIdx.x] = sh[base];
            }}
            continue;
        }}
        const double mean = sh[base] / md;     /* every lane reads the row's sum ... */
        __syncthreads();                        /* ... before the next sum reuses sh */
        double q = 0.0;
        if (i < n) {{
            {_COLS} {{
                const double d = (double)Z[row + j] - mean;
                q += d * d;
            }}
        }}
        q = fdnn_tree_sum(sh, q, threadIdx.x, blockDim.x, base);
        if (threadIdx.x == 0u && i < n) {{
            if (gridDim.x == 1u) {{
                mu[i] = ({T})mean;
                var[i] = ({T})(q / md);
            }} else {{
                partials[(long long)i * count + blockIdx.x] = q;
                if (blockIdx.x == 0u) {{
                    mu[i] = ({T})mean;
                }}
            }}
        }}
    }}
}}
"""), name


def bn_row_sums(dtype):
    """out_r[i] = (T)(Σ_c partials[r * n * count + i * count + c] / divisor) for r < regions (1 or 2; out1
    is not touched when 1), each in a fixed order (lanes along x, rows along y). out0, out1 (n, 1)."""
    T, s, _ = _t(dtype)
    name = f"fdnn_bn_row_sums_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const double* partials, {T}* out0, {T}* out1, int regions, double divisor,
                                  int n, int count) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    FDNN_NO_UNROLL for (int r = 0; r < regions; r++) {{
        const double* part = partials + (long long)r * n * count;
        {T}* out = r == 0 ? out0 : out1;
        {_BN_ROWS} {{
            const int i = i0 + (int)threadIdx.y;
            double sum = 0.0;
            if (i < n) {{
                FDNN_NO_UNROLL for (int c = (int)threadIdx.x; c < count; c += (int)blockDim.x) {{
                    sum += part[(long long)i * count + c];
                }}
            }}
            sum = fdnn_tree_sum(sh, sum, threadIdx.x, blockDim.x, threadIdx.y * blockDim.x);
            if (threadIdx.x == 0u && i < n) {{
                out[i] = ({T})(sum / divisor);
            }}
        }}
    }}
}}
"""), name


def batch_norm_activation(activation, dtype):
    """Zn = (Zn − μ)·s with s = T(1/√(σ² + ε)) (σ² + ε and the root in double, once per row), Z = γ·Zn + β,
    A = g(Z): one pass. Zn (W·A_prev on entry), Z, A (n, m); mu, var, gamma, beta (n, 1); eps a double."""
    T, s, dtype = _t(dtype)
    g, _ = activation_functions(activation, dtype)
    name = f"fdnn_batch_norm_activation_{c_identifier(activation.name)}_{s}"
    return _source(g.source, f"""
extern "C" __global__ void {name}({T}* Zn, const {T}* mu, const {T}* var, double eps, const {T}* gamma,
                                  const {T}* beta, {T}* Z, {T}* A, int n, int m) {{
    {_ROWS} {{
        const {T} inv_std = ({T})(1.0 / sqrt((double)var[i] + eps));
        const {T} mean = mu[i], gi = gamma[i], bi = beta[i];
        const long long row = (long long)i * m;
        {_COLS} {{
            const {T} zn = (Zn[row + j] - mean) * inv_std;
            Zn[row + j] = zn;
            const {T} z = gi * zn + bi;
            Z[row + j] = z;
            A[row + j] = {g.name}(z);
        }}
    }}
}}
"""), name


def batch_norm_delta(activation, dtype):
    """dZ̃ = dA * g'(Z̃, A) written over dA, dβ = Σ_j dZ̃ and dγ = Σ_j dZ̃·Zn (float64 sums) in one pass: into
    dbeta, dgamma with one column of blocks, else per block into partials regions 0 (dβ) and 1 (dγ) for
    ``bn_row_sums`` (regions 2, divisor 1). dA, Z, A, Zn (n, m); dgamma, dbeta (n, 1)."""
    T, s, dtype = _t(dtype)
    _, dg = activation_functions(activation, dtype)
    name = f"fdnn_batch_norm_delta_{c_identifier(activation.name)}_{s}"
    return _source(dg.source, f"""
extern "C" __global__ void {name}({T}* dA, const {T}* Z, const {T}* A, const {T}* Zn, {T}* dgamma, {T}* dbeta,
                                  double* partials, int n, int m) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    const unsigned int base = threadIdx.y * blockDim.x;
    const long long count = (long long)gridDim.x;
    const long long region = (long long)n * count;
    {_BN_ROWS} {{
        const int i = i0 + (int)threadIdx.y;
        double sb = 0.0, sg = 0.0;
        if (i < n) {{
            const long long row = (long long)i * m;
            {_COLS} {{
                const {T} d = dA[row + j] * {dg.name}(Z[row + j], A[row + j]);
                dA[row + j] = d;
                sb += (double)d;
                sg += (double)d * (double)Zn[row + j];
            }}
        }}
        sb = fdnn_tree_sum(sh, sb, threadIdx.x, blockDim.x, base);
        sg = fdnn_tree_sum(sh, sg, threadIdx.x, blockDim.x, base);
        if (threadIdx.x == 0u && i < n) {{
            if (gridDim.x == 1u) {{
                dbeta[i] = ({T})sb;
                dgamma[i] = ({T})sg;
            }} else {{
                partials[(long long)i * count + blockIdx.x] = sb;
                partials[region + (long long)i * count + blockIdx.x] = sg;
            }}
        }}
    }}
}}
"""), name


def batch_norm_backward(dtype):
    """dZ = c·(m dZ̃ − dβ − Zn·dγ) written over dZ̃, c = T(γ/(m √(σ² + ε))) (in double, once per row): the
    gradient through the batch's own μ and σ². dZt, Zn (n, m); var, gamma, dgamma, dbeta (n, 1); eps a double."""
    T, s, _ = _t(dtype)
    name = f"fdnn_batch_norm_backward_{s}"
    return _source(f"""
extern "C" __global__ void {name}({T}* dZt, const {T}* Zn, const {T}* var, double eps, const {T}* gamma,
                                  const {T}* dgamma, const {T}* dbeta, int n, int m) {{
    const {T} mt = ({T})m;
    {_ROWS} {{
        const {T} c = ({T})((double)gamma[i] / ((double)m * sqrt((double)var[i] + eps)));
        const {T} db = dbeta[i], dg = dgamma[i];
        const long long row = (long long)i * m;
        {_COLS} {{
            dZt[row + j] = c * (mt * dZt[row + j] - db - Zn[row + j] * dg);
        }}
    }}
}}
"""), name


def running_average(dtype):
    """out = a·running + c·batch over size values (a = T(momentum), c = T(1 − momentum), computed on the
    host), only where *go when ``guarded`` != 0 (a 0-d bool on the device: no host sync); go is not read
    when ``guarded`` is 0. running, batch, out (size,) — the (n, 1) running and batch μ or σ²."""
    T, s, _ = _t(dtype)
    name = f"fdnn_running_average_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const {T}* running, const {T}* batch, {T} a, {T} c, {T}* out, const bool* go,
                                  int guarded, long long size) {{
    if (guarded != 0 && !*go) {{
        return;
    }}
    {_FLAT.format(size="size")} {{
        out[p] = a * running[p] + c * batch[p];
    }}
}}
"""), name


def running_guard(dtype):
    """*go = (*cost is finite) and (*halted == 0): the running statistics' guard of a step under the
    divergence protocol, on the device (one thread writes; plan (1, 1, 1)). cost: 0-d T; halted: 0-d int64;
    go: 0-d bool."""
    T, s, _ = _t(dtype)
    name = f"fdnn_running_guard_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const {T}* cost, const long long* halted, bool* go) {{
    if (blockIdx.x == 0u && threadIdx.x == 0u) {{
        *go = isfinite(*cost) && *halted == 0;
    }}
}}
"""), name


# --- L2, dropout -------------------------------------------------------------------------------------
def add_scaled(dtype):
    """dW += c W elementwise over size values (flat)."""
    T, s, _ = _t(dtype)
    name = f"fdnn_add_scaled_{s}"
    return _source(f"""
extern "C" __global__ void {name}({T}* dW, const {T}* W, {T} c, long long size) {{
    {_FLAT.format(size="size")} {{
        dW[p] += c * W[p];
    }}
}}
"""), name


def sum_squares(dtype):
    """Per block Σ W[p]² (in double) into partials[blockIdx.x]; then ``sum_partials`` (scale 1)
    gives ||W||² as a 0-d T. W flat (size,)."""
    T, s, _ = _t(dtype)
    name = f"fdnn_sum_squares_{s}"
    return _source(f"""
extern "C" __global__ void {name}(const {T}* W, long long size, double* partials) {{
    __shared__ double sh[FDNN_MAX_THREADS];
    double sum = 0.0;
    {_FLAT.format(size="size")} {{
        const double w = (double)W[p];
        sum += w * w;
    }}
    sum = fdnn_tree_sum(sh, sum, threadIdx.x, blockDim.x, 0u);
    if (threadIdx.x == 0u) {{
        partials[blockIdx.x] = sum;
    }}
}}
"""), name


def dropout_mask(dtype):
    """D = scale where D < keep_prob, else 0, in place over a buffer of uniform [0, 1) draws;
    scale = T(1 / keep_prob) (computed on the host in double, as NumPy's D *= 1 / keep_prob)."""
    T, s, dtype = _t(dtype)
    name = f"fdnn_dropout_mask_{s}"
    return _source(f"""
extern "C" __global__ void {name}({T}* D, {T} keep_prob, {T} scale, long long size) {{
    {_FLAT.format(size="size")} {{
        D[p] = D[p] < keep_prob ? scale : {literal(0.0, dtype)};
    }}
}}
"""), name


# --- launch geometry ---------------------------------------------------------------------------------
def _cdiv(a, b):
    return max(1, -(-a // b))


def _block(block, default, dims):
    """The block as a 3-tuple: `default` when block is None, else block checked (dims entries used)."""
    block = default if block is None else tuple(int(b) for b in block)
    block = block + (1,) * (3 - len(block))
    if len(block) != 3 or min(block) < 1 or block[2] != 1 or any(b != 1 for b in block[dims:]) \
            or math.prod(block) > MAX_THREADS:
        raise ValueError(f"bad block {block}: {dims} dimension(s) of threads, at most {MAX_THREADS} in all")
    return block


def _block_2d(n):
    """256 threads, x along columns: (256, 1) for one row, (128, 2), (64, 4), else (32, 8)."""
    by = 1
    while by < 8 and by < n:
        by *= 2
    return (THREADS // by, by, 1)


def _check(kind, shape, ndim):
    shape = tuple(int(x) for x in shape)
    if len(shape) != ndim or min(shape) < 0 or max(shape) >= MAX_DIM:
        raise ValueError(f"{kind}: shape {shape} must have {ndim} dimension(s), each in [0, 2**30)")
    return shape


def plan(kind, shape, block=None, final_block=None):
    """The launch geometry of kernel ``kind`` for arrays of ``shape`` ((n, m) for 2-D kinds, (size,)
    for flat ones), a function of the shape only: Plan(main, final, partials, final_count). ``block``
    / ``final_block`` override the block shapes (any shape is correct; tests use small ones)."""
    if kind not in _PLANS:
        raise ValueError(f"unknown kernel kind {kind!r}; expected one of {', '.join(sorted(_PLANS))}")
    return _PLANS[kind](kind, shape, block, final_block)


def _plan_elementwise_2d(kind, shape, block, final_block):
    n, m = _check(kind, shape, 2)
    b = _block(block, _block_2d(n), 2)
    return Plan(Launch((min(_cdiv(m, b[0]), MAX_GRID), min(_cdiv(n, b[1]), MAX_GRID), 1), b), None, 0, 0)


def _plan_delta_row_sum(kind, shape, block, final_block):
    n, m = _check(kind, shape, 2)
    b = _block(block, _block_2d(n), 2)
    gy = min(_cdiv(n, b[1]), MAX_GRID)
    gx = min(_cdiv(m, b[0]), _cdiv(ROW_SUM_BLOCKS, gy), MAX_PARTIAL_BLOCKS)
    if gx == 1:
        return Plan(Launch((1, gy, 1), b), None, 0, 0)
    fb = _block(final_block, (32, 8, 1), 2)
    final = Launch((1, min(_cdiv(n, fb[1]), MAX_GRID), 1), fb)
    return Plan(Launch((gx, gy, 1), b), final, n * gx, gx)


def _plan_output_elementwise(kind, shape, block, final_block):
    n, m = _check(kind, shape, 2)
    b = _block(block, _block_2d(n), 2)
    gy = min(_cdiv(n, b[1]), MAX_PARTIAL_BLOCKS)
    gx = min(_cdiv(m, b[0]), max(1, MAX_PARTIAL_BLOCKS // gy))
    return _with_sum(Plan(Launch((gx, gy, 1), b), None, gx * gy, gx * gy), final_block)


def _plan_columns(kind, shape, block, final_block):
    n, m = _check(kind, shape, 2)
    b = _block(block, (THREADS, 1, 1), 1)
    if kind == "bias_softmax":
        return Plan(Launch((min(_cdiv(m, b[0]), MAX_GRID), 1, 1), b), None, 0, 0)
    g = min(_cdiv(m, b[0]), MAX_PARTIAL_BLOCKS)
    return _with_sum(Plan(Launch((g, 1, 1), b), None, g, g), final_block)


def _plan_flat(kind, shape, block, final_block):
    (size,) = _check(kind, shape, 1)
    b = _block(block, (THREADS, 1, 1), 1)
    if kind == "sum_squares":
        g = min(_cdiv(size, b[0]), MAX_PARTIAL_BLOCKS)
        return _with_sum(Plan(Launch((g, 1, 1), b), None, g, g), final_block)
    return Plan(Launch((min(_cdiv(size, b[0]), MAX_GRID), 1, 1), b), None, 0, 0)


def _plan_batch_norm_sums(kind, shape, block, final_block):
    """batch_stats, batch_norm_delta: one column of blocks (one launch) while a lane has at most
    BN_LANE_COLUMNS columns of a row to sum, else columns of blocks as delta_row_sum's, two float64
    partials regions and the final ``bn_row_sums``."""
    n, m = _check(kind, shape, 2)
    b = _block(block, _block_2d(n), 2)
    gy = min(_cdiv(n, b[1]), MAX_GRID)
    gx = 1 if _cdiv(m, b[0]) <= BN_LANE_COLUMNS else min(_cdiv(m, b[0]), _cdiv(ROW_SUM_BLOCKS, gy),
                                                         MAX_PARTIAL_BLOCKS)
    if gx == 1:
        return Plan(Launch((1, gy, 1), b), None, 0, 0)
    fb = _block(final_block, (32, 8, 1), 2)
    final = Launch((1, min(_cdiv(n, fb[1]), MAX_GRID), 1), fb)
    return Plan(Launch((gx, gy, 1), b), final, 2 * n * gx, gx)


def _plan_single(kind, shape, block, final_block):
    return Plan(Launch((1, 1, 1), (1, 1, 1)), None, 0, 0)


def _with_sum(p, final_block):
    return p._replace(final=Launch((1, 1, 1), _block(final_block, (THREADS, 1, 1), 2)))


_PLANS = {"bias_activation": _plan_elementwise_2d, "delta_row_sum": _plan_delta_row_sum,
          "bias_skip_activation": _plan_elementwise_2d, "delta_row_sum_skip": _plan_delta_row_sum,
          "output_elementwise": _plan_output_elementwise, "bias_softmax": _plan_columns,
          "output_softmax_ce": _plan_columns, "optimizer_update": _plan_flat, "add_scaled": _plan_flat,
          "dropout_mask": _plan_flat, "sum_squares": _plan_flat, "mark_divergence": _plan_single,
          "batch_stats": _plan_batch_norm_sums, "batch_norm_delta": _plan_batch_norm_sums,
          "batch_norm_activation": _plan_elementwise_2d, "batch_norm_backward": _plan_elementwise_2d,
          "running_average": _plan_flat, "running_guard": _plan_single}

# The final-sum kernel each reducing kind's Plan.final launches.
FINAL_KERNEL = {"delta_row_sum": row_sum_partials, "delta_row_sum_skip": row_sum_partials,
                "output_elementwise": sum_partials,
                "output_softmax_ce": sum_partials, "sum_squares": sum_partials,
                "batch_stats": bn_row_sums, "batch_norm_delta": bn_row_sums}


# --- every kernel ------------------------------------------------------------------------------------
def catalog(dtype):
    """[(kind, variant, (source, kernel_name))]: every kernel the fused GPU backend may launch in this
    dtype — each kind for every registered elementwise activation, every (elementwise loss, output
    activation) pair the losses accept, every registered optimizer (default hyper-parameters)."""
    from ..activations import ACTIVATIONS
    from ..losses import LOSSES, get_loss
    from ..optimizers import OPTIMIZERS
    out = []
    activations = [cls() for cls in ACTIVATIONS.values() if cls.elementwise]
    for act in activations:
        out.append(("bias_activation", act.name, bias_activation(act, dtype)))
        out.append(("delta_row_sum", act.name, delta_row_sum(act, dtype)))
        out.append(("bias_skip_activation", act.name, bias_skip_activation(act, dtype)))
        out.append(("delta_row_sum_skip", act.name, delta_row_sum_skip(act, dtype)))
    for loss_name, loss_cls in LOSSES.items():
        for act in activations:
            if not hasattr(loss_cls, "scalar"):
                continue
            try:
                loss = get_loss(loss_name, act)
            except ValueError:
                continue
            out.append(("output_elementwise", f"{loss.name}-{act.name}", output_elementwise(loss, act, dtype)))
    out.append(("bias_softmax", "softmax", bias_softmax(dtype)))
    out.append(("output_softmax_ce", "ce-softmax", output_softmax_ce(dtype)))
    out += [(kind, "", fn(dtype)) for kind, fn in (
        ("row_sum_partials", row_sum_partials), ("sum_partials", sum_partials),
        ("mark_divergence", mark_divergence), ("add_scaled", add_scaled), ("sum_squares", sum_squares),
        ("dropout_mask", dropout_mask))]
    out += [("optimizer_update", name, optimizer_update(cls(), dtype)) for name, cls in OPTIMIZERS.items()]
    return out + batch_norm_catalog(dtype)


def batch_norm_catalog(dtype):
    """[(kind, variant, (source, kernel_name))]: the batch-normalization kernels in this dtype (each
    activation-dependent kind for every registered elementwise activation); part of :func:`catalog`."""
    from ..activations import ACTIVATIONS
    out = []
    for act in [cls() for cls in ACTIVATIONS.values() if cls.elementwise]:
        out.append(("batch_norm_activation", act.name, batch_norm_activation(act, dtype)))
        out.append(("batch_norm_delta", act.name, batch_norm_delta(act, dtype)))
    out += [(kind, "", fn(dtype)) for kind, fn in (
        ("batch_stats", batch_stats), ("bn_row_sums", bn_row_sums), ("batch_norm_backward", batch_norm_backward),
        ("running_average", running_average), ("running_guard", running_guard))]
    return out


# --- the scalar loops' GPU twin (benchmark only: vectorization's yardstick, never used to train) -------
def scalar_loop_step(hidden, output, loss, dtype):
    """One gradient-descent step over the m examples, one after another, in ONE GPU thread: the loops of
    ``fastdnn.loops.scalar_step`` (forward neuron by neuron, backward weight by weight, the gradient summed
    over the examples, then θ -= α dθ) in CUDA C, from the same scalar formulas as every other kernel.
    Launch (1, 1, 1) x (1, 1, 1). Arguments: const T* X (n0, ld), const T* Y (nL, ld) (examples 0..m-1
    of ld columns are used), T* theta, T* grad (P,) laid out W1, b1, W2, b2, ...; const long long* dims
    (L + 1,), const long long* pofs (L + 1,) (``_layout.flat_layout``); T* z, T* a, T* dz: scratch of
    Σ n_l values; T lr; int L, int m, int ld; double* cost: J = (1/m) Σ L(a, y) before the step."""
    T, s, dtype = _t(dtype)
    softmax = output.name == "softmax"
    if softmax and loss.name != "ce":
        raise ValueError(f"softmax output needs loss 'ce', not {loss.name!r}")
    canonical = output.name == loss.canonical
    g, dg = activation_functions(hidden, dtype)
    parts = [g.source, dg.source]
    if not softmax:
        g_out, dg_out = activation_functions(output, dtype)
        cost = loss_function(loss, dtype)
        parts += [g_out.source, dg_out.source, cost.source] if output != hidden else [cost.source]
        if not canonical:
            _check_delta_is_a_minus_y(loss, output)
    name = f"fdnn_scalar_loop_step_{c_identifier(hidden.name)}_{c_identifier(output.name)}_" \
           f"{c_identifier(loss.name)}_{s}"
    exp, log = ("expf", "logf") if T == "float" else ("exp", "log")
    fmax = "fdnn_maxf" if T == "float" else "fdnn_max"
    if softmax:
        output_pass = f"""
            {T} zmax = z[uo_last];
            for (long long j = 0; j < n; j++) {{
                zmax = {fmax}(zmax, z[uo_last + j]);
            }}
            {T} total = {literal(0.0, dtype)};
            for (long long j = 0; j < n; j++) {{
                a[uo_last + j] = {exp}(z[uo_last + j] - zmax);
                total += a[uo_last + j];
            }}
            for (long long j = 0; j < n; j++) {{
                a[uo_last + j] = a[uo_last + j] / total;
                const {T} y = Y[(long long)j * ld + i];
                if (y != {literal(0.0, dtype)}) {{
                    J -= (double)y * (double)(z[uo_last + j] - zmax - {log}(total));
                }}
            }}"""
        output_value, delta = "", "a[uo_last + j] - Y[(long long)j * ld + i]"
    else:
        output_pass = ""
        output_value = f"else {{ a[uo + j] = {g_out.name}(v); }}"
        delta = "aj - yj" if canonical else f"(aj - yj) * {dg_out.name}(zj, aj)"
    cost_term = "" if softmax else f"J += (double){cost.name}(zj, aj, yj);"
    return _source(*parts, f"""
extern "C" __global__ void {name}(const {T}* X, const {T}* Y, {T}* theta, {T}* grad, const long long* dims,
                                  const long long* pofs, {T}* z, {T}* a, {T}* dz, {T} lr, int L, int m,
                                  int ld, double* cost) {{
    if (blockIdx.x != 0u || threadIdx.x != 0u) {{
        return;
    }}
    const long long P = pofs[L];
    const {T} m_t = ({T})m;
    for (long long p = 0; p < P; p++) {{
        grad[p] = {literal(0.0, dtype)};
    }}
    double J = 0.0;
    for (int i = 0; i < m; i++) {{
        /* forward, neuron by neuron; layer l's units start at uo = n_1 + ... + n_(l-1) */
        long long uo_prev = 0, uo = 0;
        for (int l = 1; l <= L; l++) {{
            const long long n = dims[l], k = dims[l - 1], po = pofs[l - 1];
            for (long long j = 0; j < n; j++) {{
                {T} v = theta[po + n * k + j];
                for (long long q = 0; q < k; q++) {{
                    v += theta[po + j * k + q] * (l == 1 ? X[q * ld + i] : a[uo_prev + q]);
                }}
                z[uo + j] = v;
                if (l < L) {{ a[uo + j] = {g.name}(v); }} {output_value}
            }}
            uo_prev = uo;
            uo += n;
        }}
        const long long n = dims[L], uo_last = uo_prev;
        {{{output_pass}
        }}
        /* the output delta dZ[L] = (A - Y) / m (times g'(Z) off the canonical pairing) */
        for (long long j = 0; j < n; j++) {{
            const {T} zj = z[uo_last + j], aj = a[uo_last + j], yj = Y[(long long)j * ld + i];
            {cost_term}
            (void)zj; (void)aj; (void)yj;
            dz[uo_last + j] = ({delta}) / m_t;
        }}
        /* backward, weight by weight */
        uo = uo_last;
        for (int l = L; l >= 1; l--) {{
            const long long nl = dims[l], k = dims[l - 1], po = pofs[l - 1];
            const long long up = uo - k;
            for (long long j = 0; j < nl; j++) {{
                const {T} d = dz[uo + j];
                grad[po + nl * k + j] += d;
                for (long long q = 0; q < k; q++) {{
                    grad[po + j * k + q] += d * (l == 1 ? X[q * ld + i] : a[up + q]);
                }}
            }}
            if (l > 1) {{
                for (long long q = 0; q < k; q++) {{
                    {T} v = {literal(0.0, dtype)};
                    for (long long j = 0; j < nl; j++) {{
                        v += theta[po + j * k + q] * dz[uo + j];
                    }}
                    dz[up + q] = v * {dg.name}(z[up + q], a[up + q]);
                }}
            }}
            uo = up;
        }}
    }}
    for (long long p = 0; p < P; p++) {{
        theta[p] -= lr * grad[p];
    }}
    *cost = J / (double)m;
}}
"""), name
