"""The ``fastdnn`` command: demo, deep, train, sweep, bench, gpu-check and backends.

Every value is checked when the command line is parsed, by the argparse types below (positive
integer, probability, existing file, writable output path, ...), and every combination of options
right after, before any data is read or any network trained. A mistake is one line on stderr and
exit status 2, never a traceback; so is an error the library reports while the command runs
(a data file it cannot read, a backend that cannot run here, a diverging cost).
"""
import argparse
import importlib.util
import inspect
import json
import math
import os
import re
import shlex
import sys
import tempfile
import time
import warnings

import numpy as np

from . import __version__, datasets, depth
from .activations import ACTIVATIONS
from .errors import FastDNNError
from .initializers import SCALES
from .optimizers import OPTIMIZERS

DESCRIPTION = ("Train the deep L-layer network of the \"Neural Networks and Deep Learning\" course on "
               "NumPy, Numba (CPU) or CuPy (GPU): on a generated data set (demo) or one of yours "
               "(train), one network per hyper-parameter configuration (sweep); see why skip connections "
               "and batch normalization exist (deep); time a training step (bench); check a GPU "
               "(gpu-check); list the backends (backends).")
EPILOG = ('Run "fastdnn COMMAND --help" for the options of a command. A wrong option or value '
          "prints one error line and exits with status 2.")

GENERATED = sorted(datasets.GENERATED)
FROM_FILES = {"cats": "the directory holding train_catvnoncat.h5 and test_catvnoncat.h5",
              "course2": "the course's data.mat file"}
CLASSES = {"spirals": 3}                       # classes of the generated sets (2 otherwise)
HIDDEN_ACTIVATIONS = sorted(name for name, cls in ACTIVATIONS.items() if cls.elementwise)
DTYPES = ["float32", "float64"]
SEED_MAX = 2**32 - 2                           # NumPy's seeds end at 2**32 - 1; sweep uses seed + 1
TRAIN_LEARNING_RATE = 0.0075                   # the course's rate (Network's default without one)
TRAIN_BATCH_SIZE = 64
TRAIN_ITERATIONS = 3000
TRAIN_M = 300
BENCH_OUT = "fastdnn-bench"


# --- argparse types: each returns the value or raises ArgumentTypeError naming what it expects --

def _text(value):
    """The text of a command-line value, or of a JSON value from --add (strings kept as they are)."""
    return value if isinstance(value, str) else json.dumps(value)


def _integer(value, low, what, high=None):
    try:
        number = int(_text(value))
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        raise argparse.ArgumentTypeError(f"must be {what}; got {_text(value)!r}")
    return number


def _real(value, ok, what):
    try:
        number = float(_text(value))
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and ok(number)):
        raise argparse.ArgumentTypeError(f"must be {what}; got {_text(value)!r}")
    return number


def positive_int(value):
    """An integer >= 1 (sizes, counts, steps)."""
    return _integer(value, 1, "a positive integer")


def nonnegative_int(value):
    """An integer >= 0."""
    return _integer(value, 0, "an integer >= 0")


def seed(value):
    """A seed for NumPy's generators: an integer in [0, 2**32 - 2]."""
    return _integer(value, 0, f"an integer from 0 to {SEED_MAX}", SEED_MAX)


def examples(value):
    """The number of examples to generate: an integer >= 2 (one per class at least)."""
    return _integer(value, 2, "an integer >= 2 (at least one example per class)")


def positive_float(value):
    """A finite number > 0 (learning rate, ε)."""
    return _real(value, lambda x: x > 0, "a finite number > 0")


def nonnegative_float(value):
    """A finite number >= 0 (L2 strength λ)."""
    return _real(value, lambda x: x >= 0, "a finite number >= 0")


def probability(value):
    """A number in (0, 1] (dropout's keep_prob)."""
    return _real(value, lambda x: 0 < x <= 1, "a number in (0, 1]")


def decay(value):
    """A number in [0, 1) (momentum's and Adam's β)."""
    return _real(value, lambda x: 0 <= x < 1, "a number in [0, 1)")


