"""What a first GPU user meets, timed on a real GPU: ``python tools/gpu_user.py`` (after ``fastdnn gpu-check``).

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


if __name__ == "__main__":
    print(f"fastdnn {fastdnn.__version__}, CPU backend {CPU}, numpy {np.__version__}, python {sys.version.split()[0]}")
    for part in (first_user, divergence, speeds):
        try:
            part()
        except Exception as exc:        # noqa: BLE001  report and go on to the next part
            print(f"{part.__name__}: {type(exc).__name__}: {exc}")
        sys.stdout.flush()
