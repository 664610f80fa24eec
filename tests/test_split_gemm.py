"""The first layer's GEMMs split over threads from compiled code (``_split_gemm``): each part against the
float64 product, the rule, the BLAS thread count given back, and whole training steps that split against
the numpy backend."""
import numpy as np
import pytest

import fastdnn
from support import assert_close, rounded

threadpoolctl = pytest.importorskip("threadpoolctl")
pytest.importorskip("numba")


def _bits():
    from fastdnn.backends import _blas
    bits = _blas.int_bits()
    if bits is None or not _blas.split_ready(bits):
        pytest.skip("no BLAS or no threads callable from compiled code here")
    return bits


def _caller(dtype):
    """call(trans_a, trans_b, A, B, C) -> whether it split: the split as compiled code calls it."""
    import numba
    from fastdnn.backends import _split_gemm
    from fastdnn.backends._blas import NO_TRANS, TRANS
    split, size = _split_gemm.split_gemm(np.dtype(dtype), _bits()), np.dtype(dtype).itemsize

    @numba.njit
    def call(trans_a, trans_b, A, B, C):
        n, m = C.shape
        k = A.shape[0] if trans_a else A.shape[1]
        return split(TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, n, m, k, A.ctypes.data,
                     A.strides[0] // size, B.ctypes.data, B.strides[0] // size, C.ctypes.data, C.strides[0] // size)
    return call


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("trans_b", [False, True], ids=["Z=W·X,dW=dZ·X(example-major)", "Z=W·Xᵀ,dW=dZ·Xᵀ"])
def test_each_part_computes_its_columns_like_the_oracle(dtype, threads, trans_b):
    """C = op(A) · op(B) split in ``threads`` parts (uneven: m not a multiple of the parts), on views whose
    rows are wider than their length: every column against the float64 product, C's parent outside the
    view untouched, and BLAS's thread count as it was."""
    from fastdnn.backends import _split_gemm
    n, k, m = 7, 300, 67 * threads + 5
    rng = np.random.RandomState(threads)
    A = rng.randn(n, k + 3).astype(dtype)[:, :k]
    B = (rng.randn(m, k + 2) if trans_b else rng.randn(k, m + 2)).astype(dtype)
    B = B[:, :k] if trans_b else B[:, :m]
    parent = np.full((n, m + 4), np.nan, dtype)
    call = _caller(dtype)
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        assert call(False, trans_b, A, B, parent[:, :m])
        assert _blas_threads() == threads
    A64, B64 = rounded(A, dtype), rounded(B, dtype)
    assert_close(parent[:, :m], A64 @ (B64.T if trans_b else B64), dtype, scale=np.sqrt(k) * 3)
    assert np.isnan(parent[:, m:]).all()
    assert m // _split_gemm.SPLIT_MIN_COLUMNS >= threads   # so that it was split in ``threads`` parts


def _blas_threads():
    return min(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


def test_nothing_is_split_with_one_blas_thread_or_too_few_columns():
    from fastdnn.backends import _split_gemm
    call = _caller("float64")
    A, B = np.ones((4, 50)), np.ones((50, 2 * _split_gemm.SPLIT_MIN_COLUMNS))
    C = np.zeros((4, B.shape[1]))
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert not call(False, False, A, B, C)
    with threadpoolctl.threadpool_limits(4, user_api="blas"):
        assert not call(False, False, A, B[:, :_split_gemm.SPLIT_MIN_COLUMNS + 1], C[:, :65])
        assert call(False, False, A, B, C)         # two parts: the columns allow no more
    assert (C == 0).sum() == 0 and (C[:, :65] == 50).all()


def test_the_rule_splits_narrow_first_layers_of_steps_without_other_threaded_gemms():
    """The cat network's first layer (20 x 12288, m = 209) splits; with 64 rows, too little work, or a later
    layer big enough for BLAS's threads, it does not."""
    from fastdnn.backends import _split_gemm as S
    assert S.splits(20, 209, 12288) and S.splits(20, 12288, 209)
    assert not S.splits(64, 209, 12288) and not S.splits(20, 209, 1000)
    assert S.alone(np.array([12288, 20, 7, 5, 1]), 209)
    assert not S.alone(np.array([12288, 20, 512, 1]), 209)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 200])
def test_steps_that_split_train_like_the_numpy_backend(dtype, batch_size):
    """[4096, 16, 4, 1] (the first layer's GEMMs qualify, the others are small): full-batch steps (the
    compiled loop, course layout X) and shuffled mini-batches (the compiled epoch, example-major batches)
    on 2 BLAS threads, against the numpy backend: costs and parameters."""
    from fastdnn import engine
    from fastdnn.backends import _split_gemm as S
    _bits()
    m = 400
    assert S.splits(16, 200, 4096) and S.alone(np.array([4096, 16, 4, 1]), 200)
    rng = np.random.RandomState(0)
    X, Y = rng.randn(4096, m).astype(dtype), (rng.rand(1, m) > 0.5).astype(dtype)
    nets = [fastdnn.Network([4096, 16, 4, 1], "relu", "sigmoid", device=d, dtype=dtype, seed=3)
            for d in ("numpy", "numba")]
    kwargs = dict(epochs=3, batch_size=batch_size, optimizer="adam") if batch_size else dict(iterations=6)
    old = engine.BACKGROUND_COMPILE
    engine.BACKGROUND_COMPILE = False
    try:
        with threadpoolctl.threadpool_limits(2, user_api="blas"):
            costs = [net.fit(X, Y, learning_rate=0.01, report_every=1, **kwargs).costs for net in nets]
    finally:
        engine.BACKGROUND_COMPILE = old
    # float32: Adam steps by ~α whatever the gradient's size: rounding in a near-zero gradient moves it by a bit of α
    rtol, atol = (1e-10, 1e-13) if dtype == "float64" else (2e-4, 0.01 * 0.01)
    np.testing.assert_allclose(costs[1], costs[0], rtol=rtol)
    for key, value in nets[0].parameters.items():
        np.testing.assert_allclose(nets[1].parameters[key], value, rtol=rtol, atol=atol)
