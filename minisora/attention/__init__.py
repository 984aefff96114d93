"""Scaled dot-product attention with interchangeable backends.

    from minisora.attention import attention
    out = attention(q, k, v)                      # q (B, H, N_q, d), k/v (B, H, N_k, d)
    out = attention(q, k, v, backend="minisora")  # our FlashAttention-2 op (C++ on CPU, CUDA on GPU)

Backends:
    "reference" - plain PyTorch maths, the specification (reference.py);
    "sdpa"      - torch.nn.functional.scaled_dot_product_attention;
    "minisora"  - the registered op `torch.ops.minisora.attn_fwd` built from csrc/ (op.py);
    "auto"      - "minisora" where it is built, supports the inputs, passed its self-check on the
                  device and measured faster than SDPA there (selection.py); else "sdpa".
                  On CPU "auto" is SDPA (AUTO_TRIES_OP).
Every input check happens here, before any kernel runs, so bad input gives a ValueError or
TypeError that says what to change.

Sources: Vaswani et al., "Attention Is All You Need", arXiv:1706.03762 (the operation); Dao et al.,
FlashAttention, arXiv:2205.14135, and Dao, FlashAttention-2, arXiv:2307.08691 (the algorithms of the op).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from . import op, selection
from .reference import (
    blockwise_attention,
    blockwise_attention_backward,
    default_scale,
    naive_attention,
    reference_attention,
)

__all__ = [
    "attention",
    "available_backends",
    "reference_attention",
    "naive_attention",
    "blockwise_attention",
    "blockwise_attention_backward",
    "BACKENDS",
]

BACKENDS = ("auto", "reference", "sdpa", "minisora")
log = logging.getLogger(__name__)


def attention(q, k, v, *, scale=None, backend="auto", key_padding_mask=None):
    """softmax(scale * q k^T) v over the last two dims.

    Args:
        q: `(B, H, N_q, d)`; k, v: `(B, H, N_k, d)`. Same dtype (floating) and device.
        scale: score multiplier, default 1/sqrt(d).
        backend: one of BACKENDS.
        key_padding_mask: optional `(B, N_k)` bool, True = attend to this key. The minisora op
            takes no mask, so "auto" uses SDPA when a mask is given.
    Returns:
        `(B, H, N_q, d)` in q's dtype.
    """
    _check_inputs(q, k, v, key_padding_mask, backend)
    scale = default_scale(q.shape[-1]) if scale is None else _check_scale(scale)
    if backend == "auto":
        backend = _choose_backend(q, k, v, key_padding_mask, scale)
    if backend == "reference":
        return reference_attention(q, k, v, scale=scale, key_padding_mask=key_padding_mask)
    if backend == "sdpa":
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if key_padding_mask is not None:
        raise ValueError(
            'backend="minisora" takes no key_padding_mask; use backend="auto" or "sdpa" for masked attention'
        )
    if not op.load():
        raise RuntimeError(f'backend="minisora" is not available: {op.unavailable_reason()}')
    op.check_supported(q)
    # The kernels index dense (B, H, N, d) memory, so strided views are copied once here.
    return op.attn(q.contiguous(), k.contiguous(), v.contiguous(), scale)


def available_backends(device=None) -> list[str]:
    """Backends that can run on `device` now (default: "cuda" if available, else "cpu").

    Asking about "minisora" builds the extension on first use (cached afterwards).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = ["reference", "sdpa"]
    if op.load() and op.device_supported(device.type):
        names.append("minisora")
    return names


# Device types on which "auto" considers the op at all. On CPU, PyTorch's SDPA is a flash kernel
# with hand-vectorised softmax steps around BLAS calls; ours does the same products through ATen
# and reaches about half its forward speed (benchmarks/RESULTS.md), so "auto" keeps SDPA there.
AUTO_TRIES_OP = {"cuda": True, "cpu": False}


def _choose_backend(q, k, v, key_padding_mask, scale) -> str:
    if key_padding_mask is not None:
        return _fallback("a key_padding_mask was given and the minisora op takes no masks")
    if not AUTO_TRIES_OP.get(q.device.type, False):
        return _fallback(f"on {q.device.type}, auto uses SDPA (see AUTO_TRIES_OP)")
    if not op.load():
        return _fallback(f"the minisora extension is unavailable: {op.unavailable_reason()}")
    reason = op.unsupported_reason(q)
    if reason is not None:
        return _fallback(reason)
    reason = selection.untrusted_reason(q.device)
    if reason is not None:
        return _fallback(reason)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if not selection.op_is_faster(q, k, scale, grad):
        return _fallback("SDPA was measured faster (or not yet measured) for these inputs on this device")
    return "minisora"


def _fallback(reason: str) -> str:
    # Logging calls are not traceable by torch.compile; the reason is a debugging aid only.
    if not torch.compiler.is_compiling():
        log.debug("attention backend auto -> sdpa: %s", reason)
    return "sdpa"


def _check_inputs(q, k, v, key_padding_mask, backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, N, d), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}; cast them first")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}; move them first")
    (b, h, _, d), (bk, hk, n_k, dk), (bv, hv, n_v, dv) = q.shape, k.shape, v.shape
    if not (b == bk == bv and h == hk == hv):
        raise ValueError(
            f"q, k, v must agree on batch and heads (B, H), got {(b, h)}, {(bk, hk)}, {(bv, hv)}"
        )
    if not (d == dk == dv):
        raise ValueError(f"q, k, v must share the head dim d, got {d}, {dk}, {dv}")
    if n_k != n_v:
        raise ValueError(f"k and v must have the same number of keys N_k, got {n_k} and {n_v}")
    if n_k == 0:
        raise ValueError("k and v have no keys (N_k = 0): the softmax over keys is undefined")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be a bool tensor (True = attend)")
        if tuple(key_padding_mask.shape) != (b, n_k):
            raise ValueError(
                f"key_padding_mask must have shape (B, N_k) = {(b, n_k)}, got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but q is on {q.device}")


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite Python number (or None for 1/sqrt(d)), got {scale!r}")
    return float(scale)
