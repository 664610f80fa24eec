"""Hyper-parameter sweeps: one network trained per configuration of the course's hyper-parameters
(learning rate, depth, width, activation, optimizer, L2, keep_prob, batch size), spread over the
ranks of an MPI job or over local processes, ranked best first, written as CSV, JSON and a plot.

A configuration that fails (bad value, divergence, ...) becomes a row with status "failed" and its
error; the sweep goes on.
"""
import concurrent.futures
import csv
import itertools
import json
import math
import multiprocessing
import os
import time

import numpy as np

AXES = ("learning_rate", "depth", "width", "activation", "optimizer", "l2", "keep_prob", "batch_size")
DEFAULTS = dict(learning_rate=0.01, depth=2, width=8, activation="relu", optimizer="adam", l2=0.0,
                keep_prob=1.0, batch_size=64, epochs=100, init="he", seed=1, dtype="float32",
                device="auto")
METRICS = ("val_accuracy", "train_accuracy", "val_cost", "cost", "seconds")


def grid(**axes):
    """Every combination of the given values: grid(learning_rate=[0.1, 0.01], depth=[1, 2]) -> 4
    configurations (dicts); a single value counts as a list of one."""
    names = list(axes)
    values = [v if isinstance(v, (list, tuple)) else [v] for v in axes.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def random_search(n, seed=0, **axes):
    """n configurations drawn at random: a list is a choice; a (low, high) pair of floats is drawn
    log-uniformly when both are > 0 (the course's advice for the learning rate), else uniformly;
    a pair of ints is an integer in [low, high]; anything else is fixed."""
    rng = np.random.default_rng(seed)

    def draw(value):
        if isinstance(value, list):
            return value[rng.integers(len(value))]
        if isinstance(value, tuple) and len(value) == 2:
            low, high = value
            if all(isinstance(v, (int, np.integer)) for v in value):
                return int(rng.integers(low, high + 1))
            if low > 0 and high > 0:
                return float(math.exp(rng.uniform(math.log(low), math.log(high))))
            return float(rng.uniform(low, high))
        return value
    return [{k: draw(v) for k, v in axes.items()} for _ in range(n)]


def train_one(config, data):
    """Train the network of one configuration on data = (X, Y[, X_val, Y_val]); a result row: the
    configuration (defaults filled in), status "ok" or "failed", error, final cost, accuracies,
    validation cost and seconds. Never raises for a failing configuration."""
    c = {**DEFAULTS, **config}
    row = _row(c, "ok", "", f"pid {os.getpid()}")
    X, Y, *val = data
    start = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore"):   # divergence is reported in the row
            row.update(_train(c, X, Y, val))
    except Exception as exc:          # a failing configuration is a result, not the end of the sweep
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - start
    return row


def _row(config, status, error, worker):
    """A result row: the configuration, its status and error, the metrics still empty."""
    return {**config, "status": status, "error": error, **{k: None for k in METRICS}, "worker": worker}


def _train(c, X, Y, val):
    """The metrics of configuration c trained on X, Y (validated on val = [X_val, Y_val] or [])."""
    import fastdnn
    classes = Y.shape[0] if Y.shape[0] > 1 else int(np.max(Y)) + 1
    output, n_out = ("sigmoid", 1) if classes == 2 and Y.shape[0] == 1 else ("softmax", classes)
    dims = [X.shape[0]] + [int(c["width"])] * int(c["depth"]) + [n_out]
    net = fastdnn.Network(dims, c["activation"], output, init=c["init"], device=c["device"],
                          dtype=c["dtype"], seed=c["seed"], l2=c["l2"], keep_prob=c["keep_prob"])
    history = net.fit(X, Y, epochs=c["epochs"], batch_size=c["batch_size"], optimizer=c["optimizer"],
                      learning_rate=c["learning_rate"], seed=c["seed"], verbose=0,
                      validation_data=tuple(val) if val else None, report_every=c["epochs"])
    return dict(cost=history[-1].cost, train_accuracy=net.accuracy(X, Y),
                val_cost=history[-1].val_cost, val_accuracy=history[-1].val_accuracy)


def run(configs, data, *, comm=None, processes=1, progress=False):
    """Train every configuration; returns the rows best first (see ``rank``).

    With ``comm`` (an MPI communicator of more than one rank), rank r trains configurations r,
    r + size, ... and every rank returns all the rows. Otherwise ``processes`` local processes
    share them (1: in this process), each with BLAS limited to its share of the cores when
    threadpoolctl is installed."""
    configs = list(configs)
    if comm is not None and comm.Get_size() > 1:
        r, size = comm.Get_rank(), comm.Get_size()
        mine = [{**train_one(c, data), "worker": f"rank {r}"} for c in configs[r::size]]
        rows = [row for part in comm.allgather(mine) for row in part]
    elif processes > 1 and len(configs) > 1:
        rows = _in_processes(configs, data, processes, progress)
    else:
        rows = [train_one(c, data) for c in _progress(configs, progress)]
    return rank(rows)


def _in_processes(configs, data, processes, progress):
    threads = max(1, (os.cpu_count() or 1) // processes)
    spawn = multiprocessing.get_context("spawn")   # no fork of a process with BLAS/Numba threads
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=spawn, initializer=_worker_init,
                                                initargs=(data, threads)) as pool:
        futures = [pool.submit(_train_in_worker, c) for c in configs]
        rows = []
        for config, future in zip(configs, _progress(futures, progress)):
            try:
                rows.append(future.result())
            except Exception as exc:    # the worker process itself died
                rows.append(_row({**DEFAULTS, **config}, "failed", f"{type(exc).__name__}: {exc}", ""))
    return rows


_DATA = None


def _worker_init(data, threads):
    global _DATA
    _DATA = data
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass


def _train_in_worker(config):
    return train_one(config, _DATA)


def _progress(items, on):
    if not on:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, unit="config")


