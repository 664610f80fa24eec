"""Issue 12, item 3: why skip connections and batch normalization exist, measured (fastdnn.depth, the
seed-0 runs of the README's table, with ``fastdnn deep``'s default setting): 25 narrow ReLU layers
trained by full-batch gradient descent stay at chance as they are, and train to high accuracy with a
residual block every two layers and with batch normalization, at the same learning rate."""
import math

import pytest

import fastdnn
from fastdnn import depth

DEPTH = 25


@pytest.fixture(scope="module")
def rows():
    return {r["variant"]: r for r in depth.compare(depths=(DEPTH,), seeds=(0,))}


def test_the_default_setting_is_one_shared_by_the_three_variants():
    assert (depth.WIDTH, depth.ITERATIONS, depth.LEARNING_RATE) == (16, 2000, 0.1)
    assert DEPTH in depth.DEPTHS and depth.SEEDS >= 3


def test_twenty_five_plain_layers_learn_nothing(rows):
    plain = rows["plain"]
    assert not plain["final_cost"] < 0.95 * math.log(3) and plain["accuracy"] < 0.45


def test_the_same_depth_with_residual_blocks_trains(rows):
    residual = rows["residual (skip=2)"]
    assert residual["final_cost"] < 0.1 and residual["accuracy"] > 0.95


def test_the_same_depth_with_batch_norm_trains(rows):
    normalized = rows["batch norm"]
    assert normalized["final_cost"] < 0.1 and normalized["accuracy"] > 0.95


def test_a_run_is_at_chance_when_its_cost_is_near_ln3_above_it_or_nan():
    assert [depth.at_chance(dict(final_cost=c)) for c in (math.nan, 1.5, math.log(3), 1.0, 0.98, 0.2)] \
        == [True, True, True, True, False, False]


def test_the_table_states_the_setting_and_has_a_line_per_variant(rows):
    text = depth.table(list(rows.values()), depth.WIDTH, depth.ITERATIONS, depth.LEARNING_RATE)
    header = text.split("\n")[0]
    assert "[2, 16 x depth hidden, 3]" in header and "2000 full-batch gradient-descent steps" in header
    assert "learning rate 0.1 for all three variants" in header and "1 seed (0);" in header
    assert text.count("\n| ") == 4 and "| 25 | plain | 1.099 (1.099–1.099) |" in text
    assert [line.split(" | ")[4] for line in text.split("\n")[-3:]] == ["1/1", "0/1", "0/1"]


def test_a_diverged_run_counts_as_an_infinite_cost_in_the_table():
    rows = [dict(depth=30, variant="residual (skip=2)", seed=s, final_cost=c, accuracy=a, seconds=1.0)
            for s, (c, a) in enumerate([(0.01, 0.99), (math.nan, 1 / 3), (0.1, 0.97)])]
    line = depth.table(rows, 16, 2000, 0.1).split("\n")[-1]
    assert line == "| 30 | residual (skip=2) | 0.100 (0.010–diverged) | 0.970 (0.333–0.990) | 1/3 | 1.0 |"


def test_compare_waits_for_its_compiled_loops_and_restores_the_setting(monkeypatch):
    """Its rows do not depend on when a background compile finishes (see ``depth.compare``)."""
    from fastdnn import engine
    seen, fit = [], fastdnn.Network.fit
    monkeypatch.setattr(engine, "BACKGROUND_COMPILE", True)
    monkeypatch.setattr(fastdnn.Network, "fit",
                        lambda self, *a, **kw: seen.append(engine.BACKGROUND_COMPILE) or fit(self, *a, **kw))
    rows = depth.compare(depths=(2,), seeds=(0,), iterations=3, variants=("plain",))
    assert seen == [False] and engine.BACKGROUND_COMPILE is True and len(rows) == 1
