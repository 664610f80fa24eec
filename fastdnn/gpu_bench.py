"""The GPU benchmark: one training step per configuration on `cupy` and `cupy-fused`, against the
GPU GEMM floor, timed with CUDA events (warm-up outside the timing), with the time in cuBLAS vs the
rest and the achieved TFLOP/s. ``fastdnn bench --gpu``. Without a usable CUDA device it stops with
the reason; it never times the CPU instead."""
import numpy as np

from . import bench, loops
from .backends import _cuda_device


class NoCudaDevice(RuntimeError):
    pass


def _event_time(run, steps, cp, warmup=5):
    """Milliseconds per call of run(), from CUDA events around ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    cp.cuda.get_current_stream().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(steps):
        run()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / steps


def run(configs=bench.CONFIGS, dtypes=("float32", "float64"), steps=50, device=0, loops=True,
        loop_budget_s=0.05):
    """Rows per configuration x dtype: ``cupy`` and ``cupy-fused`` (kind 'vectorized') and, with
    ``loops``, the two loop twins (kind 'loop', timed on the examples that fit ``loop_budget_s`` and
    extrapolated to m); raises NoCudaDevice (with the reason) without a GPU."""
    reason = _cuda_device.probe(device)
    if reason:
        raise NoCudaDevice(f"no CUDA device: {reason}")
    from . import Network
    _cuda_device.use_device(device)
    cp = _cuda_device.cupy()
    name_of_gpu = cp.cuda.runtime.getDeviceProperties(device)["name"].decode()
    rows = []
    for config in configs:
        for dtype in dtypes:
            floor_ms = _event_time(bench.gemm_floor(config, dtype, xp=cp).run, steps, cp)

            def row(implementation, backend, kind, ms, examples=None):
                rows.append(dict(config=config.name, dtype=dtype, backend=backend, implementation=implementation,
                                 kind=kind, ms_per_step=ms, cublas_ms=floor_ms, rest_ms=ms - floor_ms,
                                 vs_floor=ms / floor_ms, examples_timed=examples or config.m,
                                 tflops=bench.flops_per_step(config) / (ms * 1e-3) / 1e12, device=name_of_gpu))
            for name in ("cupy", "cupy-fused"):
                net = Network(config.layer_dims, config.hidden, config.output, device=f"{name}:{device}",
                              dtype=dtype, seed=0)
                Xd, Yd = net.prepare(*bench.problem(config, dtype))          # moved to the GPU once
                with net.backend.device_scope():
                    net.engine.begin_call()         # the deferred divergence check's halt flag
                    ms = _event_time(lambda: net.engine.train_step(Xd, Yd, 1e-3, check=False), steps, cp)
                row(name, name, "vectorized", ms)
            if loops:
                for make in (per_example_loop, scalar_loop_kernel):
                    label, call, k = make(config, dtype, cp, loop_budget_s)
                    row(label, "cupy", "loop", _event_time(call, 1, cp, warmup=1) * config.m / k, k)
    return rows


# --- the loop twins on the GPU (loops.per_example_step with xp = cupy; a scalar-loop RawKernel) -----
def _examples_within(call, m, budget_s, cp):
    """How many examples (1..m) one call can take within budget_s, from a 1-example call timed with
    CUDA events (after one warm-up call: compilation, cuBLAS handles)."""
    one = _event_time(lambda: call(1), 1, cp, warmup=1) * 1e-3
    return int(max(1, min(m, budget_s / max(one, 1e-7))))


def per_example_loop(config, dtype, cp, budget_s):
    """(label, run, k): the course's ``for i in range(m)`` issuing CuPy operations per example, on the
    first k examples that fit budget_s (the row extrapolates to m)."""
    from . import Network
    net = Network(config.layer_dims, config.hidden, config.output, device="numpy", dtype=dtype, seed=0)
    X, Y = (cp.asarray(a) for a in bench.problem(config, dtype))
    params = {k: cp.asarray(v) for k, v in net.parameters.items()}
    acts, loss = net.activations, net.loss
    call = lambda k: loops.per_example_step(params, X[:, :k], Y[:, :k], acts, loss, 1e-3, cp)
    k = _examples_within(call, config.m, budget_s, cp)
    return f"loop over examples (CuPy ops; {k} of {config.m} timed, extrapolated)", lambda: call(k), k


def scalar_loop_kernel(config, dtype, cp, budget_s):
    """(label, run, k): the scalar loops in ONE GPU thread (``_cupy_kernels.scalar_loop_step``: every
    example, neuron and weight in turn), on the first k examples that fit budget_s."""
    from . import Network
    from ._layout import flat_layout
    from .backends import _cupy_kernels
    net = Network(config.layer_dims, config.hidden, config.output, device="numpy", dtype=dtype, seed=0)
    source, name = _cupy_kernels.scalar_loop_step(net.activations[0], net.activations[-1], net.loss, dtype)
    kernel = cp.RawKernel(source, name)
    X, Y = (cp.asarray(np.ascontiguousarray(a)) for a in bench.problem(config, dtype))
    theta = cp.asarray(np.concatenate([v.ravel() for v in net.parameters.values()]))
    grad, units = cp.empty_like(theta), sum(config.layer_dims[1:])
    z, a, dz = (cp.empty((units,), dtype) for _ in range(3))
    dims, pofs = (cp.asarray(v) for v in flat_layout(config.layer_dims))
    cost = cp.empty((), np.float64)
    L, lr = np.int32(len(config.layer_dims) - 1), np.dtype(dtype).type(1e-3)

    def call(k):
        kernel((1,), (1,), (X, Y, theta, grad, dims, pofs, z, a, dz, lr, L, np.int32(k), np.int32(config.m), cost))
    k = _examples_within(call, config.m, budget_s, cp)
    return f"scalar loops in one GPU thread (RawKernel; {k} of {config.m} timed, extrapolated)", lambda: call(k), k


def table(rows):
    """Markdown: a row per configuration x dtype x implementation, with the vectorized rows' speed-up over
    the slower loop twin of their configuration and dtype."""
    def over_loop(r):
        loop = [x["ms_per_step"] for x in rows if x.get("kind") == "loop" and x["config"] == r["config"]
                and x["dtype"] == r["dtype"]]
        return f"{max(loop) / r['ms_per_step']:,.0f}x" if loop and r.get("kind") != "loop" else "—"
    return bench.markdown_table(
        ["config", "dtype", "implementation", "ms / step", "cuBLAS (GEMM floor) ms", "rest ms", "vs floor", "TFLOP/s",
         "speed-up over the loop"],
        [(r["config"], r["dtype"], r.get("implementation", r["backend"]), f"{r['ms_per_step']:.3f}",
          f"{r['cublas_ms']:.3f}", f"{r['rest_ms']:.3f}", f"{r['vs_floor']:.2f}x", f"{r['tflops']:.2f}",
          over_loop(r)) for r in rows])


# --- on paper: what an H100 would do with these steps ---------------------------------------------
# NVIDIA H100 SXM5 80GB datasheet: fp32 (CUDA cores) 67 TFLOP/s, tf32 tensor cores 495 TFLOP/s
# dense, fp64 34 TFLOP/s (67 on tensor cores), HBM3 3.35 TB/s. A device-to-device copy on one H100
# of this workplace moved 3.0 TB/s.
H100 = dict(fp32=67e12, tf32=495e12, fp64=34e12, bandwidth=3.35e12)
# Host (CPU) time per launch from Python, (low, high) seconds. A CuPy operation: an ElementwiseKernel
# call measured at 11.4 µs of CPU time (cupy/cupy PR #3298) up to ~25 µs per operation in CuPy's
# documentation (Performance Best Practices). A RawKernel launch: from the Python-to-driver floor of
# 2.6 µs (cuda.core's launch(), NVIDIA/cuda-python PR #1390) up to about a CuPy ElementwiseKernel call.
# cuBLAS through cupy.matmul is priced as a CuPy operation. One CUDA graph launch: 3.5-8 µs of CPU
# time (CUDA.jl documentation, Graphs). Sources and details: benchmarks/GPU_DECISION.md.
KERNEL_S = {"cupy": (11e-6, 25e-6), "cupy-fused": (3e-6, 12e-6)}
GEMM_S = (11e-6, 25e-6)
GRAPH_S = (3.5e-6, 8e-6)
# CuPy operations (kernels) per layer on the `cupy` backend, estimated from backends/base.py and
# activations.py / losses.py: the activation's forward, its backward, and the loss's cost + output delta.
CUPY_FORWARD = {"relu": 1, "leaky_relu": 4, "tanh": 1, "linear": 1, "sigmoid": 9, "softmax": 5}
CUPY_BACKWARD = {"relu": 2, "leaky_relu": 4, "tanh": 3, "linear": 1, "sigmoid": 3}
CUPY_COST = {"sigmoid": 10, "softmax": 11, "linear": 5}       # bce, ce, mse (by the output activation)
BACKENDS = ("cupy", "cupy-fused")


def bytes_per_step(config, itemsize):
    """Fewest bytes a step moves: every GEMM reads its operands and writes its result once; the fused
    passes read Z/A/dA and write A/dZ once; the update reads θ and dθ and writes θ'."""
    dims, m = config.layer_dims, config.m
    gemm = sum(n * k + k * m + n * m for k, n in zip(dims[:-1], dims[1:]))          # W·A
    gemm += sum(n * m + k * m + n * k for k, n in zip(dims[:-1], dims[1:]))         # dZ·A_prevᵀ
    gemm += sum(n * k + n * m + k * m for k, n in zip(dims[1:-1], dims[2:]))        # Wᵀ·dZ
    elementwise = sum(2 * n * m + 3 * n * m for n in dims[1:])                       # forward + backward
    params = sum(n * k + n for k, n in zip(dims[:-1], dims[1:]))
    return itemsize * (gemm + elementwise + 3 * params)