def device(value):
    """'auto', 'cpu', 'cuda', 'cuda:N' or a backend's name (whether it can run is checked later)."""
    from .backends import _REGISTRY
    if value in ("auto", "cpu", "cuda", *_REGISTRY) or re.fullmatch(r"cuda:\d+", value):
        return value
    raise argparse.ArgumentTypeError(f"unknown device {value!r}; expected auto, cpu, cuda, cuda:N "
                                     f"or a backend name ({', '.join(_REGISTRY)})")


def existing_path(value):
    """A file or directory that exists."""
    if not os.path.exists(value):
        raise argparse.ArgumentTypeError(f"{value!r} does not exist")
    return value


def _writable_directory(directory, value):
    """Raise unless files can be created in ``directory`` (tried for real: os.access is not enough
    for root, read-only file systems or ACLs)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {value!r}: {exc.strerror or exc}") from None


def output_file(value):
    """A file the command can write: its directory exists and is writable, and it is no directory."""
    if not value:
        raise argparse.ArgumentTypeError("must be a file name; got ''")
    directory = os.path.dirname(os.path.abspath(value))
    if os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"{value!r} is a directory; expected a file name")
    if not os.path.isdir(directory):
        why = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise argparse.ArgumentTypeError(f"cannot write {value!r}: {directory!r} {why}")
    _writable_directory(directory, value)
    if os.path.exists(value) and not os.access(value, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {value!r}: permission denied")
    return value


def output_dir(value):
    """A directory the command can write into: it exists and is writable, or it can be created
    (its nearest existing ancestor is a writable directory)."""
    if not value:
        raise argparse.ArgumentTypeError("must be a directory name; got ''")
    path = os.path.abspath(value)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"cannot use {value!r} as a directory: {path!r} is a file")
    _writable_directory(path, value)
    return value


def _one_of(name, choices):
    """A type accepting one of ``choices`` (for --add values; options use argparse's choices=)."""
    def check(value):
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise argparse.ArgumentTypeError(f"unknown {name} {value!r}; expected one of {listed}")
        return value
    return check


# What a sweep configuration may hold, each key with the check of its command-line option.
SWEEP_KEYS = dict(learning_rate=positive_float, depth=nonnegative_int, width=positive_int,
                  activation=_one_of("activation", HIDDEN_ACTIVATIONS),
                  optimizer=_one_of("optimizer", sorted(OPTIMIZERS)), l2=nonnegative_float,
                  keep_prob=probability, batch_size=positive_int, epochs=positive_int,
                  init=_one_of("init", sorted(SCALES)), seed=seed, dtype=_one_of("dtype", DTYPES),
                  device=device)


def sweep_config(value):
    """--add: a JSON object whose keys are sweep settings ({"activation": "tanh", "depth": 3}).
    Its values are the sweep's to judge: a configuration that fails is a row with its error."""
    try:
        config = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {value!r}") from None
    if not isinstance(config, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"depth\": 3}}'; got {value!r}")
    unknown = sorted(set(config) - set(SWEEP_KEYS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown setting {unknown[0]!r} in {value!r}; expected "
                                         f"keys among {', '.join(SWEEP_KEYS)}")
    return config


# --- help -------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors one line on stderr (the usage is in --help) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (when it has one)."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        if (not action.option_strings or action.nargs == 0 or "%(default)" in text or default is None
                or default == argparse.SUPPRESS or default == []):
            return text                        # a flag, or no default to show
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        return f"{text} (default: {str(default).replace('%', '%%')})"


def _command(sub, name, summary, description, run):
    parser = sub.add_parser(name, help=summary, description=description, formatter_class=_HelpFormatter)
    parser.set_defaults(run=run, parser=parser)
    return parser


def _data_options(parser, names, default, m):
    """--dataset among ``names`` (generated sets, and the ones read from files when listed), --data
    for those, --m examples to generate (default ``m``)."""
    files = [name for name in names if name in FROM_FILES]
    parser.add_argument("--dataset", default=default, choices=names, help="a generated data set"
                        + (f", or {' or '.join(files)} read from --data" if files else ""))
    if files:
        parser.add_argument("--data", type=existing_path, metavar="PATH", help="where the data set is "
                            "read from: " + "; ".join(f"{k}: {FROM_FILES[k]}" for k in files))
    parser.add_argument("--m", type=examples, metavar="M", help=f"examples to generate (default: {m}; "
                        "spirals needs 3)" + ("; not for the data sets read from files" if files else ""))
    parser.set_defaults(default_m=m)


def _run_options(parser):
    parser.add_argument("--device", type=device, default="auto", metavar="DEVICE",
                        help="auto, cpu, cuda, cuda:N or a backend name (see 'fastdnn backends')")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="floating-point type")
    parser.add_argument("--seed", type=seed, default=1, metavar="N",
                        help="seeds the generated data, the initial parameters and the shuffles")


