"""Every CUDA kernel x dtype compiled to PTX for sm_80 and sm_90 and assembled by ptxas: no register
spills, no local memory, and no float64 instruction in a float32 kernel. (No GPU needed.)"""
import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (the cuda12/cuda13/dev extras)")
from fastdnn.backends import _cuda_ptx  # noqa: E402

pytestmark = pytest.mark.skipif(_cuda_ptx.ptxas_binary() is None, reason="ptxas (CUDA toolkit) not found")


@pytest.mark.parametrize("dtype", _cuda_ptx.DTYPES)
def test_every_kernel_compiles_for_sm80_and_sm90_without_spills(dtype):
    count = 0
    for name, kernel, argtypes in _cuda_ptx.catalog(dtype):
        for cc in _cuda_ptx.CCS:
            ptx = _cuda_ptx.compile_ptx(kernel, argtypes, cc)
            assert f".target sm_{cc[0]}{cc[1]}" in ptx
            r = _cuda_ptx.assemble(ptx, cc)
            where = f"{name} {dtype} sm_{cc[0]}{cc[1]}: {r}"
            assert r["spill_stores"] == r["spill_loads"] == 0, where
            assert r["stack"] == r["local"] == 0, where
            assert 0 < r["registers"] <= 64, where
            if dtype == "float32":
                assert r["float64_ops"] == 0, where
            count += 1
    assert count == 2 * len(_cuda_ptx.catalog(dtype)) >= 40


def test_the_register_table_in_the_repo_lists_every_kernel():
    import os
    table = open(os.path.join(os.path.dirname(__file__), "..", "benchmarks", "CUDA_KERNELS.md")).read()
    for dtype in _cuda_ptx.DTYPES:
        for name, _, _ in _cuda_ptx.catalog(dtype):
            for cc in _cuda_ptx.CCS:
                assert f"| {name} | {dtype} | sm_{cc[0]}{cc[1]} |" in table