def _fused_launches(config):
    """(RawKernel launches, CuPy operations) of one full-batch gradient-descent step on ``cupy-fused``:
    L bias + activation, the output pass and its fixed-order cost sum (2), L - 1 dZ + db plus one
    final row sum per hidden layer whose db plan() splits over several blocks of columns, the update
    and the divergence mark (2); and one CuPy operation: the output layer's db row sum (cupy.sum)."""
    from .backends import _cupy_kernels
    dims, m, L = config.layer_dims, config.m, len(config.layer_dims) - 1
    finals = sum(_cupy_kernels.plan("delta_row_sum", (n, m)).final is not None for n in dims[1:-1])
    return L + 2 + (L - 1) + finals + 2, 1


def launches_per_step(config, backend):
    """(kernels, cuBLAS GEMMs) of one full-batch gradient-descent step on ``backend``; 3L - 1 GEMMs
    (W·A per layer, dZ·A_prevᵀ per layer, Wᵀ·dZ but for layer 1)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown GPU backend {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")
    L = len(config.layer_dims) - 1
    if backend == "cupy-fused":
        kernels = sum(_fused_launches(config))
    else:
        hidden = (L - 1) * (1 + CUPY_FORWARD[config.hidden] + CUPY_BACKWARD[config.hidden] + 1)
        output = 1 + CUPY_FORWARD[config.output] + CUPY_COST[config.output] + 2 + 1
        kernels = hidden + output + 2
    return kernels, 3 * L - 1


def launch_seconds(config, backend):
    """(low, high) host seconds to launch one step's kernels and GEMMs from Python, at the published
    per-launch costs (RawKernels at KERNEL_S['cupy-fused'], CuPy operations at KERNEL_S['cupy'])."""
    kernels, gemms = launches_per_step(config, backend)
    raw, ops = _fused_launches(config) if backend == "cupy-fused" else (0, kernels)
    return tuple(raw * f + ops * c + gemms * g
                 for f, c, g in zip(KERNEL_S["cupy-fused"], KERNEL_S["cupy"], GEMM_S))


def paper(cpu_rows, backends=BACKENDS):
    """Markdown: per configuration, dtype and GPU backend, FLOPs and bytes per step, the H100 floor, the
    launches and their published host cost, and the batch size from which the GPU step beats the
    measured CPU (numba) step."""
    rows = []
    for config in bench.CONFIGS:
        for dtype in ("float32", "float64"):
            cpu = next((r for r in cpu_rows if r["config"] == config.name and r["dtype"] == dtype
                        and r["implementation"] == "fastdnn numba"), None)
            flops, nbytes = bench.flops_per_step(config), bytes_per_step(config, np.dtype(dtype).itemsize)
            rate = H100["fp32"] if dtype == "float32" else H100["fp64"]   # CuPy: no tf32 unless asked
            floor = max(flops / rate, nbytes / H100["bandwidth"])
            for backend in backends:
                kernels, gemms = launches_per_step(config, backend)
                launch = launch_seconds(config, backend)
                crossover = "—"
                if cpu:
                    per_example_cpu = cpu["median_s"] / config.m          # CPU time grows ~ linearly in m
                    per_example_gpu = floor / config.m
                    m_star = [t / (per_example_cpu - per_example_gpu) for t in launch]
                    crossover = f"{m_star[0]:,.0f} – {m_star[1]:,.0f}"
                rows.append((f"{config.name} {config.layer_dims} m={config.m}", dtype, backend,
                             f"{flops / 1e9:.3f}", f"{nbytes / 1e6:.2f}", f"{floor * 1e6:.1f}",
                             f"{kernels} + {gemms}", f"{launch[0] * 1e6:.0f}–{launch[1] * 1e6:.0f} µs",
                             bench._fmt_time(cpu["median_s"]) if cpu else "—", crossover))
    return bench.markdown_table(["config", "dtype", "backend", "GFLOP / step", "MB / step", "H100 floor (µs)",
                                 "launches (kernels + cuBLAS)", "launch cost (published)", "measured CPU step",
                                 "GPU faster from m ≈"], rows)


def graphs_on_paper(names=("tiny", "mnist-256")):
    """Markdown: for ``cupy-fused``, a step's launches one by one vs one CUDA graph launch (host time)."""
    rows = []
    for config in (c for c in bench.CONFIGS if c.name in names):
        kernels, gemms = launches_per_step(config, "cupy-fused")
        one_by_one = launch_seconds(config, "cupy-fused")
        saved = (one_by_one[0] - GRAPH_S[0], one_by_one[1] - GRAPH_S[1])
        rows.append((f"{config.name} {config.layer_dims} m={config.m}", f"{kernels} + {gemms}",
                     f"{one_by_one[0] * 1e6:.0f}–{one_by_one[1] * 1e6:.0f} µs",
                     f"{GRAPH_S[0] * 1e6:.1f}–{GRAPH_S[1] * 1e6:.0f} µs",
                     f"{saved[0] * 1e6:.0f}–{saved[1] * 1e6:.0f} µs"))
    return bench.markdown_table(["config", "launches (kernels + cuBLAS)", "launched one by one (host)",
                                 "one graph launch (host)", "host time saved per step"], rows)


