"""The README cannot rot: every ```python block runs, each on its own in a fresh interpreter and an
empty directory, and every ```sh block's `fastdnn ...` commands run, each within a time budget.

Markers, an HTML comment on the line right before a block (invisible on GitHub):
- ``<!-- requires: onnxruntime sklearn -->``: the importable modules the block needs beyond NumPy
  and fastdnn; the block is skipped, naming the missing one, when one is absent. Every module the
  block imports at top level must be listed (checked), so the marker cannot rot either.
- ``<!-- skip: why -->``: the block is never run here (installs, mpiexec, a GPU, minutes of
  benchmarks); the reason is required and shown in the skip.
A ```sh block that is not skipped may hold only `fastdnn` commands (one per line, ``\\`` continues
a line, ``#`` starts a comment); each runs as ``python -m fastdnn ...``.
"""
import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BUDGET_S = 60            # one block; the whole README takes about 40 s on this project's 2 cores
STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
ALWAYS_THERE = {"numpy", "fastdnn"}

_BLOCK = re.compile(r"(?:<!--\s*(?P<kind>skip|requires):(?P<what>[^>]*?)-->\s*\n)?"
                    r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)


def blocks(text=None):
    """(lang, code, marker kind or None, marker text, line number) of every fenced block."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("lang")) + 1
        found.append((match["lang"], match["code"], match["kind"], (match["what"] or "").strip(), line))
    return found


def _cases(lang):
    return [pytest.param(code, kind, what, id=f"line{line}")
            for block_lang, code, kind, what, line in blocks() if block_lang == lang]


def _environment():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MPLBACKEND="Agg", PYTHONIOENCODING="utf-8",
               # one BLAS thread: on a machine busier than its cores, OpenBLAS's threads made a step of
               # [2, 64, 64, 1] on 256 examples 100 ms instead of 0.4 ms (measured here, load 7 on 2 cores)
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("FASTDNN_MPI_CUDA_AWARE", None)
    return env


def _run(argv, cwd):
    start = time.perf_counter()
    try:
        run = subprocess.run(argv, cwd=cwd, env=_environment(), capture_output=True, text=True,
                             encoding="utf-8", timeout=BUDGET_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv[:3]}... took more than {BUDGET_S} s: make the README's example smaller")
    assert run.returncode == 0, f"{shlex.join(argv)}\nexit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run, time.perf_counter() - start


def _top_level_imports(code):
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _skip_unless_available(modules):
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"this README example needs {module}, which is not installed")


def test_the_readme_has_examples_of_both_kinds_and_every_marker_is_well_formed():
    found = blocks()
    assert sum(lang == "python" for lang, *_ in found) >= 5 and sum(lang == "sh" for lang, *_ in found) >= 5
    for lang, code, kind, what, line in found:
        assert lang in ("python", "sh", "") or kind == "skip", \
            f"README line {line}: a ```{lang} block is neither run nor marked <!-- skip: why -->"
        if kind == "skip":
            assert len(what) >= 10, f"README line {line}: <!-- skip: ... --> must say why it is not run"
        if kind == "requires":
            assert what and lang == "python", f"README line {line}: requires: names modules, for python"
    text = README.read_text(encoding="utf-8")
    markers = len(re.findall(r"<!--\s*(?:skip|requires):", text))
    stray = markers - sum(kind is not None for _, _, kind, _, _ in found)
    assert stray == 0, "a <!-- skip/requires --> marker that is not on the line right before a block"


def test_the_block_parser_reads_markers_and_refuses_reasonless_skips():
    text = ("x\n<!-- skip: needs a GPU -->\n```sh\nfastdnn bench --gpu\n```\n\n```python\nprint(1)\n```\n"
            "<!-- requires: sklearn onnx -->\n```python\nimport sklearn\n```\n")
    assert blocks(text) == [("sh", "fastdnn bench --gpu\n", "skip", "needs a GPU", 3),
                            ("python", "print(1)\n", None, "", 7),
                            ("python", "import sklearn\n", "requires", "sklearn onnx", 11)]
    assert _top_level_imports("import a.b\nfrom c.d import e\nfrom . import f\nimport g as h\n") == {"a", "c", "g"}
    with pytest.raises(pytest.skip.Exception, match="needs no_such_module_here, which is not installed"):
        _skip_unless_available(["numpy", "no_such_module_here"])
    assert _commands("fastdnn a --b 1 \\\n    --c 2   # comment\n\n# only a comment\nfastdnn --version\n") == [
        ["fastdnn", "a", "--b", "1", "--c", "2"], ["fastdnn", "--version"]]


@pytest.mark.parametrize("code, kind, what", _cases("python"))
def test_python_example_runs(code, kind, what, tmp_path):
    if kind == "skip":
        pytest.skip(f"README example not run here: {what}")
    required = set(what.split()) if kind == "requires" else set()
    unlisted = _top_level_imports(code) - STDLIB - ALWAYS_THERE - required
    assert not unlisted, f"the example imports {sorted(unlisted)}: list them in <!-- requires: ... -->"
    _skip_unless_available(sorted(required))
    _run([sys.executable, "-c", code], tmp_path)


def _commands(code):
    """The block's commands, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


