"""The CUDA attention kernels, tested without a GPU.

1. nvcc compiles every file of minisora/attention/csrc/cuda for sm_75, sm_80 and sm_90 (the library the
   op binds to) without warnings.
2. The same sources, compiled by g++ against tests/cuda_emu/cuda_emu.h, run on the CPU:
   every CUDA thread is a fiber, blocks follow forward / reverse / random schedules, and mma / ldmatrix /
   shuffles follow the PTX layouts. The emulator is tested first (a known kernel, a planted race, the
   fragment layouts), then each forward stage and the backward pass against a float64 reference, through
   the real extern "C" launchers of launchers.h with host pointers (declared once, in
   minisora/attention/cuda_lib.py). A cp.async outside the launch's tensors fails the launch, every
   input sits between NaN guard bands (so a plain load past a tensor shows as NaN), and dynamic shared
   memory is NaN-poisoned before every block.

Compiled artefacts are cached in the temp dir under a hash of the sources and flags.
"""
import concurrent.futures
import contextlib
import ctypes
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from minisora.attention import cuda_lib, op

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "minisora" / "attention" / "csrc" / "cuda"
EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
SELFTEST = EMU_DIR / "selftest.cpp"
ARCHS = (75, 80, 90)
NVCC_FLAGS = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Xptxas=-v"] + [
    f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
GXX_FLAGS = ["-std=c++17", "-O1", "-fPIC", "-pthread", "-fno-strict-aliasing", "-DMINISORA_EMU",
             f"-I{EMU_DIR}", "-Wall", "-Wno-unknown-pragmas"]

F32, F16, BF16 = cuda_lib.F32, cuda_lib.F16, cuda_lib.BF16
DTYPES = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16}
# max |out - ref| / max |ref| against float64 math on the same (rounded) inputs. The 16-bit bounds are
# set by rounding the output itself: unit roundoff 2^-11 (fp16) and 2^-8 = 3.9e-3 (bf16).
TOLERANCE = {F32: 1e-5, F16: 5e-3, BF16: 5e-3}
FORWARD, REVERSE, RANDOM = 0, 1, 2
ERR_DTYPE, ERR_STAGE, ERR_HEAD_DIM, ERR_ARCH = cuda_lib.ERR_DTYPE, cuda_lib.ERR_STAGE, cuda_lib.ERR_HEAD_DIM, cuda_lib.ERR_ARCH
ERR_SHAPE, ERR_ALIGNMENT, ERR_WORKSPACE = cuda_lib.ERR_SHAPE, cuda_lib.ERR_ALIGNMENT, cuda_lib.ERR_WORKSPACE


def _nvcc():
    found = shutil.which("nvcc")
    if found is None and Path("/usr/local/cuda/bin/nvcc").exists():
        found = "/usr/local/cuda/bin/nvcc"
    return found


