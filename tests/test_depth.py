"""Issue 12, item 3: why skip connections and batch normalization exist, measured (fastdnn.depth, the
numbers of the README's table, seed 0): 30 narrow ReLU layers trained by gradient descent stay at chance
without them and train with a residual block every two layers; 20 such layers with batch normalization
train (at 30 it helps but falls short: see the README)."""
import math

import pytest

from fastdnn import depth


@pytest.fixture(scope="module")
def rows():
    return {(r["depth"], r["variant"]): r
            for r in depth.compare(depths=(30,), seeds=(0,), variants=("plain", "residual (skip=2)"))
            + depth.compare(depths=(20,), seeds=(0,), variants=("batch norm",))}


def test_thirty_plain_layers_learn_nothing(rows):
    plain = rows[30, "plain"]
    assert plain["final_cost"] > 0.95 * math.log(3) and plain["accuracy"] < 0.45


def test_the_same_depth_with_residual_blocks_trains(rows):
    residual = rows[30, "residual (skip=2)"]
    assert residual["final_cost"] < 0.1 and residual["accuracy"] > 0.95


def test_twenty_layers_with_batch_norm_train(rows):
    normalized = rows[20, "batch norm"]
    assert normalized["final_cost"] < 0.2 and normalized["accuracy"] > 0.95


def test_the_table_has_a_line_per_depth_and_variant(rows):
    text = depth.table(list(rows.values()), 8, 2000, 0.02)
    assert text.count("\n| ") == 4 and "| 30 | plain | 1.125" in text