def _demo_parser(sub):
    p = _command(sub, "demo", "train a network on a generated data set and report",
                 "Train a network on a generated data set, full batch, and print the device, the "
                 "cost every tenth of the run, the accuracy and a quick benchmark of one training step.",
                 _demo)
    _data_options(p, GENERATED, "flower", 400)
    p.add_argument("--hidden", type=positive_int, nargs="*", default=[8], metavar="N",
                   help="units of each hidden layer")
    p.add_argument("--activation", default="tanh", choices=HIDDEN_ACTIVATIONS, help="hidden activation")
    p.add_argument("--learning-rate", type=positive_float, default=1.2, metavar="RATE", help="gradient descent's α")
    p.add_argument("--iterations", type=positive_int, default=5000, metavar="N", help="full-batch steps")
    _run_options(p)
    p.add_argument("--no-bench", dest="bench", action="store_false",
                   help="skip the quick benchmark at the end")


def _deep_parser(sub):
    p = _command(sub, "deep", "why skip connections and batch normalization exist, measured",
                 "Train deep, narrow ReLU networks of each depth on the 3-class spirals by gradient "
                 "descent three ways: plain, with a residual block every two hidden layers (skip=2) and "
                 "with batch normalization; print the final cost and training accuracy of each (median "
                 "and range over the seeds).", _deep)
    p.add_argument("--depth", type=positive_int, nargs="+", default=list(depth.DEPTHS), metavar="N",
                   help="hidden layers (one network per depth)")
    p.add_argument("--width", type=positive_int, default=depth.WIDTH, metavar="N", help="units per hidden layer")
    p.add_argument("--iterations", type=positive_int, default=depth.ITERATIONS, metavar="N",
                   help="full-batch steps")
    p.add_argument("--learning-rate", type=positive_float, default=depth.LEARNING_RATE, metavar="RATE",
                   help="gradient descent's α")
    p.add_argument("--seeds", type=positive_int, default=depth.SEEDS, metavar="N",
                   help="runs per variant (seeds 0..N-1)")
    p.add_argument("--device", type=device, default="cpu", metavar="DEVICE",
                   help="auto, cpu, cuda, cuda:N or a backend name (see 'fastdnn backends')")