def _cache_dir(kind, files, flags):
    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f.name.encode() + f.read_bytes())
    digest.update(" ".join(flags).encode())
    path = Path(tempfile.gettempdir()) / "minisora-cuda-tests" / f"{kind}-{digest.hexdigest()[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_parallel(commands):
    """Runs the compiler commands on all cores; returns [(command, completed process)]."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        procs = pool.map(lambda c: subprocess.run(c, capture_output=True, text=True), commands)
        return list(zip(commands, procs))


def _build(kind, compiler, compile_flags, sources, link_cmd):
    """Compiles each source to an object (in parallel), links them, caches by content; returns (lib, logs)."""
    headers = list(CUDA_DIR.glob("*.h")) + list(CUDA_DIR.glob("*.cuh")) + list(EMU_DIR.glob("*.h"))
    out = _cache_dir(kind, sources + headers, [compiler] + compile_flags + link_cmd)
    lib = out / "lib.so"
    logs = out / "compile.log"
    if not lib.exists():
        objects = [out / (s.name + ".o") for s in sources]
        results = _run_parallel([[compiler, *compile_flags, "-c", str(s), "-o", str(o)]
                                 for s, o in zip(sources, objects)])
        text = "".join(f"$ {' '.join(c)}\n{p.stdout}{p.stderr}" for c, p in results)
        failed = [p for _, p in results if p.returncode != 0]
        if not failed:
            tmp = out / f"lib.{os.getpid()}.so"
            link = subprocess.run([*link_cmd, "-o", str(tmp), *map(str, objects)], capture_output=True, text=True)
            text += link.stdout + link.stderr
            if link.returncode == 0:
                logs.write_text(text)
                os.replace(tmp, lib)  # atomic: a concurrent session never sees half a library
                return lib, text
        pytest.fail(f"{kind} build failed:\n{text[-6000:]}")
    return lib, logs.read_text()


# ---------------------------------------------------------------------------------------------------
# 1. nvcc
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nvcc_library():
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (install the CUDA toolkit, e.g. /usr/local/cuda/bin/nvcc)")
    sources = sorted(CUDA_DIR.glob("*.cu"))
    return _build("nvcc", nvcc, NVCC_FLAGS, sources, [nvcc, "-shared", *NVCC_FLAGS[:2]])


def test_nvcc_builds_all_stages_for_sm75_sm80_sm90(nvcc_library):
    lib, log = nvcc_library
    assert "warning" not in log.lower(), [line for line in log.splitlines() if "warning" in line.lower()]
    cuobjdump = Path(_nvcc()).resolve().parent / "cuobjdump"
    if cuobjdump.exists():
        listing = subprocess.run([str(cuobjdump), "--list-elf", str(lib)], capture_output=True, text=True).stdout
        with_kernels = [f for f in CUDA_DIR.glob("*.cu") if "__global__" in f.read_text()]
        for arch in ARCHS:  # every file with kernels carries a cubin for each architecture
            assert listing.count(f"sm_{arch}") >= len(with_kernels), listing


def ptxas_table(log):
    """[(kernel, arch, registers, shared bytes, spill bytes)] from nvcc's -Xptxas=-v output."""
    rows, current = [], None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for 'sm_(\d+)'", line)
        if m:
            current = [m.group(1), int(m.group(2))]
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current is not None:
            current.append(int(m.group(1)) + int(m.group(2)))
        m = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
        if m and current is not None and len(current) == 3:
            rows.append((current[0], current[1], int(m.group(1)), int(m.group(2) or 0), current[2]))
            current = None
    return rows


def test_no_kernel_spills_registers(nvcc_library):
    rows = ptxas_table(nvcc_library[1])
    assert len(rows) > 50, nvcc_library[1][-3000:]
    spilling = [r for r in rows if r[4] > 0]
    assert not spilling, spilling


def test_tensor_core_backward_uses_mma_on_sm80():
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    out = _cache_dir("ptx", [CUDA_DIR / "attn_bwd_mma.cu"], ["ptx"]) / "attn_bwd_mma.ptx"
    if not out.exists():
        subprocess.run([nvcc, "-std=c++17", "-O3", "-arch=sm_80", "-ptx", str(CUDA_DIR / "attn_bwd_mma.cu"),
                        "-o", str(out)], check=True, capture_output=True)
    entries = re.split(r"\.entry ", out.read_text())[1:]
    assert len(entries) == 2 * 3 * 3  # (fp16, bf16) x (d = 32, 64, 128) x (dkdv atomic/deterministic, dq)
    for body in entries:
        name = body.split("(")[0]
        assert "mma.sync.aligned.m16n8k16" in body and "ldmatrix.sync.aligned" in body, name
        assert ("bf16" in body) == ("nv_bfloat16" in name), name


