"""Benchmarks of a training step: loops vs vectorized vs fused, against the GEMM floor and PyTorch.

Every candidate is a zero-argument callable doing one full training step (forward, cost, backward,
update) of the same network on the same data. They are timed interleaved, round by round, so a
slow phase of the machine hits all of them alike; ratios are medians of per-round ratios.
Libraries keep their worker threads spinning after a call (OpenBLAS ~0.1 s, PyTorch's OpenMP
pool), which slows whatever runs next on the same cores, so the runner lets them settle before
switching from one library family to another.
"""
import json
import os
import platform
import sys
import time
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np

Config = namedtuple("Config", "name layer_dims m hidden output")

CONFIGS = [
    Config("tiny", [2, 4, 1], 400, "relu", "sigmoid"),
    Config("cat", [12288, 20, 7, 5, 1], 209, "relu", "sigmoid"),
    Config("mnist-256", [784, 256, 128, 10], 256, "relu", "softmax"),
    Config("mnist-2048", [784, 256, 128, 10], 2048, "relu", "softmax"),
    Config("wide", [1024, 1024, 1024, 1024, 10], 512, "relu", "softmax"),
]
SETTLE_S = 0.15             # OpenBLAS spins ~0.1 s after a call; PyTorch's pool similarly


@dataclass
class Candidate:
    """One implementation of a step: ``run()`` does a step; ``scale`` extrapolates a step done on
    a subset of the examples to all of them (1.0: measured on all)."""
    name: str
    kind: str                 # floor | vectorized | fused | loop | reference
    family: str               # threads that may spin: numpy (OpenBLAS) | torch
    run: object
    backend: str = ""
    device: str = "cpu"
    scale: float = 1.0
    times: list = field(default_factory=list)
    net: object = None        # the fastdnn Network it steps, if any


def problem(config, dtype, seed=0):
    """X (n0, m), Y in the output's label layout (0/1 (1, m) or one-hot (C, m)), host float arrays."""
    rng = np.random.RandomState(seed)
    X = rng.rand(config.layer_dims[0], config.m).astype(dtype)
    C = config.layer_dims[-1]
    if config.output == "softmax":
        Y = np.eye(C, dtype=dtype)[rng.randint(0, C, config.m)].T.copy()
    else:
        Y = rng.randint(0, 2, (C, config.m)).astype(dtype)
    return X, Y


# --- candidates -------------------------------------------------------------------------------
def gemm_floor(config, dtype, xp=np):
    """Only the 3 GEMMs per layer (W·A, dZ·A_prevᵀ, Wᵀ·dZ; none for dA0) into preallocated arrays
    (xp: numpy, or cupy for the GPU floor)."""
    rng = np.random.RandomState(1)
    dims, m = config.layer_dims, config.m
    put = lambda a: xp.asarray(a.astype(dtype))
    W = [put(rng.randn(n, k) * np.sqrt(1 / k)) for k, n in zip(dims[:-1], dims[1:])]
    A = [put(rng.rand(n, m)) for n in dims]     # random, never denormal garbage
    dZ = [put(rng.rand(n, m)) for n in dims]
    dW = [xp.empty_like(w) for w in W]

    def run():
        for l, w in enumerate(W):
            xp.matmul(w, A[l], out=A[l + 1])
        for l in range(len(W) - 1, -1, -1):
            xp.matmul(dZ[l + 1], A[l].T, out=dW[l])
            if l > 0:
                xp.matmul(W[l].T, dZ[l + 1], out=dZ[l])
    return Candidate("gemm floor", "floor", "numpy", run, xp.__name__)


def flops_per_step(config):
    """2 x the multiply-adds of the 3L - 1 GEMMs of a step."""
    dims, m = config.layer_dims, config.m
    macs = sum(n * k * m for k, n in zip(dims[:-1], dims[1:]))
    return 2 * (2 * macs + sum(n * k * m for k, n in zip(dims[1:-1], dims[2:])))


def network_step(config, dtype, backend, update=True):
    """A fastdnn Network's training step on data already on its device; without ``update``, all of
    it but the parameter update (forward, cost, backward): the difference is what the update costs."""
    from . import Network
    X, Y = problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device=backend, dtype=dtype, seed=0)
    Xd, Yd = net.prepare(X, Y)
    engine, sync = net.engine, net.backend.synchronize

    if update:
        def run():
            engine.train_step(Xd, Yd, 1e-3, check=True)
            sync()
    else:
        fused = net.backend.fused_step(net.activations, net.loss, net.layer_dims, Xd.shape[1], net.dtype, None)

        def run():
            engine.backprop(Xd, Yd, fused)
            sync()
    kind = "fused" if backend in ("numba", "cupy-numba") else "vectorized"
    name = f"fastdnn {net.backend.name}" + ("" if update else " without the update")
    return Candidate(name, kind, "numpy", run, net.backend.name, net.device, net=net)