def _train_parser(sub):
    p = _command(sub, "train", "train a network on a data set; save it and its cost curve",
                 "Train a network (sigmoid output for two classes, softmax for more) on a data set; "
                 "print the cost and the accuracy; save the network, its cost curve and its decision "
                 "boundary. Output paths are checked before training.", _train)
    _data_options(p, GENERATED + list(FROM_FILES), "moons", TRAIN_M)
    p.add_argument("--hidden", type=positive_int, nargs="*", default=[8, 8], metavar="N",
                   help="units of each hidden layer (none: logistic regression)")
    p.add_argument("--activation", default="relu", choices=HIDDEN_ACTIVATIONS, help="hidden activation")
    p.add_argument("--skip", type=nonnegative_int, default=0, metavar="N",
                   help="a residual block every N hidden layers (0: none)")
    p.add_argument("--projection", default="learned", choices=["learned", "pad"],
                   help="what joins a skip between layers of different widths")
    p.add_argument("--batch-norm", action="store_true", help="normalize every hidden layer over the batch")
    p.add_argument("--init", default="he", choices=sorted(SCALES), help="initial weights' scale")
    p.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS), help="update rule")
    p.add_argument("--learning-rate", type=positive_float, default=TRAIN_LEARNING_RATE, metavar="RATE",
                   help="α")
    p.add_argument("--beta", type=decay, metavar="B",
                   help="momentum's β (default: 0.9), rmsprop's (default: 0.999)")
    p.add_argument("--beta1", type=decay, metavar="B1", help="adam's β1 (default: 0.9)")
    p.add_argument("--beta2", type=decay, metavar="B2", help="adam's β2 (default: 0.999)")
    p.add_argument("--epsilon", type=positive_float, metavar="EPS", help="rmsprop's, adam's and adagrad's ε (default: 1e-8)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--iterations", type=positive_int, metavar="N", help=f"full-batch steps (the default: {TRAIN_ITERATIONS})")
    steps.add_argument("--epochs", type=positive_int, metavar="N", help="mini-batch passes over the examples, "
                       "instead of full-batch steps")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help=f"examples per mini-batch with --epochs "
                   f"(default: {TRAIN_BATCH_SIZE})")
    p.add_argument("--l2", type=nonnegative_float, default=0.0, metavar="LAMBDA", help="L2 regularization's λ")
    p.add_argument("--keep-prob", type=probability, default=1.0, metavar="P",
                   help="dropout: probability of keeping a hidden unit (1: no dropout)")
    _run_options(p)
    p.add_argument("--save", type=output_file, metavar="FILE.npz", help="write the trained network here")
    p.add_argument("--onnx", type=output_file, metavar="FILE.onnx",
                   help="also write the trained network as an ONNX graph (needs the onnx extra)")
    p.add_argument("--plot", type=output_file, metavar="FILE.png", help="write the cost curve here")
    p.add_argument("--boundary", type=output_file, metavar="FILE.png",
                   help="write the decision boundary here (data with two features)")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], help="0: silent, 1: progress bar, 2: "
                   "the course's 'Cost after iteration' lines (default: a bar when stderr is a terminal)")


def _sweep_parser(sub):
    p = _command(sub, "sweep", "train one network per hyper-parameter configuration and rank them",
                 "Train one network per configuration, on MPI ranks (under mpiexec) or local processes; "
                 "rank them by validation accuracy; print the table and write sweep.csv, sweep.json "
                 "and sweep.png. Each option takes one or more values; the configurations are every "
                 "combination (or --random N draws).", _sweep)
    _data_options(p, GENERATED + list(FROM_FILES), "moons", TRAIN_M)
    p.add_argument("--learning-rate", type=positive_float, nargs="+", default=[0.01], metavar="RATE", help="α values")
    p.add_argument("--depth", type=nonnegative_int, nargs="+", default=[2], metavar="N", help="hidden layers")
    p.add_argument("--width", type=positive_int, nargs="+", default=[8], metavar="N", help="units per hidden layer")
    p.add_argument("--activation", nargs="+", default=["relu"], choices=HIDDEN_ACTIVATIONS, metavar="NAME",
                   help="hidden activations, among " + ", ".join(HIDDEN_ACTIVATIONS))
    p.add_argument("--optimizer", nargs="+", default=["adam"], choices=sorted(OPTIMIZERS), metavar="NAME",
                   help="optimizers, among " + ", ".join(sorted(OPTIMIZERS)))
    p.add_argument("--l2", type=nonnegative_float, nargs="+", default=[0.0], metavar="LAMBDA", help="L2 λ values")
    p.add_argument("--keep-prob", type=probability, nargs="+", default=[1.0], metavar="P", help="dropout keep_prob values")
    p.add_argument("--batch-size", type=positive_int, nargs="+", default=[64], metavar="N", help="mini-batch sizes")
    p.add_argument("--epochs", type=positive_int, default=100, metavar="N", help="epochs per configuration")
    p.add_argument("--init", default="he", choices=sorted(SCALES), help="initial weights' scale")
    _run_options(p)
    p.add_argument("--random", type=positive_int, metavar="N", help="draw N configurations from the "
                   "values given (two learning rates: a log-uniform range) instead of the full grid")
    p.add_argument("--add", type=sweep_config, action="append", default=[], metavar="JSON",
                   help="one more configuration, e.g. '{\"activation\": \"tanh\", \"depth\": 3}' (repeatable)")
    p.add_argument("--processes", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="local processes when not run under mpiexec (the default: one per core)")
    p.add_argument("--top", type=positive_int, metavar="N", help="print only the best N rows (default: all)")
    p.add_argument("--out", type=output_dir, default="fastdnn-sweep", metavar="DIR",
                   help="directory for sweep.csv, sweep.json and sweep.png")


