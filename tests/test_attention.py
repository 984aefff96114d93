"""Attention: reference maths, the teaching versions, the C++ CPU op, the dispatcher, the CUDA op.

The first test that needs the extension builds it (a minute or two on a 2-core CPU, cached in
MINISORA_EXT_DIR / the torch extensions dir afterwards).
"""

import logging
import warnings

import pytest
import torch
import torch.nn.functional as F

from minisora.attention import (
    attention,
    available_backends,
    blockwise_attention,
    blockwise_attention_backward,
    naive_attention,
    op,
    reference_attention,
    selection,
)

# (B, H, N_q, N_k, d): tile-aligned and ragged, N_q != N_k, single rows and columns.
SHAPES = [
    (1, 1, 1, 1, 16),
    (2, 3, 37, 53, 16),
    (1, 2, 64, 64, 32),
    (2, 2, 129, 65, 64),
    (1, 2, 70, 131, 128),
    (1, 1, 5, 300, 32),
]


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def qkv(b, h, n_q, n_k, d, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    shapes = [(b, h, n_q, d), (b, h, n_k, d), (b, h, n_k, d)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]


@pytest.fixture(scope="module")
def ext():
    """The CPU op, built once per session. A build failure fails the tests (with the cause)."""
    assert op.load(), op.unavailable_reason()


# --- reference and teaching versions ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_matches_sdpa(dtype):
    q, k, v = qkv(2, 3, 37, 53, 16, dtype=dtype)
    mask = torch.rand(2, 53, generator=torch.Generator().manual_seed(1)) > 0.3
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel_err(reference_attention(q, k, v, scale=0.3), F.scaled_dot_product_attention(q, k, v, scale=0.3)) < tol
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    assert rel_err(reference_attention(q, k, v, key_padding_mask=mask), expected) < tol


@pytest.mark.parametrize("b,h,n_q,n_k,d", SHAPES[:4])
def test_naive_and_blockwise_match_reference(b, h, n_q, n_k, d):
    q, k, v = qkv(b, h, n_q, n_k, d)
    out, lse = reference_attention(q, k, v, return_lse=True)
    for fn in (naive_attention, lambda *a: blockwise_attention(*a, block_q=16, block_k=32)):
        o, l = fn(q, k, v)
        assert rel_err(o, out) < 1e-12 and rel_err(l, lse) < 1e-12


def test_blockwise_backward_matches_autograd():
    q, k, v = (t.requires_grad_() for t in qkv(2, 2, 45, 70, 16))
    out, lse = reference_attention(q, k, v, return_lse=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    grads = blockwise_attention_backward(dout, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(),
                                         block_q=16, block_k=32)
    for g, t in zip(grads, (q, k, v)):
        assert rel_err(g, t.grad) < 1e-12


# --- the C++ CPU op --------------------------------------------------------------------------


@pytest.mark.parametrize("b,h,n_q,n_k,d", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_cpu_forward_matches_reference(ext, b, h, n_q, n_k, d, dtype, tol):
    q, k, v = qkv(b, h, n_q, n_k, d, dtype=dtype, seed=n_q + d)
    out, lse = torch.ops.minisora.attn_fwd(q, k, v, 0.7 / d**0.5)
    ref_out, ref_lse = reference_attention(q.double(), k.double(), v.double(), scale=0.7 / d**0.5, return_lse=True)
    assert out.dtype == dtype and lse.dtype == dtype and lse.shape == (b, h, n_q)
    assert rel_err(out, ref_out) <= tol
    assert (lse.double() - ref_lse).abs().max().item() <= tol * max(1.0, ref_lse.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_half_precision(ext, dtype):
    q, k, v = (t.requires_grad_() for t in qkv(2, 2, 77, 100, 32, dtype=dtype))
    ref_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out = attention(q, k, v, backend="minisora")
    ref = reference_attention(*ref_inputs)
    assert out.dtype == dtype and rel_err(out, ref) < 5e-3
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout.double())
    for t, r in zip((q, k, v), ref_inputs):  # float32 arithmetic, one rounding at the end
        assert t.grad.dtype == dtype and rel_err(t.grad, r.grad) < 5e-3


@pytest.mark.parametrize("b,h,n_q,n_k,d", SHAPES[1:])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_cpu_backward_matches_autograd(ext, b, h, n_q, n_k, d, dtype, tol):
    q, k, v = (t.requires_grad_() for t in qkv(b, h, n_q, n_k, d, dtype=dtype, seed=d))
    ref_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    dout = torch.randn(b, h, n_q, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    attention(q, k, v, backend="minisora").backward(dout.to(dtype))
    reference_attention(*ref_inputs).backward(dout)
    for t, r in zip((q, k, v), ref_inputs):
        assert t.grad.dtype == dtype and rel_err(t.grad, r.grad) <= tol


@pytest.mark.parametrize("threads", [1, 2], ids=["fused-per-head", "split-dkdv-dq"])
def test_cpu_several_tiles_both_backward_schedules(ext, threads):
    # N_q = 300 > 2 query tiles (128), N_k = 1100 > 2 key tiles (512): the online softmax rescales
    # across tiles, and with one head on two threads the backward takes the split schedule.
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q, k, v = (t.requires_grad_() for t in qkv(1, 1, 300, 1100, 32, seed=5))
        ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = attention(q, k, v, backend="minisora")
        ref = reference_attention(*ref_inputs)
        assert rel_err(out, ref) < 1e-12
        dout = torch.randn_like(out)
        out.backward(dout)
        ref.backward(dout)
        for t, r in zip((q, k, v), ref_inputs):
            assert rel_err(t.grad, r.grad) < 1e-12
    finally:
        torch.set_num_threads(previous)


def test_gradcheck(ext):
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 5, 7, 4))
    assert torch.autograd.gradcheck(lambda a, b, c: attention(a, b, c, backend="minisora"), (q, k, v))


def test_opcheck(ext):
    for dtype in (torch.float32, torch.float64):
        q, k, v = (t.requires_grad_() for t in qkv(2, 2, 9, 70, 16, dtype=dtype))
        torch.library.opcheck(torch.ops.minisora.attn_fwd.default, (q, k, v, 0.25))
        out, lse = torch.ops.minisora.attn_fwd(q.detach(), k.detach(), v.detach(), 0.25)
        args = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out, lse, 0.25)
        torch.library.opcheck(torch.ops.minisora.attn_bwd.default, args)


def test_non_contiguous_inputs(ext):
    # (B, N, H, d) memory viewed as (B, H, N, d): what a model gets from splitting heads.
    q, k, v = (t.transpose(1, 2) for t in qkv(2, 33, 3, 3, 16))
    assert not q.is_contiguous()
    assert rel_err(attention(q, k, v, backend="minisora"), reference_attention(q, k, v)) < 1e-10


def test_empty_query_and_default_scale(ext):
    q, k, v = qkv(1, 2, 0, 5, 16)
    assert attention(q, k, v, backend="minisora").shape == (1, 2, 0, 16)
    q, k, v = qkv(1, 2, 9, 5, 16)
    assert rel_err(attention(q, k, v, backend="minisora"), attention(q, k, v, scale=0.25, backend="reference")) < 1e-12


@pytest.mark.slow
def test_torch_compile_fullgraph(ext):
    @torch.compile(fullgraph=True, dynamic=False)
    def loss_fn(q, k, v):
        return (attention(2 * q, k, v, backend="minisora") ** 2).sum()

    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 9, 12, 16, dtype=torch.float32))
    loss_fn(q, k, v).backward()
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    (reference_attention(2 * ref[0], ref[1], ref[2]) ** 2).sum().backward()
    for t, r in zip((q, k, v), ref):
        assert rel_err(t.grad, r.grad) < 1e-5


