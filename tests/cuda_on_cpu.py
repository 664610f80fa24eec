"""Run a CUDA C kernel source on the CPU: every thread of every block, with real barriers.

``launch(source, name, grid, block, args, shared_bytes=0, *, schedule="forward")``

* ``source``: the exact CUDA C source a ``cupy.RawKernel`` gets; it is compiled UNCHANGED by the
  system C++ compiler (``g++ -O1``) between a small header that emulates the CUDA builtins
  (``__global__``, ``__device__``, ``__forceinline__``, ``__shared__`` as block-shared static storage,
  ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``, ``__syncthreads``, ``isfinite`` and the C math
  functions, ``min``/``max``, ``__ldg``, ``rsqrtf``, ``__expf``/``__logf``/``__fdividef``) and a trailer
  that exports a launcher for kernel ``name``. One shared library per (source, name), cached on disk
  and in memory. Not emulated (a clear error instead): dynamic shared memory (``extern __shared__``),
  atomics, warp shuffles/votes, textures.
* ``grid``, ``block``: ints or tuples of up to 3 ints, as CuPy takes them (block: at most 1024 threads).
* ``args``: as CuPy takes them. A NumPy array passes a pointer to its first element (like a CuPy
  array's ``data.ptr``); a NumPy scalar passes its own C type (np.float32 -> float, np.int32 -> int,
  np.int64 -> long long, ...); a Python float passes a C double, a Python int a C long long and a
  Python bool a C bool — exactly what CuPy does. Each argument's C type is checked against the kernel's
  parameter (from the compiled signature): a Python float given for a ``float`` parameter, an array for a
  scalar, a wrong count, ... raise TypeError naming the kernel, the argument and both types (on a GPU
  these silently read garbage).
* Threads of a block run as coroutines (``ucontext``), one at a time, in threadIdx order (x fastest)
  or, with ``schedule="reverse"``, in the reverse order of threads and blocks: a kernel whose result
  depends on that order has a race (or relies on block order). ``__syncthreads`` is a real barrier; a
  thread that returns while others wait at a barrier (barrier divergence) is an error. Kernels without
  ``__syncthreads`` in their source run each thread to completion (fast path).
* Memory: each array (overlapping arrays together, so aliasing is kept) is copied into its own
  mapping that ends at an inaccessible guard page; an access past the end raises MemoryError naming
  the argument; results are copied back after the launch. Writing a read-only array raises.

Use: ``launch(src, name, (gx, gy), (bx, by), (Z, b, A, np.int32(n), np.int32(m)))``; arrays are
modified in place, as device memory would be. Thread-safe (one launch at a time).
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy as np

HEADER = r"""// cuda_on_cpu: the CUDA builtins a kernel source uses, for a host C++ compiler
#include <math.h>
#include <stddef.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__ static
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define warpSize 32

struct fdnn_uint3 { unsigned int x, y, z; };
typedef fdnn_uint3 uint3;
static fdnn_uint3 threadIdx, blockIdx, blockDim, gridDim;

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
// __expf and __logf: glibc's own
static inline float __fdividef(float a, float b) { return a / b; }
template <typename T> static inline T __ldg(const T* p) { return *p; }

// --- the scheduler: threads of a block as coroutines ---------------------------------------------
static ucontext_t fdnn_main_ctx;
static ucontext_t* fdnn_ctx = 0;
static char* fdnn_stacks = 0;
static size_t fdnn_stack_count = 0;
static const size_t fdnn_stack_size = 1 << 17;    // 128 KiB per thread, below a guard page
static int* fdnn_state = 0;                        // 0 runnable, 1 at a barrier, 2 returned
static int fdnn_cur = 0;
static int fdnn_coroutines = 0;
static int fdnn_bad_barrier = 0;
static void (*fdnn_entry)(void**) = 0;
static void** fdnn_args = 0;
static sigjmp_buf fdnn_fault_jump;
static void* volatile fdnn_fault_addr = 0;
static char fdnn_alt_stack[1 << 16];