def test_nvcc_library_returns_error_codes_without_gpu(nvcc_library):
    lib = cuda_lib.load(nvcc_library[0])
    code = lib.minisora_attn_fwd_stage(F16, -1, 64)
    if torch.cuda.is_available():
        assert code == 3
    else:  # no driver / no device: a CUDA error code, never an abort
        assert code > 0
        assert lib.minisora_attn_error_string(code)
    assert lib.minisora_attn_fwd_stage(7, -1, 64) == ERR_DTYPE
    assert b"head dim" in lib.minisora_attn_error_string(ERR_HEAD_DIM)


# ---------------------------------------------------------------------------------------------------
# 2. host emulation
# ---------------------------------------------------------------------------------------------------
class Emu:
    """ctypes front end to the emulated library (kernels + launchers + emulator self-tests)."""

    def __init__(self, path):
        self.lib = lib = cuda_lib.load(path)
        lib.cuda_emu_configure.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_ulonglong, ctypes.c_int]
        lib.cuda_emu_error_message.restype = ctypes.c_char_p
        lib.cuda_emu_allow_global.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
        self._keep = []

    def allow(self, *tensors):
        """Declare exactly these tensors readable: a cp.async anywhere else fails the launch."""
        self.lib.cuda_emu_clear_globals()
        for t in tensors:
            self.lib.cuda_emu_allow_global(t.data_ptr(), t.numel() * t.element_size())

    def configure(self, arch=80, schedule=FORWARD, seed=0, workers=1):
        self.lib.cuda_emu_configure(arch, schedule, seed, workers)

    def check(self, code):
        assert code == 0, (code, cuda_lib.error_string(self.lib, code), self.lib.cuda_emu_error_message())

    def guarded(self, x, fill=float("nan")):
        """x copied between two 64-element bands of `fill` (NaN): a kernel reading past x gets NaN.
        A deliberately misaligned view (the alignment tests) is passed through as it is."""
        if x.data_ptr() % 16:
            return x
        store = torch.full((x.numel() + 128,), fill, dtype=x.dtype)
        inner = store[64:64 + x.numel()].view(x.shape)
        inner.copy_(x)
        self._keep.append(store)
        return inner

    def forward(self, dtype, stage, q, k, v, scale, out=None):
        B, H, Nq, d = q.shape
        Nk = k.shape[2]
        q, k, v = (self.guarded(x) for x in (q, k, v))
        out = self.guarded(torch.full_like(q, float("nan"))) if out is None else out
        lse = self.guarded(torch.full((B, H, Nq), float("nan")))
        ws_bytes = self.lib.minisora_attn_fwd_workspace_bytes(dtype, stage, B, H, Nq, Nk, d)
        ws = torch.empty(ws_bytes // 4) if ws_bytes else None
        self.allow(q, k, v)
        code = self.lib.minisora_attn_fwd(dtype, stage, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
                                          lse.data_ptr(), ws.data_ptr() if ws is not None else None,
                                          B, H, Nq, Nk, d, scale, None)
        self._keep.clear()
        self.lib.cuda_emu_clear_globals()
        return code, out.clone(), lse.clone()

    def backward(self, dtype, dout, q, k, v, out, lse, scale, deterministic=False):
        B, H, Nq, d = q.shape
        Nk = k.shape[2]
        dout, q, k, v, out, lse = (self.guarded(x) for x in (dout, q, k, v, out, lse))
        dq, dk, dv = (self.guarded(torch.full_like(x, float("nan"))) for x in (q, k, v))
        ws_bytes = self.lib.minisora_attn_bwd_workspace_bytes(dtype, B, H, Nq, Nk, d, int(deterministic))
        ws = self.guarded(torch.full((ws_bytes // 4 + 1,), 7.0))  # garbage: the launcher must initialise it
        self.allow(dout, q, k, v)
        code = self.lib.minisora_attn_bwd(dtype, *(x.data_ptr() for x in (dout, q, k, v, out, lse, dq, dk, dv, ws)),
                                          B, H, Nq, Nk, d, scale, int(deterministic), None)
        self._keep.clear()
        self.lib.cuda_emu_clear_globals()
        return code, dq.clone(), dk.clone(), dv.clone()


@pytest.fixture(scope="module")
def emu():
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the host emulation needs a C++17 compiler")
    sources = sorted(CUDA_DIR.glob("*.cu")) + [SELFTEST]
    lib, log = _build("emu", gxx, ["-x", "c++", *GXX_FLAGS], sources, [gxx, "-shared", "-pthread"])
    assert "warning" not in log, log
    e = Emu(lib)
    yield e
    e.configure()


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


# ---- the emulator itself --------------------------------------------------------------------------
def test_emulated_fp16_bf16_conversions_round_like_torch(emu):
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 6, 2000),  # normals, subnormals, overflow
        [0.0, -0.0, np.inf, -np.inf, 65504.0, 65519.0, 65520.0, 6e-8, 3e-8, 1 + 2 ** -11, 1 + 3 * 2 ** -11,
         1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.0e38]]).astype(np.float32)  # ties round to even
    n = len(x)
    hb, bb = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    hf, bf = np.zeros(n, np.float32), np.zeros(n, np.float32)
    emu.lib.selftest_convert(_ptr(x), _ptr(hb), _ptr(bb), _ptr(hf), _ptr(bf), n)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(hb, t.to(torch.float16).view(torch.int16).numpy().view(np.uint16))
    np.testing.assert_array_equal(bb, t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
    np.testing.assert_array_equal(hf, t.to(torch.float16).float().numpy())
    np.testing.assert_array_equal(bf, t.to(torch.bfloat16).float().numpy())


def _block_sums(emu, racy, schedule, seed, workers=1, blocks=4, threads=256):
    x = np.random.default_rng(seed).integers(1, 10, blocks * threads).astype(np.float32)
    out = np.zeros(2 * blocks, np.float32)
    emu.configure(schedule=schedule, seed=seed, workers=workers)
    emu.check(emu.lib.selftest_block_sum(_ptr(x), _ptr(out), blocks, threads, int(racy)))
    expected = x.reshape(blocks, threads).sum(1)
    return out.reshape(blocks, 2), expected


@pytest.mark.parametrize("schedule", [FORWARD, REVERSE, RANDOM], ids=["forward", "reverse", "random"])
def test_emulator_runs_a_reduction_kernel_under_every_schedule(emu, schedule):
    for workers in (1, 2):
        got, expected = _block_sums(emu, False, schedule, seed=10 + workers, workers=workers)
        np.testing.assert_array_equal(got[:, 0], expected)  # shfl_down + shfl broadcast
        np.testing.assert_array_equal(got[:, 1], expected)  # shfl_xor butterfly


def test_emulator_catches_a_planted_race(emu):
    # block_sum without the __syncthreads between the shared store and the first cross-thread read:
    # forward order lets thread 0 read s[128] before thread 128 stored it; random order interleaves.
    # (Reverse order happens to store every s[tid + stride] first -- why tests use several schedules.)
    for schedule, seed in [(FORWARD, 1), (RANDOM, 2), (RANDOM, 3)]:
        got, expected = _block_sums(emu, True, schedule, seed)
        assert (got[:, 0] != expected).any(), f"race not caught under schedule {schedule}"
    got, expected = _block_sums(emu, False, RANDOM, 4)  # and the same kernel with the barrier is fine
    np.testing.assert_array_equal(got[:, 0], expected)


def test_emulator_reports_a_barrier_deadlock(emu):
    out = np.zeros(64, np.float32)
    emu.configure()
    code = emu.lib.selftest_early_exit(_ptr(out), 64)
    assert code != 0
    assert b"deadlock" in emu.lib.cuda_emu_error_message()


@pytest.mark.parametrize("k, dtype, arch", [(8, F16, 75), (16, F16, 80), (16, F16, 75), (16, BF16, 80)],
                         ids=["m16n8k8-f16", "m16n8k16-f16-sm80", "m16n8k16-f16-sm75-as-2xk8", "m16n8k16-bf16-sm80"])
def test_emulated_mma_follows_the_ptx_fragment_layout(emu, k, dtype, arch):
    g = torch.Generator().manual_seed(k + arch + dtype)
    A = torch.randn(16, k, generator=g).to(DTYPES[dtype])
    Bt = torch.randn(8, k, generator=g).to(DTYPES[dtype])  # B^T: B is k x 8
    C = torch.randn(16, 8, generator=g)
    D = np.zeros((16, 8), np.float32)
    bits = [np.ascontiguousarray(t.view(torch.int16).numpy().view(np.uint16)) for t in (A, Bt)]
    emu.configure(arch=arch)
    emu.check(emu.lib.selftest_mma(k, int(dtype == BF16), _ptr(bits[0]), _ptr(bits[1]), _ptr(C.numpy()), _ptr(D)))
    expected = A.double() @ Bt.double().T + C.double()
    np.testing.assert_allclose(D, expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_emulated_ldmatrix_follows_the_ptx_layout(emu, num, trans):
    m = np.arange(num * 64, dtype=np.uint16).reshape(num, 8, 8) + 1000  # matrix i, row r, column c
    regs = np.zeros((32, num), np.uint32)
    emu.configure()
    emu.check(emu.lib.selftest_ldmatrix(num, int(trans), _ptr(m), _ptr(regs), 0))
    for lane in range(32):
        for i in range(num):
            a, b = lane // 4, 2 * (lane % 4)
            lo, hi = (m[i, b, a], m[i, b + 1, a]) if trans else (m[i, a, b], m[i, a, b + 1])
            assert regs[lane, i] == int(lo) | int(hi) << 16, (lane, i)
    code = emu.lib.selftest_ldmatrix(num, int(trans), _ptr(m), _ptr(regs), 1)  # rows 2 bytes off
    assert code != 0 and b"16-byte" in emu.lib.cuda_emu_error_message()


@pytest.mark.parametrize("arch", [75, 80])
def test_emulated_cp_async_lands_only_at_wait_group(emu, arch):
    src = np.arange(1, 32 * 4 + 1, dtype=np.uint32)  # 32 chunks of 16 bytes
    expected = np.roll(src.reshape(32, 4), -1, axis=0)  # thread t reads chunk t + 1
    emu.configure(arch=arch)
    for wait in (1, 0):
        out = np.zeros((32, 4), np.uint32)
        emu.check(emu.lib.selftest_cp_async(_ptr(src), _ptr(out), wait))
        if wait or arch < 80:  # sm_75 has no cp.async: the wrapper is a plain synchronous copy
            np.testing.assert_array_equal(out, expected)
        else:  # a missing cp.async.wait_group must show as stale shared memory
            assert not (out == expected).any()


def test_emulator_traps_cp_async_reads_out_of_bounds(emu):
    src = np.arange(1, 32 * 4 + 1, dtype=np.uint32)  # 32 chunks; thread t copies chunk (t + 1) % 32
    out = np.zeros((32, 4), np.uint32)
    emu.configure()
    emu.lib.cuda_emu_clear_globals()
    emu.lib.cuda_emu_allow_global(src.ctypes.data, 16 * 31)  # the last chunk is not part of the tensor
    try:
        code = emu.lib.selftest_cp_async(_ptr(src), _ptr(out), 0)
    finally:
        emu.lib.cuda_emu_clear_globals()
    assert code != 0 and b"out of bounds" in emu.lib.cuda_emu_error_message()


# ---- the attention kernels ------------------------------------------------------------------------
# (B, H, Nq, Nk): exact tiles; odd Nk = 131 (>= 3 key tiles everywhere) with Nq < Nk; odd Nk = 77 with Nq > 64.
SHAPES = [(1, 2, 64, 64), (1, 1, 70, 131), (2, 1, 97, 77)]
# (stage, dtype, emulated arch, head dims): stage 0/1 take every dtype on CUDA cores; the tensor-core
# stages run fp16 as a T4 (sm_75: m16n8k8 pairs, synchronous copies) and as sm_80 (m16n8k16, cp.async).
FORWARD_CASES = [
    (0, F32, 80, (32, 64, 128)), (0, F16, 80, (64,)), (0, BF16, 80, (64,)),
    (1, F32, 80, (32, 64, 128)), (1, F16, 75, (64,)), (1, BF16, 80, (32, 128)),
    (2, F16, 75, (32, 64, 128)), (2, F16, 80, (64,)), (2, BF16, 80, (32, 64, 128)),
    (3, F16, 75, (32, 64, 128)), (3, F16, 80, (32, 64, 128)), (3, BF16, 80, (64, 128)),
]


def _inputs(B, H, Nq, Nk, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, d, generator=g).to(DTYPES[dtype]) for n in (Nq, Nk, Nk)]


def _reference(q, k, v, scale):
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    return torch.softmax(s, -1) @ v.double(), torch.logsumexp(s, -1)


def _rel_err(x, ref):
    return ((x.double() - ref).abs().max() / ref.abs().max()).item()


NAMES = {F32: "f32", F16: "f16", BF16: "bf16"}


@pytest.mark.parametrize("stage, dtype, arch, head_dims", FORWARD_CASES, ids=[
    f"stage{s}-{NAMES[t]}-sm{a}-d{'/'.join(map(str, ds))}" for s, t, a, ds in FORWARD_CASES])
def test_forward_stage_matches_float64_reference(emu, stage, dtype, arch, head_dims):
    for d in head_dims:
        for i, (B, H, Nq, Nk) in enumerate(SHAPES):
            q, k, v = _inputs(B, H, Nq, Nk, d, dtype, seed=100 * d + i)
            scale = 1 / math.sqrt(d)
            emu.configure(arch=arch, schedule=i % 3, seed=i, workers=2)  # each shape another schedule
            code, out, lse = emu.forward(dtype, stage, q, k, v, scale)
            emu.check(code)
            ref, ref_lse = _reference(q, k, v, scale)
            err = _rel_err(out, ref)
            assert err <= TOLERANCE[dtype], f"d={d} shape={(B, H, Nq, Nk)}: relative error {err:.2e}"
            assert (lse.double() - ref_lse).abs().max() <= 1e-5 * ref_lse.abs().max()


@pytest.mark.parametrize("stage, dtype, arch", [(1, F32, 80), (2, F16, 75), (3, BF16, 80)],
                         ids=["stage1-f32", "stage2-f16-sm75", "stage3-bf16-sm80"])
def test_forward_is_identical_under_every_schedule(emu, stage, dtype, arch):
    # No atomics in the forward: any difference between interleavings would be a race.
    q, k, v = _inputs(1, 1, 70, 100, 64, dtype, seed=7)
    outs = []
    for schedule, seed in [(FORWARD, 0), (REVERSE, 0), (RANDOM, 1), (RANDOM, 2)]:
        emu.configure(arch=arch, schedule=schedule, seed=seed)
        code, out, lse = emu.forward(dtype, stage, q, k, v, 0.125)
        emu.check(code)
        outs.append((out, lse))
    for out, lse in outs[1:]:
        assert torch.equal(out, outs[0][0]) and torch.equal(lse, outs[0][1])


def _backward_case(B, H, Nq, Nk, d, dtype, seed):
    q, k, v = _inputs(B, H, Nq, Nk, d, dtype, seed=seed)
    dout = torch.randn(B, H, Nq, d, generator=torch.Generator().manual_seed(seed + 1)).to(DTYPES[dtype])
    scale = 1 / math.sqrt(d)
    leaves = [x.double().requires_grad_() for x in (q, k, v)]
    s = leaves[0] @ leaves[1].transpose(-1, -2) * scale
    out = torch.softmax(s, -1) @ leaves[2]
    out.backward(dout.double())
    saved = (out.detach().to(DTYPES[dtype]), torch.logsumexp(s, -1).detach().float())
    return (q, k, v, dout, scale, saved, [x.grad for x in leaves])


# (dtype, emulated arch, deterministic): fp32 on CUDA cores; fp16 on tensor cores as a T4 (m16n8k8 pairs,
# synchronous copies) and as sm_80; bf16 on tensor cores (sm_80) and on CUDA cores (sm_75, no bf16 mma).
BACKWARD_CASES = [(F32, 80, False), (F32, 80, True), (F16, 75, False), (F16, 80, True), (F16, 80, False),
                  (BF16, 80, False), (BF16, 80, True), (BF16, 75, False)]
# Tensor-core backward: P and dS are rounded to 16 bits before their products (as in FlashAttention-2).
BACKWARD_TOLERANCE = {F32: 1e-5, F16: 5e-3, BF16: 5e-3}


@pytest.mark.parametrize("dtype, arch, deterministic", BACKWARD_CASES, ids=[
    f"{NAMES[t]}-sm{a}{'-deterministic' if det else ''}" for t, a, det in BACKWARD_CASES])
def test_backward_matches_float64_autograd(emu, dtype, arch, deterministic):
    for d in (32, 64, 128):
        for i, (B, H, Nq, Nk) in enumerate(SHAPES[1:]):
            q, k, v, dout, scale, (out, lse), ref = _backward_case(B, H, Nq, Nk, d, dtype, seed=d + i)
            emu.configure(arch=arch, schedule=RANDOM, seed=i, workers=2)  # blocks race on the dQ atomics
            code, *grads = emu.backward(dtype, dout, q, k, v, out, lse, scale, deterministic)
            emu.check(code)
            for name, got, r in zip("qkv", grads, ref):
                err = _rel_err(got, r)
                assert err <= BACKWARD_TOLERANCE[dtype], f"d{name} d={d} shape={(B, H, Nq, Nk)}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [F32, F16], ids=NAMES.get)
def test_deterministic_backward_is_bitwise_reproducible(emu, dtype):
    # Blocks on two OS threads in random order: atomics would add dQ shares in varying order.
    q, k, v, dout, scale, (out, lse), _ = _backward_case(1, 2, 70, 131, 64, dtype, seed=11)
    runs = []
    for seed in (1, 2, 3):
        emu.configure(arch=80, schedule=RANDOM, seed=seed, workers=2)
        code, *grads = emu.backward(dtype, dout, q, k, v, out, lse, scale, deterministic=True)
        emu.check(code)
        runs.append(grads)
    for grads in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads, runs[0]))


