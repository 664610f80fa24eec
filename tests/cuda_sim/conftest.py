import pytest

import fastdnn

import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from support import BACKENDS, DTYPES  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request):
    return fastdnn.get_backend(request.param)


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param
