"""The strict CuPy stand-in (tests/fake_cupy.py): first that it is strict where CuPy is (each test names
the CuPy behaviour it mirrors), then today's GPU code path run through it. A test of the library marked
xfail(strict=True) names the defect it finds (issue 14) and starts to pass when the defect is fixed."""
import gc
import inspect
import threading
import warnings

import numpy as np
import pytest

import fastdnn
import oracle
from support import RTOL, assert_close

pytest.importorskip("cupy", reason="the CuPy stand-in checks names against the real cupy package")
import fake_cupy as fc  # noqa: E402  (after the skip: it reads the real package)

pytestmark = pytest.mark.filterwarnings("ignore:cupyx.allow_synchronize will be removed")


@pytest.fixture
def cp(fake_cupy):
    return fake_cupy.cupy


def _host(shape=(3, 4), dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- the stand-in offers only what the installed CuPy offers ------------------------------------------
def test_take_has_no_mode_as_in_cupy(cp):
    a, idx = cp.asarray(_host()), cp.asarray(np.array([0, 2]))
    with pytest.raises(TypeError, match="take\\(\\) got an unexpected keyword argument 'mode'"):
        cp.take(a, idx, axis=1, mode="clip")
    with pytest.raises(TypeError, match="unexpected keyword argument 'mode'"):
        a.take(idx, axis=1, mode="clip")


def test_take_wraps_out_of_bounds_indices_as_cupy_documents(cp):
    host = _host()
    out = cp.empty((3, 3))
    got = cp.take(cp.asarray(host), cp.asarray(np.array([0, 5, -1])), axis=1, out=out)
    assert got is out
    np.testing.assert_array_equal(cp.asnumpy(out), host[:, [0, 1, 3]])


def test_integer_array_indexing_wraps_out_of_bounds_indices(cp):
    host = np.arange(3.0)
    np.testing.assert_array_equal(cp.asnumpy(cp.asarray(host)[cp.asarray(np.array([1, 3]))]), [1.0, 0.0])


def test_a_ufunc_keyword_cupy_lacks_fails_as_in_cupy(cp):
    a = cp.asarray(_host())
    with pytest.raises(TypeError, match="Wrong arguments \\{'where'"):
        cp.add(a, a, where=a > 0)
    cp.add(a, a, out=cp.empty_like(a), dtype=np.float64, casting="same_kind")      # CuPy's own keywords


def test_a_method_keyword_cupy_lacks_fails(cp):
    a = cp.asarray(_host())
    assert float(a.sum(axis=None, keepdims=False)) == pytest.approx(_host().sum())
    with pytest.raises(TypeError, match="sum\\(\\) got an unexpected keyword argument 'initial'"):
        a.sum(initial=1.0)                                 # NumPy has it, CuPy 14 does not


@pytest.mark.parametrize("name", ["not_a_function", "busday_count", "recarray"])
def test_a_name_cupy_lacks_is_missing(cp, name):
    assert hasattr(np, name) or name == "not_a_function"
    with pytest.raises(AttributeError, match=name):
        getattr(cp, name)


def test_an_ndarray_method_cupy_lacks_is_missing(cp):
    with pytest.raises(AttributeError, match="'cupy.ndarray' object has no attribute 'tofile_zz'"):
        cp.asarray(_host()).tofile_zz
    with pytest.raises(AttributeError, match="itemset"):
        cp.asarray(_host()).itemset


def test_every_explicit_stand_in_callable_has_the_real_signature():
    """The hand-written parts mirror the real parameter names and kinds (defaults aside)."""
    pairs = {"cuda.Device": fc.Device, "cuda.Stream": fc.Stream, "cuda.Event": fc.Event,
             "RawKernel": fc.RawKernel, "RawModule": fc.RawModule, "ndarray.get": fc.ndarray.get,
             "ndarray.set": fc.ndarray.set, "ndarray.copy": fc.ndarray.copy, "ndarray.astype": fc.ndarray.astype,
             "ndarray.fill": fc.ndarray.fill, "ndarray.take": fc.ndarray.take, "ndarray.item": fc.ndarray.item,
             "ndarray.tolist": fc.ndarray.tolist, "random.Generator.random": fc.Generator.random,
             "asnumpy": fc._asnumpy, "cuda.get_elapsed_time": fc.get_elapsed_time}
    for label, ours in pairs.items():
        theirs = fc.signature(label, fc.real(label))
        mine = [(p.name, p.kind) for p in inspect.signature(ours).parameters.values()
                if p.name not in ("self", "s")]
        assert mine == [(p.name, p.kind) for p in theirs.parameters.values()], label


# --- no implicit host conversion; explicit transfers and reads counted --------------------------------
def test_numpy_cannot_convert_a_device_array_implicitly(cp):
    a = cp.asarray(_host())
    for convert in (np.asarray, np.array):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(a)


def test_host_arrays_are_refused_in_device_operations(cp):
    a, host = cp.asarray(_host()), _host()
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        cp.add(a, host)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        a + host
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        cp.matmul(a.T, host)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[...] = host                                      # CuPy routes this through fill()
    with pytest.raises(TypeError, match="Unsupported type <class 'NoneType'>"):
        a == None                                          # noqa: E711  (CuPy's ufuncs refuse it too)
    a[...] = np.float64(2.0)                               # scalars are fine
    assert float(a[0, 0]) == 2.0


def test_scalar_reads_work_and_each_synchronizes(fake_cupy, cp):
    x = cp.asarray(np.array(1.5))
    fake_cupy.reset_counts()
    assert float(x) == 1.5 and int(x) == 1 and bool(x) and x.item() == 1.5 and x.tolist() == 1.5
    assert repr(x) == repr(np.array(1.5))
    assert fake_cupy.counts["sync"] == fake_cupy.counts["d2h"] == 6
    with pytest.raises(TypeError, match="0-dimensional"):   # CuPy's float() is float(x.get()): NumPy's rule
        float(cp.asarray(np.array([[1.5]])))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(cp.asarray(_host()))


def test_iteration_gives_device_views_without_a_read(fake_cupy, cp):
    a = cp.asarray(_host())
    fake_cupy.reset_counts()
    rows = list(a)
    assert len(rows) == 3 and all(isinstance(r, cp.ndarray) for r in rows)
    assert fake_cupy.counts["sync"] == fake_cupy.counts["d2h"] == fake_cupy.counts["alloc"] == 0
    with pytest.raises(TypeError, match="iteration over a 0-d array"):
        iter(a.sum())


def test_reductions_return_0d_device_arrays(cp):
    a = cp.asarray(_host())
    for r in (cp.sum(a), a.max(), cp.vdot(a.reshape(-1), a.reshape(-1)), a[0, 0]):
        assert isinstance(r, cp.ndarray) and r.ndim == 0


def test_numpy_functions_dispatch_to_cupys_as_cupy_arrays_do(fake_cupy, cp):
    a = cp.asarray(_host())
    fake_cupy.reset_counts()
    for r in (np.exp(a), np.mean(a), np.concatenate([a, a])):     # __array_ufunc__ / __array_function__
        assert isinstance(r, cp.ndarray)
    assert fake_cupy.counts["d2h"] == 0 and fake_cupy.counts["kernel"] == 3
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        np.add(_host(), a)


def test_transfers_are_counted_and_checked_as_in_cupy(fake_cupy, cp):
    host = _host()
    a = cp.asarray(host)
    assert fake_cupy.counts["h2d"] == 1
    out = np.empty_like(host)
    assert a.get(out=out) is out and cp.asnumpy(a).shape == host.shape
    a.set(host * 2)
    np.testing.assert_array_equal(a.get(), host * 2)
    assert fake_cupy.counts["d2h"] == 3 and fake_cupy.counts["h2d"] == 2
    a.get(blocking=False)
    assert fake_cupy.counts["d2h"] == 4 and fake_cupy.counts["sync"] == 3
    with pytest.raises(TypeError, match="float32 array cannot be set to float64 array"):
        a.set(host.astype(np.float32))
    with pytest.raises(ValueError, match="Shape mismatch"):
        a.get(out=np.empty((4, 3)))
    with pytest.raises(TypeError, match="Only numpy.ndarray can be set"):
        a.set(a)


def test_object_dtypes_are_refused(cp):
    with pytest.raises(ValueError, match="Unsupported dtype object"):
        cp.asarray(np.array([1, None], dtype=object))
    with pytest.raises(ValueError, match="Unsupported dtype"):
        cp.empty((2,), dtype=object)


# --- synchronization ----------------------------------------------------------------------------------
def test_allow_synchronize_false_catches_a_float_of_a_device_scalar(cp):
    import cupyx
    x = cp.asarray(_host()).sum()
    with pytest.warns(UserWarning, match="allow_synchronize will be removed"):
        with cupyx.allow_synchronize(False):
            with pytest.raises(cupyx.DeviceSynchronized):
                float(x)
            with pytest.raises(cupyx.DeviceSynchronized):
                cp.asnumpy(x)
            with pytest.raises(cupyx.DeviceSynchronized):
                cp.cuda.Device().synchronize()
            x * 2                                          # device work is fine
    assert float(x) == pytest.approx(_host().sum())


def test_stream_syncs_are_counted_and_refused_by_no_sync(fake_cupy, cp):
    import cupyx
    fake_cupy.reset_counts()
    with cupyx.allow_synchronize(False):                   # CuPy does not declare these two
        cp.cuda.get_current_stream().synchronize()
        cp.cuda.Event().synchronize()
    assert fake_cupy.counts["sync"] == 2
    with fake_cupy.no_sync():
        with pytest.raises(cupyx.DeviceSynchronized, match="Stream.synchronize"):
            cp.cuda.get_current_stream().synchronize()


# --- devices and streams ------------------------------------------------------------------------------
def test_an_array_of_another_device_fails_in_an_operation(cp):
    with cp.cuda.Device(0):
        a = cp.asarray(_host())
    with cp.cuda.Device(1):
        assert cp.cuda.runtime.getDevice() == 1
        with pytest.raises(ValueError, match="resides \\(0\\) is different from the current device \\(1\\)"):
            a * 2
        with pytest.raises(ValueError, match="Peer access is unavailable"):
            cp.matmul(a, a.T)
        a[0]                                               # views need no device work
        assert a.get().shape == (3, 4)                     # neither do reads
        b = cp.asarray(a)                                  # the explicit device-to-device copy
        assert b.device.id == 1 and (b * 2).device.id == 1
    assert cp.cuda.runtime.getDevice() == 0


def test_peer_access_warns_like_cupy_when_enabled():
    with fc.installed(devices=2, peer_access=True) as g:
        with g.cupy.cuda.Device(0):
            a = g.cupy.ones((2, 2))
        with g.cupy.cuda.Device(1), pytest.warns(fc.real("_util.PerformanceWarning"), match="activated"):
            a * 2
        assert g.counts["peer_access@1"] == 1


def test_the_current_device_is_per_thread(cp):
    cp.cuda.Device(1).use()
    seen = []
    t = threading.Thread(target=lambda: seen.append(cp.cuda.runtime.getDevice()))
    t.start()
    t.join()
    assert seen == [0] and cp.cuda.runtime.getDevice() == 1
    with pytest.raises(fc.real("cuda.runtime.CUDARuntimeError"), match="invalid device ordinal"):
        cp.cuda.Device(2).use()
    with pytest.raises(TypeError, match="setDevice\\(\\) missing"):
        cp.cuda.runtime.setDevice()


def test_streams_events_and_their_devices(fake_cupy, cp):
    assert cp.cuda.get_current_stream().ptr == 0
    s0 = cp.cuda.Stream()
    with s0:
        assert cp.cuda.get_current_stream() == s0 and s0.ptr != 0
    assert cp.cuda.get_current_stream().ptr == 0
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    end.record()
    end.synchronize()
    assert cp.cuda.get_elapsed_time(start, end) >= 0
    with cp.cuda.Device(1):
        with pytest.raises(RuntimeError, match="stream is created on \\(0\\) does not match .* device \\(1\\)"):
            s0.use()
    with pytest.raises(fc.real("cuda.runtime.CUDARuntimeError")):
        cp.cuda.get_elapsed_time(cp.cuda.Event(), end)     # never recorded


def test_matmul_counts_a_gemm_on_the_current_device(fake_cupy, cp):
    with cp.cuda.Device(1):
        A, B = cp.asarray(_host((3, 4))), cp.asarray(_host((4, 5)))
        C = cp.empty((3, 5))
        fake_cupy.reset_counts()
        assert cp.matmul(A, B, out=C) is C
        A @ B
    assert fake_cupy.counts["gemm@1"] == 2 and fake_cupy.counts["gemm@0"] == 0
    np.testing.assert_allclose(C.get(), _host((3, 4)) @ _host((4, 5)))


# --- memory -------------------------------------------------------------------------------------------
def test_device_memory_is_accounted_until_arrays_die(cp):
    pool = cp.get_default_memory_pool()
    gc.collect()
    before = pool.used_bytes()
    a = cp.empty((1000,), dtype=np.float32)                # 4000 bytes: 8 units of 512
    assert pool.used_bytes() == before + 4096
    v = a[10:20].reshape(2, 5)                             # a view allocates nothing
    assert pool.used_bytes() == before + 4096
    del a
    gc.collect()
    assert pool.used_bytes() == before + 4096              # the view keeps the allocation alive
    del v
    gc.collect()
    assert pool.used_bytes() == before and pool.total_bytes() >= before + 4096
    pool.free_all_blocks()
    assert pool.total_bytes() == pool.used_bytes()


def test_memory_is_per_device_and_its_limit_raises_cupys_error(cp):
    pool = cp.get_default_memory_pool()
    with cp.cuda.Device(1):
        keep = cp.zeros((256,))
        assert pool.used_bytes() == 2048
    assert keep.device.id == 1
    pool.set_limit(size=1 << 20)
    with pytest.raises(cp.cuda.memory.OutOfMemoryError, match="Out of memory allocating 8,000,000 bytes"):
        cp.empty((1000, 1000))
    assert issubclass(cp.cuda.memory.OutOfMemoryError, MemoryError)


def test_pinned_memory_is_recognized(fake_cupy, cp):
    mem = cp.cuda.alloc_pinned_memory(64)
    host = np.frombuffer(mem, np.float32, 16)
    assert fake_cupy.is_pinned(host) and not fake_cupy.is_pinned(np.empty(16, np.float32))


# --- random -------------------------------------------------------------------------------------------
def test_random_generator_has_cupys_signature(cp):
    rng = cp.random.default_rng(1)
    x = rng.random((2, 3), dtype=np.float32)
    assert isinstance(x, cp.ndarray) and x.dtype == np.float32 and x.shape == (2, 3)
    out = cp.empty((2, 3), dtype=np.float32)
    assert rng.random(dtype=np.float32, out=out) is out
    with pytest.raises(TypeError, match="Unsupported dtype"):
        rng.random(3, dtype=np.int64)
    assert rng.integers(0, 3, size=4, endpoint=True).shape == (4,)
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'"):
        rng.integers(0, 3, seed=1)
    with pytest.raises(AttributeError, match="normal"):
        rng.normal(0, 1, 3)                                # NumPy's Generator has it, CuPy's not


# --- RawKernel ----------------------------------------------------------------------------------------
SCALE = r'''
extern "C" __global__ void scale(const float* x, float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i];
}
'''


def _scale_on_cpu(source, name, grid, block, args, shared_bytes):
    """A stand-in for tests/cuda_on_cpu.launch that knows this one kernel."""
    assert name == "scale" and len(grid) == len(block) == 3
    x, y, a, n = args
    assert isinstance(a, np.float32) and isinstance(n, np.int32)
    y[:n] = a * x[:n]


@pytest.fixture
def kernel(fake_cupy):
    fake_cupy.launcher = _scale_on_cpu
    return fake_cupy.cupy.RawKernel(SCALE, "scale")


def test_a_raw_kernel_runs_on_the_stand_in_and_is_counted(fake_cupy, cp, kernel):
    x = cp.asarray(np.arange(5, dtype=np.float32))
    y = cp.zeros(5, dtype=np.float32)
    kernel((1,), (32,), (x, y, np.float32(2), np.int32(5)), shared_mem=0)
    np.testing.assert_array_equal(y.get(), 2 * np.arange(5))
    assert fake_cupy.counts["launch@0"] == 1 and fake_cupy.counts["launch:scale"] == 1
    mod = cp.RawModule(code=SCALE)
    mod.get_function("scale")((1,), (8,), [x, y, np.float32(3), np.int32(5)])
    np.testing.assert_array_equal(y.get(), 3 * np.arange(5))


@pytest.mark.parametrize("case", ["grid-not-a-tuple", "host-array", "python-float-for-float",
                                  "python-int-for-int", "too-few-args", "unknown-keyword"])
def test_a_raw_kernel_launch_is_checked_like_cupy(cp, kernel, case):
    x, y = cp.ones(4, dtype=np.float32), cp.empty(4, dtype=np.float32)
    args = {"grid-not-a-tuple": (1, (4,), (x, y, np.float32(1), np.int32(4))),
            "host-array": ((1,), (4,), (np.ones(4, np.float32), y, np.float32(1), np.int32(4))),
            "python-float-for-float": ((1,), (4,), (x, y, 2.0, np.int32(4))),
            "python-int-for-int": ((1,), (4,), (x, y, np.float32(2), 4)),
            "too-few-args": ((1,), (4,), (x, y, np.float32(2)))}.get(case)
    with pytest.raises(TypeError):
        if case == "unknown-keyword":
            kernel((1,), (4,), (x, y, np.float32(1), np.int32(4)), smem=0)
        else:
            kernel(*args)


def test_a_raw_kernel_refuses_another_devices_array_and_bad_launches(cp, kernel):
    with cp.cuda.Device(1):
        x1 = cp.ones(4, dtype=np.float32)
    y = cp.empty(4, dtype=np.float32)
    with pytest.raises(ValueError, match="on device 1 but the launch is on device 0"):
        kernel((1,), (4,), (x1, y, np.float32(1), np.int32(4)))
    with pytest.raises(fc.CUDADriverError, match="INVALID_VALUE"):
        kernel((1,), (2048,), (y, y, np.float32(1), np.int32(4)))
    with pytest.raises(fc.CUDADriverError, match="NOT_FOUND"):
        cp.RawKernel(SCALE.replace('extern "C" ', ""), "scale")((1,), (4,), (y, y, np.float32(1), np.int32(4)))
    with pytest.warns(fc.FakeCupyWarning, match="non-contiguous"):
        kernel((1,), (4,), (cp.ones((4, 2), dtype=np.float32).T, y, np.float32(1), np.int32(4)))


# --- fastdnn through the stand-in ---------------------------------------------------------------------
X = np.random.default_rng(3).standard_normal((4, 37))
Y = (np.random.default_rng(4).random((1, 37)) > 0.5).astype(np.float64)


def test_fastdnn_sees_a_usable_cuda_device_and_the_stand_in_goes_away(fake_cupy):
    infos = {b.name: b for b in fastdnn.available_backends()}
    assert infos["cupy"].available and infos["cupy-fused"].available
    backend = fastdnn.get_backend("cuda", fallback=False)
    assert backend.name == "cupy-fused" and backend.xp is fake_cupy.cupy
    assert fastdnn.get_backend("cuda:1").device == "cuda:1"


def test_the_probe_names_a_missing_device():
    with fc.installed(devices=2):
        with pytest.raises(fastdnn.errors.BackendUnavailableError, match="cuda:2 asked for, but only 2"):
            fastdnn.get_backend("cuda:2", fallback=False)
    with fc.installed(devices=0):
        with pytest.warns(fastdnn.errors.DeviceFallbackWarning, match="no CUDA device found"):
            assert fastdnn.get_backend("cuda").device == "cpu"


def test_uninstalling_restores_the_real_cupy():
    import sys
    before = sys.modules.get("cupy")
    with fc.installed():
        assert isinstance(sys.modules["cupy"], fc._Module)
    assert sys.modules.get("cupy") is before


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cupy_backend_ops_match_float64_formulas(fake_cupy, dtype):
    from fastdnn.backends.cupy_backend import CupyBackend
    from fastdnn.optimizers import get_optimizer
    be = CupyBackend(device="cuda:0")
    assert be.xp is fake_cupy.cupy and be.device == "cuda:0"
    W, A, b = (_host(shape, seed=i) for i, shape in enumerate([(5, 4), (4, 7), (5, 1)]))
    Wd, Ad, bd = (be.asarray(x, dtype=dtype) for x in (W, A, b))
    Z = be.gemm(Wd, Ad, out=be.empty((5, 7), dtype))
    be.add_bias(Z, bd, out=Z)
    assert_close(be.to_numpy(Z), W @ A + b, dtype)
    assert_close(be.to_numpy(be.gemm(Wd, Z, trans_a=True)), W.T @ (W @ A + b), dtype)
    db = be.empty((5, 1), dtype)
    be.row_sum(Z, out=db)
    assert_close(be.to_numpy(db), (W @ A + b).sum(axis=1, keepdims=True), dtype)
    assert be.scalar(be.sum_squares(Wd)) == pytest.approx((W.astype(dtype).astype(np.float64) ** 2).sum(),
                                                           rel=RTOL[dtype])
    theta, dtheta = be.asarray(W.reshape(-1), dtype=dtype), be.asarray(A.reshape(-1)[:20], dtype=dtype)
    out = be.empty((20,), dtype)
    be.update(get_optimizer("gd"), theta, dtheta, [], 0.1, 1, out, [])
    assert_close(be.to_numpy(out), W.reshape(-1) - 0.1 * A.reshape(-1)[:20], dtype)
    D = be.empty((5, 7), dtype)
    be.dropout_mask(D, 0.8, np.random.default_rng(0))
    assert set(np.unique(be.to_numpy(D))) <= {0.0, np.float64(np.asarray(1 / 0.8, dtype))}
    host = be.host_buffer((5, 7), dtype)
    assert fake_cupy.is_pinned(host)
    be.copy_to_host(Z, host)
    be.copy_from_host(host * 2, D)
    be.synchronize()
    assert_close(be.to_numpy(D), 2 * (W @ A + b), dtype)
    assert fake_cupy.counts["gemm@0"] == be.counters["gemm"] == 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("acts", [("relu", "sigmoid", "bce"), ("tanh", "softmax", "ce"),
                                  ("leaky_relu", "linear", "mse")], ids=lambda a: "-".join(a))
def test_cupy_backend_forward_cost_gradients_match_the_oracle(fake_cupy, acts, dtype):
    hidden, output, loss = acts
    n_out = 3 if output == "softmax" else 1
    net = fastdnn.Network([4, 5, n_out], hidden_activation=hidden, output_activation=output, loss=loss,
                          device="cupy", dtype=dtype, seed=2)
    Yh = np.eye(3)[:, np.arange(37) % 3] if output == "softmax" else Y
    params = {k: v.astype(np.float64) for k, v in net.parameters.items()}
    names = [hidden, output]
    assert_close(net.forward(X), oracle.forward(params, X, names)[1][-1], dtype)
    assert_close(net.cost(X, Yh), oracle.network_cost(params, X, Yh, names, loss), dtype)
    expected = oracle.network_gradients(params, X, Yh, names, loss)
    grads = net.gradients(X, Yh)
    for k in expected:
        assert_close(grads[k], expected[k], dtype)


def test_a_training_step_makes_no_synchronization(fake_cupy):
    """Only reported iterations read the cost back; the other steps run without a host sync."""
    syncs = []
    for iterations in (2, 12):
        net = fastdnn.Network([4, 5, 1], device="cupy", seed=1)
        fake_cupy.reset_counts()
        net.fit(X, Y, iterations=iterations, report_every=10**6, verbose=0)    # reports: first and last
        syncs.append(fake_cupy.counts["sync"])
    assert syncs[0] == syncs[1] >= 2 and fake_cupy.counts["gemm"] == 12 * 5      # the two reports read


def test_dropout_predict_save_load_and_to_run_on_the_stand_in(fake_cupy, tmp_path):
    net = fastdnn.Network([4, 6, 5, 1], device="cupy", seed=1, keep_prob=0.8)
    net.fit(X, Y, iterations=5, verbose=0)
    assert all(np.isfinite(v).all() for v in net.parameters.values())
    net.save(tmp_path / "m.npz")
    back = fastdnn.load(tmp_path / "m.npz", device="cupy")
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    cpu = back.to("numpy")
    np.testing.assert_array_equal(cpu.parameters["W1"], net.parameters["W1"])
    assert cpu.to("cupy").backend.xp is fake_cupy.cupy


def test_predict_keeps_device_memory_stable(fake_cupy):
    net = fastdnn.Network([4, 6, 1], device="cupy", seed=1)
    net.predict(X)
    gc.collect()
    pool = fake_cupy.cupy.get_default_memory_pool()
    before = pool.used_bytes()
    for _ in range(100):
        net.predict(X)
    gc.collect()
    assert pool.used_bytes() == before


def test_cuda_device_helpers_transfer_through_pinned_memory(fake_cupy):
    from fastdnn.backends import _cuda_device as D
    host = D.pinned_empty((2, 3), np.float32)
    assert fake_cupy.is_pinned(host)
    x = D.to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    fake_cupy.reset_counts()
    D.copy_to_host(x, host)
    D.copy_from_host(host * 0 + host, x)
    D.synchronize()
    assert (fake_cupy.counts["d2h"], fake_cupy.counts["h2d"], fake_cupy.counts["sync"]) == (1, 1, 2)
    fake_cupy.cupy.get_default_memory_pool().set_limit(size=4096)
    with pytest.raises(MemoryError, match="8000000 bytes for the fastdnn workspace"):
        D.empty((1000, 1000), np.float64)


def test_data_parallel_fit_stages_through_pinned_memory(fake_cupy):
    MPI = pytest.importorskip("mpi4py.MPI")
    net = fastdnn.Network([4, 5, 1], device="cupy", seed=1, dtype="float64")
    net.fit(X, Y, iterations=3, verbose=0, comm=MPI.COMM_SELF)
    ref = fastdnn.Network([4, 5, 1], device="numpy", seed=1, dtype="float64")
    ref.fit(X, Y, iterations=3, verbose=0)
    for k, v in ref.parameters.items():
        assert_close(net.parameters[k], v, "float64")
    assert fake_cupy.counts["pinned_alloc"] >= 1


# --- defects of today's GPU path (issue 14) the stand-in finds ----------------------------------------
def test_mini_batch_fit_runs_on_the_stand_in(fake_cupy):
    net = fastdnn.Network([4, 5, 1], device="cupy", seed=1)
    net.fit(X, Y, epochs=2, batch_size=16, verbose=0)


@pytest.mark.parametrize("loss_case", ["bce", "ce one-hot", "ce ids", "mse"])
def test_device_data_is_checked_on_the_device(fake_cupy, cp, loss_case):
    """Defect 8: a device X, Y is checked where it lives: a few numbers come back (one read each for
    X and Y), never Y itself, and nothing goes to the device."""
    m = 5000
    rng = np.random.default_rng(0)
    Xh = rng.standard_normal((4, m))
    ids = rng.integers(0, 3, m)
    Yh, dims, acts = {"bce": ((ids > 0)[None], [4, 5, 1], ("relu", "sigmoid")),
                      "ce one-hot": (np.eye(3)[:, ids], [4, 5, 3], ("relu", "softmax")),
                      "ce ids": (ids, [4, 5, 3], ("relu", "softmax")),
                      "mse": (Xh[:1], [4, 5, 1], ("relu", "linear"))}[loss_case]
    net = fastdnn.Network(dims, *acts, device="cupy", dtype="float64", seed=1)
    Xd, Yd = cp.asarray(Xh), cp.asarray(Yh)
    fake_cupy.reset_counts()
    Xp, Yp = net.prepare(Xd, Yd)
    assert fake_cupy.counts["h2d"] == 0 and fake_cupy.counts["d2h"] == 2
    assert fake_cupy.counts["d2h_bytes"] <= 8 * 7
    expected = np.eye(3)[:, ids] if loss_case == "ce ids" else np.asarray(Yh, np.float64).reshape(Yp.shape)
    np.testing.assert_array_equal(Yp.get(), expected)
    assert net.cost(Xp, Yp) == pytest.approx(fastdnn.Network(dims, *acts, device="numpy", dtype="float64",
                                                             seed=1).cost(Xh, Yh), rel=1e-12)


@pytest.mark.parametrize("Y, message", [(np.array([[0.0, 2.0] * 10]), "must be 0 or 1; Y contains 2.0"),
                                        (np.array([[0.0, np.nan] * 10]), "NaN or infinity"),
                                        (np.ones((2, 20)), "has shape \\(2, 20\\), expected \\(1, 20\\)")])
def test_bad_device_labels_are_named_as_on_the_host(fake_cupy, cp, Y, message):
    net = fastdnn.Network([4, 5, 1], device="cupy", seed=1)
    Xh = np.random.default_rng(0).standard_normal((4, 20))
    for y in (Y, cp.asarray(Y)):
        with pytest.raises((ValueError, fastdnn.errors.ShapeError), match=message):
            net.prepare(Xh, y)


def test_a_mini_batch_epoch_allocates_nothing_per_batch(fake_cupy):
    """Defect 8: the epoch's running cost is summed in place; on cupy-fused (whose steps allocate
    nothing; the reference `cupy` backend's do) allocations per epoch do not grow with the batches."""
    Xm, Ym = _host((4, 64)), (_host((1, 64), seed=1) > 0).astype(np.float64)
    per_epoch = {}
    for B in (8, 16, 32):
        net = fastdnn.Network([4, 5, 1], device="cupy-fused", seed=1)
        Xd, Yd = net.prepare(Xm, Ym)
        counts = []
        for epochs in (1, 1, 3):
            fake_cupy.reset_counts()
            net.fit(Xd, Yd, epochs=epochs, batch_size=B, verbose=0, report_every=10**6)
            counts.append(fake_cupy.counts["alloc"])
        per_epoch[B] = (counts[2] - counts[1]) / 2
    assert per_epoch[8] == per_epoch[16] == per_epoch[32] <= 8, per_epoch


def test_divergence_stops_at_the_first_non_finite_cost_on_the_gpu(fake_cupy):
    def diverge(device):
        net = fastdnn.Network([4, 5, 1], device=device, seed=1)
        with pytest.raises(fastdnn.errors.TrainingDivergedError) as err, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            net.fit(X * 1e3, Y, iterations=40, learning_rate=1e3, report_every=10**6, verbose=0)
        return err.value, net
    _, cpu = diverge("numpy")
    _, gpu = diverge("cupy")
    assert all(np.isfinite(v).all() for v in cpu.parameters.values())
    assert all(np.isfinite(v).all() for v in gpu.parameters.values())


def test_two_networks_on_two_devices_train_in_turn(fake_cupy):
    net0 = fastdnn.Network([4, 5, 1], device="cuda:0", seed=1)
    net1 = fastdnn.Network([4, 5, 1], device="cuda:1", seed=1)
    net1.fit(X, Y, iterations=2, verbose=0)
    net0.fit(X, Y, iterations=2, verbose=0)


def test_a_network_on_cuda_1_trains_in_another_thread(fake_cupy):
    net = fastdnn.Network([4, 5, 1], device="cuda:1", seed=1)
    errors = []

    def fit():
        try:
            net.fit(X, Y, iterations=2, verbose=0)
        except Exception as exc:           # re-raised in the test's thread
            errors.append(exc)
    t = threading.Thread(target=fit)
    t.start()
    t.join()
    if errors:
        raise errors[0]
