"""Data-parallel scaling on this machine: the time of one training step of the benchmark
configurations (fastdnn.bench.CONFIGS, the global batch split over the ranks) and of its all-reduce.

Run once per layout, then build the report:

    B="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
    $B OPENBLAS_NUM_THREADS=2 mpiexec -n 1 python benchmarks/mpi_scaling.py --out benchmarks/mpi
    $B OPENBLAS_NUM_THREADS=1 mpiexec -n 1 python benchmarks/mpi_scaling.py --out benchmarks/mpi
    $B OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/mpi_scaling.py --out benchmarks/mpi
    python benchmarks/mpi_scaling.py --report benchmarks/mpi

Each layout appends its rows to OUT/results.json; --report writes OUT/MPI_SCALING.md.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
from mpi4py import MPI

from fastdnn import Network, bench, distributed

REPEATS, TARGET_S = 7, 0.4
# Published link rates, per direction: NVLink 4 on the H100 SXM is 900 GB/s per GPU in total
# (NVIDIA H100 datasheet), 450 GB/s each way; NDR InfiniBand is 400 Gb/s = 50 GB/s per port
# (NVIDIA ConnectX-7 datasheet); a DGX H100 has 8 such ports for its compute fabric, one per GPU
# (DGX H100 datasheet). A ring all-reduce sends and receives 2 (n - 1) / n x S bytes per rank
# (nccl-tests doc/PERFORMANCE.md, "bus bandwidth").
NVLINK_BPS, NDR_BPS = 450e9, 50e9


def blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    except (ImportError, ValueError):
        return int(os.environ.get("OPENBLAS_NUM_THREADS", 0)) or None


def timed(comm, fn, repeats=REPEATS):
    """Seconds of fn() per repeat, the ranks starting together; the slowest rank's time counts."""
    out = []
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        out.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    return out


def measure(comm, config, dtype):
    X, Y = bench.problem(config, dtype)
    Xr, Yr = distributed.shard(X, Y, comm)
    net = Network(config.layer_dims, config.hidden, config.output, device="cpu", dtype=dtype, seed=0)

    def steps(n):
        return lambda: net.fit(Xr, Yr, iterations=n, learning_rate=1e-4, report_every=n, verbose=0, comm=comm)
    steps(3)()                                               # JIT, workspaces, BLAS threads
    per_step = min(timed(comm, steps(3), 2)) / 3
    n = comm.bcast(max(3, int(TARGET_S / per_step)), root=0)
    step_s = [t / n for t in timed(comm, steps(n))]
    buffer = net.engine.gradient_buffer.copy()
    reps = comm.bcast(max(10, min(2000, n * 4)), root=0)

    def reduces():
        for _ in range(reps):
            comm.Allreduce(MPI.IN_PLACE, buffer)
    reduce_s = [t / reps for t in timed(comm, reduces)]
    return dict(config=config.name, layer_dims=config.layer_dims, m=config.m, dtype=dtype,
                ranks=comm.Get_size(), threads=blas_threads(), steps=n,
                step_s=statistics.median(step_s), step_iqr_s=_iqr(step_s),
                allreduce_s=statistics.median(reduce_s), bytes=int(buffer.nbytes))


def _iqr(values):
    q = np.percentile(values, [25, 75])
    return float(q[1] - q[0])


