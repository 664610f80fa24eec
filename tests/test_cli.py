"""The fastdnn command: every mistake is one error line and exit status 2, found before any work;
errors while it runs are one line too; the defaults train well; --help and --version say what they
should. Most tests call main() in this process; a few run ``python -m fastdnn`` to see what a shell
sees."""
import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastdnn
from fastdnn import cli


def run_main(capsys, argv):
    """(exit status, stdout, stderr) of ``fastdnn argv`` run in this process."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


def run_process(*argv):
    return subprocess.run([sys.executable, "-m", "fastdnn", *argv], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def error_lines(stderr):
    """stderr's lines (argparse's usage block is not printed: the usage is in --help)."""
    return stderr.splitlines()


def assert_one_error_line(status, stderr, expected):
    assert "Traceback" not in stderr, stderr
    assert status == 2, (status, stderr)
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert re.match(r"fastdnn( \w+)?: error: ", lines[0]), lines[0]
    assert expected in lines[0], lines[0]


@pytest.fixture
def paths(tmp_path):
    """Names used by the bad invocations: a file, an empty directory, a directory with the cat
    files' names (empty files), a missing directory."""
    (tmp_path / "file.txt").write_text("not a model, not data\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "cats").mkdir()
    for split in ("train", "test"):
        (tmp_path / "cats" / f"{split}_catvnoncat.h5").write_bytes(b"")
    return {"file": str(tmp_path / "file.txt"), "empty": str(tmp_path / "empty"),
            "cats": str(tmp_path / "cats"), "missing": str(tmp_path / "missing"), "tmp": str(tmp_path)}


def case(id, argv, expected):
    return pytest.param(argv, expected, id=id)


BAD = [
    # the command itself
    case("no-command-is-refused", "", "the following arguments are required: COMMAND"),
    case("an-unknown-command-is-refused", "fit", "invalid choice: 'fit'"),
    case("backends-takes-no-options", "backends --device cpu", "unrecognized arguments: --device cpu"),
    case("an-unknown-option-is-named-by-its-command", "demo --nope",
         "fastdnn demo: error: unrecognized arguments: --nope (see: fastdnn demo --help)"),
    # demo
    case("demo-rejects-zero-iterations", "demo --iterations 0", "--iterations: must be a positive integer; got '0'"),
    case("demo-rejects-a-negative-learning-rate", "demo --learning-rate -0.5",
         "--learning-rate: must be a finite number > 0; got '-0.5'"),
    case("demo-rejects-a-hidden-layer-of-zero-units", "demo --hidden 8 0", "--hidden: must be a positive integer"),
    case("demo-rejects-one-example", "demo --m 1", "--m: must be an integer >= 2"),
    case("demo-rejects-two-examples-for-three-spirals", "demo --dataset spirals --m 2", "spirals has 3 classes"),
    case("demo-rejects-an-unknown-activation", "demo --activation swish", "invalid choice: 'swish'"),
    case("demo-rejects-softmax-in-a-hidden-layer", "demo --activation softmax", "invalid choice: 'softmax'"),
    case("demo-rejects-an-unknown-data-set", "demo --dataset mnist", "invalid choice: 'mnist'"),
    case("demo-rejects-the-cat-images", "demo --dataset cats", "invalid choice: 'cats'"),
    case("demo-rejects-a-negative-seed", "demo --seed -1", "--seed: must be an integer from 0 to"),
    case("demo-rejects-a-seed-numpy-cannot-take", "demo --seed 4294967296", "--seed: must be an integer from 0"),
    case("demo-rejects-an-unknown-device", "demo --device tpu", "unknown device 'tpu'; expected auto, cpu, cuda"),
    case("demo-rejects-a-cuda-device-without-a-number", "demo --device cuda:x", "unknown device 'cuda:x'"),
    case("demo-rejects-float16", "demo --dtype float16", "invalid choice: 'float16'"),
    # train: numbers
    case("train-rejects-zero-iterations", "train --iterations 0", "--iterations: must be a positive integer"),
    case("train-rejects-zero-epochs-instead-of-running-3000-iterations", "train --epochs 0",
         "--epochs: must be a positive integer; got '0'"),
    case("train-rejects-iterations-written-as-a-float", "train --iterations 1e3", "got '1e3'"),
    case("train-rejects-epochs-and-iterations-together", "train --epochs 3 --iterations 5",
         "not allowed with argument --epochs"),
    case("train-rejects-a-batch-size-without-epochs", "train --batch-size 32", "--batch-size needs --epochs"),
    case("train-rejects-a-zero-batch-size", "train --epochs 3 --batch-size 0", "--batch-size: must be a positive"),
    case("train-rejects-a-negative-learning-rate", "train --learning-rate -0.01", "must be a finite number > 0"),
    case("train-rejects-a-zero-learning-rate", "train --learning-rate 0", "must be a finite number > 0; got '0'"),
    case("train-rejects-a-nan-learning-rate", "train --learning-rate nan", "got 'nan'"),
    case("train-rejects-an-infinite-learning-rate", "train --learning-rate inf", "got 'inf'"),
    case("train-rejects-a-learning-rate-that-is-no-number", "train --learning-rate fast", "got 'fast'"),
    case("train-rejects-keep-prob-zero", "train --keep-prob 0", "--keep-prob: must be a number in (0, 1]; got '0'"),
    case("train-rejects-keep-prob-above-one", "train --keep-prob 1.5", "must be a number in (0, 1]"),
    case("train-rejects-dropout-without-hidden-layers", "train --hidden --keep-prob 0.5", "no hidden layer"),
    case("train-rejects-a-hidden-layer-of-zero-units", "train --hidden 0", "--hidden: must be a positive integer"),
    case("train-rejects-a-fractional-hidden-size", "train --hidden 2.5", "got '2.5'"),
    case("train-rejects-a-negative-l2", "train --l2 -1", "--l2: must be a finite number >= 0"),
    case("train-rejects-beta-one", "train --optimizer momentum --beta 1", "--beta: must be a number in [0, 1)"),
    case("train-rejects-a-negative-beta2", "train --beta2 -0.1", "--beta2: must be a number in [0, 1)"),
    case("train-rejects-epsilon-zero", "train --epsilon 0", "--epsilon: must be a finite number > 0"),
    case("train-rejects-adam-options-for-gradient-descent", "train --optimizer gd --beta1 0.8",
         "optimizer 'gd' takes none of --beta1"),
    case("train-rejects-adam-options-for-momentum", "train --optimizer momentum --beta2 0.9",
         "optimizer 'momentum' takes none of --beta2 (it takes --beta)"),
    case("train-rejects-an-unknown-optimizer", "train --optimizer sgd", "invalid choice: 'sgd'"),
    case("train-rejects-an-unknown-initializer", "train --init glorot", "invalid choice: 'glorot'"),
    case("train-rejects-verbose-3", "train --verbose 3", "invalid choice: 3"),
    case("train-rejects-a-fractional-seed", "train --seed 1.5", "--seed: must be an integer"),
    case("train-rejects-zero-examples", "train --m 0", "--m: must be an integer >= 2"),
    case("train-rejects-an-unknown-activation", "train --activation swish", "invalid choice: 'swish'"),
    # train: data
    case("train-rejects-cats-without-data", "train --dataset cats", "--dataset cats needs --data"),
    case("train-rejects-course2-without-data", "train --dataset course2", "--dataset course2 needs --data"),
    case("train-rejects-a-missing-data-file", "train --dataset course2 --data {missing}/data.mat", "does not exist"),
    case("train-rejects-data-for-a-generated-set", "train --dataset moons --data {file}",
         "--data is for cats and course2; moons is generated"),
    case("train-rejects-a-size-for-data-from-files", "train --dataset course2 --data {file} --m 50",
         "--m is for the generated data sets"),
    case("train-rejects-a-file-as-the-cats-directory", "train --dataset cats --data {file}", "is not a directory"),
    case("train-rejects-a-cats-directory-without-the-images", "train --dataset cats --data {empty}",
         "has no train_catvnoncat.h5"),
    case("train-rejects-a-directory-as-course2-data", "train --dataset course2 --data {empty}", "is not a file"),
    # train: outputs, checked before training
    case("train-rejects-saving-into-a-missing-directory", "train --save {missing}/m.npz",
         "--save: cannot write '{missing}/m.npz': '{missing}' does not exist"),
    case("train-rejects-saving-under-a-file", "train --save {file}/m.npz", "is not a directory"),
    case("train-rejects-saving-onto-a-directory", "train --save {empty}", "is a directory; expected a file name"),
    case("train-rejects-an-empty-file-name", "train --save=", "--save: must be a file name"),
    case("train-rejects-a-cost-curve-into-a-missing-directory", "train --plot {missing}/c.png", "does not exist"),
    case("train-rejects-a-boundary-into-a-missing-directory", "train --boundary {missing}/b.png", "does not exist"),
    case("train-rejects-a-decision-boundary-of-the-cat-images",
         "train --dataset cats --data {cats} --boundary {tmp}/b.png", "--boundary draws data with two features"),
    # sweep
    case("sweep-rejects-zero-random-draws-instead-of-running-the-grid", "sweep --random 0",
         "--random: must be a positive integer; got '0'"),
    case("sweep-rejects-zero-processes", "sweep --processes 0", "--processes: must be a positive integer"),
    case("sweep-rejects-an-add-that-is-not-json", "sweep --add {{bad", "--add: not valid JSON"),
    case("sweep-rejects-an-add-that-is-a-list", "sweep --add [1]", "--add: must be a JSON object"),
    case("sweep-rejects-an-add-with-a-misspelt-key", 'sweep --add {{"activaton":"tanh"}}',
         "unknown setting 'activaton'"),
    case("sweep-rejects-zero-top-rows", "sweep --top 0", "--top: must be a positive integer"),
    case("sweep-rejects-a-file-as-the-output-directory", "sweep --out {file}", "'{file}' is a file"),
    case("sweep-rejects-an-output-directory-under-a-file", "sweep --out {file}/sweep", "is a file"),
    case("sweep-rejects-a-negative-depth", "sweep --depth 1 -1", "--depth: must be an integer >= 0"),
    case("sweep-rejects-a-zero-width", "sweep --width 0", "--width: must be a positive integer"),
    case("sweep-rejects-a-zero-learning-rate", "sweep --learning-rate 0.1 0", "--learning-rate: must be a finite"),
    case("sweep-rejects-keep-prob-zero", "sweep --keep-prob 0", "--keep-prob: must be a number in (0, 1]"),
    case("sweep-rejects-an-unknown-activation", "sweep --activation relu swish", "invalid choice: 'swish'"),
    case("sweep-rejects-an-unknown-optimizer", "sweep --optimizer sgd", "invalid choice: 'sgd'"),
    case("sweep-rejects-a-zero-batch-size", "sweep --batch-size 0", "--batch-size: must be a positive integer"),
    case("sweep-rejects-zero-epochs", "sweep --epochs 0", "--epochs: must be a positive integer"),
    case("sweep-rejects-the-largest-seed-as-validation-needs-the-next", "sweep --seed 4294967295",
         "must be an integer from 0 to 4294967294"),
    case("sweep-rejects-cats-without-data", "sweep --dataset cats", "--dataset cats needs --data"),
    # deep
    case("deep-rejects-zero-depth", "deep --depth 0", "--depth: must be a positive integer"),
    case("deep-rejects-zero-seeds", "deep --seeds 0", "--seeds: must be a positive integer"),
    case("deep-rejects-a-zero-learning-rate", "deep --learning-rate 0", "--learning-rate: must be a finite"),
    case("train-rejects-an-image-format-matplotlib-cannot-write", "train --plot {tmp}/cost.xyz",
         "--plot '{tmp}/cost.xyz': matplotlib writes"),
    case("train-rejects-two-outputs-in-one-file", "train --save {tmp}/m.npz --onnx {tmp}/m.npz",
         "--save and --onnx name the same file '{tmp}/m.npz'"),
    # bench
    case("bench-rejects-an-unknown-configuration", "bench --config mnist", "invalid choice: 'mnist'"),
    case("bench-rejects-an-empty-configuration-list", "bench --config", "expected at least one argument"),
    case("bench-rejects-an-empty-dtype-list", "bench --dtype", "expected at least one argument"),
    case("bench-rejects-zero-rounds", "bench --rounds 0", "--rounds: must be a positive integer"),
    case("bench-rejects-a-file-as-the-output-directory", "bench --out {file}", "is a file"),
    case("bench-rejects-quick-and-full-together", "bench --quick --full", "not allowed with argument --quick"),
    case("bench-rejects-rounds-on-the-gpu", "bench --gpu --rounds 3", "--rounds is not used with --gpu"),
    case("bench-rejects-an-output-directory-on-the-gpu", "bench --gpu --out {tmp}", "--out is not used with --gpu"),
]


@pytest.mark.parametrize("argv, expected", BAD)
def test_a_mistake_is_one_error_line_exit_2_and_nothing_done(argv, expected, paths, capsys):
    status, out, err = run_main(capsys, argv.format(**paths).split())
    assert_one_error_line(status, err, expected.format(**paths))
    assert out == ""                      # refused before any data was made or any network trained


def test_bench_with_an_unknown_configuration_leaves_earlier_results_alone(tmp_path, capsys):
    (tmp_path / "results.json").write_text("earlier results")
    status, _, _ = run_main(capsys, ["bench", "--config", "nope", "--out", str(tmp_path)])
    assert status == 2 and (tmp_path / "results.json").read_text() == "earlier results"


def test_an_add_that_fails_in_training_is_a_failed_row_not_the_end_of_the_sweep(tmp_path, capsys):
    """--add's values are the sweep's to judge (documented): JSON and keys are checked up front."""
    status, out, err = run_main(capsys, ["sweep", "--epochs", "2", "--device", "numpy", "--processes", "1",
                                         "--out", str(tmp_path / "sweep"), "--add", '{"width": 0}'])
    assert status == 0, err
    assert "2 configurations" in out and "1 finished, 1 failed" in out


def test_sweep_random_draws_that_many_configurations_from_a_learning_rate_range(tmp_path, capsys):
    """(--random with any --seed used to die on a TypeError: the seed was passed twice.)"""
    status, out, err = run_main(capsys, ["sweep", "--random", "3", "--learning-rate", "0.001", "0.1", "--epochs",
                                         "2", "--device", "numpy", "--processes", "1", "--out", str(tmp_path)])
    assert status == 0, err
    assert "3 configurations" in out and "3 finished, 0 failed" in out
    rates = [float(v) for v in re.findall(r"lr=([\d.e-]+)", out)]
    assert len(rates) == 3 and all(0.001 <= r <= 0.1 for r in rates) and len(set(rates)) == 3


# --- errors found while running: one line, exit status 2 ---------------------------------------

def test_a_diverging_cost_is_one_error_line(capsys):
    status, out, err = run_main(capsys, ["train", "--device", "numpy", "--optimizer", "gd", "--learning-rate",
                                         "1e6", "--iterations", "50", "--verbose", "0"])
    assert_one_error_line(status, err, "cost became nan")
    assert "backend 'numpy'" in out and "training accuracy" not in out


def test_an_unreadable_course2_file_is_one_error_line(paths, capsys):
    pytest.importorskip("scipy")
    status, _, err = run_main(capsys, ["train", "--dataset", "course2", "--data", paths["file"]])
    assert_one_error_line(status, err, f"cannot read the course2 data from {paths['file']!r}")


def test_course2_data_of_one_class_is_one_error_line(tmp_path, capsys):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.RandomState(0)
    path = str(tmp_path / "data.mat")
    scipy_io.savemat(path, {"X": rng.rand(20, 2), "y": np.zeros((20, 1)), "Xval": rng.rand(5, 2),
                            "yval": np.ones((5, 1))})
    status, _, err = run_main(capsys, ["train", "--dataset", "course2", "--data", path])
    assert_one_error_line(status, err, "the course2 training labels are all 0: a classifier needs two classes or more")


def test_empty_cat_files_are_one_error_line(paths, capsys):
    pytest.importorskip("h5py")
    status, _, err = run_main(capsys, ["train", "--dataset", "cats", "--data", paths["cats"]])
    assert_one_error_line(status, err, "cannot read the cats data")


def test_a_backend_that_cannot_run_here_is_one_error_line(capsys):
    if any(b.name == "cupy" and b.available for b in fastdnn.available_backends()):
        pytest.skip("cupy can run here")
    status, out, err = run_main(capsys, ["train", "--device", "cupy"])
    assert_one_error_line(status, err, "backend 'cupy' unavailable")
    assert out == ""


def test_the_gpu_benchmark_without_a_gpu_is_one_error_line(capsys):
    if any(b.device == "cuda" and b.available for b in fastdnn.available_backends()):
        pytest.skip("CUDA can run here")
    status, out, err = run_main(capsys, ["bench", "--gpu", "--config", "tiny"])
    assert_one_error_line(status, err, "fastdnn bench: error: --gpu: no CUDA device: ")
    assert out == ""


def test_warnings_are_one_line_each(capsys):
    if any(b.device == "cuda" and b.available for b in fastdnn.available_backends()):
        pytest.skip("CUDA can run here: no fallback warning")
    status, out, err = run_main(capsys, ["train", "--device", "cuda", "--iterations", "2", "--verbose", "0"])
    assert status == 0
    assert [line.split(": ")[:2] for line in err.splitlines()] == [["fastdnn", "warning"]]
    assert "device='cuda' unavailable" in err


def test_an_interrupt_is_one_line_and_exit_status_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_backends", interrupted)
    status, _, err = run_main(capsys, ["backends"])
    assert status == 130 and err == "fastdnn backends: interrupted\n"


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch, capsys):
    """Only the errors the library raises for the user's input become one line; a bug keeps its traceback."""
    def buggy(args):
        raise KeyError("W3")
    monkeypatch.setattr(cli, "_backends", buggy)
    with pytest.raises(KeyError):
        cli.main(["backends"])


