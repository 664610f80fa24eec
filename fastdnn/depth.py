"""Why skip connections and batch normalization exist, measured: deep, narrow ReLU networks
[2, w, ..., w, 3] (He initialization) of several depths trained on the 3-class spirals by plain gradient
descent, as they are, with a residual block every two hidden layers (``skip=2``), and with batch
normalization (``batch_norm=True``). ``fastdnn deep`` prints the table; the README shows it with the
command that made it."""
import math
import time

import numpy as np

from . import datasets

VARIANTS = {"plain": {}, "residual (skip=2)": {"skip": 2}, "batch norm": {"batch_norm": True}}
CHANCE_COST = math.log(3)      # J of a network that predicts 1/3 for every class: it learned nothing


def compare(depths=(10, 20, 30), width=8, iterations=2000, learning_rate=0.02, seeds=(0, 1, 2), m=600,
            device="cpu", variants=tuple(VARIANTS)):
    """One row per depth x variant x seed: dict(depth, variant, seed, final cost (nan when the run
    diverged; the network keeps its last finite parameters), training accuracy, seconds)."""
    from . import Network
    from .errors import TrainingDivergedError
    X, Y = datasets.spirals(m=m, classes=3, seed=0)
    rows = []
    for depth, name, seed in ((d, v, s) for d in depths for v in variants for s in seeds):
        net = Network([2] + [width] * depth + [3], "relu", "softmax", device=device, dtype="float64", seed=seed,
                      **VARIANTS[name])
        start = time.perf_counter()
        try:
            cost = net.fit(X, Y, iterations=iterations, learning_rate=learning_rate, report_every=iterations,
                           verbose=0)[-1].cost
        except TrainingDivergedError:
            cost = math.nan
        rows.append(dict(depth=depth, variant=name, seed=seed, final_cost=cost, seconds=time.perf_counter() - start,
                         accuracy=float(np.mean(net.predict(X).reshape(-1) == Y.reshape(-1)))))
    return rows


def table(rows, width, iterations, learning_rate):
    """The rows as a Markdown table, one line per depth x variant (median over seeds, and the range)."""
    seeds = len({r["seed"] for r in rows})
    lines = [f"[2, {width} x depth hidden, 3] ReLU networks, spirals (m = 600, 3 classes), {iterations} "
             f"iterations of gradient descent, learning rate {learning_rate}, {seeds} seeds; chance-level cost "
             f"ln 3 = {CHANCE_COST:.3f}", "",
             "| depth | variant | final cost (median; range over seeds) | training accuracy (median; range) "
             "| seconds |", "|---|---|---|---|---|"]
    for depth, name in dict.fromkeys((r["depth"], r["variant"]) for r in rows):
        mine = [r for r in rows if (r["depth"], r["variant"]) == (depth, name)]
        cost, acc = [r["final_cost"] for r in mine], [r["accuracy"] for r in mine]
        lines.append(f"| {depth} | {name} | {np.median(cost):.3f} ({np.min(cost):.3f}–{np.max(cost):.3f}) | "
                     f"{np.median(acc):.3f} ({min(acc):.3f}–{max(acc):.3f}) | "
                     f"{np.median([r['seconds'] for r in mine]):.1f} |")
    return "\n".join(lines)
