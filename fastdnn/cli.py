"""The ``fastdnn`` command: ``demo`` trains a network, ``train`` and ``sweep`` train on a data set,
``bench`` benchmarks, ``backends`` lists them."""
import argparse
import os
import shlex
import sys
import warnings

import numpy as np


def _demo(args):
    import fastdnn
    from fastdnn import datasets
    X, Y = datasets.GENERATED[args.dataset](m=args.m, seed=args.seed)
    classes = int(Y.max()) + 1
    output = "sigmoid" if classes == 2 else "softmax"
    dims = [X.shape[0], *args.hidden, 1 if classes == 2 else classes]
    net = fastdnn.Network(dims, args.activation, output, device=args.device, dtype=args.dtype,
                          seed=args.seed)
    print(f"fastdnn {fastdnn.__version__}: {args.dataset} data set, X {X.shape}, {classes} classes")
    print(f"network {net.layer_dims} ({args.activation} -> {output}), {net.dtype.name}, "
          f"backend {net.backend.name!r} on {net.device}")
    history = net.fit(X, Y, learning_rate=args.learning_rate, iterations=args.iterations,
                      report_every=max(1, args.iterations // 10))
    for r in history:
        print(f"  iteration {r.iteration:6d}  cost {r.cost:.6f}  {r.seconds:8.3f} s")
    steps = history[-1].iteration + 1
    print(f"{steps} steps in {history[-1].seconds:.3f} s "
          f"({1e6 * history[-1].seconds / steps:.1f} µs per step); "
          f"training accuracy {100 * net.accuracy(X, Y):.1f} %")
    if args.bench:
        from . import bench
        print("\nQuick benchmark (one training step; `fastdnn bench` for every configuration):")
        configs = [c for c in bench.CONFIGS if c.name in ("tiny", "mnist-256")]
        rows, _ = bench.run(configs, ("float32",), rounds=3, progress=False)
        print(bench.table(rows))
    return 0


def _train_data(args):
    """(X, Y, X_test, Y_test) for the chosen data set; the test part is None for generated sets."""
    from . import datasets
    if args.dataset == "cats":
        d = datasets.load_catvnoncat(args.data or ".")
        return d.train_x, d.train_y, d.test_x, d.test_y
    if args.dataset == "course2":
        d = datasets.load_course2(args.data or "data.mat")
        return d.train_x, d.train_y, d.test_x, d.test_y
    X, Y = datasets.GENERATED[args.dataset](m=args.m, seed=args.seed)
    return X, Y, None, None


def _train(args):
    import fastdnn
    from . import distributed
    X, Y, Xt, Yt = _train_data(args)
    comm = distributed.mpi_world()              # under mpiexec: data-parallel, rank 0 reports
    leader = comm is None or comm.Get_rank() == 0
    say = print if leader else (lambda *a, **k: None)
    classes = int(Y.max()) + 1
    output = "sigmoid" if classes == 2 else "softmax"
    net = fastdnn.Network([X.shape[0], *args.hidden, 1 if classes == 2 else classes], args.activation,
                          output, init=args.init, device=args.device, dtype=args.dtype, seed=args.seed,
                          l2=args.l2, keep_prob=args.keep_prob)
    say(f"{args.dataset}: X {X.shape}; network {net.layer_dims} ({args.activation} -> {output}), "
        f"{net.dtype.name}, backend {net.backend.name!r} on {net.device}, optimizer {args.optimizer}"
        + (f"; data-parallel over {comm.Get_size()} MPI ranks" if comm else ""))
    how = dict(epochs=args.epochs, batch_size=args.batch_size) if args.epochs else dict(iterations=args.iterations)
    from .optimizers import OPTIMIZERS
    hyper = {k: getattr(args, k) for k in ("beta", "beta1", "beta2", "epsilon")
             if getattr(args, k) is not None}
    try:
        optimizer = OPTIMIZERS[args.optimizer](**hyper)
    except TypeError:
        raise SystemExit(f"fastdnn train: optimizer {args.optimizer!r} takes none of "
                         f"{', '.join('--' + k for k in hyper)}")
    Xr, Yr = distributed.shard(X, Y, comm) if comm else (X, Y)
    history = net.fit(Xr, Yr, learning_rate=args.learning_rate, optimizer=optimizer, seed=args.seed,
                      verbose=args.verbose, comm=comm, **how)
    if not leader:
        return 0
    last = history[-1]
    print(f"cost {history[0].cost:.6f} -> {last.cost:.6f} in {last.seconds:.2f} s; "
          f"training accuracy {100 * net.accuracy(X, Y):.2f} %"
          + (f", test accuracy {100 * net.accuracy(Xt, Yt):.2f} %" if Xt is not None else ""))
    if args.save:
        print(f"saved {net.save(args.save)}")
    if args.plot:
        from . import plot
        plot.cost_curve(history, args.plot)
        print(f"wrote {args.plot}")
    if args.boundary:
        from . import plot
        plot.decision_boundary(net, X, Y, args.boundary)
        print(f"wrote {args.boundary}")
    return 0


def _sweep(args):
    import json
    from . import sweep
    X, Y, Xv, Yv = _train_data(args)
    if Xv is None:                         # generated sets: a second sample as validation data
        from . import datasets
        Xv, Yv = datasets.GENERATED[args.dataset](m=args.m, seed=args.seed + 1)
    fixed = dict(epochs=args.epochs, init=args.init, seed=args.seed, dtype=args.dtype, device=args.device)
    axes = {k: getattr(args, k) for k in sweep.AXES}
    if args.random:
        if len(axes["learning_rate"]) == 2:        # a range, drawn log-uniformly
            axes["learning_rate"] = tuple(axes["learning_rate"])
        configs = sweep.random_search(args.random, seed=args.seed, **axes, **fixed)
    else:
        configs = sweep.grid(**axes, **fixed)
    configs += [{**fixed, **json.loads(extra)} for extra in args.add]
    from .distributed import mpi_world
    comm = mpi_world()
    leader = comm is None or comm.Get_rank() == 0
    if leader:
        where = (f"{comm.Get_size()} MPI ranks" if comm else f"{args.processes} local process(es)")
        print(f"sweep: {len(configs)} configurations on {args.dataset} (X {X.shape}, validation "
              f"{Xv.shape[1]} examples) over {where}", flush=True)
    rows = sweep.run(configs, (X, Y, Xv, Yv), comm=comm, processes=args.processes,
                     progress=leader and sys.stderr.isatty())
    if leader:
        print(sweep.table(rows, args.top))
        failed = sum(r["status"] != "ok" for r in rows)
        paths = sweep.write(rows, args.out)
        print(f"{len(rows) - failed} finished, {failed} failed; wrote " + ", ".join(paths.values()))
    return 0


def _bench(args):
    from . import bench
    if args.gpu:
        from . import gpu_bench
        try:
            rows = gpu_bench.run([c for c in bench.CONFIGS if not args.config or c.name in args.config],
                                 args.dtype)
        except gpu_bench.NoCudaDevice as exc:
            print(f"fastdnn bench --gpu: {exc}", file=sys.stderr)
            return 2
        print(f"GPU: {rows[0]['device']}\n" + gpu_bench.table(rows))
        return 0
    configs = [c for c in bench.CONFIGS if not args.config or c.name in args.config]
    rounds, budget = (args.rounds or 15, 0.5) if args.full else (args.rounds or 3, 0.03)
    rows, info = bench.run(configs, args.dtype, rounds=rounds, loop_budget_s=budget)
    print(bench.table(rows))
    command = "fastdnn " + shlex.join(args.argv)
    paths = bench.write_reports(rows, info, args.out, command)
    print("\nwrote " + ", ".join(paths.values()))
    return 0


def _backends(args):
    import fastdnn
    for info in fastdnn.available_backends():
        state = "available" if info.available else f"unavailable: {info.reason}"
        print(f"{info.name:12s} {info.device:5s} {state}")
    for device in ("cpu", "cuda"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backend = fastdnn.get_backend(device)
        note = f"  ({caught[0].message})" if caught else ""
        print(f"device={device!r} -> backend {backend.name!r} on {backend.device}{note}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastdnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a network on a generated data set and report")
    demo.add_argument("--dataset", default="flower", choices=["flower", "moons", "circles", "spirals"])
    demo.add_argument("--m", type=int, default=400, help="number of examples")
    demo.add_argument("--hidden", type=int, nargs="*", default=[8], help="hidden layer sizes")
    demo.add_argument("--activation", default="tanh", help="hidden activation")
    demo.add_argument("--learning-rate", type=float, default=1.2)
    demo.add_argument("--iterations", type=int, default=5000)
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or a backend name")
    demo.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--no-bench", dest="bench", action="store_false",
                      help="skip the quick benchmark summary at the end")
    demo.set_defaults(run=_demo)
    train = sub.add_parser("train", help="train a network on a data set; save it and its cost curve")
    train.add_argument("--dataset", default="moons",
                       choices=["flower", "moons", "circles", "spirals", "cats", "course2"])
    train.add_argument("--data", help="the cat images' directory (cats) or data.mat (course2)")
    train.add_argument("--m", type=int, default=300, help="examples to generate")
    train.add_argument("--hidden", type=int, nargs="*", default=[5, 2], help="hidden layer sizes")
    train.add_argument("--activation", default="relu")
    train.add_argument("--init", default="he")
    train.add_argument("--optimizer", default="adam", choices=["gd", "momentum", "rmsprop", "adam", "adagrad"])
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--beta", type=float, help="momentum / rmsprop β")
    train.add_argument("--beta1", type=float, help="adam β1")
    train.add_argument("--beta2", type=float, help="adam β2")
    train.add_argument("--epsilon", type=float, help="rmsprop / adam / adagrad ε")
    train.add_argument("--epochs", type=int, help="mini-batch epochs (else --iterations full-batch steps)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--iterations", type=int, default=3000)
    train.add_argument("--l2", type=float, default=0.0)
    train.add_argument("--keep-prob", type=float, default=1.0)
    train.add_argument("--device", default="auto")
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--save", help="write the trained network to this .npz file")
    train.add_argument("--plot", help="write the cost curve to this PNG file")
    train.add_argument("--boundary", help="write the decision boundary (2-D data) to this PNG file")
    train.add_argument("--verbose", type=int, default=None, choices=[0, 1, 2])
    train.set_defaults(run=_train)
    sweep = sub.add_parser("sweep", help="train one network per hyper-parameter configuration over MPI "
                                         "ranks (under mpiexec) or local processes; write the ranked "
                                         "table (CSV, JSON) and a plot")
    sweep.add_argument("--dataset", default="moons",
                       choices=["flower", "moons", "circles", "spirals", "cats", "course2"])
    sweep.add_argument("--data", help="the cat images' directory (cats) or data.mat (course2)")
    sweep.add_argument("--m", type=int, default=300, help="examples to generate (and as many for validation)")
    sweep.add_argument("--learning-rate", dest="learning_rate", type=float, nargs="+", default=[0.01])
    sweep.add_argument("--depth", type=int, nargs="+", default=[2], help="hidden layers")
    sweep.add_argument("--width", type=int, nargs="+", default=[8], help="units per hidden layer")
    sweep.add_argument("--activation", nargs="+", default=["relu"])
    sweep.add_argument("--optimizer", nargs="+", default=["adam"])
    sweep.add_argument("--l2", type=float, nargs="+", default=[0.0])
    sweep.add_argument("--keep-prob", dest="keep_prob", type=float, nargs="+", default=[1.0])
    sweep.add_argument("--batch-size", dest="batch_size", type=int, nargs="+", default=[64])
    sweep.add_argument("--epochs", type=int, default=100)
    sweep.add_argument("--init", default="he")
    sweep.add_argument("--seed", type=int, default=1)
    sweep.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    sweep.add_argument("--device", default="auto")
    sweep.add_argument("--random", type=int, metavar="N", help="draw N configurations at random from the "
                       "values given (two learning rates: a log-uniform range) instead of the full grid")
    sweep.add_argument("--add", action="append", default=[], metavar="JSON",
                       help="one more configuration, e.g. '{\"activation\": \"tanh\", \"depth\": 3}'")
    sweep.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                       help="local processes when not run under mpiexec (default: the cores)")
    sweep.add_argument("--top", type=int, help="print only the best N rows")
    sweep.add_argument("--out", default="fastdnn-sweep", help="directory for sweep.csv, sweep.json, sweep.png")
    sweep.set_defaults(run=_sweep)
    bench = sub.add_parser("bench", help="time a training step: loops, vectorized, fused, the GEMM "
                                         "floor and PyTorch (if installed)")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few rounds (default; under 2 minutes)")
    mode.add_argument("--full", action="store_true", help="15 rounds, loops timed longer")
    mode.add_argument("--gpu", action="store_true", help="cupy vs cupy-numba vs the GPU GEMM floor, "
                                                          "timed with CUDA events (needs a CUDA device)")
    bench.add_argument("--config", nargs="*", help="configurations by name (default: all)")
    bench.add_argument("--dtype", nargs="*", default=["float32", "float64"], choices=["float32", "float64"])
    bench.add_argument("--rounds", type=int, help="interleaved rounds per configuration")
    bench.add_argument("--out", default="fastdnn-bench", help="directory for results.json, "
                                                              "RESULTS.md and results.png")
    bench.set_defaults(run=_bench)
    sub.add_parser("backends", help="list backends and what each device string selects").set_defaults(
        run=_backends)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    np.set_printoptions(precision=4)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
