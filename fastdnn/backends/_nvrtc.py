"""Compile CUDA C sources for real GPUs without one: NVRTC through ``cuda.bindings.nvrtc``, to a cubin
for sm_80 / sm_90, strictly (warnings are errors, register spills and local memory are errors), with
the resource figures of ptxas (``-v``, inside NVRTC) and, when present, ``cuobjdump -res-usage`` on
the very cubin. Also: what CuPy would hand to NVRTC for a ``cupy.RawKernel`` (:func:`cupy_request`),
so CI compiles exactly what a GPU would run.

Used by tests/test_cupy_kernels_compile.py and by the GPU acceptance check. Imports nothing heavy at
module level; :func:`unavailable_reason` says why NVRTC cannot be used here (None: it can).
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections import namedtuple

ARCHS = ("sm_80", "sm_90")

# What CuPy adds to a RawKernel's own options on its way to NVRTC (cupy/cuda/compiler.py, CuPy 13-14):
# '-ftz=true' (_compile_with_cache_cuda), the architecture '-arch=sm_XX' and
# '--device-as-default-execution-space' (_compile_using_nvrtc). The include directories and
# '--std=c++17' come from cupy._core.core.compile_with_cache and are captured by cupy_request().
CUPY_ADDED = ("-ftz=true", "--device-as-default-execution-space")

# Strict checks for CI: every front-end warning an error, implicit narrowing conversions (such as a
# double result stored into a float) warned, hence errors; ptxas verbose, and spills or local memory
# (stack) errors.
STRICT = ("-Werror=all-warnings", "-Wconversion", "--ptxas-options=-v", "--ptxas-options=--warn-on-spills",
          "--ptxas-options=--warn-on-local-memory-usage", "--ptxas-options=--warning-as-error")

Compiled = namedtuple("Compiled", "cubin ptx log resources options")
Compiled.__doc__ = """An NVRTC result: cubin and PTX bytes, the compile log (ptxas -v output included
when asked), resources {kernel name: {'registers', 'spill_stores', 'spill_loads', 'stack', 'smem',
'barriers'}} parsed from that log, and the options used."""


class CompileError(RuntimeError):
    """NVRTC rejected a source, or (strict) its log holds a warning."""


def unavailable_reason():
    """Why NVRTC cannot compile here (None when it can): cuda.bindings missing or libnvrtc not loadable."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        return f"cuda.bindings is not installed (pip install cuda-bindings nvidia-cuda-nvrtc): {exc}"
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:           # noqa: BLE001  (the binding raises its own loader errors)
        return f"libnvrtc cannot be loaded: {type(exc).__name__}: {exc}"
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return f"nvrtcVersion failed: {err}"
    return None


def version():
    """NVRTC's (major, minor) version."""
    from cuda.bindings import nvrtc
    _, major, minor = nvrtc.nvrtcVersion()
    return major, minor


def supported_archs():
    """The real architectures this NVRTC compiles for, as 'sm_XY' strings."""
    from cuda.bindings import nvrtc
    err, archs = nvrtc.nvrtcGetSupportedArchs()
    _check(nvrtc, err, "nvrtcGetSupportedArchs")
    return [f"sm_{a}" for a in archs]


def _check(nvrtc, err, what, log=""):
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise CompileError(f"{what}: {err.name}" + (f"\n{log}" if log else ""))


def _bytes(getter_size, getter, prog, nvrtc, what):
    err, size = getter_size(prog)
    _check(nvrtc, err, what)
    buf = b" " * size
    (err,) = getter(prog, buf)
    _check(nvrtc, err, what)
    return buf


def compile_source(source, arch="sm_80", options=(), strict=True, filename="fastdnn_kernel.cu"):
    """Compile a CUDA C source with NVRTC to a cubin for ``arch`` ('sm_80', ...): Compiled. With
    ``strict``, STRICT options are added and any 'warning' left in the log raises CompileError."""
    from cuda.bindings import nvrtc
    opts = [f"--gpu-architecture={arch}", *options, *(STRICT if strict else ())]
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], [])
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        log = _bytes(nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog, prog, nvrtc, "log")
        log = log.rstrip(b"\0 ").decode(errors="replace")
        _check(nvrtc, result, f"NVRTC {arch} failed (options {' '.join(opts)})", log)
        if strict and re.search(r"\bwarning\b", log, re.IGNORECASE):
            raise CompileError(f"NVRTC {arch}: warning in the log (options {' '.join(opts)}):\n{log}")
        cubin = _bytes(nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN, prog, nvrtc, "cubin")
        ptx = _bytes(nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX, prog, nvrtc, "ptx").rstrip(b"\0")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return Compiled(cubin, ptx.decode(errors="replace"), log, resources_from_log(log), tuple(opts))


