import time

import pytest

from fastdnn import bench


@pytest.fixture(autouse=True)
def settle(request):
    """Let BLAS / OpenMP worker threads of the previous benchmark stop spinning before timing."""
    if not request.config.getoption("benchmark_disable", False):
        time.sleep(bench.SETTLE_S)
    yield