# --- dispatcher ------------------------------------------------------------------------------


def test_backends_agree(ext):
    q, k, v = qkv(2, 2, 20, 31, 32)
    outs = [attention(q, k, v, backend=b) for b in ("reference", "sdpa", "minisora", "auto")]
    for out in outs[1:]:
        assert rel_err(out, outs[0]) < 1e-12
    assert available_backends("cpu") == ["reference", "sdpa", "minisora"]


def test_auto_falls_back_to_sdpa_with_mask(ext, caplog):
    q, k, v = qkv(2, 2, 6, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 4:] = False
    with caplog.at_level(logging.DEBUG, logger="minisora.attention"):
        out = attention(q, k, v, key_padding_mask=mask)
    assert "key_padding_mask" in caplog.text
    assert rel_err(out, reference_attention(q, k, v, key_padding_mask=mask)) < 1e-12
    # Row 0 must ignore the masked keys entirely.
    assert rel_err(out[:1], reference_attention(q[:1], k[:1, :, :4], v[:1, :, :4])) < 1e-12
    with pytest.raises(ValueError, match="key_padding_mask"):
        attention(q, k, v, backend="minisora", key_padding_mask=mask)


def _bad_calls():
    q, k, v = qkv(2, 2, 5, 7, 16, dtype=torch.float32)
    yield "rank", ValueError, (q[0], k, v), {}
    yield "batch", ValueError, (q, k[:1], v[:1]), {}
    yield "heads", ValueError, (q, k[:, :1], v[:, :1]), {}
    yield "head dim", ValueError, (q, k[..., :8], v[..., :8]), {}
    yield "N_k", ValueError, (q, k, v[:, :, :3]), {}
    yield "no keys", ValueError, (q, k[:, :, :0], v[:, :, :0]), {}
    yield "dtype", TypeError, (q, k.double(), v), {}
    yield "integer", TypeError, (q.long(), k.long(), v.long()), {}
    yield "not a tensor", TypeError, (q.tolist(), k, v), {}
    yield "device", ValueError, (q, k.to("meta"), v), {}
    yield "backend", ValueError, (q, k, v), {"backend": "flash"}
    yield "scale", TypeError, (q, k, v), {"scale": float("nan")}
    yield "mask shape", ValueError, (q, k, v), {"key_padding_mask": torch.ones(2, 5, dtype=torch.bool)}
    yield "mask dtype", TypeError, (q, k, v), {"key_padding_mask": torch.ones(2, 7)}
    fp8 = torch.float8_e4m3fn
    yield "op dtype", TypeError, (q.to(fp8), k.to(fp8), v.to(fp8)), {"backend": "minisora"}


