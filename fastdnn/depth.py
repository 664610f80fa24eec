"""Why skip connections and batch normalization exist, measured: one deep, narrow ReLU network
[2, w, ..., w, 3] (He initialization) trained on the 3-class spirals by plain gradient descent, as is, with
a residual block every two hidden layers (``skip=2``), and with batch normalization (``batch_norm=True``).
``fastdnn deep`` prints the table; the README shows it with the command that made it."""
import math
import time

import numpy as np

from . import datasets

VARIANTS = {"plain": {}, "residual (skip=2)": {"skip": 2}, "batch norm": {"batch_norm": True}}
CHANCE_COST = math.log(3)      # J of a network that predicts 1/3 for every class: it learned nothing


def compare(depth=30, width=8, iterations=1500, learning_rate=0.05, seeds=(0, 1, 2), m=600, device="cpu",
            variants=tuple(VARIANTS)):
    """One row per variant x seed: dict(variant, seed, first and final cost, training accuracy, seconds).
    Every variant starts from the same seed's initialization of the layers they share."""
    from . import Network
    X, Y = datasets.spirals(m=m, classes=3, seed=0)
    rows = []
    for name in variants:
        for seed in seeds:
            net = Network([2] + [width] * depth + [3], "relu", "softmax", device=device, dtype="float64",
                          seed=seed, **VARIANTS[name])
            start = time.perf_counter()
            history = net.fit(X, Y, iterations=iterations, learning_rate=learning_rate, report_every=iterations,
                              verbose=0)
            seconds = time.perf_counter() - start
            accuracy = float(np.mean(net.predict(X).reshape(-1) == Y.reshape(-1)))
            rows.append(dict(variant=name, seed=seed, first_cost=history[0].cost, final_cost=history[-1].cost,
                             accuracy=accuracy, seconds=seconds))
    return rows


def table(rows, depth, width, iterations, learning_rate):
    """The rows as a Markdown table, one line per variant (median over seeds, and the range)."""
    lines = [f"[2, {width} x {depth} hidden, 3] ReLU network, spirals (m = 600, 3 classes), {iterations} "
             f"iterations of gradient descent, learning rate {learning_rate}; chance-level cost ln 3 = "
             f"{CHANCE_COST:.3f}", "",
             "| variant | final cost (median; range over seeds) | training accuracy (median; range) | seconds |",
             "|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        cost, acc = [r["final_cost"] for r in mine], [r["accuracy"] for r in mine]
        lines.append(f"| {name} | {np.median(cost):.3f} ({min(cost):.3f}–{max(cost):.3f}) | "
                     f"{np.median(acc):.3f} ({min(acc):.3f}–{max(acc):.3f}) | "
                     f"{np.median([r['seconds'] for r in mine]):.1f} |")
    return "\n".join(lines)
