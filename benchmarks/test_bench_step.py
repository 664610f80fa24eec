"""One whole training step per group (configuration x dtype); rows: every implementation. Then one
shuffled Adam epoch per group of the mini-batch section.

    pytest benchmarks --benchmark-enable --benchmark-only          # timed, one table per group
CI runs the same files with --benchmark-disable: each benchmark once, on the small configurations
only (conftest.SMOKE_CONFIGS), so none of it can rot; what the candidates compute is checked in
test_bench_checks.py.
"""
import pytest

from conftest import configs
from fastdnn import bench
from fastdnn.backends import available_backends

BACKENDS = [b.name for b in available_backends() if b.available]
IMPLS = ["floor", *BACKENDS, "numba-without-update", "numba-fit-loop", "loop-examples", "loop-scalar",
         "loop-numba", "torch-autograd", "torch-hand", "jax-step", "jax-loop"]
EPOCH_IMPLS = ["batch-step", *BACKENDS, "torch", "jax", "sklearn"]


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
    if impl in ("loop-numba", "numba-without-update", "numba-fit-loop") and "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    if impl == "numba-without-update":
        return bench.network_step(config, dtype, "numba", update=False)
    if impl == "numba-fit-loop":
        return bench.network_fit_loop(config, dtype, "numba")
    if impl == "loop-numba":
        return bench.scalar_loop(config, dtype, 0.05, compiled=True)
    if impl.startswith("jax"):
        pytest.importorskip("jax", reason="JAX rows need the 'bench' extra")
        return (bench.jax_step if impl == "jax-step" else bench.jax_loop)(config, dtype)
    pytest.importorskip("torch", reason="PyTorch rows need the 'bench' extra")
    return (bench.torch_autograd if impl == "torch-autograd" else bench.torch_by_hand)(config, dtype)


def build_epoch(impl, config, dtype):
    if impl == "batch-step":
        return bench.network_batch_step(config, dtype, "numba" if "numba" in BACKENDS else "numpy")
    if impl in BACKENDS:
        return bench.network_epoch(config, dtype, impl)
    module = {"torch": "torch", "jax": "jax", "sklearn": "sklearn"}[impl]
    pytest.importorskip(module, reason=f"{impl} rows need the 'bench' extra")
    return {"torch": bench.torch_adam_epoch, "jax": bench.jax_adam_epoch,
            "sklearn": bench.sklearn_adam_epoch}[impl](config, dtype)


def time_it(benchmark, candidate, group):
    candidate.run()                                     # warm-up outside the timing (JIT, threads)
    benchmark.group = group
    benchmark.extra_info.update(backend=candidate.backend, device=candidate.device,
                                extrapolation_factor=candidate.scale, steps_per_call=candidate.steps)
    benchmark(candidate.run)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", configs(bench.CONFIGS))
def test_step(benchmark, config, dtype, impl):
    if impl.startswith("jax") and benchmark.disabled and config.name != "tiny":
        pytest.skip("untimed: JAX compiles for seconds; tiny and test_bench_checks.py cover it")
    time_it(benchmark, build(impl, config, dtype), f"step {config.name} {config.layer_dims} m={config.m} {dtype}")


@pytest.mark.parametrize("impl", EPOCH_IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", configs(bench.MINIBATCH_CONFIGS))
def test_epoch(benchmark, config, dtype, impl):
    """One call: an epoch of m / B Adam steps (divide by steps_per_call for a step); batch-step: one step."""
    time_it(benchmark, build_epoch(impl, config, dtype),
            f"epoch {config.name} {config.layer_dims} m={config.m} B={config.batch_size} {dtype}")


@pytest.mark.parametrize("hidden", bench.HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", configs(bench.ACTIVATION_CONFIGS))
def test_hidden_activation(benchmark, config, dtype, hidden):
    """One call: k full-batch steps inside fit (divide by steps_per_call); a group per network, a row per
    hidden activation (the hidden-activation section of ``fastdnn bench``)."""
    backend = "numba" if "numba" in BACKENDS else "numpy"
    time_it(benchmark, bench.network_fit_loop(config._replace(hidden=hidden), dtype, backend),
            f"activations {config.name} {config.layer_dims} m={config.m} {dtype}")