@pytest.mark.parametrize("code, kind, what", _cases("sh"))
def test_shell_example_runs(code, kind, what, tmp_path):
    if kind == "skip":
        pytest.skip(f"README command not run here: {what}")
    commands = _commands(code)
    assert commands
    for argv in commands:
        assert argv[0] == "fastdnn", (f"README command {shlex.join(argv)!r} is not a fastdnn command: "
                                      "mark its block <!-- skip: why -->")
        _run([sys.executable, "-m", "fastdnn", *argv[1:]], tmp_path)


# --- the README's two commands install on Linux, macOS and Windows --------------------------------

PLATFORMS = {   # PEP 508 environments: what `pip install -e ".[dev]"` sees on each platform
    "linux": dict(sys_platform="linux", platform_machine="x86_64", platform_release="6.8.0"),
    "macos-arm64": dict(sys_platform="darwin", platform_machine="arm64", platform_release="24.1.0"),
    "macos-x86_64": dict(sys_platform="darwin", platform_machine="x86_64", platform_release="23.6.0"),
    "windows": dict(sys_platform="win32", platform_machine="AMD64", platform_release="10"),
}
LINUX_ONLY = {"cupy-cuda12x", "nvidia-cuda-nvrtc", "cuda-bindings", "nvidia-cuda-cuobjdump"}   # no macOS wheels
NOT_WINDOWS = {"mpi4py", "mpich"}          # mpi4py there needs Microsoft MPI, installed by hand


def _pyproject():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _installed(requirements, environment):
    from packaging.requirements import Requirement
    reqs = [Requirement(r) for r in requirements]
    return {r.name for r in reqs if r.marker is None or r.marker.evaluate(environment)}


def test_dev_installs_on_every_platform_with_only_what_exists_there():
    dev = _pyproject()["project"]["optional-dependencies"]["dev"]
    for platform, environment in PLATFORMS.items():
        names = _installed(dev, environment)
        assert {"pytest", "numba", "onnxruntime", "scikit-learn", "tqdm"} <= names, platform
        if platform == "linux":
            assert LINUX_ONLY | NOT_WINDOWS | {"torch"} <= names
        else:
            assert not names & LINUX_ONLY, (platform, names & LINUX_ONLY)
        assert ("torch" in names) == (platform != "macos-x86_64"), platform   # no Intel-Mac wheels
        assert bool(names & NOT_WINDOWS) == (platform != "windows"), platform


def test_every_user_extra_brings_the_progress_bar():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"numba", "cuda12", "cuda13", "sklearn", "onnx", "plot", "mpi"} <= set(extras)
    for name, requirements in extras.items():
        assert "tqdm" in _installed(requirements, PLATFORMS["linux"]), f"the {name!r} extra lacks tqdm"


def test_license_version_and_type_marker_are_declared_once():
    import fastdnn
    project = _pyproject()
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastdnn.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", fastdnn.__version__)
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["fastdnn"]
    assert (ROOT / "fastdnn" / "py.typed").is_file()
    requires = project["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in requires), \
        "an SPDX license string needs setuptools >= 77 (PEP 639)"
    classifiers = project["project"]["classifiers"]
    assert "Typing :: Typed" in classifiers and not any(c.startswith("License ::") for c in classifiers)