@pytest.mark.parametrize("case", list(_bad_calls()), ids=lambda c: c[0])
def test_bad_input_raises_clear_error(ext, case):
    _, error, args, kwargs = case
    with pytest.raises(error) as info:
        attention(*args, **kwargs)
    assert len(str(info.value)) > 20  # a sentence, not a bare assertion


def _fresh_state():
    return {"tried": False, "ok": False, "reason": None, "cuda_lib": None, "cuda_reason": None}


def test_failed_build_warns_once_and_auto_uses_sdpa(monkeypatch):
    monkeypatch.setattr(op, "_state", _fresh_state())

    def broken_build(verbose=False):
        raise op.build.BuildError("no C++ compiler found (looked for 'c++')")

    monkeypatch.setattr(op.build, "build_cpu_ops", broken_build)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert available_backends("cpu") == ["reference", "sdpa"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: no warning
        assert available_backends("cpu") == ["reference", "sdpa"]
        q, k, v = qkv(1, 1, 4, 4, 8)
        assert rel_err(attention(q, k, v), reference_attention(q, k, v)) < 1e-12
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        attention(q, k, v, backend="minisora")


def test_any_loading_error_falls_back(ext, monkeypatch):
    # torch < 2.4 has no torch.library.register_fake: an AttributeError, not a BuildError.
    monkeypatch.setattr(op, "_state", _fresh_state())

    def old_torch(*args, **kwargs):
        raise AttributeError("module 'torch.library' has no attribute 'register_fake'")

    monkeypatch.setattr(op.torch.library, "register_fake", old_torch)
    with pytest.warns(RuntimeWarning, match="AttributeError.*register_fake"):
        assert not op.load()
    q, k, v = qkv(1, 1, 4, 4, 8)
    assert rel_err(attention(q, k, v), reference_attention(q, k, v)) < 1e-12
    with pytest.raises(RuntimeError, match="register_fake"):
        attention(q, k, v, backend="minisora")


def _cuda_path_bad_calls():
    q, k, v = qkv(2, 2, 5, 7, 16, dtype=torch.float32)
    out, lse = torch.randn_like(q), torch.randn(2, 2, 5)
    yield "k dtype", TypeError, "k has dtype", dict(k=k.double())
    yield "v dtype", TypeError, "v has dtype", dict(v=v.half())
    yield "k head dim", ValueError, "k must be", dict(k=k[..., :8])
    yield "k heads", ValueError, "k must be", dict(k=k[:, :1])
    yield "v keys", ValueError, "v must have k's shape", dict(v=v[:, :, :3])
    yield "no keys", ValueError, "no keys", dict(k=k[:, :, :0], v=v[:, :, :0])
    yield "dout shape", ValueError, "dout must have q's shape", dict(dout=out[:, :, :4])
    yield "dout dtype", TypeError, "dout has dtype", dict(dout=out.half())
    yield "out rank", ValueError, "out must be", dict(out=out[0])
    yield "lse shape", ValueError, "lse must be", dict(lse=lse[..., :4])
    yield "lse dtype", TypeError, "lse must be float32", dict(lse=lse.double())
    yield "k device", ValueError, "k is on meta", dict(k=k.to("meta"))
    yield "q dtype", TypeError, "q has dtype", dict(q=q.double(), k=k.double(), v=v.double())


@pytest.mark.parametrize("case", list(_cuda_path_bad_calls()), ids=lambda c: c[0])
def test_cuda_path_checks_name_the_argument(case):
    # The CUDA kernels index raw pointers: every promise is checked in Python first. The checks do
    # not depend on the device, so they are tested here on CPU tensors.
    _, error, message, changes = case
    q, k, v = qkv(2, 2, 5, 7, 16, dtype=torch.float32)
    args = dict(q=q, k=k, v=v, dout=torch.randn_like(q), out=torch.randn_like(q), lse=torch.randn(2, 2, 5))
    args.update(changes)
    with pytest.raises(error, match=message):
        op._check_cuda_inputs("attn_bwd", **args)


# --- self-check and measured selection (faked devices on the CPU) ----------------------------


@pytest.fixture
def auto_tries_cpu(ext, monkeypatch):
    """"auto" treats the CPU like a GPU: self-check, then timing. Answers are forgotten afterwards."""
    monkeypatch.setitem(attention.__globals__["AUTO_TRIES_OP"], "cpu", True)
    selection.reset()
    yield
    selection.reset()


def _count_op_calls(monkeypatch):
    calls = []
    real = op.attn

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(op, "attn", counting)
    return calls


def test_self_check_passes_for_the_real_op(auto_tries_cpu):
    assert selection.self_check_failure("cpu", [torch.float32, torch.bfloat16], (16, 64)) is None


def test_cpu_op_runs_under_inference_mode_on_several_threads(ext):
    # Sampling runs under inference_mode, which is per thread: the kernel's parallel workers must get it
    # too, or their in-place writes into the (inference) outputs fail. One thread never showed this.
    q, k, v = qkv(2, 4, 300, 300, 16, dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            out = attention(q, k, v, backend="minisora")
    finally:
        torch.set_num_threads(threads)
    assert rel_err(out, reference_attention(q, k, v)) < 1e-5


def test_self_check_and_timing_ignore_the_callers_context(auto_tries_cpu):
    # A first call from inside inference_mode + autocast (sampling) must still check and time plain maths.
    q, k, v = qkv(1, 2, 33, 40, 16, dtype=torch.float32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
        assert selection.untrusted_reason("cpu") is None
    assert rel_err(out, reference_attention(q, k, v)) < 1e-2


def test_wrong_kernel_result_makes_auto_fall_back_with_one_warning(auto_tries_cpu, monkeypatch):
    real = selection._op_forward_backward

    def wrong_dk(*args):  # a kernel whose dK is off by 2% (say, a missed tail tile on some GPU)
        out, lse, dq, dk, dv = real(*args)
        return out, lse, dq, dk * 1.02, dv

    monkeypatch.setattr(selection, "_op_forward_backward", wrong_dk)
    calls = _count_op_calls(monkeypatch)
    q, k, v = qkv(1, 2, 33, 40, 16, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="self-check on cpu failed.*dk differs from SDPA"):
        out = attention(q, k, v)
    assert calls == [] and torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once per device: no second warning, no second check
        attention(q, k, v)
    assert "dk differs" in selection.untrusted_reason("cpu")
    attention(q, k, v, backend="minisora")  # an explicit backend is never second-guessed
    assert calls == [1]


def test_a_raising_kernel_makes_auto_fall_back(auto_tries_cpu, monkeypatch):
    def broken(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(selection, "_op_forward_backward", broken)
    q, k, v = qkv(1, 2, 9, 12, 16, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="illegal memory access"):
        assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("op_ms, sdpa_ms, expected_calls", [(1.0, 2.0, [1]), (2.0, 1.0, [])], ids=["op-faster", "sdpa-faster"])
def test_auto_takes_the_faster_backend_measured_once(auto_tries_cpu, monkeypatch, op_ms, sdpa_ms, expected_calls):
    timings = iter([op_ms, sdpa_ms])
    monkeypatch.setattr(selection, "_time", lambda fn, device: next(timings))  # the fake device's clock
    calls = _count_op_calls(monkeypatch)
    q, k, v = qkv(1, 2, 33, 40, 16, dtype=torch.float32)
    out = attention(q, k, v)
    assert calls == expected_calls and rel_err(out, reference_attention(q, k, v)) < 1e-6
    attention(q, k, v)  # cached: the exhausted fake clock would raise StopIteration if timed again
    assert len(calls) == 2 * len(expected_calls)
    q.requires_grad_()  # training is another question, timed separately
    with pytest.raises(StopIteration):
        attention(q, k, v)


# --- CUDA (skipped without a GPU) ------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 5e-3}  # bf16 grads: 1e-2 below


@cuda
@pytest.mark.parametrize("dtype", list(CUDA_TOL))
@pytest.mark.parametrize("d", [32, 64, 128])
@pytest.mark.parametrize("n_q,n_k", [(1, 1), (77, 77), (130, 257)])
def test_cuda_forward_backward(ext, dtype, d, n_q, n_k):
    assert op.device_supported("cuda"), op._state["cuda_reason"]
    q, k, v = (t.requires_grad_() for t in qkv(2, 3, n_q, n_k, d, dtype=dtype, device="cuda"))
    ref_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out = attention(q, k, v, backend="minisora")
    ref = reference_attention(*ref_inputs)
    assert out.dtype == dtype and rel_err(out, ref) < CUDA_TOL[dtype]
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout.double())
    for t, r in zip((q, k, v), ref_inputs):
        if r.grad.norm() > 0:  # with a single key, dq and dk are exactly zero
            assert rel_err(t.grad, r.grad) < 2 * CUDA_TOL[dtype]  # P and dS are rounded to 16 bits


@cuda
@pytest.mark.parametrize("dtype", list(CUDA_TOL))
def test_cuda_stages_and_opcheck(ext, dtype):
    q, k, v = qkv(1, 2, 100, 75, 64, dtype=dtype, device="cuda")
    ref = reference_attention(q.double(), k.double(), v.double())
    code = op.CUDA_DTYPES[dtype]
    stages = [s for s in range(4) if op._state["cuda_lib"].minisora_attn_fwd_stage(code, s, 64) == s]
    assert stages[:2] == [0, 1]  # 2 and 3 need fp16 (sm_75) or bf16 (sm_80) tensor cores
    for stage in stages:
        out, _ = op.cuda_attn_fwd(q, k, v, 0.125, stage=stage)
        assert rel_err(out, ref) < CUDA_TOL[dtype], f"stage {stage}"
    torch.library.opcheck(torch.ops.minisora.attn_fwd.default, (q.requires_grad_(), k, v, 0.125))


@cuda
def test_cuda_rejects_unsupported_inputs(ext):
    q, k, v = qkv(1, 2, 8, 8, 48, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="head dims"):
        attention(q, k, v, backend="minisora")
    with pytest.raises(TypeError, match="float64"):
        attention(*qkv(1, 2, 8, 8, 64, device="cuda"), backend="minisora")
    with pytest.raises(ValueError, match="one device"):
        attention(q, k.cpu(), v, backend="minisora")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_deterministic_backward_is_bitwise_reproducible(ext, dtype):
    q, k, v = qkv(2, 3, 300, 257, 64, dtype=dtype, device="cuda")
    out, lse = op.cuda_attn_fwd(q, k, v, 0.125)
    dout = torch.randn_like(out)
    runs = [op.cuda_attn_bwd(dout, q, k, v, out, lse, 0.125, deterministic=True) for _ in range(3)]
    for grads in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads, runs[0]))
    atomic = op.cuda_attn_bwd(dout, q, k, v, out, lse, 0.125, deterministic=False)
    for a, b in zip(atomic, runs[0]):
        assert rel_err(a, b) < 2 * CUDA_TOL[dtype]


@cuda
def test_cuda_self_check_passes_and_auto_is_correct(ext):
    selection.reset()
    assert selection.untrusted_reason(torch.device("cuda")) is None
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 333, 200, 64, dtype=torch.float16, device="cuda"))
    out = attention(q, k, v)
    assert rel_err(out, reference_attention(q.double(), k.double(), v.double())) < CUDA_TOL[torch.float16]
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
