"""The GPU acceptance check (``fastdnn gpu-check``): the first thing to run on a machine with an NVIDIA GPU.

For every GPU backend (``cupy``, ``cupy-fused``) x dtype, in under 2 minutes: full-batch and mini-batch
``fit`` against the ``numpy`` backend (same seed; trained tolerances float64 1e-10, float32 5e-4);
training steps queued with synchronizations refused; device memory over 100 ``predict`` calls; the
same on ``cuda:1`` when it exists; launches and GEMMs per step; then the GPU benchmark. Prints a
report (PASS / FAIL / n/a per check, with its numbers); :func:`main` returns 1 on any FAIL.

What "no synchronization in a step" checks, exactly: (1) the steps run inside
``cupyx.allow_synchronize(False)`` where the installed CuPy has it (deprecated since CuPy 10, it only
catches the synchronizations CuPy declares: ``ndarray.get``, ``Device.synchronize``, ...); (2) the
stream is first held by a kernel that spins ``HOLD_S`` seconds on the device, then the steps are
queued: if the host finishes queuing them while the hold is still running (``Event.done`` false), no
step waited for the device, whatever the call (a CuPy read, ``float()``, a stream or device sync, a
blocking copy; in CuPy or cuBLAS). On a device that does not run asynchronously (the tests' CuPy
stand-in) (2) reports n/a.
"""
import contextlib
import time
import warnings
from collections import namedtuple

import numpy as np

from . import gpu_bench
from .backends import _cuda_device

BACKENDS = ("cupy", "cupy-fused")
DTYPES = ("float64", "float32")
TRAINED = {"float64": 1e-10, "float32": 5e-4}      # as tests/test_gpu_path.py, after several steps
HOLD_S = 2.0
LAYER_DIMS = (6, 32, 16, 1)
BENCH_CONFIGS = ("tiny", "mnist-256")
HOLD_SOURCE = r'''
extern "C" __global__ void fdnn_hold(long long ns) {
#if defined(__CUDACC__)
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < (unsigned long long)ns);
#else
    (void)ns;
#endif
}
'''

Check = namedtuple("Check", "name ok detail")
Check.__doc__ = "One line of the report: ok is True (PASS), False (FAIL) or None (n/a)."


