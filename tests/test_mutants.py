"""Tests written to kill the mutants a mutation run of the suite left alive (issue 16): each test
names the mutation it catches. ``python tools/mutate.py`` reruns the whole mutation set."""
import json

import numpy as np
import pytest

import fastdnn
from fastdnn import Network, datasets, schedules
from fastdnn.activations import LeakyReLU
from fastdnn.errors import ModelFileError

from support import BACKENDS, DTYPES, assert_close, rounded


# --- leaky ReLU's backward with a slope that is not the default ---------------------------------
def leaky_backward_oracle(dA, Z, slope):
    """dZ = dA where Z > 0, slope * dA elsewhere, in float64 (written apart from fastdnn)."""
    return np.where(Z > 0, dA, slope * dA)


@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_backward_uses_its_slope(backend, dtype):
    """Mutant: LeakyReLU.backward (or its scalar form in the fused kernels) uses 0.01 for any slope."""
    rng = np.random.default_rng(4)
    Z, dA = rounded(rng.standard_normal((5, 7)), dtype), rounded(rng.standard_normal((5, 7)), dtype)
    act = LeakyReLU(slope=0.2)
    Zd = backend.asarray(Z.astype(dtype))
    A = backend.activation_forward(act, Zd)
    dZ = backend.activation_backward(act, backend.asarray(dA.astype(dtype)), Zd, A)
    assert dZ.dtype == np.dtype(dtype)
    assert_close(backend.to_numpy(dZ), leaky_backward_oracle(dA, Z, 0.2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_slope_reaches_the_fused_backward_kernel(dtype):
    """Mutant: the numba delta_row_sum kernel built from a slope-less derivative."""
    pytest.importorskip("numba")
    from fastdnn.backends import _numba_kernels as K
    rng = np.random.default_rng(5)
    Z, dA = rounded(rng.standard_normal((4, 9)), dtype), rounded(rng.standard_normal((4, 9)), dtype)
    act = LeakyReLU(slope=0.2)
    work, db = dA.astype(dtype), np.zeros((4, 1), dtype)
    K.delta_row_sum(act, np.dtype(dtype).type)(work, Z.astype(dtype), Z.astype(dtype), db)
    expected = leaky_backward_oracle(dA, Z, 0.2)
    assert_close(work, expected, dtype)
    assert_close(db, expected.sum(axis=1, keepdims=True), dtype)


# --- extreme logits through the fused numba softmax kernels --------------------------------------
def softmax_oracle(Z):
    E = np.exp(Z - Z.max(axis=0))
    return E / E.sum(axis=0)


def log_softmax_oracle(Z):
    top = Z.max(axis=0)
    return Z - top - np.log(np.exp(Z - top).sum(axis=0))


FAR_LOGITS = np.array([[0.0, 200.0, -300.0, 5.0], [200.0, 0.0, -100.0, 5.5], [100.0, -50.0, 0.0, 4.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_bias_softmax_subtracts_the_column_max(dtype):
    """Mutant: bias_softmax without the max subtraction: exp(200) overflows float32 to inf, A = NaN."""
    pytest.importorskip("numba")
    from fastdnn.backends import _numba_kernels as K
    ftype = np.dtype(dtype).type
    Z, b = FAR_LOGITS.astype(dtype), np.array([[1.0], [-1.0], [0.5]], dtype)
    A = np.empty_like(Z)
    with np.errstate(all="raise"):
        K.bias_softmax(ftype)(Z, b, A)
    expected = softmax_oracle(FAR_LOGITS + b.astype(np.float64))
    assert np.isfinite(A).all()
    assert_close(A, expected, dtype)
    assert_close(Z, FAR_LOGITS + b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_softmax_ce_cost_falls_back_to_the_logits_when_saturated(dtype):
    """Mutant: output_softmax_ce takes log(A) even where A underflowed to 0: the cost is inf."""
    pytest.importorskip("numba")
    from fastdnn.backends import _numba_kernels as K
    ftype = np.dtype(dtype).type
    Z = FAR_LOGITS.astype(dtype)
    A = softmax_oracle(Z.astype(np.float64)).astype(dtype)
    Y = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype)       # every label but the last wrong
    dZ = np.empty_like(Z)
    m = Z.shape[1]
    cost = K.output_softmax_ce(ftype)(Z, A, Y, dZ, ftype(1.0 / m))
    expected = -np.sum(Y * log_softmax_oracle(Z.astype(np.float64))) / m
    assert np.isfinite(cost) and cost == pytest.approx(expected, rel=1e-6)
    assert_close(dZ, (A.astype(np.float64) - Y) / m, dtype)


def far_softmax_network(device, dtype):
    """[2, 3] softmax whose logits for the two examples below lie about 200 apart."""
    params = {"W1": np.array([[50.0, 0.0], [0.0, 50.0], [-50.0, -50.0]]), "b1": np.zeros((3, 1))}
    return Network.from_parameters(params, output_activation="softmax", device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_numba_softmax_step_on_far_logits_matches_numpy(dtype, path):
    """Both mutants above, through Network on device 'numba' on each of its step paths (whole-step,
    BLAS step, per-op): cost, A and the step's parameters agree with the numpy backend's."""
    if "numba" not in BACKENDS:
        pytest.skip("numba is not installed")
    X = np.array([[4.0, -2.0, 0.0], [0.0, 2.0, 4.0]], dtype)
    Y = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype)
    fused, plain = far_softmax_network("numba", dtype), far_softmax_network("numpy", dtype)
    A = fused.forward(X)
    assert np.isfinite(A).all()
    assert_close(A, softmax_oracle(np.array([[50.0, 0.0], [0.0, 50.0], [-50.0, -50.0]]) @ X.astype(np.float64)), dtype)
    cost = fused.cost(X, Y)
    assert np.isfinite(cost) and cost == pytest.approx(plain.cost(X, Y), rel=1e-6)
    fused.step(X, Y, learning_rate=1e-3)
    plain.step(X, Y, learning_rate=1e-3)
    for k, v in plain.parameters.items():
        assert np.isfinite(fused.parameters[k]).all()
        assert_close(fused.parameters[k], v, dtype, scale=50.0)


# --- ExponentialDecay's time interval ---------------------------------------------------------------
def test_exponential_decay_steps_once_per_time_interval():
    """Mutant: ExponentialDecay ignoring time_interval (decaying every epoch)."""
    s = schedules.ExponentialDecay(decay_rate=0.5, time_interval=10)
    assert [s(1.0, e) for e in (0, 9, 10, 19, 20, 35)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    s = schedules.InverseTimeDecay(decay_rate=1.0, time_interval=3)
    assert [s(1.0, e) for e in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 1 / 3]


# --- load's checks --------------------------------------------------------------------------------
def saved_arrays(tmp_path):
    X, Y = datasets.moons(m=40, seed=0)
    net = Network([2, 4, 1], device="numpy", dtype="float64", seed=1)
    net.fit(X, Y, iterations=3, optimizer="adam", learning_rate=0.01, verbose=0)
    path = str(tmp_path / "net.npz")
    net.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("header"))), arrays


def rewrite(tmp_path, header, arrays):
    path = str(tmp_path / "bad.npz")
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    return path


@pytest.mark.parametrize("field,value", [("format", "some-other-network"), ("format", None),
                                         ("version", 99)])
def test_load_refuses_another_format_or_version(tmp_path, field, value):
    """Mutant: load without its format (or version) check."""
    header, arrays = saved_arrays(tmp_path)
    header = {k: v for k, v in header.items() if k != field} if value is None else {**header, field: value}
    with pytest.raises(ModelFileError, match="format"):
        fastdnn.load(rewrite(tmp_path, header, arrays))


@pytest.mark.parametrize("name", ["state0", "state1"])
def test_load_refuses_a_broadcastable_optimizer_state(tmp_path, name):
    """Mutant: load without the optimizer-state shape check (a (1,) state broadcasts silently)."""
    header, arrays = saved_arrays(tmp_path)
    with pytest.raises(ModelFileError, match=f"{name} has shape"):
        fastdnn.load(rewrite(tmp_path, header, dict(arrays, **{name: np.zeros(1)})))


def test_a_header_that_is_not_one_string_is_a_corrupted_header(tmp_path):
    """Mutant: io._read_header without its check that the header is a 0-d string array."""
    header, arrays = saved_arrays(tmp_path)
    path = str(tmp_path / "numeric-header.npz")
    np.savez(path, header=np.array(7.0), **arrays)
    with pytest.raises(ModelFileError, match=r"corrupted header \(a float64 array of shape \(\)\)"):
        fastdnn.load(path)


def test_the_iteration_and_the_optimizer_step_are_saved_apart(tmp_path):
    """Mutant: the state dict writing the optimizer's step count as the iteration. A new optimizer
    starts its own count, so after 3 gd steps and 2 Adam steps they are 5 and 2."""
    X, Y = datasets.moons(m=20, seed=0)
    net = Network([2, 3, 1], device="numpy", dtype="float64", seed=1)
    net.fit(X, Y, iterations=3, learning_rate=0.1, verbose=0)
    net.fit(X, Y, iterations=2, optimizer="adam", learning_rate=0.01, verbose=0)
    config = net.state_dict()["config"]
    assert (config["iteration"], config["optimizer_step"]) == (5, 2)
    path = str(tmp_path / "net.npz")
    net.save(path)
    back = fastdnn.load(path, device="numpy")
    assert back.iteration == 5 and back.engine.t == 2
    back.step(X, Y)                         # Adam's bias correction continues from its own step 2
    net.step(X, Y)
    for k, v in net.parameters.items():
        np.testing.assert_array_equal(back.parameters[k], v)


@pytest.mark.parametrize("name", ["state0", "state1", "W1"])
def test_a_state_dict_with_a_broadcastable_array_is_refused(name):
    """Mutant: state.check_arrays without its shape check (load has a second check in io.py; a state
    dict, e.g. from_state_dict or unpickling, has only this one). Refused before anything is built."""
    X, Y = datasets.moons(m=20, seed=0)
    net = Network([2, 3, 1], device="numpy", dtype="float64", seed=1)
    net.fit(X, Y, iterations=2, optimizer="adam", learning_rate=0.01, verbose=0)
    bad = dict(net.state_dict(), **{name: np.zeros(1)})
    with pytest.raises(ValueError, match=f"{name} has shape"):
        Network.from_state_dict(bad, device="numpy")


# --- gradient_check's float64 reference -----------------------------------------------------------
@pytest.mark.parametrize("device", BACKENDS)
def test_gradient_check_of_a_float32_network_uses_float64_differences(device):
    """Mutant: gradient_check building its reference network in the network's dtype. A float32
    network's backprop agrees with float64 central differences to float32 rounding (~1e-7); float32
    central differences with ε = 1e-7 are noise (relative difference near 1)."""
    X, Y = datasets.moons(m=30, seed=2)
    net = Network([2, 5, 3, 1], hidden_activation="tanh", device=device, dtype="float32", seed=3)
    difference = fastdnn.gradient_check(net, X, Y)
    assert difference < 1e-4
    assert net.parameters["W1"].dtype == np.float32


# --- data-parallel ranks draw their own dropout masks ------------------------------------------------
class FakeComm:
    """One rank of a communicator whose other ranks hold the same values (what DataParallel.start
    needs: ranks, allgather, bcast, Bcast)."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def allgather(self, value):
        return [value] * self.size

    def bcast(self, value, root=0):
        return value

    def Bcast(self, buffer, root=0):
        pass


def masks_after_start(rank, backend="numpy", draws=3):
    pytest.importorskip("mpi4py")
    from fastdnn.distributed import DataParallel
    net = Network([2, 6, 1], device=backend, dtype="float64", seed=7, keep_prob=0.5)
    DataParallel(FakeComm(rank, 3), net.engine).start(10, ("plan",))
    b = net.backend
    return [b.to_numpy(b.dropout_mask(b.asarray(np.empty((6, 10))), 0.5, net.engine.rng)) for _ in range(draws)]


@pytest.mark.parametrize("device", BACKENDS)
def test_every_rank_draws_its_own_reproducible_dropout_masks(device):
    """Mutant: DataParallel.start leaving every rank on rank 0's dropout generator."""
    per_rank = [masks_after_start(r, device) for r in range(3)]
    for r in range(3):
        for s in range(r + 1, 3):
            assert all((a != b).any() for a, b in zip(per_rank[r], per_rank[s])), (r, s)
    for r in range(3):                   # the same rank of the same run draws the same masks
        assert all((a == b).all() for a, b in zip(per_rank[r], masks_after_start(r, device)))
    assert {float(v) for v in np.unique(per_rank[1][0])} == {0.0, 2.0}


# --- any layout NumPy accepts trains like a C-ordered copy ---------------------------------------------
def layouts(X):
    """Views of the same data with strides BLAS cannot take as they are, and a Fortran copy."""
    n, m = X.shape
    wide = np.zeros((n, 2 * m))
    wide[:, ::2] = X
    return {"reversed rows": np.ascontiguousarray(X[::-1])[::-1], "every other column": wide[:, ::2],
            "fortran": np.asfortranarray(X), "transposed": np.ascontiguousarray(X.T).T,
            "broadcast row": np.broadcast_to(X[:1], X.shape)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_layout_of_X_gives_the_numpy_backends_step(dtype, path):
    """Mutants: _checks.as_float_array passing a layout BLAS cannot take; the compiled BLAS call's
    leading dimension ignoring the row stride. A step on X[::-1]-like views equals the numpy step on a
    C-ordered copy (costs like 9e33 before the fix)."""
    X, Y = datasets.moons(m=37, seed=4)
    for name, view in layouts(X).items():
        nets = {d: Network([2, 5, 3, 1], device=d, dtype=dtype, seed=2) for d in BACKENDS}
        plain = Network([2, 5, 3, 1], device="numpy", dtype=dtype, seed=2)
        expected = plain.step(np.ascontiguousarray(view), Y, learning_rate=0.1)
        for device, net in nets.items():
            cost = net.step(view, Y, learning_rate=0.1)
            assert cost == pytest.approx(expected, rel=1e-5), (name, device)
            for k, v in plain.parameters.items():
                assert_close(net.parameters[k], v, dtype)
