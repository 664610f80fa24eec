import time

import pytest

import fastdnn.engine
from fastdnn import bench

fastdnn.engine.BACKGROUND_COMPILE = False     # time compiled code, never steps run while it compiles

# run untimed (CI: --benchmark-disable) on these configurations / layer sizes only; the others are
# the same code on larger arrays and cost most of the time, so only timed runs take them
SMOKE_CONFIGS = ("tiny", "mnist-256", "moons-b64", "planar-[2,4,1]")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """A plain `pytest` runs every benchmark once, untimed (so they cannot rot);
    `pytest benchmarks --benchmark-only` (or --benchmark-enable) times them."""
    if not (config.getoption("benchmark_only") or config.getoption("benchmark_enable")):
        config.option.benchmark_disable = True
    elif getattr(config.option, "numprocesses", None):
        config.option.numprocesses, config.option.dist = 0, "no"     # timed: one process (no test workers)
    config.addinivalue_line("markers", "large: a benchmark on a large configuration, run only when timed "
                                       "(--benchmark-enable / --benchmark-only)")


def pytest_collection_modifyitems(config, items):
    """Untimed runs deselect the benchmarks marked large (the checks in test_bench_checks.py stay)."""
    if not config.getoption("benchmark_disable", False):
        return
    large = [item for item in items if item.get_closest_marker("large")]
    if large:
        config.hook.pytest_deselected(items=large)
        items[:] = [item for item in items if not item.get_closest_marker("large")]


def configs(all_configs):
    """pytest params for configurations, the ones outside SMOKE_CONFIGS marked large."""
    return [pytest.param(c, id=c.name, marks=() if c.name in SMOKE_CONFIGS else pytest.mark.large)
            for c in all_configs]


@pytest.fixture(autouse=True)
def settle(request):
    """Let BLAS / OpenMP worker threads of the previous benchmark stop spinning before timing."""
    if not request.config.getoption("benchmark_disable", False):
        time.sleep(bench.SETTLE_S)
    yield
