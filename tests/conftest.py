import os
import warnings

import pytest

import fastdnn
import fastdnn.engine

from support import BACKENDS, DTYPES, NUMBA_PATHS

# Every call waits for its compiled kernels (results bit-identical run to run, compiled paths exercised);
# tests/test_first_call.py turns background compiles on where it tests them.
fastdnn.engine.BACKGROUND_COMPILE = False


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4 (each imports NumPy, Numba, PyTorch,
    JAX; the files are spread whole over the workers, --dist loadfile, so a file's compiled kernels serve its
    tests)."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_configure(config):
    """With test workers (pytest-xdist), one BLAS thread each: the workers already share the cores, and OpenBLAS
    threads waiting on a busy core made steps 100x slower (tests/test_readme.py). Set here, in the controller,
    before it starts the workers, which inherit it."""
    if getattr(config.option, "numprocesses", None):
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return fastdnn.get_backend(request.param)


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param




@pytest.fixture(params=list(NUMBA_PATHS))
def path(request, monkeypatch):
    if "numba" in BACKENDS:
        import fastdnn.backends.numba_backend as nb
        max_work, blas = NUMBA_PATHS[request.param]
        monkeypatch.setattr(nb, "WHOLE_STEP_MAX_WORK", max_work)
        monkeypatch.setattr(nb, "BLAS_WHOLE_STEP", blas)
    return request.param


@pytest.fixture
def fake_cupy():
    """A strict CuPy stand-in installed as ``cupy``/``cupyx`` with two devices (tests/fake_cupy.py);
    yields the StandIn (its ``.cupy`` module, ``.counts``, ``.live_bytes()``). Skips without CuPy, whose
    real package the stand-in checks every name against."""
    pytest.importorskip("cupy", reason="the CuPy stand-in checks names against the real cupy package")
    import fake_cupy as fc
    with fc.installed(devices=2) as stand_in:
        yield stand_in


GPU_BACKENDS = ["cupy", "cupy-fused"]


@pytest.fixture(params=[b for b in BACKENDS if b in ("numpy", "numba")] + GPU_BACKENDS)
def device(request):
    """(backend name, the CuPy stand-in or None): every CPU backend here, and the GPU ones through the strict
    CuPy stand-in with their kernel bodies run on the CPU (tests/fake_cupy.py, tests/cuda_on_cpu.py);
    a test narrows the list with ``@pytest.mark.parametrize("device", [...], indirect=True)``."""
    if request.param in GPU_BACKENDS:
        pytest.importorskip("cupy", reason="the CuPy stand-in checks names against the real cupy package")
        import cuda_on_cpu
        if cuda_on_cpu.compiler_unavailable_reason():
            pytest.skip(cuda_on_cpu.compiler_unavailable_reason())
        import fake_cupy as fc
        with fc.installed(devices=2) as stand_in, warnings.catch_warnings():
            warnings.simplefilter("error", fc.FakeCupyWarning)
            yield request.param, stand_in
    else:
        yield request.param, None
