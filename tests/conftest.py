import pytest

import fastdnn

from support import BACKENDS, DTYPES


@pytest.fixture(params=BACKENDS)
def backend(request):
    return fastdnn.get_backend(request.param)


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param


# The numba backend's three ways of running a step, forced whatever the network's size: one
# compiled call with GEMMs as loops, or through BLAS; op by op from Python.
NUMBA_PATHS = {"whole-step": (10**12, False), "blas-step": (0, True), "per-op": (0, False)}


@pytest.fixture(params=list(NUMBA_PATHS))
def path(request, monkeypatch):
    if "numba" in BACKENDS:
        import fastdnn.backends.numba_backend as nb
        max_work, blas = NUMBA_PATHS[request.param]
        monkeypatch.setattr(nb, "WHOLE_STEP_MAX_WORK", max_work)
        monkeypatch.setattr(nb, "BLAS_WHOLE_STEP", blas)
    return request.param
