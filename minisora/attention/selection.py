"""Whether backend="auto" may use the minisora op on a device, and whether it is faster there.

(The op: FlashAttention, arXiv:2205.14135, and FlashAttention-2, arXiv:2307.08691, in csrc/.)

A kernel that compiles is not a kernel that is right on every GPU, nor one that is fast on every
GPU. So before "auto" sends anything to the op on a device it answers two questions, once per
process:

1. **Self-check** (once per device). Forward and backward of the op against SDPA in float32 on
   the same random inputs, on that device, for every dtype the op takes there and every head dim,
   on small awkward shapes (odd N, N_q != N_k, several key tiles). Any error above tolerance, any
   non-finite value, any exception: "auto" uses SDPA on that device from then on, and one
   RuntimeWarning says why.
2. **Measured selection** (once per (device kind, dtype, head dim, training or not, deterministic
   backward or not: torch.use_deterministic_algorithms)). A short
   timing of the op against SDPA on inputs shaped like the caller's (N capped); the faster wins.
   A student's Colab never gets slower because of our kernel.

The same idea as PyTorch's own SDPA backend selection, made empirical because our kernels have not
run on every GPU. backend="minisora" skips both: it always means the op, and raises on any failure.
Under torch.compile nothing can be run while tracing, so the cached answers are used and, where
there is none yet, SDPA (run one eager step first to let the op compete).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# (B, H, N_q, N_k): odd sizes, N_q != N_k both ways, >= 3 key tiles at every tile size used.
CHECK_SHAPES = ((1, 2, 77, 131), (2, 1, 130, 33))
# max-norm relative error allowed against float32 SDPA on the same inputs. Rounding alone gives
# ~2^-11 (fp16) and ~2^-8 (bf16) of the largest value; a wrong layout or a stray tile gives O(1).
CHECK_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}
TIMING_MAX_N = 2048  # timing inputs: the caller's (B*H, N) capped, so the first call stays short
TIMING_REPEATS = 3

_checked: dict[str, str | None] = {}  # device -> None (passed) or why it failed
_faster: dict[tuple, bool] = {}       # (device kind, dtype, d, grad, deterministic) -> op at least as fast


def reset() -> None:
    """Forget every answer (tests; or after swapping the kernel library)."""
    _checked.clear()
    _faster.clear()


def _op_forward_backward(q, k, v, dout, scale):
    """(out, lse, dq, dk, dv) of the registered op. The one place the self-check runs the op."""
    out, lse = torch.ops.minisora.attn_fwd(q, k, v, scale)
    dq, dk, dv = torch.ops.minisora.attn_bwd(dout, q, k, v, out, lse, scale)
    return out, lse, dq, dk, dv


def _sdpa_forward_backward(q, k, v, dout, scale):
    """The same five tensors from SDPA on float32 copies (lse from the scores directly)."""
    leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    with torch.enable_grad():
        out = F.scaled_dot_product_attention(*leaves, scale=scale)
        out.backward(dout.float())
    lse = torch.logsumexp(leaves[0].detach() @ leaves[1].detach().transpose(-1, -2) * scale, dim=-1)
    return (out.detach(), lse, *(t.grad for t in leaves))


def _rel_err(x, ref) -> float:
    ref = ref.double()
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


@contextlib.contextmanager
def _plain_mode(device: torch.device):
    """Whatever the caller's context (inference_mode, no_grad, autocast), measure plain eager maths."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        with contextlib.suppress(RuntimeError):  # device types without autocast support
            stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        yield


def self_check_failure(device, dtypes, head_dims) -> str | None:
    """Run the op against SDPA on `device`; return None if all agree, else what disagreed."""
    device = torch.device(device)
    with _plain_mode(device):
        return _self_check_failure(device, dtypes, head_dims)


