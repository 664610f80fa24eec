"""One whole training step per group (configuration x dtype); rows: every implementation.

    pytest benchmarks --benchmark-enable --benchmark-only          # timed, one table per group
CI runs the same file with --benchmark-disable (each benchmark once), so none of it can rot.
"""
import pytest

from fastdnn import bench
from fastdnn.backends import available_backends

BACKENDS = [b.name for b in available_backends() if b.available]
IMPLS = ["floor", *BACKENDS, "numba-without-update", "loop-examples", "loop-scalar", "loop-numba",
         "torch-autograd", "torch-hand"]


def build(impl, config, dtype):
    if impl == "floor":
        return bench.gemm_floor(config, dtype)
    if impl in BACKENDS:
        return bench.network_step(config, dtype, impl)
    if impl == "loop-examples":
        return bench.per_example_loop(config, dtype, budget_s=0.05)
    if impl == "loop-scalar":
        if sum(a * b for a, b in zip(config.layer_dims, config.layer_dims[1:])) > 1000:
            pytest.skip("scalar Python loops: small sizes only")
        return bench.scalar_loop(config, dtype, 0.05, compiled=False)
    if impl in ("loop-numba", "numba-without-update") and "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    if impl == "numba-without-update":
        return bench.network_step(config, dtype, "numba", update=False)
    if impl == "loop-numba":
        return bench.scalar_loop(config, dtype, 0.05, compiled=True)
    pytest.importorskip("torch", reason="PyTorch rows need the 'bench' extra")
    return (bench.torch_autograd if impl == "torch-autograd" else bench.torch_by_hand)(config, dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", bench.CONFIGS, ids=[c.name for c in bench.CONFIGS])
def test_step(benchmark, config, dtype, impl):
    candidate = build(impl, config, dtype)
    candidate.run()                                     # warm-up outside the timing (JIT, threads)
    benchmark.group = f"step {config.name} {config.layer_dims} m={config.m} {dtype}"
    benchmark.extra_info.update(backend=candidate.backend, device=candidate.device,
                                extrapolation_factor=candidate.scale)
    benchmark(candidate.run)
