"""Compile every CUDA kernel for real GPUs without one: PTX via numba.cuda.compile_ptx for a compute
capability, assembled by the CUDA toolkit's ``ptxas -v``; reports registers, spills, local memory.

numba-cuda compiles device functions for "the current device", which needs a driver; here the
compute capability being compiled for stands in for it (``_target_device``), so the PTX is exactly
what a device of that capability would get.
"""
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import types as pytypes
from unittest import mock

import numpy as np

from ..activations import ACTIVATIONS
from ..losses import get_loss
from ..optimizers import OPTIMIZERS
from . import _cuda_kernels as C

CCS = ((8, 0), (9, 0))
DTYPES = ("float32", "float64")


def catalog(dtype):
    """[(name, kernel, argument types)] for every kernel the CUDA backend launches, in this dtype."""
    from numba import types
    f = types.float32 if dtype == "float32" else types.float64
    m2, v1 = f[:, ::1], f[::1]
    out = []
    for name, cls in ACTIVATIONS.items():
        if name == "softmax":
            continue
        act = cls()
        out.append((f"bias_activation[{name}]", C.bias_activation(act, dtype), (m2, m2, m2)))
        out.append((f"delta_row_sum[{name}]", C.delta_row_sum(act, dtype), (m2, m2, m2, m2)))
    for act_name, loss_name in (("sigmoid", "bce"), ("linear", "mse"), ("tanh", "mse")):
        act = ACTIVATIONS[act_name]()
        out.append((f"output_elementwise[{act_name}-{loss_name}]",
                    C.output_elementwise(get_loss(loss_name, act), act, dtype), (m2, m2, m2, m2, f, v1)))
    out.append(("bias_softmax", C.bias_softmax(dtype), (m2, m2, m2)))
    out.append(("output_softmax_ce", C.output_softmax_ce(dtype), (m2, m2, m2, m2, f, v1)))
    out.append(("sum_partials", C.sum_partials(dtype), (v1, v1)))
    for name, cls in OPTIMIZERS.items():
        out.append((f"optimizer_update[{name}]", C.optimizer_update(cls(), dtype),
                    (v1, v1, v1, v1, f, f, f, v1, v1, v1)))
    return out


@contextlib.contextmanager
def _target_device(cc):
    import numba.cuda.dispatcher as dispatcher
    with mock.patch.object(dispatcher, "get_current_device",
                           lambda: pytypes.SimpleNamespace(compute_capability=cc)):
        yield


def compile_ptx(kernel, argtypes, cc):
    from numba import cuda
    with _target_device(cc):
        ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=cc)
    return ptx


def ptxas_binary():
    """ptxas from CUDA_HOME, the standard toolkit location, or PATH (None if absent)."""
    for candidate in (os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "ptxas"),
                      "/usr/local/cuda/bin/ptxas", shutil.which("ptxas") or ""):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def assemble(ptx, cc):
    """ptxas -v for sm_XY: {'registers', 'spill_stores', 'spill_loads', 'stack', 'local'} in bytes."""
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        result = subprocess.run([ptxas_binary(), f"-arch={arch}", "-v", src, "-o", os.path.join(tmp, "k.cubin")],
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ptxas {arch} failed: {result.stderr.strip()}")
    text = result.stderr
    number = lambda pattern: sum(int(x) for x in re.findall(pattern, text)) if re.search(pattern, text) else 0
    return dict(registers=max((int(x) for x in re.findall(r"Used (\d+) registers", text)), default=0),
                spill_stores=number(r"(\d+) bytes spill stores"), spill_loads=number(r"(\d+) bytes spill loads"),
                stack=number(r"(\d+) bytes stack frame"), local=number(r"(\d+) bytes lmem"),
                float64_ops=ptx.count(".f64"))


def report():
    """Rows (kernel, dtype, cc, ptxas figures) for every kernel x dtype x compute capability."""
    rows = []
    for dtype in DTYPES:
        for name, kernel, argtypes in catalog(dtype):
            for cc in CCS:
                rows.append(dict(kernel=name, dtype=dtype, arch=f"sm_{cc[0]}{cc[1]}",
                                 **assemble(compile_ptx(kernel, argtypes, cc), cc)))
    return rows


def markdown(rows):
    from ..bench import markdown_table
    return markdown_table(
        ["kernel", "dtype", "arch", "registers / thread", "spill stores / loads (B)", "stack (B)", "f64 instructions"],
        [(r["kernel"], r["dtype"], r["arch"], r["registers"], f"{r['spill_stores']} / {r['spill_loads']}",
          r["stack"], r["float64_ops"]) for r in rows])


if __name__ == "__main__":          # python -m fastdnn.backends._cuda_ptx > benchmarks/CUDA_KERNELS.md
    import numba
    print("# CUDA kernels compiled for real GPUs (no GPU needed)\n")
    print(f"numba-cuda PTX (`numba.cuda.compile_ptx`, Numba {numba.__version__}) assembled by "
          f"`{ptxas_binary()} -v`. Regenerate with `python -m fastdnn.backends._cuda_ptx > "
          "benchmarks/CUDA_KERNELS.md`; tests/test_cuda_compile.py fails on any spill or local memory.\n")
    print(markdown(report()))
    _ = np