def _report(rows):
    """The text of benchmarks/GPU_ON_PAPER.md from the CPU benchmark's rows."""
    cfg = bench.CONFIGS[0]
    k_fused, g = launches_per_step(cfg, "cupy-fused")
    k_cupy, _ = launches_per_step(cfg, "cupy")
    out = ["# A training step on an H100, on paper\n",
           "Nothing here ran on a GPU (a measured H200 is in benchmarks/GPU_H200.md: launch-bound as "
           "estimated here, at about twice these per-launch costs). FLOPs and the fewest bytes a step moves are counted from the layer "
           "sizes; the floor is the larger of FLOPs over the H100 SXM's datasheet rate (fp32 67 TFLOP/s for "
           "float32, as CuPy does not use tf32 tensor cores unless asked; fp64 34 TFLOP/s) and bytes over "
           "its 3.35 TB/s HBM3. Launches are counted per backend for one full-batch gradient-descent step: "
           "`cupy-fused` makes 2L + 3 RawKernel launches (plus one final row sum per hidden layer whose db "
           "is split over blocks of columns) and one CuPy operation (the output layer's db), `cupy` one CuPy "
           "operation per elementwise piece of every layer (counted from the code: e.g. "
           f"{k_cupy} against {k_fused} for `{cfg.name}`), and both make 3L - 1 cuBLAS calls ({g} there). "
           "Each launch is priced at its published host cost from Python: a CuPy operation "
           f"{KERNEL_S['cupy'][0] * 1e6:.0f}–{KERNEL_S['cupy'][1] * 1e6:.0f} µs (CuPy's ElementwiseKernel call "
           "measured in cupy/cupy PR #3298; CuPy's Performance Best Practices), a RawKernel launch "
           f"{KERNEL_S['cupy-fused'][0] * 1e6:.0f}–{KERNEL_S['cupy-fused'][1] * 1e6:.0f} µs (from the "
           "Python-to-driver floor measured in NVIDIA/cuda-python PR #1390 up to a CuPy call), a cuBLAS "
           f"GEMM through cupy.matmul {GEMM_S[0] * 1e6:.0f}–{GEMM_S[1] * 1e6:.0f} µs; sources in "
           "benchmarks/GPU_DECISION.md. At these costs the launches, not the arithmetic, dominate every "
           "configuration below. The CPU step is this machine's measured `numba` step (benchmarks/RESULTS.md); "
           "assuming both grow linearly in m, the last column is the batch size from which the GPU step is "
           "the faster one. Regenerate: `python -m fastdnn.gpu_bench > benchmarks/GPU_ON_PAPER.md`; "
           "measure: `fastdnn gpu-check` then `fastdnn bench --gpu` on a machine with an NVIDIA GPU.\n",
           paper(rows), "",
           "## CUDA graphs, on paper\n",
           "A step of fixed shapes could be captured once as a CUDA graph (CuPy: `Stream.begin_capture()` / "
           "`end_capture()` on a non-default stream, then `Graph.launch()` each step): the host then pays "
           f"one graph launch, {GRAPH_S[0] * 1e6:.1f}–{GRAPH_S[1] * 1e6:.0f} µs of CPU time (CUDA.jl "
           "documentation, Graphs), instead of every kernel and GEMM launch; the kernels still run their own "
           "time on the device. For `cupy-fused`:\n",
           graphs_on_paper(), "",
           "It stays on paper until it is built and measured on a GPU, and capture would need changes first: "
           "cuBLAS allocates its workspace during the first calls, which must not happen inside a capture; "
           "CuPy raises on a synchronous transfer during capture; and a replay reuses the captured addresses "
           "and scalar arguments, so the learning rate, Adam's t and the divergence marker's iteration would "
           "have to be read from device memory, and every mini-batch copied into the same input buffers. "
           "The `cupy` backend allocates temporaries every step, so only `cupy-fused` (whose step allocates "
           "nothing) is a candidate."]
    return "\n".join(out)


if __name__ == "__main__":       # python -m fastdnn.gpu_bench > benchmarks/GPU_ON_PAPER.md
    import json
    import os
    here = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results.json")
    with open(here) as f:
        print(_report(json.load(f)["rows"]))