void __syncthreads() {
    if (!fdnn_coroutines) { fdnn_bad_barrier = 1; return; }
    fdnn_state[fdnn_cur] = 1;
    swapcontext(&fdnn_ctx[fdnn_cur], &fdnn_main_ctx);
}

static void fdnn_trampoline() {
    fdnn_entry(fdnn_args);
    fdnn_state[fdnn_cur] = 2;               // then uc_link resumes the scheduler
}

static void fdnn_on_fault(int sig, siginfo_t* info, void* ctx) {
    (void)sig; (void)ctx;
    fdnn_fault_addr = info->si_addr;
    siglongjmp(fdnn_fault_jump, 1);
}

static int fdnn_stacks_for(size_t n) {
    if (fdnn_stack_count >= n) return 0;
    if (fdnn_stacks) munmap(fdnn_stacks, fdnn_stack_count * (fdnn_stack_size + 4096));
    delete[] fdnn_ctx; delete[] fdnn_state;
    size_t one = fdnn_stack_size + 4096;
    void* p = mmap(0, n * one, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { fdnn_stacks = 0; fdnn_stack_count = 0; return -1; }
    fdnn_stacks = (char*)p;
    for (size_t t = 0; t < n; t++) mprotect(fdnn_stacks + t * one, 4096, PROT_NONE);   // overflow guard
    fdnn_ctx = new ucontext_t[n];
    fdnn_state = new int[n];
    fdnn_stack_count = n;
    return 0;
}

static void fdnn_set_thread(unsigned int t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

// Runs every block; returns 0, 2 on barrier divergence, 3 if __syncthreads is reached on the fast path.
static int fdnn_blocks(const unsigned int* g, unsigned int T, int coroutines, int reverse) {
    const unsigned long long B = (unsigned long long)g[0] * g[1] * g[2];
    const size_t one = fdnn_stack_size + 4096;
    for (unsigned long long k = 0; k < B; k++) {
        const unsigned long long blk = reverse ? B - 1 - k : k;
        blockIdx.x = (unsigned int)(blk % g[0]);
        blockIdx.y = (unsigned int)((blk / g[0]) % g[1]);
        blockIdx.z = (unsigned int)(blk / ((unsigned long long)g[0] * g[1]));
        if (!coroutines) {
            for (unsigned int s = 0; s < T; s++) {
                fdnn_set_thread(reverse ? T - 1 - s : s);
                fdnn_entry(fdnn_args);
                if (fdnn_bad_barrier) return 3;
            }
            continue;
        }
        for (unsigned int t = 0; t < T; t++) {
            getcontext(&fdnn_ctx[t]);
            fdnn_ctx[t].uc_stack.ss_sp = fdnn_stacks + t * one + 4096;
            fdnn_ctx[t].uc_stack.ss_size = fdnn_stack_size;
            fdnn_ctx[t].uc_link = &fdnn_main_ctx;
            makecontext(&fdnn_ctx[t], fdnn_trampoline, 0);
            fdnn_state[t] = 0;
        }
        for (;;) {                              // run every thread to its next barrier (or its end)
            for (unsigned int s = 0; s < T; s++) {
                const unsigned int t = reverse ? T - 1 - s : s;
                if (fdnn_state[t] == 2) continue;
                fdnn_state[t] = 0;
                fdnn_cur = (int)t;
                fdnn_set_thread(t);
                swapcontext(&fdnn_main_ctx, &fdnn_ctx[t]);
            }
            unsigned int returned = 0;
            for (unsigned int t = 0; t < T; t++) returned += fdnn_state[t] == 2;
            if (returned == T) break;
            if (returned != 0) return 2;        // some returned, others wait at a barrier
        }
    }
    return 0;
}

// Returns 0; 1 on a memory fault (address in *fault); 2 on barrier divergence; 3 __syncthreads
// reached on the fast path; 4 out of memory for stacks.
static int fdnn_run(const unsigned int* g, const unsigned int* b, void** args, int coroutines, int reverse,
                    void** fault) {
    gridDim.x = g[0]; gridDim.y = g[1]; gridDim.z = g[2];
    blockDim.x = b[0]; blockDim.y = b[1]; blockDim.z = b[2];
    const unsigned int T = b[0] * b[1] * b[2];
    fdnn_args = args; fdnn_coroutines = coroutines; fdnn_bad_barrier = 0;
    if (coroutines && fdnn_stacks_for(T) != 0) return 4;
    stack_t alt, old_alt;
    alt.ss_sp = fdnn_alt_stack; alt.ss_size = sizeof fdnn_alt_stack; alt.ss_flags = 0;
    struct sigaction sa, old_segv, old_bus;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fdnn_on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaltstack(&alt, &old_alt);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    int status;
    if (sigsetjmp(fdnn_fault_jump, 1) != 0) {
        *fault = fdnn_fault_addr;
        status = 1;
    } else {
        status = fdnn_blocks(g, T, coroutines, reverse);
    }
    sigaction(SIGSEGV, &old_segv, 0);
    sigaction(SIGBUS, &old_bus, 0);
    sigaltstack(&old_alt, 0);
    return status;
}

// --- the kernel's signature, as type codes -----------------------------------------------------------
template <typename T> struct fdnn_code;
template <typename T> struct fdnn_code<T*> { static constexpr const char* s = "p"; };
template <> struct fdnn_code<float> { static constexpr const char* s = "f4"; };
template <> struct fdnn_code<double> { static constexpr const char* s = "f8"; };
template <> struct fdnn_code<bool> { static constexpr const char* s = "b1"; };
template <> struct fdnn_code<signed char> { static constexpr const char* s = "i1"; };
template <> struct fdnn_code<unsigned char> { static constexpr const char* s = "u1"; };
template <> struct fdnn_code<short> { static constexpr const char* s = "i2"; };
template <> struct fdnn_code<unsigned short> { static constexpr const char* s = "u2"; };
template <> struct fdnn_code<int> { static constexpr const char* s = "i4"; };
template <> struct fdnn_code<unsigned int> { static constexpr const char* s = "u4"; };
template <> struct fdnn_code<long> { static constexpr const char* s = "i8"; };
template <> struct fdnn_code<unsigned long> { static constexpr const char* s = "u8"; };
template <> struct fdnn_code<long long> { static constexpr const char* s = "i8"; };
template <> struct fdnn_code<unsigned long long> { static constexpr const char* s = "u8"; };

template <typename... P> static const char* fdnn_signature_of(void (*)(P...)) {
    static const char* codes[] = {fdnn_code<P>::s..., 0};
    static char text[512];
    text[0] = 0;
    for (size_t k = 0; k < sizeof...(P); k++) {
        if (k) strcat(text, " ");
        strcat(text, codes[k]);
    }
    return text;
}

template <typename... P, size_t... I>
static void fdnn_call(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<P*>(args[I])...);
}

#define FDNN_EXPORT_KERNEL(NAME)                                                                   \
    template <typename... P> static void fdnn_entry_of(void (*k)(P...), void** a) {                \
        fdnn_call(k, a, std::index_sequence_for<P...>{});                                          \
    }                                                                                              \
    static void fdnn_entry_fn(void** a) { fdnn_entry_of(&NAME, a); }                               \
    extern "C" const char* fdnn_signature(void) { return fdnn_signature_of(&NAME); }               \
    extern "C" int fdnn_launch(const unsigned int* g, const unsigned int* b, void** args,          \
                               int coroutines, int reverse, void** fault) {                        \
        fdnn_entry = fdnn_entry_fn;                                                                 \
        return fdnn_run(g, b, args, coroutines, reverse, fault);                                   \
    }
"""

CXX = os.environ.get("CXX", "g++")
FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-Wall", "-Wno-unused-function", "-Werror=return-type",
         "-Werror=uninitialized")
_CODES = {"float32": "f4", "float64": "f8", "bool": "b1", "int8": "i1", "uint8": "u1", "int16": "i2",
          "uint16": "u2", "int32": "i4", "uint32": "u4", "int64": "i8", "uint64": "u8"}
_CTYPES = {"f4": ctypes.c_float, "f8": ctypes.c_double, "b1": ctypes.c_bool, "i1": ctypes.c_int8,
           "u1": ctypes.c_uint8, "i2": ctypes.c_int16, "u2": ctypes.c_uint16, "i4": ctypes.c_int32,
           "u4": ctypes.c_uint32, "i8": ctypes.c_int64, "u8": ctypes.c_uint64}
_C_NAMES = {"p": "a pointer (array)", "f4": "float", "f8": "double", "b1": "bool", "i1": "signed char",
            "u1": "unsigned char", "i2": "short", "u2": "unsigned short", "i4": "int", "u4": "unsigned int",
            "i8": "long long", "u8": "unsigned long long"}
_LOCK = threading.Lock()
_LIBS = {}
PAGE = os.sysconf("SC_PAGE_SIZE")


class KernelError(RuntimeError):
    """The emulated kernel failed: compile error, barrier divergence, or an emulator limit."""


def cache_dir():
    """Where compiled kernels are kept ($FASTDNN_CUDA_ON_CPU_CACHE, else a per-user temp directory)."""
    return os.environ.get("FASTDNN_CUDA_ON_CPU_CACHE") or os.path.join(
        tempfile.gettempdir(), f"fastdnn-cuda-on-cpu-{os.getuid()}")


def compiler_unavailable_reason():
    """Why kernels cannot be compiled for the CPU here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return f"the emulator needs Linux (ucontext, mmap guard pages); this is {sys.platform}"
    return None if shutil.which(CXX) else f"no C++ compiler {CXX!r} on PATH (set CXX)"


def _header():
    """The emulation header in the cache directory, with its precompiled form (built once)."""
    key = hashlib.sha256("\0".join((HEADER, CXX, *FLAGS)).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), f"cuda_on_cpu-{key}.h")
    if not os.path.exists(path + ".gch"):
        os.makedirs(cache_dir(), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            header = os.path.join(tmp, "h.h")
            with open(header, "w") as f:
                f.write(HEADER)
            result = subprocess.run([CXX, *[f for f in FLAGS if f != "-shared"], "-x", "c++-header", header,
                                     "-o", header + ".gch"], capture_output=True, text=True)
            if result.returncode != 0:
                raise KernelError(f"the emulation header does not compile:\n{result.stderr}")
            os.replace(header, path)                   # the header first: .gch marks both ready
            os.replace(header + ".gch", path + ".gch")
    return path


def compile_kernel(source, name):
    """The loaded shared library running kernel ``name`` of ``source`` (compiled once, then cached)."""
    if "extern __shared__" in source:
        raise NotImplementedError(f"{name}: dynamic shared memory (extern __shared__) is not emulated; "
                                  "use a static __shared__ array")
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ValueError(f"kernel name {name!r} is not a C identifier")
    key = hashlib.sha256("\0".join((HEADER, source, name, CXX, *FLAGS)).encode()).hexdigest()[:32]
    lib = _LIBS.get(key)
    if lib is not None:
        return lib
    so = os.path.join(cache_dir(), f"{name[:40]}-{key}.so")
    if not os.path.exists(so):
        header = _header()
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            for file, text in (("kernel.cu", source),
                               ("main.cpp", f'#include "{header}"\n#include "kernel.cu"\n'
                                            f"FDNN_EXPORT_KERNEL({name})\n")):
                with open(os.path.join(tmp, file), "w") as f:
                    f.write(text)
            out = os.path.join(tmp, "k.so")
            result = subprocess.run([CXX, *FLAGS, "-x", "c++", "main.cpp", "-o", out], cwd=tmp,
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise KernelError(f"{name}: the host compiler rejected the kernel source:\n{result.stderr}")
            os.replace(out, so)
    with _LOCK:
        lib = _LIBS.get(key) or _load(so)
        _LIBS[key] = lib
    return lib


def compile_many(kernels, workers=None):
    """Compile [(source, name), ...] in parallel (a warm-up: launch() finds them compiled)."""
    from concurrent.futures import ThreadPoolExecutor
    _header()
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(lambda k: compile_kernel(*k), kernels))


def _load(so):
    lib = ctypes.CDLL(so)
    lib.fdnn_signature.restype = ctypes.c_char_p
    lib.fdnn_launch.restype = ctypes.c_int
    lib.fdnn_launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int,
                                ctypes.POINTER(ctypes.c_void_p)]
    lib.signature = lib.fdnn_signature().decode().split()
    return lib


