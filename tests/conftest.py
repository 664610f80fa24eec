import pytest

import fastdnn

from support import BACKENDS, DTYPES


@pytest.fixture(params=BACKENDS)
def backend(request):
    return fastdnn.get_backend(request.param)


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param
