"""Backend registry, device strings and the CPU fallback with its one clear warning."""
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

import fastdnn
from fastdnn import BackendUnavailableError, DeviceFallbackWarning, Network, get_backend
from fastdnn.backends import base


def test_import_fastdnn_imports_neither_numba_nor_cupy():
    code = ("import sys, fastdnn; net = fastdnn.Network([2, 3, 1], device='numpy'); "
            "net.fit([[0., 1.], [1., 0.]], [[0, 1]], iterations=2); "
            "print(sorted(m for m in ('numba', 'cupy', 'llvmlite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_available_backends_lists_numpy_with_reasons():
    infos = {b.name: b for b in fastdnn.available_backends()}
    assert infos["numpy"].available and infos["numpy"].reason is None and infos["numpy"].device == "cpu"
    assert all(b.available == (b.reason is None) for b in infos.values())


def test_backend_names_and_cpu():
    assert get_backend("numpy").name == "numpy"
    cpu = get_backend("cpu")
    assert cpu.device == "cpu" and cpu.name in {b.name for b in fastdnn.available_backends()}
    assert get_backend(cpu) is cpu
    with pytest.raises(TypeError, match="device must be a string or a Backend"):
        get_backend(0)


def fake_cupy(monkeypatch, get_count):
    """A stand-in 'cupy' module whose getDeviceCount behaves as given (the real one needs a GPU)."""
    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_count))
    monkeypatch.setitem(sys.modules, "cupy", module)


class CUDARuntimeError(RuntimeError):
    pass


def no_driver():
    raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")


def cupy_reason():
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        return f"cupy: {type(exc).__name__}: {exc}"
    return "cupy: "


def test_cuda_falls_back_to_cpu_with_one_warning_naming_the_reason():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = Network([2, 3, 1], device="cuda")
    assert len(caught) == 1 and caught[0].category is DeviceFallbackWarning
    message = str(caught[0].message)
    assert message.startswith("device='cuda' unavailable (cupy: ")
    assert cupy_reason() in message
    assert message.endswith(f"using backend {net.backend.name!r} on cpu")
    assert caught[0].filename == __file__          # points at the user's line, not at fastdnn
    assert net.device == "cpu"
    X, Y = np.random.RandomState(0).randn(2, 5), np.array([[0, 1, 1, 0, 1]])
    assert np.isfinite(net.fit(X, Y, iterations=3).costs).all()


def test_cuda_error_from_cupy_is_carried_into_the_warning_and_the_error(monkeypatch):
    fake_cupy(monkeypatch, no_driver)
    expected = ("device='cuda:1' unavailable (cupy: CUDARuntimeError: cudaErrorInsufficientDriver: "
                "CUDA driver version is insufficient); using backend ")
    with pytest.warns(DeviceFallbackWarning, match=expected.replace("(", r"\(").replace(")", r"\)")):
        get_backend("cuda:1")
    with pytest.raises(BackendUnavailableError) as e:
        get_backend("cuda:1", fallback=False)
    assert str(e.value) == ("device='cuda:1' unavailable (cupy: CUDARuntimeError: "
                            "cudaErrorInsufficientDriver: CUDA driver version is insufficient)")


def test_cuda_with_cupy_but_no_device(monkeypatch):
    fake_cupy(monkeypatch, lambda: 0)
    with pytest.raises(BackendUnavailableError, match=r"cupy: no CUDA device found"):
        get_backend("cuda", fallback=False)
    fake_cupy(monkeypatch, lambda: 1)
    with pytest.raises(BackendUnavailableError, match=r"cuda:2 asked for, but only 1 CUDA device\(s\)"):
        get_backend("cuda:2", fallback=False)


def test_auto_is_silent_and_cuda_backends_by_name_raise():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend("auto").device == "cpu"
    for name in ("cupy", "cupy-fused"):
        with pytest.raises(BackendUnavailableError, match=f"backend '{name}' unavailable"):
            get_backend(name)


def test_bad_device_strings():
    with pytest.raises(ValueError, match="bad device 'cuda:x'"):
        get_backend("cuda:x")
    with pytest.raises(ValueError, match="unknown device 'tpu'; expected one of 'auto', 'cpu', 'cuda'"):
        get_backend("tpu")


def test_backend_refuses_arrays_from_another_device_with_a_remedy(monkeypatch):
    class ndarray:                      # stands in for cupy.ndarray
        dtype = np.dtype(np.float32)
    ndarray.__module__ = "cupy._core.core"
    net = Network([2, 3, 1], device="numpy")
    with pytest.raises(TypeError) as e:
        net.forward(ndarray())
    assert str(e.value) == ("backend 'numpy' got cupy.ndarray for X; move it with "
                            "net.backend.asarray(X)")


def test_base_backend_is_xp_generic():
    assert base.Backend.xp is np and get_backend("numpy").xp is np


def test_fallback_with_cupy_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy -> ImportError
    with pytest.warns(DeviceFallbackWarning, match=r"device='cuda' unavailable \(cupy: ModuleNotFoundError"):
        net = Network([2, 3, 1], device="cuda")
    assert net.device == "cpu"
    with pytest.raises(BackendUnavailableError, match="cupy: ModuleNotFoundError"):
        get_backend("cuda", fallback=False)


def test_fallback_with_the_real_cupy_wheel_and_no_gpu():
    cupy = pytest.importorskip("cupy", reason="the CuPy wheel is not installed")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:           # the expected case on machines without a GPU
        real = f"cupy: {type(exc).__name__}: {exc}"
    else:
        pytest.skip(f"{count} CUDA device(s) found: this test is for machines without a GPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = Network([2, 3, 1], device="cuda")
    assert [str(w.message) for w in caught] == [
        f"device='cuda' unavailable ({real}); using backend {net.backend.name!r} on cpu"]
    with pytest.raises(BackendUnavailableError) as e:
        get_backend("cuda:0", fallback=False)
    assert real in str(e.value)
