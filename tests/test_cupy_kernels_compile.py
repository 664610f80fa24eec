"""Every fused GPU kernel (each kind x dtype x registered activation / loss / optimizer) compiled by NVRTC
to a cubin for sm_80 and sm_90, strictly: front-end warnings are errors (-Werror=all-warnings, with
-Wconversion), ptxas spills and local memory are errors; then ptxas's figures (-v, inside NVRTC) and
``cuobjdump -res-usage`` on the very cubin: no spill, no stack, no local memory. The source compiled is
the one CuPy's RawKernel hands to NVRTC (recorded through CuPy's own compile path), with CuPy's options.
No GPU is used."""
import functools
import re

import pytest

from fastdnn.backends import _cupy_kernels as K
from fastdnn.backends import _nvrtc

pytestmark = pytest.mark.skipif(_nvrtc.unavailable_reason() is not None,
                                reason=f"NVRTC unavailable: {_nvrtc.unavailable_reason()}")

DTYPES = ("float32", "float64")
MAX_REGISTERS = 64            # 256-thread blocks keep full occupancy up to 64 registers per thread
ELEMENTWISE = {"bias_activation", "bias_skip_activation", "bias_softmax", "optimizer_update", "add_scaled",
               "dropout_mask", "running_average", "running_guard"}
INTEGER_DIVISION = re.compile(r"\b(?:div|rem)\.[su](?:16|32|64)\b")     # dozens of instructions each
REDUCING = {"delta_row_sum", "delta_row_sum_skip", "row_sum_partials", "output_elementwise", "output_softmax_ce",
            "sum_partials", "sum_squares", "batch_stats", "bn_row_sums", "batch_norm_delta"}


def _cupy():
    try:
        import cupy
        return cupy
    except ImportError:
        return None


@functools.lru_cache(maxsize=None)
def compiled(dtype, arch):
    """{(kind, variant): (source, name, Compiled)} for every kernel of the catalog, compiled as CuPy
    would compile it (its recorded source and options) when CuPy is installed, else with CuPy's
    documented options."""
    cupy, out = _cupy(), {}
    for kind, variant, (source, name) in K.catalog(dtype):
        if cupy is not None:
            result = _nvrtc.compile_like_cupy(cupy.RawKernel(source, name), arch)
        else:
            result = _nvrtc.compile_source(source, arch, options=_nvrtc.CUPY_ADDED + ("--std=c++17",))
        out[(kind, variant)] = (source, name, result)
    return out


def test_nvrtc_targets_both_architectures():
    assert {"sm_80", "sm_90"} <= set(_nvrtc.supported_archs())