def _dims(value, what, limits):
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) for d in dims):
        raise ValueError(f"{what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(not 1 <= d <= lim for d, lim in zip(dims, limits)):
        raise ValueError(f"{what} {dims}: each dimension must be in 1..{limits}")
    return dims


def _code(arg):
    """The C type code of a kernel argument, as CuPy would pass it."""
    if isinstance(arg, np.ndarray):
        return "p"
    if isinstance(arg, np.generic):
        code = _CODES.get(arg.dtype.name)
        if code is None:
            raise TypeError(f"cannot pass a {arg.dtype.name} scalar to a kernel here")
        return code
    if isinstance(arg, bool):
        return "b1"
    if isinstance(arg, int):
        return "i8"
    if isinstance(arg, float):
        return "f8"
    raise TypeError(f"cannot pass {type(arg).__name__} to a kernel (NumPy arrays and scalars, Python numbers)")


def _describe(code, arg):
    what = _C_NAMES[code]
    if isinstance(arg, (bool, int, float)) and not isinstance(arg, np.generic):
        what += f" (a Python {type(arg).__name__} passes as {_C_NAMES[code]}; pass a typed NumPy scalar)"
    return what


def _extent(a):
    """[lo, hi) bytes spanned by array a, and a's data pointer."""
    ptr = a.__array_interface__["data"][0]
    if a.size == 0:
        return ptr, ptr, ptr
    lo = ptr + sum(min(0, (n - 1) * s) for n, s in zip(a.shape, a.strides))
    hi = ptr + sum(max(0, (n - 1) * s) for n, s in zip(a.shape, a.strides)) + a.itemsize
    return lo, hi, ptr


class _Guarded:
    """Copies of the argument arrays' memory, each ending at an inaccessible guard page."""

    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                           ctypes.c_long]
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def __init__(self, arrays):
        self.maps, self.regions, self.pointers = [], [], {}
        spans = sorted((_extent(a) + (k, a) for k, a in arrays), key=lambda s: s[0])
        for lo, hi, ptr, k, a in spans:
            if self.regions and lo < self.regions[-1]["hi"] and hi > lo:     # overlaps: same region
                r = self.regions[-1]
                r["hi"] = max(r["hi"], hi)
                r["members"].append((k, a, ptr))
            else:
                self.regions.append(dict(lo=lo, hi=hi, members=[(k, a, ptr)]))
        for r in self.regions:
            size, align = r["hi"] - r["lo"], max(a.itemsize for _, a, _ in r["members"])
            pages = -(-size // PAGE) + 1
            base = self._libc.mmap(None, (pages + 1) * PAGE, 3, 0x22, -1, 0)   # RW, PRIVATE|ANONYMOUS
            if base in (None, ctypes.c_void_p(-1).value):
                raise MemoryError("mmap failed for a kernel argument")
            self.maps.append((base, (pages + 1) * PAGE))
            guard = base + pages * PAGE
            self._libc.mprotect(guard, PAGE, 0)
            start = guard - size
            start -= (start - r["lo"]) % align                          # keep the alignment
            r.update(start=start, guard=guard, size=size)
            ctypes.memmove(start, r["lo"], size)
            for k, a, ptr in r["members"]:
                self.pointers[k] = start + (ptr - r["lo"])
                r.setdefault("names", []).append(k)

    def culprit(self, address):
        """Which argument(s) a faulting address belongs to (text)."""
        for r in self.regions:
            if r["guard"] <= address < r["guard"] + PAGE:
                return (f"argument(s) {r['names']}: {address - (r['start'] + r['size'])} bytes past the "
                        f"end of {r['size']} bytes")
        return "no argument (a wild or null pointer)"

    def copy_back(self, name):
        for r in self.regions:
            if ctypes.string_at(r["start"], r["size"]) == ctypes.string_at(r["lo"], r["size"]):
                continue
            if not all(a.flags.writeable for _, a, _ in r["members"]):
                raise ValueError(f"{name} wrote to read-only argument(s) {r['names']}")
            ctypes.memmove(r["lo"], r["start"], r["size"])

    def release(self):
        for base, size in self.maps:
            self._libc.munmap(base, size)
        self.maps = []


def launch(source, name, grid, block, args, shared_bytes=0, *, schedule="forward"):
    """Run kernel ``name`` of CUDA C ``source`` on the CPU over ``grid`` x ``block`` threads with
    ``args`` (see the module docstring); arrays are updated in place."""
    if schedule not in ("forward", "reverse"):
        raise ValueError(f"schedule must be 'forward' or 'reverse', got {schedule!r}")
    grid = _dims(grid, "grid", (2 ** 31 - 1, 65535, 65535))
    block = _dims(block, "block", (1024, 1024, 64))
    if block[0] * block[1] * block[2] > 1024:
        raise ValueError(f"block {block} has more than 1024 threads")
    if not 0 <= int(shared_bytes) <= 48 * 1024:
        raise ValueError(f"shared_bytes {shared_bytes} must be in 0..49152")
    lib = compile_kernel(source, name)
    args = tuple(args)
    codes = [_code(a) for a in args]
    if len(codes) != len(lib.signature):
        wanted = ", ".join(_C_NAMES[c] for c in lib.signature)
        raise TypeError(f"{name} takes {len(lib.signature)} arguments ({wanted}), got {len(codes)}")
    for k, (code, want, arg) in enumerate(zip(codes, lib.signature, args)):
        if code != want:
            raise TypeError(f"{name}: argument {k} is {_describe(code, arg)}, the kernel's parameter {k} "
                            f"is {_C_NAMES[want]}")
    with _LOCK:
        guarded = _Guarded([(k, a) for k, a in enumerate(args) if isinstance(a, np.ndarray)])
        try:
            values = [ctypes.c_void_p(guarded.pointers[k]) if code == "p" else _CTYPES[code](
                bool(a) if code == "b1" else a.item() if isinstance(a, np.generic) else a)
                for k, (code, a) in enumerate(zip(codes, args))]
            pointers = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
                                                                   for v in values])
            fault = ctypes.c_void_p()
            status = lib.fdnn_launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), pointers,
                                     int("__syncthreads" in source), int(schedule == "reverse"),
                                     ctypes.byref(fault))
            if status == 1:
                address = fault.value or 0
                raise MemoryError(f"{name}: out-of-bounds memory access at {address:#x}, "
                                  f"{guarded.culprit(address)}")
            if status == 2:
                raise KernelError(f"{name}: barrier divergence: some threads of a block returned while "
                                  "others wait at __syncthreads")
            if status == 3:
                raise KernelError(f"{name}: __syncthreads reached but the source was run without coroutines")
            if status == 4:
                raise KernelError(f"{name}: cannot allocate {block} thread stacks")
            guarded.copy_back(name)
        finally:
            guarded.release()
