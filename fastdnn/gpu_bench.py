"""The GPU benchmark: one training step per configuration on `cupy` and `cupy-fused`, against the
GPU GEMM floor, timed with CUDA events (warm-up outside the timing), with the time in cuBLAS vs the
rest and the achieved TFLOP/s. ``fastdnn bench --gpu``. Without a usable CUDA device it stops with
the reason; it never times the CPU instead."""
import numpy as np

from . import bench
from .backends import _cuda_device


class NoCudaDevice(RuntimeError):
    pass


def _event_time(run, steps, cp):
    """Milliseconds per call of run(), from CUDA events around ``steps`` calls after 5 warm-up calls."""
    for _ in range(5):
        run()
    cp.cuda.get_current_stream().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(steps):
        run()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / steps


def run(configs=bench.CONFIGS, dtypes=("float32", "float64"), steps=50, device=0):
    """Rows per configuration x dtype x backend; raises NoCudaDevice (with the reason) without a GPU."""
    reason = _cuda_device.probe(device)
    if reason:
        raise NoCudaDevice(f"no CUDA device: {reason}")
    from . import Network
    _cuda_device.use_device(device)
    cp = _cuda_device.cupy()
    rows = []
    for config in configs:
        for dtype in dtypes:
            floor_ms = _event_time(bench.gemm_floor(config, dtype, xp=cp).run, steps, cp)
            for name in ("cupy", "cupy-fused"):
                net = Network(config.layer_dims, config.hidden, config.output, device=f"{name}:{device}",
                              dtype=dtype, seed=0)
                Xd, Yd = net.prepare(*bench.problem(config, dtype))          # moved to the GPU once
                with net.backend.device_scope():
                    net.engine.begin_call()         # the deferred divergence check's halt flag
                    ms = _event_time(lambda: net.engine.train_step(Xd, Yd, 1e-3, check=False), steps, cp)
                rows.append(dict(config=config.name, dtype=dtype, backend=name, ms_per_step=ms,
                                 cublas_ms=floor_ms, rest_ms=ms - floor_ms, vs_floor=ms / floor_ms,
                                 tflops=bench.flops_per_step(config) / (ms * 1e-3) / 1e12,
                                 device=cp.cuda.runtime.getDeviceProperties(device)["name"].decode()))
    return rows


def table(rows):
    return bench.markdown_table(
        ["config", "dtype", "backend", "ms / step", "cuBLAS (GEMM floor) ms", "rest ms", "vs floor", "TFLOP/s"],
        [(r["config"], r["dtype"], r["backend"], f"{r['ms_per_step']:.3f}", f"{r['cublas_ms']:.3f}",
          f"{r['rest_ms']:.3f}", f"{r['vs_floor']:.2f}x", f"{r['tflops']:.2f}") for r in rows])


# --- on paper: what an H100 would do with these steps ---------------------------------------------
# NVIDIA H100 SXM5 80GB datasheet: fp32 (CUDA cores) 67 TFLOP/s, tf32 tensor cores 495 TFLOP/s
# dense, fp64 34 TFLOP/s (67 on tensor cores), HBM3 3.35 TB/s. A device-to-device copy on one H100
# of this workplace moved 3.0 TB/s. Launch cost per kernel or cuBLAS call from Python: 5-20 µs
# (CUDA's launch latency is a few µs; CuPy's Python dispatch adds to it) — an
# assumption to be measured with `fastdnn bench --gpu`.
H100 = dict(fp32=67e12, tf32=495e12, fp64=34e12, bandwidth=3.35e12)
LAUNCH_S = (5e-6, 20e-6)


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


def launches_per_step(config):
    """cupy-fused, full batch: L forward kernels, 2 for the output pass (partials, fixed-order sum),
    L-1 backward kernels, the update and the divergence mark (2L + 3; plus one final row sum per hidden
    layer whose db is split over several blocks of columns), and 3L-1 cuBLAS GEMMs."""
    L = len(config.layer_dims) - 1
    return (2 * L + 3) + (3 * L - 1)


def paper(cpu_rows):
    """Markdown: per configuration and dtype, FLOPs and bytes per step, the H100 floor, the launch
    cost, and the batch size from which the GPU step beats the measured CPU (numba) step."""
    rows = []
    for config in bench.CONFIGS:
        for dtype in ("float32", "float64"):
            cpu = next((r for r in cpu_rows if r["config"] == config.name and r["dtype"] == dtype
                        and r["implementation"] == "fastdnn numba"), None)
            flops, nbytes = bench.flops_per_step(config), bytes_per_step(config, np.dtype(dtype).itemsize)
            rate = H100["fp32"] if dtype == "float32" else H100["fp64"]   # CuPy: no tf32 unless asked
            floor = max(flops / rate, nbytes / H100["bandwidth"])
            launch = [launches_per_step(config) * t for t in LAUNCH_S]
            crossover = "—"
            if cpu:
                per_example_cpu = cpu["median_s"] / config.m          # CPU time grows ~ linearly in m
                per_example_gpu = floor / config.m
                m_star = [t / (per_example_cpu - per_example_gpu) for t in launch]
                crossover = f"{m_star[0]:,.0f} – {m_star[1]:,.0f}"
            rows.append((f"{config.name} {config.layer_dims} m={config.m}", dtype, f"{flops / 1e9:.3f}",
                         f"{nbytes / 1e6:.2f}", f"{floor * 1e6:.1f}",
                         f"{launch[0] * 1e6:.0f}–{launch[1] * 1e6:.0f} µs",
                         bench._fmt_time(cpu["median_s"]) if cpu else "—", crossover))
    return bench.markdown_table(["config", "dtype", "GFLOP / step", "MB / step", "H100 floor (µs)",
                                 "launches x 5-20 µs", "measured CPU step", "GPU faster from m ≈"], rows)


if __name__ == "__main__":       # python -m fastdnn.gpu_bench > benchmarks/GPU_ON_PAPER.md
    import json
    import os
    here = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results.json")
    rows = json.load(open(here))["rows"]
    print("# A training step on an H100, on paper\n")
    print("Nothing here ran on a GPU. FLOPs and the fewest bytes a step moves are counted from the layer "
          "sizes; the floor is the larger of FLOPs over the H100 SXM's datasheet rate (fp32 67 TFLOP/s for "
          "float32, as CuPy does not use tf32 tensor cores unless asked; fp64 34 TFLOP/s) and bytes over "
          "its 3.35 TB/s HBM3. Each step makes "
          "2L + 3 RawKernel launches (`cupy-fused`) and 3L - 1 cuBLAS calls; at an assumed 5-20 µs per launch from "
          "Python they, not the arithmetic, dominate every configuration below. The CPU step is this "
          "machine's measured `numba` step (benchmarks/RESULTS.md); assuming both grow linearly in m, "
          "the last column is the batch size from which the GPU step is the faster one. "
          "Regenerate: `python -m fastdnn.gpu_bench > benchmarks/GPU_ON_PAPER.md`; measure: "
          "`fastdnn bench --gpu` on a machine with an NVIDIA GPU.\n")
    print(paper(rows))
