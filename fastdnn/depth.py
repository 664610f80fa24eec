"""Why skip connections and batch normalization exist, measured: deep, narrow ReLU networks
[2, w, ..., w, 3] (He initialization) of several depths trained on the 3-class spirals by full-batch
gradient descent (one learning rate for all three) as they are, with a residual block every two hidden
layers (``skip=2``), and with batch normalization (``batch_norm=True``). ``fastdnn deep`` prints the
table; the README shows it with the command that made it."""
import math
import time

import numpy as np

from . import datasets

VARIANTS = {"plain": {}, "residual (skip=2)": {"skip": 2}, "batch norm": {"batch_norm": True}}
CHANCE_COST = math.log(3)      # J of a network that predicts 1/3 for every class: it learned nothing
# The setting of the README's table (``fastdnn deep``'s defaults), shared by the three variants: chosen by
# measurement as one where, at depth 25, the plain network stays at chance (3 of seeds 0-4; 5 of 10 over
# seeds 0-9) while both remedies train to high accuracy.
DEPTHS, WIDTH, ITERATIONS, LEARNING_RATE, SEEDS = (10, 20, 25, 30), 16, 2000, 0.1, 5


def compare(depths=DEPTHS, width=WIDTH, iterations=ITERATIONS, learning_rate=LEARNING_RATE,
            seeds=range(SEEDS), m=600, device="cpu", variants=tuple(VARIANTS)):
    """One row per depth x variant x seed: dict(depth, variant, seed, final cost (nan when the run
    diverged; the network keeps its last finite parameters), training accuracy, seconds). Every fit
    waits for its compiled loop (no NumPy steps while it compiles in the background: where those hand
    over depends on timing, and these deep networks turn that rounding difference into other results),
    so the rows are the same run to run; a first seed's seconds include the compile (the table shows
    medians)."""
    from . import engine
    background, engine.BACKGROUND_COMPILE = engine.BACKGROUND_COMPILE, False
    try:
        return _compare(depths, width, iterations, learning_rate, seeds, m, device, variants)
    finally:
        engine.BACKGROUND_COMPILE = background


def _compare(depths, width, iterations, learning_rate, seeds, m, device, variants):
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


def at_chance(row):
    """Whether a run learned nothing: its final cost within 10% of ln 3, above it, or diverged (nan)."""
    return not row["final_cost"] < 0.9 * CHANCE_COST


def table(rows, width, iterations, learning_rate):
    """The rows as a Markdown table, one line per depth x variant (median over seeds, the range, and how
    many runs learned nothing); a diverged run counts as an infinite cost, printed "diverged"."""
    seeds = sorted({r["seed"] for r in rows})
    seeds = f"{len(seeds)} seed{'s' * (len(seeds) > 1)} ({', '.join(map(str, seeds))})"
    lines = [f"[2, {width} x depth hidden, 3] ReLU networks (He initialization), spirals (m = 600, 3 classes), "
             f"{iterations} full-batch gradient-descent steps at learning rate {learning_rate} for all three "
             f"variants, {seeds}; chance-level cost ln 3 = {CHANCE_COST:.3f} (a run is at chance when its "
             f"final cost is within 10% of it or above it, or when it diverged)", "",
             "| depth | variant | final cost (median; range over seeds) | training accuracy (median; range) "
             "| runs at chance | seconds |", "|---|---|---|---|---|---|"]
    for depth, name in dict.fromkeys((r["depth"], r["variant"]) for r in rows):
        mine = [r for r in rows if (r["depth"], r["variant"]) == (depth, name)]
        cost = [r["final_cost"] if math.isfinite(r["final_cost"]) else math.inf for r in mine]
        acc = [r["accuracy"] for r in mine]
        lines.append(f"| {depth} | {name} | {_cost(np.median(cost))} ({_cost(min(cost))}–{_cost(max(cost))}) | "
                     f"{np.median(acc):.3f} ({min(acc):.3f}–{max(acc):.3f}) | "
                     f"{sum(map(at_chance, mine))}/{len(mine)} | "
                     f"{np.median([r['seconds'] for r in mine]):.1f} |")
    return "\n".join(lines)


def _cost(value):
    return f"{value:.3f}" if math.isfinite(value) else "diverged"
