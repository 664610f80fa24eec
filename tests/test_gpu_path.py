"""The whole GPU path of both GPU backends (``cupy``, the CuPy reference, and ``cupy-fused``, cuBLAS + the
RawKernels of ``_cupy_kernels``) run through the strict CuPy stand-in (tests/fake_cupy.py: only CuPy's
real API, no implicit host conversion, devices and synchronizations tracked, every RawKernel body
executed on the CPU) and compared with the ``numpy`` backend and the float64 oracle. No GPU is used."""
import gc
import threading
import warnings

import numpy as np
import pytest

import fastdnn
import oracle
from fastdnn.errors import TrainingDivergedError
from support import assert_close

pytest.importorskip("cupy", reason="the CuPy stand-in checks every name against the real cupy package")
import cuda_on_cpu  # noqa: E402

pytestmark = pytest.mark.skipif(cuda_on_cpu.compiler_unavailable_reason() is not None,
                                reason=f"no C++ compiler for the kernel bodies: "
                                       f"{cuda_on_cpu.compiler_unavailable_reason()}")

GPU = ["cupy", "cupy-fused"]
DTYPES = ["float64", "float32"]
OPTIMIZERS = ["gd", "momentum", "rmsprop", "adam", "adagrad"]
X = np.random.default_rng(3).standard_normal((4, 37))
Y = (np.random.default_rng(4).random((1, 37)) > 0.5).astype(np.float64)


def pair(device, dtype, layer_dims=(4, 5, 3, 1), **kw):
    """(the network on the GPU backend, the same network on numpy): same seed, same initial θ."""
    return [fastdnn.Network(list(layer_dims), device=d, dtype=dtype, seed=5, **kw) for d in (device, "numpy")]


# After several training steps in float32 the GPU and CPU results differ by more than one op's rounding:
# the kernels sum in double, NumPy in float32 (another order), and the difference grows step by step,
# most under the adaptive optimizers (RMSProp's first steps divide by √s ≈ |dθ|). One op is held to
# support.RTOL against the oracle (test_forward_cost_gradients_match_the_oracle); trained networks to:
TRAINED = {"float64": 1e-10, "float32": 5e-4}


def assert_close_trained(actual, expected, dtype):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=TRAINED[dtype], atol=TRAINED[dtype] * scale)


def assert_same_network(gpu, cpu, dtype, rng_too=True):
    """Same parameters, optimizer state and counters (state_dict), within the trained tolerance."""
    a, b = gpu.state_dict(), cpu.state_dict()
    ca, cb = dict(a.pop("config")), dict(b.pop("config"))
    if not rng_too:
        ca.pop("rng"), cb.pop("rng")
    assert ca == cb
    assert a.keys() == b.keys()
    for k in b:
        assert_close_trained(a[k], b[k], dtype)


# --- training matches the CPU --------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", GPU)
def test_full_batch_fit_matches_numpy(fake_cupy, device, dtype, optimizer):
    nets = pair(device, dtype, l2=0.1)
    hs = [n.fit(X, Y, iterations=9, optimizer=optimizer, learning_rate=0.01, report_every=4, verbose=0)
          for n in nets]
    assert_close_trained([r.cost for r in hs[0]], [r.cost for r in hs[1]], dtype)
    assert_same_network(*nets, dtype)
    assert nets[0].backend.name == device and fake_cupy.counts["gemm@1"] == 0


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", GPU)
def test_mini_batch_fit_matches_numpy(fake_cupy, device, dtype, optimizer):
    nets = pair(device, dtype, l2=0.05)          # 37 examples in batches of 16: 16, 16, 5
    hs = [n.fit(X, Y, epochs=2, batch_size=16, optimizer=optimizer, learning_rate=0.01, seed=2, verbose=0)
          for n in nets]
    assert_close_trained([r.cost for r in hs[0]], [r.cost for r in hs[1]], dtype)
    assert_same_network(*nets, dtype)
    assert nets[0].iteration == 6 and nets[0].epoch == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", GPU)
@pytest.mark.parametrize("acts", [("relu", "sigmoid", "bce"), ("tanh", "softmax", "ce"),
                                  ("leaky_relu", "linear", "mse"), ("sigmoid", "tanh", "mse")],
                         ids=lambda a: "-".join(a))