def _self_check_failure(device, dtypes, head_dims) -> str | None:
    names = ("out", "lse", "dq", "dk", "dv")
    for dtype in dtypes:
        for d in head_dims:
            for b, h, n_q, n_k in CHECK_SHAPES:
                g = torch.Generator().manual_seed(n_q * d + n_k)
                q, k, v = (torch.randn(b, h, n, d, generator=g).to(device, dtype) for n in (n_q, n_k, n_k))
                dout = torch.randn(b, h, n_q, d, generator=g).to(device, dtype)
                scale = 1 / math.sqrt(d)
                try:
                    got = _op_forward_backward(q, k, v, dout, scale)
                except Exception as err:  # noqa: BLE001 -- a failing op is what we are looking for
                    return f"{dtype} d={d} (B, H, N_q, N_k)={(b, h, n_q, n_k)}: the op raised {type(err).__name__}: {err}"
                ref = _sdpa_forward_backward(q, k, v, dout, scale)
                for name, x, r in zip(names, got, ref):
                    if x.shape != r.shape or not torch.isfinite(x).all():
                        return f"{dtype} d={d} {(b, h, n_q, n_k)}: {name} has the wrong shape or non-finite values"
                    err = _rel_err(x, r)
                    if err > CHECK_TOLERANCE[dtype]:
                        return (f"{dtype} d={d} (B, H, N_q, N_k)={(b, h, n_q, n_k)}: {name} differs from SDPA by "
                                f"{err:.1e} (relative), tolerance {CHECK_TOLERANCE[dtype]:.0e}")
    return None


def _check_plan(device: torch.device):
    """(dtypes, head dims) the op takes on this device."""
    from . import op

    if device.type == "cuda":
        dtypes = [torch.float32, torch.float16]
        if torch.cuda.get_device_capability(device) >= (8, 0):
            dtypes.append(torch.bfloat16)
        return dtypes, op.CUDA_HEAD_DIMS
    return [torch.float32], (16, 64)


def untrusted_reason(device) -> str | None:
    """None if the op passed its self-check on `device` (run on the first call), else why not."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = str(device)
    if key not in _checked:
        if torch.compiler.is_compiling():
            return "the self-check has not run on this device yet (it cannot run while torch.compile traces)"
        dtypes, head_dims = _check_plan(device)
        start = time.perf_counter()
        failure = self_check_failure(device, dtypes, head_dims)
        _checked[key] = None if failure is None else f"the self-check on {key} failed: {failure}"
        if failure is None:
            log.info("minisora attention: self-check on %s passed in %.1f s", key, time.perf_counter() - start)
        else:
            warnings.warn(f"minisora attention: {_checked[key]}. backend='auto' uses SDPA on {key} from now on; "
                          "please report this with your GPU model.", RuntimeWarning, stacklevel=4)
    return _checked[key]


def _time(fn, device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up
    sync()
    best = math.inf
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def op_is_faster(q, k, scale: float, grad: bool) -> bool | None:
    """Whether the op beats SDPA on inputs like q (B, H, N_q, d), k (B, H, N_k, d); measured on the
    first call per (device kind, dtype, d, grad, deterministic), cached. None while torch.compile traces an
    undecided case."""
    kind = torch.cuda.get_device_name(q.device) if q.device.type == "cuda" else q.device.type
    key = (kind, q.dtype, q.shape[-1], grad, grad and torch.are_deterministic_algorithms_enabled())
    if key not in _faster:
        if torch.compiler.is_compiling():
            return None
        bh = min(q.shape[0] * q.shape[1], 16)
        n_q, n_k = min(q.shape[2], TIMING_MAX_N), min(k.shape[2], TIMING_MAX_N)
        g = torch.Generator().manual_seed(0)
        with torch.inference_mode(False):
            x = [torch.randn(1, bh, n, q.shape[-1], generator=g).to(q.device, q.dtype) for n in (n_q, n_k, n_k)]
            leaves = [t.requires_grad_(grad) for t in x]

        def run(attend):
            def step():
                with torch.set_grad_enabled(grad):
                    out = attend(*leaves)
                    if grad:
                        torch.autograd.grad(out, leaves, torch.ones_like(out))
            return step

        with _plain_mode(q.device):
            t_op = _time(run(lambda a, b, c: torch.ops.minisora.attn_fwd(a, b, c, scale)[0]), q.device)
            t_sdpa = _time(run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=scale)), q.device)
        _faster[key] = t_op <= t_sdpa
        log.info("minisora attention on %s %s d=%d %s: op %.3f ms, SDPA %.3f ms -> %s", kind, q.dtype, q.shape[-1],
                 "fwd+bwd" if grad else "fwd", 1e3 * t_op, 1e3 * t_sdpa, "op" if _faster[key] else "sdpa")
    return _faster[key]