def per_example_loop(config, dtype, budget_s):
    """The course's ``for i in range(m)`` with vectors, timed on as many examples as fit the budget."""
    from . import Network, loops
    X, Y = problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device="numpy", dtype=dtype, seed=0)
    parameters, acts, loss = net.parameters, net.activations, net.loss
    k = _examples_within(lambda k: loops.per_example_step(parameters, X[:, :k], Y[:, :k], acts, loss, 1e-3),
                         config.m, budget_s)
    run = lambda: loops.per_example_step(parameters, X[:, :k], Y[:, :k], acts, loss, 1e-3)
    return Candidate("loop over examples (Python)", "loop", "numpy", run, "python", scale=config.m / k)


def scalar_loop(config, dtype, budget_s, compiled):
    """Loops over examples, neurons and weights on scalars: plain Python or compiled by Numba."""
    from . import Network, loops
    X, Y = problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device="numpy", dtype=dtype, seed=0)
    step = loops.scalar_step(net.activations[0], net.activations[-1], net.loss, compiled)
    dims, pofs = loops.flat_layout(config.layer_dims)
    theta = np.concatenate([v.ravel() for v in net.parameters.values()])
    grad, units = np.empty_like(theta), sum(config.layer_dims[1:])
    z, a, dz = (np.empty(units, dtype) for _ in range(3))
    call = lambda k: step(X[:, :k], Y[:, :k], theta, grad, dims, pofs, z, a, dz, 1e-3)
    k = _examples_within(call, config.m, budget_s)
    name = "scalar loops (Numba-compiled)" if compiled else "scalar loops (Python)"
    return Candidate(name, "loop", "numpy", lambda: call(k), "numba" if compiled else "python",
                     scale=config.m / k)


def _examples_within(call, m, budget_s):
    """How many examples (1..m) one call can take within budget_s, from a timed 1-example call."""
    call(1)                                  # JIT and first-touch
    start = time.perf_counter()
    call(1)
    one = max(time.perf_counter() - start, 1e-7)
    return int(max(1, min(m, budget_s / one)))


def torch_autograd(config, dtype):
    """PyTorch: nn.Linear layers + autograd + torch.optim.SGD, batch-first as PyTorch expects."""
    import torch
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    layers = []
    for k, n in zip(config.layer_dims[:-1], config.layer_dims[1:]):
        layers += [torch.nn.Linear(k, n, dtype=tdtype), _torch_activation(config.hidden)]
    model = torch.nn.Sequential(*layers[:-1])
    X, Y = (torch.from_numpy(a.T.copy()) for a in problem(config, dtype))
    if config.output == "softmax":
        Y, criterion = Y.argmax(dim=1), torch.nn.CrossEntropyLoss()
    else:
        criterion = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run():
        optimizer.zero_grad(set_to_none=False)
        criterion(model(X), Y).backward()
        optimizer.step()
    return Candidate("PyTorch autograd + SGD", "reference", "torch", run, f"torch {torch.__version__}")


def torch_by_hand(config, dtype):
    """PyTorch tensors, the course's math written out (no autograd), course layout (n, m)."""
    import torch
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    dims, m = config.layer_dims, config.m
    W = [torch.randn(n, k, dtype=tdtype) * (2 / k) ** 0.5 for k, n in zip(dims[:-1], dims[1:])]
    b = [torch.zeros(n, 1, dtype=tdtype) for n in dims[1:]]
    X, Y = (torch.from_numpy(a) for a in problem(config, dtype))
    g = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[config.hidden]

    def run():
        with torch.no_grad():
            A, Zs, As = X, [], [X]
            for l in range(len(W)):
                Z = torch.addmm(b[l], W[l], A)
                A = g(Z) if l < len(W) - 1 else (torch.softmax(Z, 0) if config.output == "softmax"
                                                  else torch.sigmoid(Z))
                Zs.append(Z)
                As.append(A)
            dZ = (A - Y) / m
            for l in range(len(W) - 1, -1, -1):
                dW, db = dZ @ As[l].T, dZ.sum(1, keepdim=True)
                if l > 0:
                    dZ = (W[l].T @ dZ) * (Zs[l - 1] > 0)
                W[l] -= 1e-3 * dW
                b[l] -= 1e-3 * db
    return Candidate("PyTorch by hand (no autograd)", "reference", "torch", run, f"torch {torch.__version__}")