# --- in a shell ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["train", "--iterations", "0"], "fastdnn train: error: argument --iterations: must be a positive integer; got '0'"),
    (["train", "--dataset", "cats"], "fastdnn train: error: --dataset cats needs --data"),
    (["train", "--device", "numpy", "--optimizer", "gd", "--learning-rate", "1e6", "--iterations", "50"],
     "fastdnn train: error: cost became nan"),
], ids=["a-bad-value", "a-missing-option", "a-diverging-cost"])
def test_in_a_shell_a_mistake_is_exit_status_2_without_traceback(argv, expected):
    proc = run_process(*argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert error_lines(proc.stderr) == [line for line in error_lines(proc.stderr) if line.startswith(expected)]
    assert len(error_lines(proc.stderr)) == 1, proc.stderr


def test_version_in_a_shell():
    proc = run_process("--version")
    assert proc.returncode == 0 and proc.stdout == f"fastdnn {fastdnn.__version__}\n"


# --- defaults that train well ----------------------------------------------------------------

def accuracy(out):
    return float(re.search(r"training accuracy ([\d.]+) %", out).group(1))


def test_plain_fastdnn_train_trains_well(capsys):
    """The default run (moons, seed 1, the default device): the old [5, 2] ReLU network ended at
    50 % (cost 0.693, every ReLU of its 2-unit layer dead)."""
    status, out, err = run_main(capsys, ["train"])
    assert status == 0, err
    assert accuracy(out) >= 95, out


@pytest.mark.parametrize("seed", range(2, 9))
def test_the_default_settings_train_well_from_other_seeds(seed, capsys):
    status, out, err = run_main(capsys, ["train", "--device", "numpy", "--seed", str(seed), "--verbose", "0"])
    assert status == 0, err
    assert accuracy(out) >= 95, out


def test_train_saves_the_model_the_cost_curve_and_the_boundary(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = ["train", "--epochs", "30", "--learning-rate", "0.01", "--beta1", "0.8", "--device", "numpy",
            "--save", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "c.png"),
            "--boundary", str(tmp_path / "b.png"), "--verbose", "0"]
    status, out, err = run_main(capsys, argv)
    assert status == 0, err
    assert "backend 'numpy'" in out and "training accuracy" in out
    net = fastdnn.load(str(tmp_path / "m.npz"))
    assert net.layer_dims == [2, 8, 8, 1] and net.optimizer.name == "adam" and net.epoch == 30
    assert net.optimizer.beta1 == 0.8
    for name in ("c.png", "b.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_demo_prints_device_costs_and_accuracy(capsys):
    status, out, err = run_main(capsys, ["demo", "--iterations", "300", "--no-bench", "--device", "numpy"])
    assert status == 0, err
    lines = out.splitlines()
    assert "backend 'numpy'" in lines[1] and "on cpu" in lines[1]
    costs = [float(line.split("cost")[1].split()[0]) for line in lines if "cost" in line]
    assert len(costs) >= 5 and costs[-1] < costs[0]
    assert "training accuracy" in lines[-1]


def test_deep_prints_one_row_per_variant(capsys):
    status, out, err = run_main(capsys, ["deep", "--depth", "4", "--iterations", "20", "--seeds", "2",
                                         "--device", "numpy"])
    assert status == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [r.split("|")[2].strip() for r in rows] == ["plain", "residual (skip=2)", "batch norm"]
    assert "[2, 16 x depth hidden, 3]" in out and "chance-level cost ln 3 = 1.099" in out
    assert all(r.split("|")[1].strip() == "4" for r in rows)


def test_backends_lists_every_backend_and_what_each_device_selects(capsys):
    status, out, _ = run_main(capsys, ["backends"])
    assert status == 0 and "numpy" in out and "device='cuda' ->" in out and "device='cpu' ->" in out


# --- help and version -------------------------------------------------------------------------

def test_version(capsys):
    status, out, _ = run_main(capsys, ["--version"])
    assert status == 0 and out == f"fastdnn {fastdnn.__version__}\n"


def test_help_describes_the_program_in_plain_sentences(capsys):
    status, out, _ = run_main(capsys, ["--help"])
    text = " ".join(out.split())
    assert status == 0
    assert 'the "Neural Networks and Deep Learning" course' in text
    assert "`" not in out and text.count(".") >= 2
    for command in ("demo", "train", "sweep", "bench", "backends"):
        assert re.search(rf"\b{command} [a-z]", text), command


def subcommands():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def option_entries(help_text):
    """{'--option': its help entry, whitespace collapsed} from a command's --help."""
    entries = re.split(r"\n  (?=-)", help_text.split("options:", 1)[1])
    return {re.split(r"[ ,=]", " ".join(e.split()))[0]: " ".join(e.split()) for e in entries if e.strip()}


@pytest.mark.parametrize("command", ["demo", "train", "sweep", "bench", "backends"])
def test_every_option_has_help_and_shows_its_default(command, capsys):
    parser = subcommands()[command]
    status, out, _ = run_main(capsys, [command, "--help"])
    assert status == 0 and out.strip()
    entries = option_entries(out)
    for action in parser._actions:
        if not action.option_strings or action.option_strings == ["-h", "--help"]:
            continue
        option = action.option_strings[0]
        text = entries[option]
        assert len(text) > len(option) + 8, f"{command} {option} has no help: {text!r}"
        if action.nargs != 0 and action.default is not None and action.default != []:
            assert "(default:" in text, f"{command} {option} does not show its default: {text!r}"


def test_train_builds_residual_and_batch_normalized_networks(tmp_path, capsys):
    argv = ["train", "--hidden", "8", "8", "8", "8", "--skip", "2", "--projection", "pad", "--batch-norm",
            "--epochs", "5", "--device", "numpy", "--verbose", "0", "--save", str(tmp_path / "m.npz")]
    status, out, err = run_main(capsys, argv)
    assert status == 0, err
    assert "skips [(1, 3)], batch norm" in out
    net = fastdnn.load(str(tmp_path / "m.npz"))
    assert net.skips == [(1, 3)] and net.projection == "pad" and net.batch_norm == [1, 2, 3, 4]


def test_a_skip_the_network_cannot_have_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--hidden", "8", "--skip", "2", "--device", "numpy", "--save", str(tmp_path / "m.npz")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "skip" in err, err
    assert not (tmp_path / "m.npz").exists()


def test_the_train_help_shows_the_defaults_as_typed(capsys):
    status, out, _ = run_main(capsys, ["train", "--help"])
    text = " ".join(out.split())
    assert "--hidden [N ...] units of each hidden layer (none: logistic regression) (default: 8 8)" in text
    assert "--learning-rate RATE α (default: 0.0075)" in text
    assert "(default: None)" not in text