def problem(m=300, seed=0):
    """X (6, m) standard normal and Y (1, m) in {0, 1}: a separable-ish binary problem."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((LAYER_DIMS[0], m))
    Y = (X[:1] + 0.5 * X[1:2] ** 2 + 0.3 * rng.standard_normal((1, m)) > 0.4).astype(np.float64)
    return X, Y


def _max_diff(gpu, cpu):
    """max |gpu - cpu| / max(1, |cpu|) over the parameters of two networks."""
    a, b = gpu.parameters, cpu.parameters
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]) / max(1.0, float(np.abs(b[k]).max()))))
               for k in b)


def check_fit(backend, dtype, device, mode):
    """fit on backend:device vs numpy (same seed): parameters and reported costs within TRAINED[dtype]."""
    from . import Network
    X, Y = problem()
    fit = dict(iterations=20, optimizer="gd", learning_rate=0.05, report_every=5) if mode == "full-batch" else \
        dict(epochs=2, batch_size=64, optimizer="adam", learning_rate=0.01, seed=3)
    nets = [Network(list(LAYER_DIMS), device=d, dtype=dtype, seed=5, l2=0.01)
            for d in (f"{backend}:{device}", "numpy")]
    hists = [n.fit(X, Y, verbose=0, **fit) for n in nets]
    costs = [np.array([r.cost for r in h], np.float64) for h in hists]
    diff = max(_max_diff(*nets), float(np.max(np.abs(costs[0] - costs[1]) / np.maximum(1.0, np.abs(costs[1])))))
    ok = diff <= TRAINED[dtype] and nets[0].backend.name == backend
    return Check(f"{mode} fit {backend}:{device} {dtype} vs numpy", ok,
                 f"max relative difference {diff:.2e} (tolerance {TRAINED[dtype]:g}) on {nets[0].backend.name}")


def _allow_synchronize_false():
    """cupyx.allow_synchronize(False) without its deprecation warning, or None where CuPy lacks it."""
    import cupyx
    allow = getattr(cupyx, "allow_synchronize", None)
    if allow is None:
        return None

    @contextlib.contextmanager
    def refused():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm = allow(False)
            cm.__enter__()
        try:
            yield
        finally:
            cm.__exit__(None, None, None)
    return refused


def check_no_sync(backend, dtype, device, steps=5, step_guard=None):
    """``steps`` training steps queued behind a HOLD_S device hold, synchronizations refused (see the
    module docstring for exactly what that checks)."""
    from . import Network
    cp = _cuda_device.cupy()
    net = Network(list(LAYER_DIMS), device=f"{backend}:{device}", dtype=dtype, seed=1)
    Xd, Yd = net.prepare(*problem())
    refuse = _allow_synchronize_false()
    name = f"training steps without synchronization {backend}:{device} {dtype}"
    with net.backend.device_scope():
        hold = cp.RawKernel(HOLD_SOURCE, "fdnn_hold")
        net.engine.begin_call()
        net.engine.train_step(Xd, Yd, 1e-3, check=False)          # workspaces, kernels compiled
        hold((1,), (1,), (np.int64(0),))
        cp.cuda.get_current_stream().synchronize()
        held = cp.cuda.Event()
        hold((1,), (1,), (np.int64(int(HOLD_S * 1e9)),))
        held.record()
        held_before = held.done
        start = time.perf_counter()
        try:
            with (refuse() if refuse else contextlib.nullcontext()), \
                    (step_guard() if step_guard else contextlib.nullcontext()):
                for _ in range(steps):
                    net.engine.train_step(Xd, Yd, 1e-3, check=False)
        except Exception as exc:          # noqa: BLE001  DeviceSynchronized, or the guard's own error
            cp.cuda.get_current_stream().synchronize()
            return Check(name, False, f"a step synchronized: {type(exc).__name__}: {exc}")
        queued_s, held_after = time.perf_counter() - start, held.done
        cp.cuda.get_current_stream().synchronize()
    how = "cupyx.allow_synchronize(False): none refused" if refuse else "cupyx.allow_synchronize: not in this CuPy"
    if held_before:
        return Check(name, True if refuse or step_guard else None,
                     f"{how}; host ran ahead: n/a (the device finished the {HOLD_S:g} s hold at once: not asynchronous)")
    ok = not held_after
    ahead = (f"the host queued {steps} steps in {queued_s * 1e3:.1f} ms while the device was held {HOLD_S:g} s"
             if ok else f"queuing {steps} steps waited for the device ({queued_s:.2f} s, hold {HOLD_S:g} s)")
    return Check(name, ok, f"{how}; {ahead}")


def check_memory(backend, dtype, device, calls=100):
    """Device memory in use (cupy.get_default_memory_pool().used_bytes()) the same before and after
    ``calls`` predict calls (after a first one)."""
    import gc
    from . import Network
    cp = _cuda_device.cupy()
    net = Network(list(LAYER_DIMS), device=f"{backend}:{device}", dtype=dtype, seed=1)
    X, _ = problem()
    net.predict(X)
    gc.collect()
    with net.backend.device_scope():
        before = cp.get_default_memory_pool().used_bytes()
        for _ in range(calls):
            net.predict(X)
        gc.collect()
        after = cp.get_default_memory_pool().used_bytes()
    return Check(f"device memory over {calls} predict calls {backend}:{device} {dtype}", after == before,
                 f"used_bytes {before:,} before, {after:,} after")


def check_launches(backend, dtype, device, steps=10):
    """Launches (cupy-fused RawKernels) and GEMMs per full-batch step from net.backend.counters, against
    gpu_bench's counts (the ones benchmarks/GPU_ON_PAPER.md prices)."""
    from . import Network, bench
    X, Y = problem()
    config = bench.Config("check", list(LAYER_DIMS), X.shape[1], "relu", "sigmoid")
    net = Network(list(LAYER_DIMS), device=f"{backend}:{device}", dtype=dtype, seed=1)
    Xd, Yd = net.prepare(X, Y)
    with net.backend.device_scope():
        net.engine.begin_call()
        net.engine.train_step(Xd, Yd, 1e-3, check=False)
        before = dict(net.backend.counters)
        for _ in range(steps):
            net.engine.train_step(Xd, Yd, 1e-3, check=False)
        _cuda_device.synchronize()
    per = {k: (v - before.get(k, 0)) / steps for k, v in net.backend.counters.items()}
    expected = {"gemm": gpu_bench.launches_per_step(config, backend)[1]}
    if backend == "cupy-fused":
        expected["launch"] = gpu_bench._fused_launches(config)[0]
    got = {k: per.get(k, 0) for k in expected}
    return Check(f"launches per step {backend}:{device} {dtype}", got == expected,
                 ", ".join(f"{k} {got[k]:g} (expected {expected[k]})" for k in expected))