def _bench_parser(sub):
    from . import bench
    p = _command(sub, "bench", "time a training step: loops, vectorized, fused, the GEMM floor and "
                 "PyTorch (if installed)", "Time one training step of each configuration: Python "
                 "loops, vectorized NumPy, the fused backends, BLAS's GEMM floor and PyTorch (if "
                 "installed); print the table and write results.json, RESULTS.md and results.png.",
                 _bench)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 rounds, loops timed briefly (the default)")
    mode.add_argument("--full", action="store_true", help="15 rounds, loops timed longer")
    mode.add_argument("--gpu", action="store_true", help="cupy vs cupy-fused vs the GPU GEMM floor, timed "
                      "with CUDA events (needs a CUDA device; prints only)")
    names = [c.name for c in bench.CONFIGS]
    p.add_argument("--config", nargs="+", choices=names, metavar="NAME",
                   help="configurations to time, among " + ", ".join(names) + " (default: all)")
    p.add_argument("--dtype", nargs="+", default=DTYPES, choices=DTYPES, help="floating-point types")
    p.add_argument("--rounds", type=positive_int, metavar="N", help="interleaved rounds per configuration "
                   "(default: 3, with --full 15)")
    p.add_argument("--out", type=output_dir, metavar="DIR", help="directory for results.json, RESULTS.md "
                   f"and results.png (default: {BENCH_OUT})")


def _gpu_check_parser(sub):
    p = _command(sub, "gpu-check", "the GPU acceptance check: run it first on a machine with an NVIDIA GPU",
                 "Check the GPU backends on a CUDA device, in under 2 minutes: for cupy and cupy-fused in "
                 "float64 and float32, full-batch and mini-batch fit against the CPU (numpy) result, "
                 "training steps queued with synchronizations refused, device memory over 100 predict "
                 "calls, launches per step, cuda:1 when present; then the GPU benchmark. Prints PASS/FAIL "
                 "per check and exits with status 1 when any check fails (2 without a CUDA device).",
                 _gpu_check)
    p.add_argument("--device", type=nonnegative_int, default=0, metavar="N", help="the CUDA device to check")


