import time

import pytest

from fastdnn import bench


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """A plain `pytest` runs every benchmark once, untimed (so they cannot rot);
    `pytest benchmarks --benchmark-only` (or --benchmark-enable) times them."""
    if not (config.getoption("benchmark_only") or config.getoption("benchmark_enable")):
        config.option.benchmark_disable = True


@pytest.fixture(autouse=True)
def settle(request):
    """Let BLAS / OpenMP worker threads of the previous benchmark stop spinning before timing."""
    if not request.config.getoption("benchmark_disable", False):
        time.sleep(bench.SETTLE_S)
    yield
