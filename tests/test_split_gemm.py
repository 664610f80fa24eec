"""GEMMs with few rows in C split over BLAS's threads from compiled code (``_split_gemm``): each part against
the float64 product, the rule, and whole training steps that split against the numpy backend."""
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
        pytest.skip("no BLAS with batched GEMMs callable from compiled code here")
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
    view untouched."""
    from fastdnn.backends import _split_gemm
    n, k, m = 7, 3000, 67 * threads + 5               # each part > BATCH_SMALL_MACS multiply-adds
    rng = np.random.RandomState(threads)
    A = rng.randn(n, k + 3).astype(dtype)[:, :k]
    B = (rng.randn(m, k + 2) if trans_b else rng.randn(k, m + 2)).astype(dtype)
    B = B[:, :k] if trans_b else B[:, :m]
    parent = np.full((n, m + 4), np.nan, dtype)
    call = _caller(dtype)
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        assert call(False, trans_b, A, B, parent[:, :m])
    A64, B64 = rounded(A, dtype), rounded(B, dtype)
    assert_close(parent[:, :m], A64 @ (B64.T if trans_b else B64), dtype, scale=np.sqrt(k) * 3)
    assert np.isnan(parent[:, m:]).all()
    assert m // _split_gemm.SPLIT_MIN_COLUMNS >= threads   # so that it was split in ``threads`` parts


def test_nothing_is_split_with_one_blas_thread_too_few_columns_or_small_parts():
    """No split (C untouched) with one BLAS thread, fewer than 2 SPLIT_MIN_COLUMNS columns, or parts of at
    most BATCH_SMALL_MACS multiply-adds (OpenBLAS's batched small-matrix path crashes); otherwise as many
    parts as allowed."""
    from fastdnn.backends import _split_gemm as S
    call = _caller("float64")
    k = 5000
    A, B = np.ones((4, k)), np.ones((k, 2 * S.SPLIT_MIN_COLUMNS))
    C = np.zeros((4, B.shape[1]))
    assert 4 * S.SPLIT_MIN_COLUMNS * k > S.BATCH_SMALL_MACS
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert not call(False, False, A, B, C)
    with threadpoolctl.threadpool_limits(4, user_api="blas"):
        assert not call(False, False, A, B[:, :S.SPLIT_MIN_COLUMNS + 1], C[:, :65])
        assert not call(False, False, A[:, :700], B[:700], C)   # parts of 4 · 64 · 700 multiply-adds
        assert (C == 0).all()
        assert call(False, False, A, B, C)         # two parts: the columns allow no more
    assert (C == k).all()


def test_the_rule_splits_narrow_layers_with_much_work():
    """The cat network's first layer (20 x 12288, m = 209) splits, forward and backward; with 32 rows or
    too little work it does not."""
    from fastdnn.backends import _split_gemm as S
    assert S.splits(20, 209, 12288) and S.splits(20, 12288, 209)
    assert not S.splits(32, 209, 12288) and not S.splits(20, 209, 400)


def test_a_blas_without_the_batch_api_is_not_registered():
    """An OpenBLAS older than cblas_?gemm_batch (here: a library with only the GEMMs) never splits."""
    from fastdnn.backends import _split_gemm as S

    class OldBLAS:
        scipy_cblas_sgemm64_ = scipy_cblas_dgemm64_ = scipy_openblas_get_num_threads64_ = object()
    assert not S.register(OldBLAS(), "scipy_cblas_{}gemm64_", 64)


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
    assert S.splits(16, 200, 4096)
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


def test_two_threads_training_at_once_get_what_each_gets_alone():
    """Two networks whose steps split, trained at once from two threads (both batched BLAS calls in flight on
    BLAS's one pool), end exactly where each ends trained alone."""
    import threading
    from fastdnn import engine
    _bits()
    rng = np.random.RandomState(1)
    X, Y = rng.randn(4096, 300), (rng.rand(1, 300) > 0.5).astype(float)

    def train(seed, out):
        net = fastdnn.Network([4096, 16, 4, 1], "relu", "sigmoid", device="numba", seed=seed)
        net.fit(X, Y, learning_rate=0.01, iterations=20, report_every=20)
        out[seed] = net.parameters

    old = engine.BACKGROUND_COMPILE
    engine.BACKGROUND_COMPILE = False
    try:
        with threadpoolctl.threadpool_limits(2, user_api="blas"):
            alone, together = {}, {}
            for seed in (1, 2):
                train(seed, alone)
            threads = [threading.Thread(target=train, args=(seed, together)) for seed in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        engine.BACKGROUND_COMPILE = old
    for seed in (1, 2):
        for key, value in alone[seed].items():
            np.testing.assert_array_equal(together[seed][key], value)