def rank(rows):
    """Best first: finished rows by validation accuracy (else training accuracy) descending, then
    by validation cost (else training cost); failed rows last."""
    def key(row):
        if row["status"] != "ok":
            return (1, 0.0, 0.0)
        accuracy = row["val_accuracy"] if row["val_accuracy"] is not None else row["train_accuracy"]
        cost = row["val_cost"] if row["val_cost"] is not None else row["cost"]
        return (0, -(accuracy if accuracy is not None else -math.inf), cost)
    return sorted(rows, key=key)


def label(row):
    """A short description of a row's configuration."""
    def g(v):
        return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)
    return (f"{row['optimizer']} lr={g(row['learning_rate'])} {row['depth']}x{row['width']} "
            f"{row['activation']} l2={g(row['l2'])} keep={g(row['keep_prob'])} batch={row['batch_size']}")


def write(rows, out):
    """sweep.csv, sweep.json and (with matplotlib) sweep.png in directory ``out``; returns their paths."""
    os.makedirs(out, exist_ok=True)
    columns = (list(AXES) + [k for k in DEFAULTS if k not in AXES] + ["status"] + list(METRICS)
               + ["worker", "error"])
    paths = {"csv": os.path.join(out, "sweep.csv"), "json": os.path.join(out, "sweep.json")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, ["place"] + columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({"place": i, **row} for i, row in enumerate(rows, 1))
    with open(paths["json"], "w") as f:
        json.dump([{k: row.get(k) for k in columns} for row in rows], f, indent=1)
    try:
        paths["png"] = plot(rows, os.path.join(out, "sweep.png"))
    except ImportError:
        pass
    return paths


def plot(rows, path):
    """Left: each configuration's accuracy, best on top, failed ones marked; right: accuracy against
    the learning rate (log scale), one colour per optimizer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    val = any(r["val_accuracy"] is not None for r in rows)
    metric = "val_accuracy" if val else "train_accuracy"
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.3 * len(rows) + 2),
                                      gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(rows))[::-1]
    ok = [r["status"] == "ok" and r[metric] is not None for r in rows]
    values = [100 * r[metric] if good else 0.0 for r, good in zip(rows, ok)]
    left.barh(y, values, color=["tab:blue" if good else "tab:red" for good in ok])
    for yi, r, good in zip(y, rows, ok):
        if not good:
            left.text(1, yi, "failed: " + r["error"][:60], va="center", fontsize=7, color="tab:red")
    left.set_yticks(y, [label(r) for r in rows], fontsize=7)
    left.set_xlabel(("validation" if val else "training") + " accuracy (%)")
    left.set_xlim(0, 100)
    left.set_title("configurations, best first")
    for name in sorted({r["optimizer"] for r, good in zip(rows, ok) if good}):
        pts = [(r["learning_rate"], 100 * r[metric]) for r, good in zip(rows, ok) if good and r["optimizer"] == name]
        right.scatter(*zip(*pts), label=name)
    right.set_xscale("log")
    right.set_xlabel("learning rate")
    right.set_ylabel(left.get_xlabel())
    right.legend(title="optimizer")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def table(rows, top=None):
    """The rows as an aligned text table (the first ``top`` ones)."""
    lines = [f"{'#':>3} {'status':7} {'val acc':>8} {'train acc':>9} {'cost':>9} {'s':>6}  configuration"]
    for i, r in enumerate(rows[:top] if top else rows, 1):
        def pct(v):
            return "" if v is None else f"{100 * v:.1f}%"
        cost = "" if r["cost"] is None else f"{r['cost']:.4f}"
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.2f}"
        lines.append(f"{i:3d} {r['status']:7} {pct(r['val_accuracy']):>8} {pct(r['train_accuracy']):>9} "
                     f"{cost:>9} {seconds:>6}  {label(r)}" + (f"  [{r['error']}]" if r["error"] else ""))
    return "\n".join(lines)