def build_parser():
    """The ``fastdnn`` parser with its seven commands."""
    parser = _Parser(prog="fastdnn", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastdnn {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    _demo_parser(sub)
    _deep_parser(sub)
    _train_parser(sub)
    _sweep_parser(sub)
    _bench_parser(sub)
    _gpu_check_parser(sub)
    _command(sub, "backends", "list the backends and what each device string selects",
             "List every backend, whether it can run here (and why not), and which backend each "
             "device string selects.", _backends)
    return parser


# --- checks across options, after parsing and before any work ----------------------------------

def _check_data(args):
    """--dataset, --data and --m fit together: files for cats/course2, generated sets otherwise."""
    fail = args.parser.error
    if args.dataset in FROM_FILES:
        if getattr(args, "data", None) is None:
            fail(f"--dataset {args.dataset} needs --data: {FROM_FILES[args.dataset]}")
        if args.m is not None:
            fail(f"--m is for the generated data sets; {args.dataset} has the examples of its files")
        if args.dataset == "cats":
            if not os.path.isdir(args.data):
                fail(f"--data {args.data!r} is not a directory; cats needs {FROM_FILES['cats']}")
            for split in ("train", "test"):
                if not os.path.isfile(os.path.join(args.data, f"{split}_catvnoncat.h5")):
                    fail(f"--data {args.data!r} has no {split}_catvnoncat.h5; cats needs {FROM_FILES['cats']}")
        elif not os.path.isfile(args.data):
            fail(f"--data {args.data!r} is not a file; course2 needs {FROM_FILES['course2']}")
        return
    if getattr(args, "data", None) is not None:
        fail(f"--data is for {' and '.join(FROM_FILES)}; {args.dataset} is generated (use --m)")
    classes = CLASSES.get(args.dataset, 2)
    if args.m is None:
        args.m = args.default_m
    elif args.m < classes:
        fail(f"--m {args.m} is too few: {args.dataset} has {classes} classes; give at least {classes}")


def _check_train(args):
    _check_data(args)
    fail = args.parser.error
    if args.batch_size is not None and args.epochs is None:
        fail("--batch-size needs --epochs (without --epochs, training is full batch)")
    if args.keep_prob < 1 and not args.hidden:
        fail("--keep-prob drops hidden units, and --hidden gives no hidden layer")
    accepted = inspect.signature(OPTIMIZERS[args.optimizer]).parameters
    extra = [k for k in ("beta", "beta1", "beta2", "epsilon") if getattr(args, k) is not None
             and k not in accepted]
    if extra:
        takes = [f"--{k}" for k in ("beta", "beta1", "beta2", "epsilon") if k in accepted]
        fail(f"optimizer {args.optimizer!r} takes none of {', '.join('--' + k for k in extra)}"
             f" (it takes {', '.join(takes) if takes else 'only --learning-rate'})")
    if args.boundary and args.dataset == "cats":
        fail("--boundary draws data with two features; cats has 12288")
    for option in ("plot", "boundary"):
        if getattr(args, option) and importlib.util.find_spec("matplotlib") is None:
            fail(f"--{option} needs matplotlib: pip install 'fastdnn[plot]'")
        if getattr(args, option):
            _check_image_format(option, getattr(args, option), fail)
    outputs = {}
    for option in ("save", "onnx", "plot", "boundary"):
        path = getattr(args, option)
        if path and os.path.realpath(path) in outputs:
            fail(f"--{outputs[os.path.realpath(path)]} and --{option} name the same file {path!r}")
        if path:
            outputs[os.path.realpath(path)] = option


def _check_image_format(option, path, fail):
    """The file's extension is a format matplotlib writes (none: its default, png)."""
    from matplotlib.figure import Figure
    extension = os.path.splitext(path)[1][1:].lower()
    formats = Figure().canvas.get_supported_filetypes()
    if extension and extension not in formats:
        fail(f"--{option} {path!r}: matplotlib writes {', '.join(sorted(formats))} files, not .{extension}")


def _check_bench(args):
    if args.gpu:
        for option in ("rounds", "out"):
            if getattr(args, option) is not None:
                args.parser.error(f"--{option} is not used with --gpu (it prints its table only)")


CHECKS = {"demo": _check_data, "train": _check_train, "sweep": _check_data, "bench": _check_bench}


# --- the commands -----------------------------------------------------------------------------

def _demo(args):
    import fastdnn
    X, Y = datasets.GENERATED[args.dataset](m=args.m, seed=args.seed)
    classes = int(Y.max()) + 1
    output = "sigmoid" if classes == 2 else "softmax"
    dims = [X.shape[0], *args.hidden, 1 if classes == 2 else classes]
    net = fastdnn.Network(dims, args.activation, output, device=args.device, dtype=args.dtype,
                          seed=args.seed)
    print(f"fastdnn {fastdnn.__version__}: {args.dataset} data set, X {X.shape}, {classes} classes")
    print(f"network {net.layer_dims} ({args.activation} -> {output}), {net.dtype.name}, "
          f"backend {net.backend.name!r} on {net.device}")
    start = time.perf_counter()
    history = net.fit(X, Y, learning_rate=args.learning_rate, iterations=args.iterations,
                      report_every=max(1, args.iterations // 10))
    seconds = time.perf_counter() - start
    for r in history:
        print(f"  iteration {r.iteration:6d}  cost {r.cost:.6f}  {r.seconds:8.3f} s")
    steps = history[-1].iteration + 1
    _demo_timings(net, X, Y, args, steps, seconds, start)
    print(f"{steps} steps in {seconds:.3f} s; training accuracy {100 * net.accuracy(X, Y):.1f} %")
    if args.bench:
        from . import bench, engine
        engine.BACKGROUND_COMPILE = False    # the benchmark's warm-ups compile before it times anything
        print("\nQuick benchmark (one training step; `fastdnn bench` for every configuration):")
        configs = [c for c in bench.CONFIGS if c.name in ("tiny", "mnist-256")]
        rows, _ = bench.run(configs, ("float32",), rounds=3, progress=False)
        print(bench.table(rows))
    return 0


def _demo_timings(net, X, Y, args, steps, seconds, start):
    """Print what the first call of the process (the fit that began at ``start``) cost apart from the
    steady time per step: it compiles its whole loop (seconds with a cold Numba cache: in the background,
    while its steps run on NumPy) or loads it from the cache; the steady time is a second fit's, of a
    copy of the network."""
    from . import engine
    jobs = engine.wait_for_compiles(since=start)
    on_numpy = net.engine.reference_steps
    k = min(steps, 2000)
    clone = type(net)(net.layer_dims, args.activation, net.activations[-1].name, device=net.backend,
                      dtype=net.dtype, init=net.parameters)
    t0 = time.perf_counter()
    clone.fit(X, Y, learning_rate=args.learning_rate, iterations=k, report_every=k, verbose=0)
    steady = (time.perf_counter() - t0) / k
    if jobs:
        compiled = sum(s for s, cached in jobs if not cached)
        loaded = sum(s for s, cached in jobs if cached)
        how = []
        if compiled:
            how.append(f"compiled in {compiled:.2f} s (cold Numba cache), in the background: {on_numpy} of the "
                       f"{steps} steps ran on NumPy meanwhile")
        if loaded:
            how.append(f"loaded from Numba's cache in {loaded:.2f} s")
        print(f"first call: the compiled loop {'; '.join(how)}")
    else:
        print(f"first call: {max(seconds - steps * steady, 0.0):.3f} s more than {steps} steady steps")
    print(f"steady: {1e6 * steady:.1f} µs per step (a second fit, of {k} steps)")


def _train_data(args):
    """(X, Y, X_test, Y_test) for the chosen data set; the test part is None for generated sets."""
    if args.dataset in FROM_FILES:
        load = datasets.load_catvnoncat if args.dataset == "cats" else datasets.load_course2
        try:
            d = load(args.data)
        except ImportError:
            raise
        except Exception as exc:          # whatever the file holds, the user hears one line
            raise ValueError(f"cannot read the {args.dataset} data from {args.data!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
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
    if np.unique(Y).size < 2:
        raise ValueError(f"the {args.dataset} training labels are all {int(Y.flat[0])}: a classifier needs two "
                         "classes or more")
    classes = int(Y.max()) + 1
    output = "sigmoid" if classes == 2 else "softmax"
    net = fastdnn.Network([X.shape[0], *args.hidden, 1 if classes == 2 else classes], args.activation,
                          output, init=args.init, device=args.device, dtype=args.dtype, seed=args.seed,
                          l2=args.l2, keep_prob=args.keep_prob, skip=args.skip, projection=args.projection,
                          batch_norm=args.batch_norm)
    extras = (f", skips {net.skips}" if net.skips else "") + (", batch norm" if net.batch_norm else "")
    say(f"{args.dataset}: X {X.shape}; network {net.layer_dims} ({args.activation} -> {output}{extras}), "
        f"{net.dtype.name}, backend {net.backend.name!r} on {net.device}, optimizer {args.optimizer}"
        + (f"; data-parallel over {comm.Get_size()} MPI ranks" if comm else ""))
    if args.epochs is not None:
        how = dict(epochs=args.epochs,
                   batch_size=TRAIN_BATCH_SIZE if args.batch_size is None else args.batch_size)
    else:
        how = dict(iterations=TRAIN_ITERATIONS if args.iterations is None else args.iterations)
    hyper = {k: getattr(args, k) for k in ("beta", "beta1", "beta2", "epsilon") if getattr(args, k) is not None}
    optimizer = OPTIMIZERS[args.optimizer](**hyper)
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
    if args.onnx:
        print(f"wrote {net.to_onnx(args.onnx)}")
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
    from . import sweep
    X, Y, Xv, Yv = _train_data(args)
    if Xv is None:                         # generated sets: a second sample as validation data
        Xv, Yv = datasets.GENERATED[args.dataset](m=args.m, seed=args.seed + 1)
    fixed = dict(epochs=args.epochs, init=args.init, seed=args.seed, dtype=args.dtype, device=args.device)
    axes = {k: getattr(args, k) for k in sweep.AXES}
    if args.random is not None:
        if len(axes["learning_rate"]) == 2:        # a range, drawn log-uniformly
            axes["learning_rate"] = tuple(axes["learning_rate"])
        configs = [{**drawn, **fixed} for drawn in sweep.random_search(args.random, seed=args.seed, **axes)]
    else:
        configs = sweep.grid(**axes, **fixed)
    configs += [{**fixed, **extra} for extra in args.add]
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
    configs = [c for c in bench.CONFIGS if args.config is None or c.name in args.config]
    if args.gpu:
        from . import gpu_bench
        try:
            rows = gpu_bench.run(configs, args.dtype)
        except gpu_bench.NoCudaDevice as exc:
            raise FastDNNError(f"--gpu: {exc}") from exc
        print(f"GPU: {rows[0]['device']}\n" + gpu_bench.table(rows))
        return 0
    default_rounds, budget = (15, 0.5) if args.full else (3, 0.03)
    rounds = default_rounds if args.rounds is None else args.rounds
    rows, info = bench.run(configs, args.dtype, rounds=rounds, loop_budget_s=budget)
    print(bench.table(rows))
    command = "fastdnn " + shlex.join(args.argv)
    paths = bench.write_reports(rows, info, BENCH_OUT if args.out is None else args.out, command)
    print("\nwrote " + ", ".join(paths.values()))
    slow = bench.slow_tables(rows)
    if slow:
        print(f"warning: the peak GEMM rate read below {100 * bench.SLOW_MACHINE:.0f}% of its best (another load "
              f"on the machine?) while timing {', '.join(slow)}: those tables are less sure; rerun them when "
              "the machine is idle", file=sys.stderr)
    return 0


def _gpu_check(args):
    from . import gpu_bench, gpu_check
    try:
        return gpu_check.main(args.device)
    except gpu_bench.NoCudaDevice as exc:
        raise FastDNNError(str(exc)) from exc


def _backends(args):
    import fastdnn
    for info in fastdnn.available_backends():
        state = "available" if info.available else f"unavailable: {info.reason}"
        print(f"{info.name:12s} {info.device:5s} {state}")
    for name in ("cpu", "cuda"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backend = fastdnn.get_backend(name)
        note = f"  ({caught[0].message})" if caught else ""
        print(f"device={name!r} -> backend {backend.name!r} on {backend.device}{note}")
    return 0


# --- main ---------------------------------------------------------------------------------------

def _one_line(text):
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings (a device fallback, ...) as one line: 'fastdnn: warning: ...'."""
    print(f"fastdnn: warning: {_one_line(message)}", file=sys.stderr if file is None else file)


# Errors the library raises for what the user gave it (values, files, the machine's backends, a
# diverging cost): reported in one line, exit status 2. Anything else is a bug: a traceback.
USER_ERRORS = (FastDNNError, ValueError, OSError, ImportError, MemoryError)


def _deep(args):
    rows = depth.compare(args.depth, args.width, args.iterations, args.learning_rate, range(args.seeds),
                         device=args.device)
    print(depth.table(rows, args.width, args.iterations, args.learning_rate))
    return 0


def main(argv=None):
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status, or raises
    SystemExit(2) after one error line on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:                  # named by the command's parser, which has them in its --help
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    check = CHECKS.get(args.command)
    if check:
        check(args)
    np.set_printoptions(precision=4)
    try:
        # NumPy's overflow warnings are noise: fit reports a diverging cost itself, as one error
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            warnings.showwarning = _show_warning
            return args.run(args)
    except KeyboardInterrupt:
        args.parser.exit(130, f"{args.parser.prog}: interrupted\n")
    except USER_ERRORS as exc:
        args.parser.exit(2, f"{args.parser.prog}: error: {_one_line(exc) or type(exc).__name__}\n")


if __name__ == "__main__":
    sys.exit(main())