def test_launchers_validate_and_resolve(emu):
    lib = emu.lib
    emu.configure(arch=75)
    assert [lib.minisora_attn_fwd_stage(t, -1, 64) for t in (F32, F16, BF16)] == [1, 3, 1]
    assert lib.minisora_attn_fwd_stage(BF16, 2, 64) == ERR_ARCH
    emu.configure(arch=80)
    assert [lib.minisora_attn_fwd_stage(t, -1, 64) for t in (F32, F16, BF16)] == [1, 3, 3]
    assert lib.minisora_attn_fwd_stage(F32, 3, 64) == ERR_STAGE
    assert lib.minisora_attn_fwd_stage(F16, 4, 64) == ERR_STAGE
    assert lib.minisora_attn_fwd_stage(F16, 3, 96) == ERR_HEAD_DIM
    assert lib.minisora_attn_fwd_stage(5, 3, 64) == ERR_DTYPE
    emu.configure(arch=70)
    assert lib.minisora_attn_fwd_stage(F32, 1, 64) == ERR_ARCH
    messages = {lib.minisora_attn_error_string(c) for c in range(0, -9, -1)}
    assert len(messages) == 9  # one distinct explanation per code

    emu.configure(arch=80)
    q, k, v = _inputs(1, 2, 33, 40, 64, F16, seed=3)
    assert emu.forward(F16, 3, q, k[:, :, :0], v[:, :, :0], 0.125)[0] == ERR_SHAPE  # Nk = 0
    assert emu.forward(F16, 3, q[:, :, :0], k, v, 0.125)[0] == 0                      # Nq = 0: nothing to do
    code = lib.minisora_attn_fwd(F16, 0, q.data_ptr(), k.data_ptr(), v.data_ptr(), q.data_ptr(), q.data_ptr(),
                                 None, 1, 2, 33, 40, 64, 0.125, None)
    assert code == ERR_WORKSPACE  # stage 0 materialises S and needs its buffer
    # A view 2 bytes into a buffer is not 16-byte aligned: stage 3 refuses it, stage -1 falls back to 1.
    storage = torch.zeros(q.numel() + 1, dtype=torch.float16)
    q_off = storage[1:].view_as(q)
    q_off.copy_(q)
    assert emu.forward(F16, 3, q_off, k, v, 0.125)[0] == ERR_ALIGNMENT
    out_storage = torch.zeros_like(storage)
    code, out, _ = emu.forward(F16, -1, q_off, k, v, 0.125, out=out_storage[1:].view_as(q))
    emu.check(code)
    assert _rel_err(out, _reference(q, k, v, 0.125)[0]) <= TOLERANCE[F16]


