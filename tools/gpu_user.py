"""What a first GPU user meets, timed on a real GPU: ``python tools/gpu_user.py [PART ...]`` (after
``fastdnn gpu-check``; parts: first_user, divergence, features, speeds; default all).

Prints one line per measurement: the issue-14 reproduction (``Network(device="cuda").fit(..., epochs=5,
batch_size=64)``), the first ``fit`` (cold: NVRTC compiles) and a second one (warm), mini-batch epochs and
full-batch steps per backend x dtype against the same run on this machine's CPU (``numba``), and a
divergence stopped with the last finite parameters. Every GPU result is compared with the CPU one.
"""
import sys
import time
import warnings

import numpy as np

import fastdnn
from fastdnn import Network, bench
from fastdnn.backends import available_backends

CPU = "numba" if any(b.name == "numba" and b.available for b in available_backends()) else "numpy"


def timed(call):
    """(seconds, result) of call(); GPU work is finished when fit returns (it reads the costs)."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def agree(a, b):
    """max |a - b| / max(1, |b|) over two networks' parameters."""
    pa, pb = a.parameters, b.parameters
    return max(float(np.max(np.abs(np.asarray(pa[k], np.float64) - pb[k]) / max(1.0, float(np.abs(pb[k]).max()))))
               for k in pb)


def first_user():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 1000))
    Y = (X[:1] * X[1:2] > 0).astype(np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = Network([20, 32, 16, 1], device="cuda", seed=1)
        cold, hist = timed(lambda: net.fit(X, Y, epochs=5, batch_size=64, verbose=0))
        warm, _ = timed(lambda: Network([20, 32, 16, 1], device="cuda", seed=1).fit(X, Y, epochs=5, batch_size=64,
                                                                                       verbose=0))
    cpu = Network([20, 32, 16, 1], device="numpy", seed=1)
    cpu.fit(X, Y, epochs=5, batch_size=64, verbose=0)
    print(f"issue-14 repro: backend {net.backend.name}, costs {[round(r.cost, 5) for r in hist]}, "
          f"vs numpy {agree(net, cpu):.1e}, first fit {cold:.2f} s, second {warm:.3f} s, "
          f"accuracy {np.mean(net.predict(X) == Y):.3f}, warnings {[str(w.message)[:80] for w in caught]}")


def minibatch(config, dtype, backend, epochs=3):
    """Seconds per epoch (median of ``epochs`` after one warm-up epoch) and the network."""
    X, Y = bench.problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device=backend, dtype=dtype, seed=0)
    Xd, Yd = net.prepare(X, Y)
    net.fit(Xd, Yd, epochs=1, batch_size=config.batch_size, optimizer="adam", learning_rate=1e-3, verbose=0)
    times = [timed(lambda: net.fit(Xd, Yd, epochs=1, batch_size=config.batch_size, optimizer="adam",
                                   learning_rate=1e-3, verbose=0))[0] for _ in range(epochs)]
    return float(np.median(times)), net


def full_batch(config, dtype, backend, iterations=200):
    """Seconds per step of fit(iterations=...) (after a warm-up fit) and the network."""
    X, Y = bench.problem(config, dtype)
    net = Network(config.layer_dims, config.hidden, config.output, device=backend, dtype=dtype, seed=0)
    Xd, Yd = net.prepare(X, Y)
    net.fit(Xd, Yd, iterations=5, learning_rate=1e-3, verbose=0)
    s, _ = timed(lambda: net.fit(Xd, Yd, iterations=iterations, learning_rate=1e-3, verbose=0,
                                 report_every=iterations))
    return s / iterations, net


def speeds():
    for config in bench.MINIBATCH_CONFIGS:
        for dtype in ("float32", "float64"):
            cpu_s, cpu = minibatch(config, dtype, CPU)
            for backend in ("cupy", "cupy-fused"):
                s, net = minibatch(config, dtype, backend)
                print(f"epoch {config.name} {dtype} {backend}: {s * 1e3:.1f} ms ({CPU} on this CPU "
                      f"{cpu_s * 1e3:.1f} ms; {cpu_s / s:.2f}x), vs {CPU} {agree(net, cpu):.1e}")
    for config in bench.CONFIGS:
        for dtype in ("float32", "float64"):
            cpu_s, cpu = full_batch(config, dtype, CPU)
            for backend in ("cupy", "cupy-fused"):
                s, net = full_batch(config, dtype, backend)
                print(f"fit step {config.name} {dtype} {backend}: {s * 1e6:.0f} us ({CPU} on this CPU "
                      f"{cpu_s * 1e6:.0f} us; {cpu_s / s:.2f}x), vs {CPU} {agree(net, cpu):.1e}")