def _torch_activation(name):
    import torch
    return {"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid()}[name]


def candidates(config, dtype, loop_budget_s=0.05, backends=None):
    """Every implementation that can run here, for one configuration and dtype."""
    from .backends import available_backends
    found = [gemm_floor(config, dtype)]
    names = backends or [b.name for b in available_backends() if b.available]
    found += [network_step(config, dtype, name) for name in names]
    if "numba" in names:
        found.append(network_step(config, dtype, "numba", update=False))
    found.append(per_example_loop(config, dtype, loop_budget_s))
    if sum(a * b for a, b in zip(config.layer_dims, config.layer_dims[1:])) <= 1000:
        found.append(scalar_loop(config, dtype, loop_budget_s, compiled=False))   # small sizes only
    if "numba" in names:
        found.append(scalar_loop(config, dtype, loop_budget_s, compiled=True))
    try:
        found += [torch_autograd(config, dtype), torch_by_hand(config, dtype)]
    except ImportError:
        pass
    return found


# --- the runner -------------------------------------------------------------------------------
def measure(found, rounds, min_block_s=0.02, max_calls=1000):
    """Time every candidate interleaved for ``rounds`` rounds; fills Candidate.times (s per step)."""
    for c in found:                                  # warm up: JIT, BLAS threads, caches
        for _ in range(2):
            c.run()
    calls = {}
    for c in found:
        start = time.perf_counter()
        c.run()
        one = max(time.perf_counter() - start, 1e-7)
        calls[c.name] = int(max(1, min(max_calls, min_block_s / one)))
    order = sorted(found, key=lambda c: c.family != "numpy")
    for _ in range(rounds):
        family = None
        for c in order:
            if family is not None and c.family != family:
                time.sleep(SETTLE_S)
            family = c.family
            n = calls[c.name]
            start = time.perf_counter()
            for _ in range(n):
                c.run()
            c.times.append((time.perf_counter() - start) / n * c.scale)
        time.sleep(SETTLE_S if family != "numpy" else 0)
    return found


def summarize(config, dtype, found):
    """Rows: median time per step, spread, ratio to the floor and to PyTorch, speed-up over loops."""
    floor = next(c for c in found if c.kind == "floor")
    torch_ref = next((c for c in found if c.name.startswith("PyTorch autograd")), None)
    loop = next((c for c in found if c.name.startswith("loop over examples")), None)
    ratio = lambda a, b: float(np.median(np.array(a.times) / np.array(b.times)))
    rows = []
    for c in found:
        t = np.array(c.times)
        rows.append(dict(
            config=config.name, layer_dims=config.layer_dims, m=config.m, dtype=dtype,
            implementation=c.name, kind=c.kind, backend=c.backend, device=c.device,
            median_s=float(np.median(t)), p25_s=float(np.percentile(t, 25)),
            p75_s=float(np.percentile(t, 75)), rounds=len(t), extrapolated=c.scale != 1.0,
            vs_floor=ratio(c, floor), vs_torch=ratio(c, torch_ref) if torch_ref else None,
            speedup_over_loop=ratio(loop, c) if loop else None))
    return rows


def machine_info():
    """CPU, cores, BLAS and its threads, library versions, relevant environment variables."""
    info = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), python=sys.version.split()[0],
                platform=platform.platform(), cpu=_cpu_name(), cores=os.cpu_count(),
                numpy=np.__version__)
    for module in ("numba", "torch", "cupy"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads",
                                                        "version", "architecture")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMBA_"))}
    return info


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(configs=CONFIGS, dtypes=("float32", "float64"), rounds=7, loop_budget_s=0.05, progress=True):
    """Measure every configuration x dtype; returns (rows, machine info)."""
    jobs = [(c, d) for c in configs for d in dtypes]
    bar = _progress(len(jobs), progress)
    rows = []
    for config, dtype in jobs:
        bar.set_description(f"{config.name} {dtype}")
        found = measure(candidates(config, dtype, loop_budget_s), rounds)
        rows += summarize(config, dtype, found)
        bar.update(1)
    bar.close()
    return rows, machine_info()


def _progress(total, enabled):
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, disable=not enabled, unit="config", file=sys.stderr)
    except ImportError:
        class Plain:
            def __init__(self):
                self.done = 0

            def set_description(self, text):
                if enabled:
                    print(f"[{self.done + 1}/{total}] {text} ...", file=sys.stderr, flush=True)

            def update(self, n):
                self.done += n

            def close(self):
                pass
        return Plain()