def resources_from_log(log):
    """{kernel: {'registers', 'barriers', 'smem', 'stack', 'spill_stores', 'spill_loads'}} from ptxas -v."""
    out, current = {}, None
    for line in log.splitlines():
        entry = re.search(r"Compiling entry function '([^']+)'", line)
        if entry:
            current = out.setdefault(entry.group(1), {})
            continue
        if current is None:
            continue
        for key, pattern in (("stack", r"(\d+) bytes stack frame"), ("spill_stores", r"(\d+) bytes spill stores"),
                             ("spill_loads", r"(\d+) bytes spill loads"), ("registers", r"Used (\d+) registers"),
                             ("barriers", r"used (\d+) barriers"), ("smem", r"(\d+) bytes smem")):
            found = re.search(pattern, line)
            if found:
                current[key] = int(found.group(1))
    for figures in out.values():
        figures.setdefault("smem", 0)
    return out


def f64_instructions(ptx):
    """How many PTX instructions work on float64 values (lines with a '.f64' type)."""
    return sum(1 for line in ptx.splitlines() if ".f64" in line and not line.lstrip().startswith("//"))


# --- the CUDA toolkit's binary tools -------------------------------------------------------------------
def tool(name):
    """Path of a CUDA binary tool (cuobjdump, nvdisasm, ptxas) from CUDA_HOME, /usr/local/cuda*, the
    pip 'nvidia' packages or PATH; None when absent."""
    roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    roots += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    try:
        import nvidia
        roots += [p for base in nvidia.__path__ for p in sorted(glob.glob(os.path.join(base, "cu*")))]
    except ImportError:
        pass
    for root in roots:
        path = os.path.join(root, "bin", name)
        if root and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def cuobjdump_resources(cubin):
    """{kernel: {'REG', 'STACK', 'SHARED', 'LOCAL', ...}} from ``cuobjdump -res-usage`` on a cubin
    (None when cuobjdump is absent)."""
    binary = tool("cuobjdump")
    if binary is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        result = subprocess.run([binary, "-res-usage", path], capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"cuobjdump -res-usage failed: {result.stderr.strip()}")
    out, current = {}, None
    for line in result.stdout.splitlines():
        found = re.match(r"\s*Function (\S+):", line)
        if found:
            current = out.setdefault(found.group(1), {})
        elif current is not None:
            current.update({k: int(v) for k, v in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line)})
    return out


# --- what CuPy compiles -------------------------------------------------------------------------------
CupyRequest = namedtuple("CupyRequest", "source options")


def cupy_request(kernel):
    """(source, options) that CuPy passes to its NVRTC compile for ``kernel`` (a cupy.RawKernel), found
    without a GPU: the call RawKernel makes (``cupy._core.core.compile_with_cache(code, options,
    prepend_cupy_headers=False, ...)``, cupy/_core/raw.pyx ``_get_raw_module``) is made with CuPy's
    cache-and-compile step replaced by a recorder. Add CUPY_ADDED and the architecture to get the full
    NVRTC command. Raises RuntimeError if this CuPy's internals differ from what is expected."""
    from cupy._core import core
    from cupy.cuda import compiler

    recorded = {}

    class _Recorded(Exception):
        pass

    def recorder(source, options=(), **_):
        recorded.update(source=source, options=tuple(options))
        raise _Recorded

    original = getattr(compiler, "_compile_module_with_cache", None)
    if original is None:
        raise RuntimeError("cupy.cuda.compiler._compile_module_with_cache is gone: update cupy_request")
    compiler._compile_module_with_cache = recorder
    try:
        core.compile_with_cache(kernel.code, kernel.options, prepend_cupy_headers=False,
                                backend=kernel.backend, translate_cucomplex=False,
                                enable_cooperative_groups=kernel.enable_cooperative_groups,
                                name_expressions=None, log_stream=None, jitify=False)
    except _Recorded:
        pass
    finally:
        compiler._compile_module_with_cache = original
    if not recorded:
        raise RuntimeError("CuPy did not reach its compile step: update cupy_request")
    return CupyRequest(recorded["source"], recorded["options"])


def compile_like_cupy(kernel, arch, strict=True):
    """Compile a cupy.RawKernel's source as CuPy would (its recorded options + CUPY_ADDED) for arch."""
    request = cupy_request(kernel)
    return compile_source(request.source, arch, options=request.options + CUPY_ADDED, strict=strict)