@pytest.mark.parametrize("arch", _nvrtc.ARCHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_compiles_without_spills_or_local_memory(dtype, arch):
    results = compiled(dtype, arch)
    assert len(results) == len(K.catalog(dtype)) >= 29
    for (kind, variant), (_, name, r) in results.items():
        where = f"{kind}[{variant}] {dtype} {arch}"
        assert r.cubin[:4] == b"\x7fELF", where
        assert f".target {arch}" in r.ptx, where
        assert list(r.resources) == [name], (where, r.resources)
        fig = r.resources[name]
        assert fig["spill_stores"] == fig["spill_loads"] == fig["stack"] == 0, (where, fig)
        assert 0 < fig["registers"] <= MAX_REGISTERS, (where, fig)
        assert (fig["barriers"] > 0) == (kind in REDUCING), (where, fig)
        assert fig["smem"] <= 8192, (where, fig)
        assert not INTEGER_DIVISION.search(r.ptx), (where, INTEGER_DIVISION.findall(r.ptx))
        if dtype == "float32" and kind in ELEMENTWISE:          # float32 math stays float32
            assert _nvrtc.f64_instructions(r.ptx) == 0, where


@pytest.mark.parametrize("arch", _nvrtc.ARCHS)
def test_cuobjdump_reads_no_local_memory_in_the_cubins(arch):
    if _nvrtc.tool("cuobjdump") is None:
        pytest.skip("cuobjdump not found (CUDA toolkit bin/ or pip nvidia-cuda-cuobjdump)")
    for dtype in DTYPES:
        for (kind, variant), (_, name, r) in compiled(dtype, arch).items():
            usage = _nvrtc.cuobjdump_resources(r.cubin)
            where = f"{kind}[{variant}] {dtype} {arch}: {usage}"
            assert list(usage) == [name], where
            assert usage[name]["LOCAL"] == usage[name]["STACK"] == 0, where
            assert usage[name]["REG"] == r.resources[name]["registers"], where
            # sm_90 cubins add the 1 KiB of shared memory the system reserves per block
            assert 0 <= usage[name]["SHARED"] - r.resources[name]["smem"] <= 1024, where


def test_cupy_compiles_exactly_the_generated_source_with_its_own_options():
    cupy = _cupy()
    if cupy is None:
        pytest.skip("CuPy is not installed")
    for dtype in DTYPES:
        for kind, variant, (source, name) in K.catalog(dtype):
            kernel = cupy.RawKernel(source, name)
            request = _nvrtc.cupy_request(kernel)
            assert (kernel.code, kernel.name) == (source, name)
            assert request.source == source, f"{kind}[{variant}] {dtype}: CuPy would compile another text"
            assert "--std=c++17" in request.options
    # and those options plus CuPy's own additions are what the catalog test compiled with
    kind, variant, (source, name) = K.catalog("float32")[0]
    used = compiled("float32", "sm_80")[(kind, variant)][2].options
    assert set(_nvrtc.cupy_request(cupy.RawKernel(source, name)).options) | set(_nvrtc.CUPY_ADDED) <= set(used)


def test_device_functions_are_device_code_without_cupys_execution_space_option():
    # FDNN_DEVICE must be __device__ under NVRTC (__CUDACC__): without CuPy's
    # --device-as-default-execution-space a host function called from a kernel fails to compile
    for kind, variant, (source, name) in K.catalog("float64")[:2]:
        _nvrtc.compile_source(source, "sm_80")
    with pytest.raises(_nvrtc.CompileError):
        _nvrtc.compile_source('static inline float f(float x) { return x; }\n'
                              'extern "C" __global__ void k(float* x) { x[0] = f(x[0]); }', "sm_80")


# --- the checks can fail -------------------------------------------------------------------------------
BAD = {
    "unused variable": 'extern "C" __global__ void k(float* x) { int unused; x[0] = 1.0f; }',
    "double stored into float": 'extern "C" __global__ void k(float* x) { double d = x[0]; x[0] = d * 0.1 + 1e-20; }',
    "local memory": ('extern "C" __global__ void k(float* x, int n) { float t[64]; '
                     'for (int i = 0; i < 64; i++) t[i] = x[(i * n) % 63]; x[0] = t[n & 63]; }'),
}


@pytest.mark.parametrize("what", BAD)
def test_strict_compile_rejects(what):
    with pytest.raises(_nvrtc.CompileError):
        _nvrtc.compile_source(BAD[what], "sm_80")
    _nvrtc.compile_source(BAD[what], "sm_80", strict=False)       # valid CUDA: only strictness rejects it


def test_integer_division_is_seen_in_ptx():
    r = _nvrtc.compile_source('extern "C" __global__ void k(long long* x, long long n) { x[0] = x[1] / n; }',
                              "sm_80")
    assert INTEGER_DIVISION.search(r.ptx)


def test_resources_are_parsed_from_ptxas():
    r = _nvrtc.compile_source(BAD["local memory"], "sm_90", strict=False,
                              options=("--ptxas-options=-v",))
    assert r.resources["k"]["stack"] > 0 and r.resources["k"]["registers"] > 0
    assert _nvrtc.f64_instructions(r.ptx) == 0
    d = _nvrtc.compile_source(BAD["double stored into float"], "sm_90", strict=False)
    assert _nvrtc.f64_instructions(d.ptx) > 0


def test_kernel_names_are_unique_per_source():
    for dtype in DTYPES:
        names = [name for _, _, (_, name) in K.catalog(dtype)]
        assert len(set(names)) == len(names)