# --- reports ----------------------------------------------------------------------------------
def _fmt_time(s):
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_ratio(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}x" if x < 100 else f"{x:,.0f}x"


def markdown_table(header, rows):
    """A Markdown table: a header row of column names, then one row of cells per entry."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def table(rows):
    """Markdown tables, one per configuration and dtype."""
    out = []
    for key in dict.fromkeys((r["config"], r["dtype"]) for r in rows):
        group = [r for r in rows if (r["config"], r["dtype"]) == key]
        r0 = group[0]
        out.append(f"\n**{r0['config']}**: {r0['layer_dims']}, m = {r0['m']}, {r0['dtype']}\n")
        out.append("| implementation | backend / device | time per step (IQR) | vs loop | vs GEMM floor | vs PyTorch |")
        out.append("|---|---|---|---|---|---|")
        for r in sorted(group, key=lambda r: r["median_s"]):
            extra = " (extrapolated)" if r["extrapolated"] else ""
            out.append(f"| {r['implementation']} | {r['backend']} / {r['device']} | "
                       f"{_fmt_time(r['median_s'])}{extra} ({_fmt_time(r['p25_s'])}–{_fmt_time(r['p75_s'])}) | "
                       f"{_fmt_ratio(r['speedup_over_loop'], 1)} | {_fmt_ratio(r['vs_floor'])} | "
                       f"{_fmt_ratio(r['vs_torch'])} |")
    return "\n".join(out)


def write_reports(rows, info, directory, command):
    """results.json, RESULTS.md and results.png (if matplotlib is installed) in directory."""
    os.makedirs(directory, exist_ok=True)
    paths = {"json": os.path.join(directory, "results.json"), "md": os.path.join(directory, "RESULTS.md"),
             "png": os.path.join(directory, "results.png")}
    _atomic_write(paths["json"], json.dumps(dict(command=command, machine=info, rows=rows), indent=1))
    threads = "; ".join(dict.fromkeys(
        f"{p['internal_api']}" + (f" ({p['architecture']} kernels)" if p.get("architecture") else "")
        + f" {p['num_threads']} threads" for p in info["threadpools"])) \
        if isinstance(info["threadpools"], list) else info["threadpools"]
    header = (f"# fastdnn benchmark results\n\nMeasured {info['date']} on {info['cpu']} "
              f"({info['cores']} cores; {threads}), Python {info['python']}, NumPy {info['numpy']}, "
              f"Numba {info['numba']}, PyTorch {info['torch']}.\n"
              f"Environment: {info['env'] or 'no BLAS/OpenMP/Numba variables set'}.\n\n"
              f"Reproduce with:\n\n```sh\n{command}\n```\n\n"
              "Each time is the median over interleaved rounds (IQR in brackets); ratios are medians "
              "of per-round ratios. 'vs loop' is the speed-up over the Python loop over examples; "
              "'vs GEMM floor' is the step time over the time of its GEMMs alone; "
              "'vs PyTorch' is over PyTorch autograd + SGD. Loop times marked extrapolated were "
              "measured on a subset of the examples and scaled to m.\n")
    _atomic_write(paths["md"], header + table(rows) + "\n\n![chart](results.png)\n")
    if not chart(rows, paths["png"]):
        paths.pop("png")
    return paths


def chart(rows, path):
    """Two log-scale panels: speed-up over the Python loop, and ratio to the GEMM floor."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = list(dict.fromkeys((r["config"], r["dtype"]) for r in rows))
    impls = [i for i in dict.fromkeys(r["implementation"] for r in rows)]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(keys)), 9))
    width = 0.8 / max(1, len(impls))
    for panel, (field_, title) in zip(axes, [("speedup_over_loop", "speed-up over the Python loop over examples"),
                                             ("vs_floor", "time per step / GEMM floor")]):
        for i, impl in enumerate(impls):
            values = [next((r[field_] for r in rows if (r["config"], r["dtype"]) == k
                            and r["implementation"] == impl), None) for k in keys]
            xs = [j + i * width for j, v in enumerate(values) if v]
            panel.bar(xs, [v for v in values if v], width, label=impl)
        panel.set_yscale("log")
        panel.set_title(title)
        panel.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        panel.set_xticklabels([f"{c}\n{d}" for c, d in keys], fontsize=8)
        panel.grid(axis="y", which="both", alpha=0.3)
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _atomic_write(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