def test_non_positive_scale_avoids_the_tensor_core_softmax(emu):
    # Stages 2/3 take the row max of the raw scores and scale it once, which needs scale > 0.
    emu.configure(arch=80)
    q, k, v = _inputs(1, 1, 20, 33, 64, F16, seed=4)
    assert emu.forward(F16, 3, q, k, v, -0.125)[0] == ERR_STAGE
    code, out, lse = emu.forward(F16, -1, q, k, v, -0.125)  # stage -1 runs stage 1 instead
    emu.check(code)
    assert _rel_err(out, _reference(q, k, v, -0.125)[0]) <= TOLERANCE[F16]


def test_backward_without_queries_zeroes_dk_dv(emu):
    emu.configure()
    q, k, v = _inputs(1, 1, 0, 20, 32, F32, seed=0)
    code, dq, dk, dv = emu.backward(F32, q, q, k, v, q, torch.zeros(1, 1, 0), 0.2)
    emu.check(code)
    assert torch.equal(dk, torch.zeros_like(k)) and torch.equal(dv, torch.zeros_like(v))


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic-dq", "deterministic"])
def test_python_cuda_wrappers_drive_the_launchers(emu, monkeypatch, deterministic):
    # op.cuda_attn_fwd/bwd (what the registered CUDA kernels call) against the emulated library: the
    # argument order, workspace sizes and output allocation of the Python side, without a GPU.
    monkeypatch.setitem(op._state, "cuda_lib", emu.lib)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: types.SimpleNamespace(cuda_stream=None))
    emu.configure(arch=80, schedule=RANDOM, seed=3, workers=2)
    q, k, v, dout, scale, _, ref_grads = _backward_case(2, 1, 70, 131, 64, F16, seed=21)
    out, lse = op.cuda_attn_fwd(q, k, v, scale)
    ref_out, ref_lse = _reference(q, k, v, scale)
    assert out.dtype == torch.float16 and lse.dtype == torch.float32
    assert _rel_err(out, ref_out) <= TOLERANCE[F16] and _rel_err(lse, ref_lse) <= 1e-5
    grads = op.cuda_attn_bwd(dout, q, k, v, out, lse, scale, deterministic=deterministic)
    for name, got, ref in zip("qkv", grads, ref_grads):
        assert _rel_err(got, ref) <= BACKWARD_TOLERANCE[F16], name
    with pytest.raises(ValueError, match="lse must be"):
        op.cuda_attn_bwd(dout, q, k, v, out, lse[..., :5], scale)
