"""Hyper-parameter sweeps: grids and random draws, ranking, failures as rows, the same results in one
process, in local processes and over 2 MPI ranks; the CLI's table, CSV, JSON and plot."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastdnn import datasets, sweep

DATA = (*datasets.moons(m=200, seed=0), *datasets.moons(m=200, seed=1))
FAST = dict(epochs=15, device="numpy", dtype="float64")


def test_grid_is_every_combination():
    configs = sweep.grid(learning_rate=[0.1, 0.01], depth=[1, 2, 3], activation="tanh")
    assert len(configs) == 6
    assert {(c["learning_rate"], c["depth"]) for c in configs} == {(a, d) for a in (0.1, 0.01) for d in (1, 2, 3)}
    assert all(c["activation"] == "tanh" for c in configs)


def test_random_search_draws_in_the_given_ranges():
    configs = sweep.random_search(200, seed=3, learning_rate=(1e-4, 1e-1), width=(4, 16),
                                  optimizer=["gd", "adam"], l2=0.5)
    lr = np.array([c["learning_rate"] for c in configs])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    assert 0.3 < np.mean(lr < 1e-2) < 0.9          # log-uniform: 2/3 of the draws below 1e-2
    widths = {c["width"] for c in configs}
    assert widths <= set(range(4, 17)) and len(widths) > 8
    assert {c["optimizer"] for c in configs} == {"gd", "adam"} and {c["l2"] for c in configs} == {0.5}
    assert sweep.random_search(5, seed=3, learning_rate=(1e-4, 1e-1)) == \
        sweep.random_search(5, seed=3, learning_rate=(1e-4, 1e-1))


def test_failing_configurations_are_rows_and_the_sweep_goes_on():
    configs = sweep.grid(learning_rate=[0.05, 0.005], **FAST) + [
        dict(activation="nope", **FAST),
        dict(learning_rate=1e9, activation="linear", optimizer="gd", **FAST)]
    rows = sweep.run(configs, DATA)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    errors = {r["activation"]: r["error"] for r in rows[2:]}
    assert errors["nope"].startswith("ValueError: unknown activation 'nope'")
    assert errors["linear"].startswith("TrainingDivergedError")


def test_rank_orders_by_validation_accuracy_then_cost_failed_last():
    def row(status="ok", val=None, train=None, cost=1.0, val_cost=None):
        return dict(status=status, val_accuracy=val, train_accuracy=train, cost=cost, val_cost=val_cost)
    rows = [row("failed"), row(val=0.8, val_cost=0.5), row(val=0.9, val_cost=0.7), row(val=0.9, val_cost=0.6)]
    assert [(r["status"], r["val_accuracy"], r["val_cost"]) for r in sweep.rank(rows)] == \
        [("ok", 0.9, 0.6), ("ok", 0.9, 0.7), ("ok", 0.8, 0.5), ("failed", None, None)]
    assert [r["train_accuracy"] for r in sweep.rank([row(train=0.5), row(train=0.7)])] == [0.7, 0.5]


def test_local_processes_give_the_same_rows_as_one_process():
    configs = sweep.grid(learning_rate=[0.05, 0.005], optimizer=["gd", "adam"], **FAST)
    here = sweep.run(configs, DATA)
    there = sweep.run(configs, DATA, processes=2)
    keys = ("learning_rate", "optimizer", "cost", "val_cost", "val_accuracy", "train_accuracy")
    assert [[r[k] for k in keys] for r in here] == [[r[k] for k in keys] for r in there]
    assert {r["worker"] for r in there} != {r["worker"] for r in here}


def test_write_makes_csv_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    rows = sweep.run(sweep.grid(learning_rate=[0.05, 0.005], **FAST) + [dict(activation="nope", **FAST)], DATA)
    paths = sweep.write(rows, tmp_path)
    table = list(csv.DictReader(open(paths["csv"])))
    assert [r["place"] for r in table] == ["1", "2", "3"] and table[2]["status"] == "failed"
    assert json.load(open(paths["json"]))[0]["val_accuracy"] == rows[0]["val_accuracy"]
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)")
def test_cli_sweep_over_two_mpi_ranks(tmp_path):
    """16 configurations and 2 failing ones over mpiexec -n 2: every row is written, best first, the
    failures are reported, and both ranks trained."""
    pytest.importorskip("mpi4py")
    out = tmp_path / "sweep"
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "fastdnn", "sweep", "--dataset", "moons",
           "--learning-rate", "0.1", "0.01", "--depth", "1", "2", "--width", "4", "8",
           "--optimizer", "gd", "adam", "--epochs", "20", "--device", "numpy", "--out", str(out),
           "--add", '{"activation": "nope"}',
           "--add", '{"learning_rate": 1e9, "activation": "linear", "optimizer": "gd"}']
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "18 configurations" in proc.stdout and "over 2 MPI ranks" in proc.stdout
    assert "16 finished, 2 failed" in proc.stdout
    assert proc.stdout.count("sweep: ") == 1                # rank 0 alone reports
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(rows) == 18 and {r["worker"] for r in rows} == {"rank 0", "rank 1"}
    ok = [float(r["val_accuracy"]) for r in rows if r["status"] == "ok"]
    assert len(ok) == 16 and ok == sorted(ok, reverse=True) and ok[0] > 0.85
    failed = [r for r in rows[-2:]]
    assert {r["status"] for r in failed} == {"failed"}
    assert any("unknown activation 'nope'" in r["error"] for r in failed)
    assert (out / "sweep.png").stat().st_size > 10_000 and (out / "sweep.json").exists()