def _safe(check, *args, **kwargs):
    """check(*args) or, when it raises, a FAIL naming the error (a check never stops the report)."""
    try:
        return check(*args, **kwargs)
    except Exception as exc:             # noqa: BLE001  reported as a failed check
        what = " ".join(str(a) for a in args)
        return Check(f"{check.__name__.replace('check_', '')} {what}", False, f"{type(exc).__name__}: {exc}")


def checks(device=0, step_guard=None):
    """Every check but the benchmark, in order, as a generator of Check."""
    cp = _cuda_device.cupy()
    for backend in BACKENDS:
        for dtype in DTYPES:
            for mode in ("full-batch", "mini-batch"):
                yield _safe(check_fit, backend, dtype, device, mode)
            yield _safe(check_no_sync, backend, dtype, device, step_guard=step_guard)
            yield _safe(check_memory, backend, dtype, device)
            yield _safe(check_launches, backend, dtype, device)
    other = 1 if device == 0 else 0
    if cp.cuda.runtime.getDeviceCount() > 1:
        for backend in BACKENDS:
            yield _safe(check_fit, backend, "float64", other, "full-batch")
    else:
        yield Check(f"cuda:{other}", None, "only one CUDA device")


def run(device=0, bench_configs=BENCH_CONFIGS, bench_steps=20, step_guard=None, out=print):
    """Print the report; returns (checks, benchmark rows). Raises gpu_bench.NoCudaDevice without a GPU.
    ``step_guard``: a context-manager factory also wrapped around the steps of the synchronization check
    (the tests pass the stand-in's own refusal)."""
    reason = _cuda_device.probe(device)
    if reason:
        raise gpu_bench.NoCudaDevice(f"no CUDA device: {reason}")
    from . import bench
    cp = _cuda_device.cupy()
    props = cp.cuda.runtime.getDeviceProperties(device)
    out(f"fastdnn gpu-check on cuda:{device}: {props['name'].decode()}, CuPy {cp.__version__}, "
        f"CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, {cp.cuda.runtime.getDeviceCount()} device(s)")
    start, results = time.perf_counter(), []
    for c in checks(device, step_guard):
        results.append(c)
        out(f"{ {True: 'PASS', False: 'FAIL', None: 'n/a '}[c.ok]}  {c.name}: {c.detail}")
    configs = [c for c in bench.CONFIGS if c.name in bench_configs] if all(isinstance(n, str) for n in bench_configs) \
        else list(bench_configs)
    try:
        rows = gpu_bench.run(configs, DTYPES, steps=bench_steps, device=device)
        results.append(Check("GPU benchmark", all(r["ms_per_step"] > 0 for r in rows), f"{len(rows)} rows"))
        out("\n" + gpu_bench.table(rows) + "\n")
    except Exception as exc:             # noqa: BLE001  reported as a failed check
        rows = []
        results.append(Check("GPU benchmark", False, f"{type(exc).__name__}: {exc}"))
    failed = [c for c in results if c.ok is False]
    out(f"{'FAIL' if failed else 'PASS'}: {len(results) - len(failed)} of {len(results)} checks passed or n/a, "
        f"{len(failed)} failed, in {time.perf_counter() - start:.1f} s")
    return results, rows


def main(device=0, out=print):
    """Run the check and return the exit status: 0 when nothing failed, 1 otherwise."""
    results, _ = run(device, out=out)
    return 1 if any(c.ok is False for c in results) else 0