def divergence():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 200))
    Y = (X[:1] > 0).astype(np.float64)
    for backend in ("cupy", "cupy-fused"):
        net = Network([5, 8, 1], "relu", "sigmoid", device=backend, seed=0)
        try:
            net.fit(X * 1e3, Y, iterations=50, learning_rate=1e6, verbose=0)
            print(f"divergence {backend}: NOT raised")
        except fastdnn.TrainingDivergedError as exc:
            finite = all(np.isfinite(v).all() for v in net.parameters.values())
            print(f"divergence {backend}: raised at iteration {exc.iteration}, parameters finite: {finite}")


def features():
    """Skip connections, batch normalization, dropout, MPI's staged path and device labels on the GPU
    backends, each fit against the same fit on the CPU (float64; dropout draws its masks on the device,
    so that one only has to train)."""
    import cupy as cp
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 500))
    Y = (X[:1] * X[1:2] + 0.3 * X[2:3] > 0).astype(np.float64)
    cases = {"skip=2": ([6, 8, 8, 8, 8, 1], dict(skip=2)),
             "skip learned Ws": ([6, 4, 8, 8, 1], dict(skip=[(0, 2), (1, 3)], projection="learned")),
             "skip pad": ([6, 4, 8, 8, 1], dict(skip=[(0, 2), (1, 3)], projection="pad")),
             "batch_norm": ([6, 8, 8, 1], dict(batch_norm=True)),
             "skip=2 into normalized layers": ([6, 8, 8, 8, 8, 1], dict(skip=2, batch_norm=True))}
    fits = {"full": dict(iterations=30, optimizer="adam", learning_rate=0.01),
            "mini": dict(epochs=2, batch_size=64, optimizer="adam", learning_rate=0.01)}
    for backend in ("cupy", "cupy-fused"):
        for name, (dims, kw) in cases.items():
            for how, fit in fits.items():
                nets = [Network(dims, device=d, dtype="float64", seed=2, **kw) for d in (backend, "numpy")]
                for n in nets:
                    n.fit(X, Y, verbose=0, **fit)
                print(f"{name} {how} {backend}: vs numpy {agree(*nets):.1e}")
        net = Network([6, 16, 16, 1], device=backend, seed=2, keep_prob=0.8)
        hist = net.fit(X, Y, epochs=20, batch_size=64, optimizer="adam", learning_rate=0.01, verbose=0)
        print(f"dropout {backend}: costs {hist[0].cost:.3f} -> {hist[-1].cost:.3f}, finite "
              f"{all(np.isfinite(v).all() for v in net.parameters.values())}")
        Xd, Yd = cp.asarray(X), cp.asarray(Y)
        net = Network([6, 16, 1], device=backend, seed=2, dtype="float64")
        s, _ = timed(lambda: [net.prepare(Xd, Yd) for _ in range(10)])
        print(f"device labels {backend}: prepare(device X, Y) {s / 10 * 1e3:.2f} ms each")
        try:
            from mpi4py import MPI
            for kw in ({}, dict(batch_norm=True)):
                nets = [Network([6, 16, 1], device=d, dtype="float64", seed=2, **kw) for d in (backend, "numpy")]
                nets[0].fit(X, Y, iterations=10, verbose=0, comm=MPI.COMM_SELF)
                nets[1].fit(X, Y, iterations=10, verbose=0)
                print(f"MPI COMM_SELF {backend}{' batch_norm' if kw else ''}: vs numpy {agree(*nets):.1e}")
        except Exception as exc:        # noqa: BLE001  no mpi4py, or no MPI library under it
            print(f"MPI {backend}: not run ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    print(f"fastdnn {fastdnn.__version__}, CPU backend {CPU}, numpy {np.__version__}, python {sys.version.split()[0]}")
    parts = (first_user, divergence, features, speeds)
    for part in [p for p in parts if len(sys.argv) < 2 or p.__name__ in sys.argv[1:]]:
        try:
            part()
        except Exception as exc:        # noqa: BLE001  report and go on to the next part
            print(f"{part.__name__}: {type(exc).__name__}: {exc}")
        sys.stdout.flush()