def test_forward_cost_gradients_match_the_oracle(fake_cupy, acts, device, dtype):
    hidden, output, loss = acts
    n_out = 3 if output == "softmax" else 1
    net = fastdnn.Network([4, 6, 5, n_out], hidden_activation=hidden, output_activation=output, loss=loss,
                          device=device, dtype=dtype, seed=2)
    # one-hot Y in Fortran order: the device copy keeps it, the fused output kernel needs C order
    Yh = np.asfortranarray(np.eye(3)[:, np.arange(37) % 3]) if output == "softmax" else Y
    params = {k: v.astype(np.float64) for k, v in net.parameters.items()}
    names = [hidden, hidden, output]
    Xr = X.astype(dtype).astype(np.float64)
    assert_close(net.forward(X), oracle.forward(params, Xr, names)[1][-1], dtype)
    assert_close(net.cost(X, Yh), oracle.network_cost(params, Xr, Yh, names, loss), dtype)
    expected = oracle.network_gradients(params, Xr, Yh, names, loss)
    grads = net.gradients(X, Yh)
    for k in expected:
        assert_close(grads[k], expected[k], dtype)


# --- dropout -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", GPU)
def test_dropout_masks_keep_about_keep_prob_and_training_goes_down(fake_cupy, device, dtype):
    be = fastdnn.get_backend(device)
    with be.device_scope():
        D = be.empty((60, 50), dtype)
        be.dropout_mask(D, 0.7, np.random.default_rng(0))
        mask = be.to_numpy(D)
    scale = np.asarray(1 / 0.7, dtype)
    assert set(np.unique(mask).tolist()) == {0.0, scale.item()}
    assert abs((mask == scale).mean() - 0.7) < 0.03             # 3000 draws: sd ~0.008
    net = fastdnn.Network([4, 8, 6, 1], device=device, dtype=dtype, seed=1, keep_prob=0.8)
    before = net.cost(X, Y)                                    # evaluation: no dropout
    net.fit(X, Y, iterations=2, learning_rate=0.1, verbose=0)
    allocs = []
    for iterations in (2, 40):
        fake_cupy.reset_counts()
        net.fit(X, Y, iterations=iterations, learning_rate=0.3, report_every=10**6, verbose=0)
        allocs.append(fake_cupy.counts["alloc"])
    assert net.cost(X, Y) < before - 0.01 and all(np.isfinite(v).all() for v in net.parameters.values())
    if device == "cupy-fused":               # masks drawn into D in place: nothing allocated per step
        assert allocs[0] == allocs[1]


# --- divergence: the deferred protocol keeps what the CPU keeps ---------------------------------------
def blow_up_from(k):
    """A schedule whose rate is 1e300 from its counter k on (inf in float32): that step makes θ
    non-finite, so the next step's cost is not finite — the same iteration on every backend."""
    return lambda lr0, t: lr0 if t < k else 1e300


