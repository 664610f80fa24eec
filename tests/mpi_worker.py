"""Run under mpiexec by tests/test_distributed.py: data-parallel scenarios on this rank's shard.

python tests/mpi_worker.py SPEC.json OUT_DIR — SPEC has "shards" (examples per rank, in rank order)
and "scenarios" ({"name", "backend", "fit": fit's keyword arguments, "network": Network's
keyword arguments besides relu, "fail": an optional failure to inject}); each rank writes OUT_DIR/<name>.rank<r>.npz
with its final parameters, History costs and validation costs (or the error it raised), and the next
draws of its dropout generator.
"""
import json
import sys
import warnings

import numpy as np
from mpi4py import MPI

import fastdnn
from fastdnn import datasets, distributed

M = 300


def data():
    """The moons set (2, 300) for training and (2, 100) for validation, the same on every rank."""
    X, Y = datasets.moons(m=M + 100, seed=0)
    return X[:, :M], Y[:, :M], X[:, M:], Y[:, M:]


def my_columns(sizes, rank):
    bounds = np.cumsum([0] + list(sizes))
    return slice(bounds[rank], bounds[rank + 1])


def run(scenario, shards, comm, out):
    rank = comm.Get_rank()
    X, Y, Xv, Yv = data()
    cols = my_columns(shards, rank)
    X, Y = X[:, cols], Y[:, cols]
    fit = dict(scenario["fit"])
    if fit.pop("validation", False):
        fit["validation_data"] = distributed.shard(Xv, Yv, comm)
    fail = scenario.get("fail")
    if fail == "shape" and rank == 1:
        X = X[:1]                                   # rank 1's examples have the wrong n0
    if fail == "plan" and rank == 1:
        fit["iterations"] += 1                      # rank 1 would take one step more
    net = fastdnn.Network([2, 5, 3, 1], device=scenario["backend"], dtype="float64", seed=1,
                          **{"hidden_activation": "relu", **scenario.get("network", {})})
    if fail == "drift" and rank == 1:                   # rank 1's parameters move off by one ulp
        step = net.engine.train_step

        def drifting(*args, **kwargs):
            if net.iteration == 3:
                net.engine.theta[0] = np.nextafter(net.engine.theta[0], np.inf)
            return step(*args, **kwargs)
        net.engine.train_step = drifting
    if fail == "midway" and rank == 1:
        original = net.engine.train_step

        def failing(*args, **kwargs):
            if net.iteration == 5:
                raise RuntimeError("injected failure on rank 1 at iteration 5")
            return original(*args, **kwargs)
        net.engine.train_step = failing
    result = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = net.fit(X, Y, verbose=0, comm=comm, **fit)
        result.update(warnings=[str(w.message) for w in caught])
        result.update(cost=[r.cost for r in history],
                      val_cost=[np.nan if r.val_cost is None else r.val_cost for r in history])
    except fastdnn.FastDNNError as exc:
        result.update(error=f"{type(exc).__name__}: {exc}")
        if getattr(exc, "iteration", None) is not None:
            result.update(iteration=exc.iteration)
    result.update({k: v for k, v in net.parameters.items()})
    result.update(next_draws=net.engine.rng.random(8))      # where this rank's dropout stream stands
    np.savez(f"{out}/{scenario['name']}.rank{rank}.npz", **result)


def main():
    spec, out = json.load(open(sys.argv[1])), sys.argv[2]
    comm = MPI.COMM_WORLD
    assert comm.Get_size() == len(spec["shards"]), "mpiexec -n must match the shards"
    for scenario in spec["scenarios"]:
        run(scenario, spec["shards"], comm, out)


if __name__ == "__main__":
    main()
