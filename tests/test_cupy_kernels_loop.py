"""The scalar loops' GPU twin (``_cupy_kernels.scalar_loop_step``: one training step over every example in
ONE GPU thread, for ``fastdnn bench --gpu``): its exact CUDA source compiled by NVRTC for sm_80 and sm_90
(strict: warnings are errors, no spills, no local memory) and its body run on the CPU
(tests/cuda_on_cpu.py) against the float64 oracle: the same parameters after one step, the same cost.
No GPU is used."""
import numpy as np
import pytest

import cuda_on_cpu as E
import oracle
from fastdnn._layout import flat_layout
from fastdnn.activations import get_activation
from fastdnn.backends import _cupy_kernels as K
from fastdnn.backends import _nvrtc
from fastdnn.losses import get_loss

CASES = [("relu", "sigmoid", "bce", 1), ("tanh", "softmax", "ce", 3), ("leaky_relu", "tanh", "mse", 2),
         ("sigmoid", "linear", "mse", 2), ("relu", "relu", "mse", 2)]
IDS = ["-".join(c[:3]) for c in CASES]
TOL = {"float64": 1e-12, "float32": 2e-5}


def source(hidden, output, loss, dtype):
    out = get_activation(output)
    return K.scalar_loop_step(get_activation(hidden), out, get_loss(loss, out), dtype)


def problem(loss, n_out, m, ld, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((3, ld))
    Y = {"bce": rng.integers(0, 2, (1, ld)).astype(float), "ce": np.eye(3)[rng.integers(0, 3, ld)].T,
         "mse": rng.standard_normal((n_out, ld))}[loss]
    dims = [3, 5, 4, n_out]
    params = {}
    for l in range(1, 4):
        params[f"W{l}"] = rng.standard_normal((dims[l], dims[l - 1])) * 0.7
        params[f"b{l}"] = rng.standard_normal((dims[l], 1)) * 0.1
    return dims, X, Y, params


def flat(params):
    return np.concatenate([params[f"{p}{l}"].ravel() for l in range(1, 4) for p in "Wb"])


@pytest.mark.skipif(E.compiler_unavailable_reason() is not None,
                    reason=f"cannot compile kernels for the CPU: {E.compiler_unavailable_reason()}")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden,output,loss,n_out", CASES, ids=IDS)
def test_one_thread_step_matches_the_oracle(hidden, output, loss, n_out, dtype):
    m, ld = 7, 11                        # examples 0..6 of 11 columns: the row stride is not m
    dims, X, Y, params = problem(loss, n_out, m, ld)
    acts = [hidden, hidden, output]
    expected_cost = oracle.network_cost(params, X[:, :m], Y[:, :m], acts, loss)
    grads = oracle.network_gradients(params, X[:, :m], Y[:, :m], acts, loss)
    expected = flat(params) - 0.1 * flat({k[1:]: v for k, v in grads.items()})
    d, pofs = flat_layout(dims)
    theta = flat(params).astype(dtype)
    grad = np.full_like(theta, np.nan)                 # the kernel zeroes it
    units = sum(dims[1:])
    z, a, dz = (np.zeros(units, dtype) for _ in range(3))
    cost = np.zeros(1)
    src, name = source(hidden, output, loss, dtype)
    f = np.dtype(dtype).type
    E.launch(src, name, (1, 1, 1), (1, 1, 1),
             (np.ascontiguousarray(X, dtype), np.ascontiguousarray(Y, dtype), theta, grad, d, pofs, z, a, dz, f(0.1), np.int32(3),
              np.int32(m), np.int32(ld), cost))
    tol = TOL[dtype]
    assert cost[0] == pytest.approx(expected_cost, rel=tol)
    np.testing.assert_allclose(theta, expected, rtol=tol, atol=tol)


def test_softmax_needs_cross_entropy():
    with pytest.raises(ValueError, match="softmax output needs loss 'ce', not 'mse'"):
        K.scalar_loop_step(get_activation("relu"), get_activation("softmax"), get_loss("mse", get_activation("linear")),
                           "float32")


@pytest.mark.skipif(_nvrtc.unavailable_reason() is not None,
                    reason=f"NVRTC unavailable: {_nvrtc.unavailable_reason()}")
@pytest.mark.parametrize("arch", _nvrtc.ARCHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_thread_kernel_compiles_for_real_gpus(dtype, arch):
    for hidden, output, loss, _ in CASES:
        src, name = source(hidden, output, loss, dtype)
        r = _nvrtc.compile_source(src, arch, options=_nvrtc.CUPY_ADDED + ("--std=c++17", "--ptxas-options=-v"))
        assert r.cubin[:4] == b"\x7fELF" and f".target {arch}" in r.ptx
        fig = r.resources[name]
        assert fig["spill_stores"] == fig["spill_loads"] == fig["stack"] == 0, (name, fig)


@pytest.mark.skipif(_nvrtc.unavailable_reason() is not None,
                    reason=f"NVRTC unavailable: {_nvrtc.unavailable_reason()}")
@pytest.mark.parametrize("arch", _nvrtc.ARCHS)
def test_gpu_checks_hold_kernel_compiles_for_real_gpus(arch):
    from fastdnn import gpu_check
    r = _nvrtc.compile_source(gpu_check.HOLD_SOURCE, arch, options=_nvrtc.CUPY_ADDED + ("--std=c++17",))
    assert "globaltimer" in r.ptx and r.cubin[:4] == b"\x7fELF"