def _diverge(net, **fit):
    with pytest.raises(TrainingDivergedError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        net.fit(X, Y, report_every=10**6, verbose=0, **fit)
    e = err.value
    return e.iteration, e.restored_iteration, e.epoch


@pytest.mark.parametrize("fit,expected", [
    (dict(iterations=8, schedule=blow_up_from(5)), (6, 5, 0)),              # step 5 uses 1e300
    (dict(epochs=4, batch_size=16, schedule=blow_up_from(2)), (9, 8, 2))],  # 3 steps an epoch
    ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", GPU)
def test_divergence_stops_where_numpy_stops_and_keeps_the_same_network(fake_cupy, device, dtype, fit, expected):
    nets = pair(device, dtype, layer_dims=(4, 5, 1))
    for n in nets:
        n.fit(X, Y, iterations=2, optimizer="momentum", learning_rate=0.01, verbose=0)   # an earlier call
    gpu, cpu = (_diverge(n, optimizer="momentum", learning_rate=0.01, **fit) for n in nets)
    assert gpu == cpu == expected
    assert_same_network(*nets, dtype)
    assert nets[0].iteration == expected[1]
    assert all(np.isfinite(v).all() for v in nets[0].parameters.values())


@pytest.mark.parametrize("device", GPU)
def test_a_call_whose_first_step_diverges_leaves_the_network_unchanged(fake_cupy, device):
    nets = pair(device, "float64", layer_dims=(4, 5, 1))
    W2 = np.array([[1.0, -1.0, 1.0, -1.0, 1.0]])
    before = []
    for n in nets:
        n.fit(X, Y, iterations=3, optimizer="adam", learning_rate=0.01, verbose=0)
        with n.backend.device_scope():       # finite θ whose first cost is NaN: Z2 = inf - inf
            n.engine.set_parameters({**n.parameters, "W1": np.full((5, 4), 1e308), "W2": W2})
        before.append(n.state_dict())
    results = [_diverge(n, iterations=5, optimizer="adam") for n in nets]
    assert results[0] == results[1] == (3, None, 0)
    assert_same_network(*nets, "float64")
    after = nets[0].state_dict()
    for k, v in before[0].items():
        if k != "config":
            np.testing.assert_array_equal(after[k], v)
    assert after["config"] == before[0]["config"]


# --- save/load, to(), devices, threads, memory ----------------------------------------------------------
@pytest.mark.parametrize("device", GPU)
def test_save_load_and_to_round_trips(fake_cupy, device, tmp_path):
    net = fastdnn.Network([4, 6, 5, 1], device=device, seed=1)
    net.fit(X, Y, iterations=5, optimizer="adam", verbose=0)
    net.save(tmp_path / "m.npz")
    back = fastdnn.load(tmp_path / "m.npz", device=device)
    assert back.backend.name == device
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    cpu = back.to("numpy")
    assert_same_network(cpu, net, "float32")
    again = cpu.to(device)
    assert again.backend.name == device and again.backend.xp is fake_cupy.cupy
    assert_same_network(again, net, "float32")
    for n in (net, again):
        n.fit(X, Y, iterations=3, verbose=0)
    assert_same_network(again, net, "float32")


@pytest.mark.parametrize("device", GPU)
def test_two_networks_on_two_devices_train_in_turn_and_in_a_thread(fake_cupy, device):
    net0 = fastdnn.Network([4, 5, 1], device=f"{device}:0", seed=1)
    net1 = fastdnn.Network([4, 5, 1], device=f"{device}:1", seed=1)
    fake_cupy.reset_counts()
    net1.fit(X, Y, iterations=2, verbose=0)
    net0.fit(X, Y, iterations=2, verbose=0)
    assert fake_cupy.counts["gemm@0"] == fake_cupy.counts["gemm@1"] > 0
    if device == "cupy-fused":
        assert fake_cupy.counts["launch@0"] == fake_cupy.counts["launch@1"] > 0
    errors = []

    def fit():
        try:
            net1.fit(X, Y, iterations=2, verbose=0)
        except Exception as exc:           # noqa: BLE001  re-raised in the test's thread
            errors.append(exc)
    t = threading.Thread(target=fit)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    ref = fastdnn.Network([4, 5, 1], device="numpy", seed=1)
    ref.fit(X, Y, iterations=2, verbose=0)
    assert_same_network(net0, ref, "float32")
    ref.fit(X, Y, iterations=2, verbose=0)
    assert_same_network(net1, ref, "float32")


@pytest.mark.parametrize("device", GPU)
def test_predict_100_times_keeps_device_memory_stable(fake_cupy, device):
    net = fastdnn.Network([4, 6, 1], device=device, seed=1)
    net.predict(X)
    net.cost(X, Y), net.gradients(X, Y)      # the scratch buffers the backend keeps between calls
    gc.collect()
    before = fake_cupy.live_bytes(0)
    for _ in range(100):
        net.predict(X)
    for _ in range(10):
        net.cost(X, Y), net.gradients(X, Y)
    gc.collect()
    assert fake_cupy.live_bytes(0) == before


# --- counts per training step on cupy-fused -------------------------------------------------------------
@pytest.mark.parametrize("layer_dims", [(4, 5, 1), (4, 40, 3, 1), (4, 5, 6, 7, 1)], ids=lambda d: f"L{len(d) - 1}")
def test_fused_step_counts(fake_cupy, layer_dims):
    """Per full-batch step (m = 37, no L2 or dropout), between reports: no host synchronization; 3L - 1
    GEMMs (W·A per layer, dZ·A_prevᵀ per layer, Wᵀ·dZ but for layer 1); RawKernel launches: L
    bias + activation, 2 for the output layer (partial costs, their fixed-order sum), L - 1 dZ with
    db, the update and the divergence mark = 2L + 3, plus one final row sum for each hidden layer
    whose db plan() splits over several blocks of columns (n_l > 4 with m = 37: the block is
    (32, 8), two blocks of columns) — within the bound 2L + 4 + (L - 1)."""
    L = len(layer_dims) - 1
    net = fastdnn.Network(list(layer_dims), device="cupy-fused", seed=1)
    net.fit(X, Y, iterations=2, verbose=0)                         # workspaces, kernels, first reads
    steps = 10
    fake_cupy.reset_counts()
    net.fit(X, Y, iterations=steps + 2, report_every=10**6, verbose=0)   # reports: the first and last
    baseline = dict(fake_cupy.counts)
    fake_cupy.reset_counts()
    net.fit(X, Y, iterations=2, report_every=10**6, verbose=0)
    per_step = {k: (baseline.get(k, 0) - fake_cupy.counts.get(k, 0)) / steps for k in ("sync", "gemm", "launch", "alloc", "d2h")}
    split = sum(1 for n in layer_dims[1:-1] if n > 4)
    assert per_step == {"sync": 0, "gemm": 3 * L - 1, "launch": 2 * L + 3 + split, "alloc": 0, "d2h": 0}
    assert 2 * L + 3 + split <= 2 * L + 4 + (L - 1)


def test_a_fused_step_runs_under_allow_synchronize_false(fake_cupy):
    net = fastdnn.Network([4, 5, 3, 1], device="cupy-fused", seed=1)
    net.fit(X, Y, iterations=2, verbose=0)
    Xd, Yd = net.prepare(X, Y)
    with net.backend.device_scope(), fake_cupy.no_sync():
        net.engine.begin_call()
        for _ in range(5):
            net.engine.train_step(Xd, Yd, 0.01, check=False)


# --- NVRTC probe, MPI staged path ------------------------------------------------------------------------
def test_fused_backend_falls_back_to_cupy_when_nvrtc_cannot_compile(fake_cupy, monkeypatch):
    def broken(self, log_stream=None):
        raise RuntimeError("nvrtc: libnvrtc.so.12 not found")
    monkeypatch.setattr(fake_cupy.cupy.RawKernel, "compile", broken)
    assert fastdnn.get_backend("cuda", fallback=False).name == "cupy"
    with pytest.raises(fastdnn.errors.BackendUnavailableError, match="NVRTC cannot compile a kernel: "
                       "RuntimeError: nvrtc: libnvrtc.so.12 not found"):
        fastdnn.get_backend("cupy-fused")


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch norm"])
@pytest.mark.parametrize("device", GPU)
def test_mpi_staged_path_matches_numpy(fake_cupy, device, batch_norm, monkeypatch):
    MPI = pytest.importorskip("mpi4py.MPI")
    monkeypatch.setenv("FASTDNN_MPI_CUDA_AWARE", "0")
    nets = pair(device, "float64", l2=0.1, batch_norm=batch_norm)
    nets[0].fit(X, Y, epochs=2, batch_size=16, optimizer="adam", learning_rate=0.01, seed=1, verbose=0,
                comm=MPI.COMM_SELF)
    nets[1].fit(X, Y, epochs=2, batch_size=16, optimizer="adam", learning_rate=0.01, seed=1, verbose=0)
    assert_same_network(*nets, "float64")
    assert fake_cupy.counts["pinned_alloc"] >= 1


def test_gpu_benchmark_times_both_backends_on_the_device_asked_for(fake_cupy):
    """``fastdnn bench --gpu`` through the stand-in (its CUDA events time the CPU: only the code path
    is checked): a row per backend, every GEMM and launch on cuda:1."""
    from fastdnn import bench, gpu_bench
    config = bench.CONFIGS[0]._replace(layer_dims=[4, 5, 1], m=16)
    rows = gpu_bench.run(configs=[config], dtypes=("float32",), steps=1, device=1, loops=False)
    assert [r["backend"] for r in rows] == ["cupy", "cupy-fused"]
    assert "cupy-fused" in gpu_bench.table(rows)
    assert fake_cupy.counts["gemm@0"] == fake_cupy.counts["launch@0"] == 0 < fake_cupy.counts["launch@1"]
