"""Runs tests/cuda_sim in its own process with the CUDA simulator on (it must be enabled before numba
is imported, which this process has already done)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (the cuda12/cuda13/dev extras)")


def test_cuda_kernels_pass_in_the_simulator():
    here = os.path.dirname(__file__)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(here, "cuda_sim")], cwd=os.path.join(here, ".."), env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout.splitlines()[-1]