def report(out):
    rows = json.load(open(os.path.join(out, "results.json")))
    layouts = sorted({(r["ranks"], r["threads"]) for r in rows})
    lines = ["# Data-parallel scaling on this machine (2 cores)", "",
             "One training step of each benchmark configuration, the global batch m split over the ranks "
             "(fastdnn.distributed.shard), `Network.fit(..., comm=COMM_WORLD)`; the median of "
             f"{REPEATS} timed runs of many steps (IQR in brackets), the slowest rank counting. "
             "`all-reduce` is the step's one MPI_Allreduce of the flat gradient + cost alone. "
             "Reproduce: see the docstring of benchmarks/mpi_scaling.py.", "",
             "| config | dtype | bytes all-reduced / step | "
             + " | ".join(f"{p} rank x {t} thread step" for p, t in layouts)
             + " | 2 ranks vs 1 rank x 2 threads | 2 ranks vs 1 rank x 1 thread | all-reduce (2 ranks) |",
             "|---" * (6 + len(layouts)) + "|"]
    for (name, dtype) in dict.fromkeys((r["config"], r["dtype"]) for r in rows):
        got = {(r["ranks"], r["threads"]): r for r in rows if r["config"] == name and r["dtype"] == dtype}
        first = next(iter(got.values()))
        cells = [f"{_t(got[k]['step_s'])} ({_t(got[k]['step_iqr_s'])})" if k in got else "" for k in layouts]
        two = got.get((2, 1))
        speedups = [f"{got[k]['step_s'] / two['step_s']:.2f}x" if two and k in got else "" for k in [(1, 2), (1, 1)]]
        reduce = _t(two["allreduce_s"]) if two else ""
        lines.append(f"| {name} {first['layer_dims']} m={first['m']} | {dtype} | {first['bytes']:,} | "
                     + " | ".join(cells + speedups) + f" | {reduce} |")
    lines += paper(rows)
    path = os.path.join(out, "MPI_SCALING.md")
    open(path, "w").write("\n".join(lines) + "\n")
    return path


def ring(n, nbytes, bps):
    """Seconds of a ring all-reduce of nbytes over n ranks on links of bps bytes/s each way."""
    return 2 * (n - 1) / n * nbytes / bps


def paper(rows):
    """The all-reduce of each configuration's buffer on an 8-GPU node and a 4-node cluster, from
    published link rates (bandwidth term only)."""
    lines = ["", "## On paper: the same all-reduce on bigger machines", "",
             "Bandwidth term of a ring all-reduce, 2 (n-1)/n x bytes / link rate per direction: NVLink 4 "
             "450 GB/s per H100 each way (900 GB/s total, NVIDIA H100 datasheet); NDR InfiniBand "
             "400 Gb/s = 50 GB/s per port (ConnectX-7 datasheet), 8 ports per DGX H100 (DGX H100 "
             "datasheet); the 2 (n-1)/n factor is the one nccl-tests uses for all-reduce bus bandwidth "
             "(doc/PERFORMANCE.md). Not included: the per-call latency, which dominates the small "
             "buffers (assume some 10-50 µs per all-reduce across nodes; measure it). Nothing here ran "
             "on such machines.", "",
             "| config | dtype | bytes | 8 x H100, NVLink | 4 nodes, 1 x NDR 400 Gb/s each | "
             "4 x DGX H100 (32 GPUs: NVLink inside, 8 x NDR per node) |", "|---" * 6 + "|"]
    for (name, dtype) in dict.fromkeys((r["config"], r["dtype"]) for r in rows):
        r = next(r for r in rows if r["config"] == name and r["dtype"] == dtype)
        S = r["bytes"]
        dgx = ring(8, S, NVLINK_BPS) + ring(4, S / 8, NDR_BPS)   # NVLink reduce-scatter/all-gather + 1/8 per NIC
        lines.append(f"| {name} | {dtype} | {S:,} | {_t(ring(8, S, NVLINK_BPS))} | {_t(ring(4, S, NDR_BPS))} "
                     f"| {_t(dgx)} |")
    return lines


def _t(seconds):
    if seconds < 1e-6:
        return f"{seconds * 1e9:.1f} ns"
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mpi-scaling")
    parser.add_argument("--report", metavar="DIR")
    parser.add_argument("--config", nargs="*")
    args = parser.parse_args()
    if args.report:
        print("wrote", report(args.report))
        return
    comm = MPI.COMM_WORLD
    rows = [measure(comm, c, dtype) for c in bench.CONFIGS if not args.config or c.name in args.config
            for dtype in ("float32", "float64")]
    if comm.Get_rank() == 0:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "results.json")
        old = json.load(open(path)) if os.path.exists(path) else []
        new = {(r["config"], r["dtype"], r["ranks"], r["threads"]) for r in rows}
        keep = [r for r in old if (r["config"], r["dtype"], r["ranks"], r["threads"]) not in new]
        json.dump(keep + rows, open(path, "w"), indent=1)
        for r in rows:
            print(f"{r['config']:11s} {r['dtype']}  {r['ranks']} rank(s) x {r['threads']} thread(s): "
                  f"step {_t(r['step_s'])}, all-reduce {_t(r['allreduce_s'])} of {r['bytes']:,} bytes")


if __name__ == "__main__":
    main()
