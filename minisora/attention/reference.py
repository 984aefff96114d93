"""Attention in plain PyTorch: the specification, and the algorithms the kernels implement.

Shapes throughout: q `(B, H, N_q, d)`, k `(B, H, N_k, d)`, v `(B, H, N_k, d)`,
out `(B, H, N_q, d)`, lse `(B, H, N_q)` (the log-sum-exp of each row of scores).

    out = softmax(scale * q @ k^T) @ v,     lse = logsumexp(scale * q @ k^T, dim=-1)

Three versions, read in this order (notebook 04 does):

1. `reference_attention` - the specification. Every other backend is tested against it.
2. `naive_attention`     - the same maths spelled out step by step, the way the first CUDA
   stage does it: materialise the (N_q, N_k) score matrix, subtract the row max, exponentiate,
   normalise, multiply by v. Memory grows as N^2.
3. `blockwise_attention` / `blockwise_attention_backward` - FlashAttention-2 in PyTorch:
   tiles of queries and keys, an *online* softmax (running max and running sum, rescaling the
   partial output whenever the max grows) so only a (block_q, block_k) tile of scores ever
   exists, and the backward pass that recomputes those tiles from lse instead of storing them.
   The C++ CPU kernel (csrc/cpu/forward.cpp, backward.cpp) and the CUDA kernels follow the same loops.

Sources: the online softmax of Milakov & Gimelshein, arXiv:1805.02867; FlashAttention (Dao et al.,
arXiv:2205.14135), Algorithms 1-2; FlashAttention-2 (Dao, arXiv:2307.08691), Algorithms 1-2.
"""

from __future__ import annotations

import math

import torch


def default_scale(head_dim: int) -> float:
    """The usual softmax temperature 1/sqrt(d): keeps score variance ~1 for unit-variance q, k."""
    return 1.0 / math.sqrt(head_dim)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precision is only a storage format here: softmax sums need float32 to be accurate.
    return torch.float64 if dtype == torch.float64 else torch.float32


def reference_attention(q, k, v, scale=None, key_padding_mask=None, return_lse=False):
    """The specification: softmax(scale * q k^T) v, computed in float32 (float64 for float64).

    Args:
        q: `(B, H, N_q, d)`; k, v: `(B, H, N_k, d)`.
        scale: multiplies the scores; default 1/sqrt(d).
        key_padding_mask: optional `(B, N_k)` bool, True = this key may be attended to.
        return_lse: also return lse `(B, H, N_q)` in the compute dtype.
    Returns:
        out `(B, H, N_q, d)` in q's dtype (and lse when asked).
    """
    scale = default_scale(q.shape[-1]) if scale is None else scale
    ct = _compute_dtype(q.dtype)
    scores = scale * (q.to(ct) @ k.to(ct).transpose(-2, -1))  # (B, H, N_q, N_k)
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    out = (torch.softmax(scores, dim=-1) @ v.to(ct)).to(q.dtype)
    if return_lse:
        return out, torch.logsumexp(scores, dim=-1)
    return out


def naive_attention(q, k, v, scale=None):
    """Attention in three explicit steps over a materialised score matrix.

    Returns (out `(B, H, N_q, d)`, lse `(B, H, N_q)`). The `(B, H, N_q, N_k)` tensors S and P
    are what makes this slow and memory hungry for long videos: at N = 16384 tokens one head's
    scores alone take 1 GiB in float32.
    """
    scale = default_scale(q.shape[-1]) if scale is None else scale
    ct = _compute_dtype(q.dtype)
    s = scale * (q.to(ct) @ k.to(ct).transpose(-2, -1))  # step 1: all scores, (B, H, N_q, N_k)
    m = s.amax(dim=-1, keepdim=True)  # step 2: subtract the row max so exp never overflows
    p = torch.exp(s - m)
    l = p.sum(dim=-1, keepdim=True)
    out = (p @ v.to(ct)) / l  # step 3: weighted sum of values, normalised
    lse = (m + torch.log(l)).squeeze(-1)
    return out.to(q.dtype), lse


def blockwise_attention(q, k, v, scale=None, block_q=64, block_k=64):
    """FlashAttention-2 forward: tiled attention with an online softmax.

    For each tile of `block_q` queries we stream over tiles of `block_k` keys keeping, per
    query row, the running max `m`, the running sum of exponentials `l` and an unnormalised
    output `acc`. When a new key tile raises the max from m to m_new, everything accumulated so
    far was exponentiated relative to the old max, so it is rescaled by exp(m - m_new). After the
    last tile, out = acc / l and lse = m + log(l). Only `(block_q, block_k)` scores exist at once.

    Returns (out `(B, H, N_q, d)`, lse `(B, H, N_q)`), identical to `naive_attention` up to
    rounding.
    """
    scale = default_scale(q.shape[-1]) if scale is None else scale
    ct = _compute_dtype(q.dtype)
    q, k, v = q.to(ct), k.to(ct), v.to(ct)
    n_q, n_k = q.shape[-2], k.shape[-2]
    out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
    lse = q.new_empty(q.shape[:-1])
    for i in range(0, n_q, block_q):  # outer loop: query tiles (independent -> parallel on GPU)
        qi = q[..., i : i + block_q, :]  # (B, H, bq, d)
        m = qi.new_full(qi.shape[:-1] + (1,), float("-inf"))  # running row max
        l = qi.new_zeros(qi.shape[:-1] + (1,))  # running sum of exp(s - m)
        acc = qi.new_zeros(qi.shape[:-1] + (v.shape[-1],))  # unnormalised output
        for j in range(0, n_k, block_k):  # inner loop: key tiles, streamed
            s = scale * (qi @ k[..., j : j + block_k, :].transpose(-2, -1))  # (B, H, bq, bk)
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            alpha = torch.exp(m - m_new)  # rescales the old partial sums to the new max
            p = torch.exp(s - m_new)
            l = alpha * l + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + p @ v[..., j : j + block_k, :]
            m = m_new
        out[..., i : i + block_q, :] = acc / l
        lse[..., i : i + block_q] = (m + torch.log(l)).squeeze(-1)
    return out, lse


def blockwise_attention_backward(dout, q, k, v, out, lse, scale=None, block_q=64, block_k=64):
    """FlashAttention-2 backward: gradients from (out, lse) without storing any N x N matrix.

    With P = softmax(S), S = scale q k^T, the chain rule gives
        dV = P^T dO,   dP = dO V^T,   dS = P * (dP - D),   dQ = scale dS K,   dK = scale dS^T Q
    where D = rowsum(dO * O) (equal to rowsum(P * dP), but O(N d) to compute). Each tile of P is
    recomputed as exp(S - lse) - no max or sum to redo, lse already holds both.
    Outer loop over key tiles (each owns its dK, dV rows), inner over query tiles; dQ receives a
    contribution from every key tile (on a GPU that is an atomic add; the C++ CPU kernel runs a
    second pass over query tiles instead).

    Args: dout, out `(B, H, N_q, d)`; q `(B, H, N_q, d)`; k, v `(B, H, N_k, d)`; lse `(B, H, N_q)`.
    Returns: dq, dk, dv with the shapes and dtypes of q, k, v.
    """
    scale = default_scale(q.shape[-1]) if scale is None else scale
    ct = _compute_dtype(q.dtype)
    dtype = q.dtype
    dout, q, k, v, out, lse = (t.to(ct) for t in (dout, q, k, v, out, lse))
    d_row = (dout * out).sum(dim=-1, keepdim=True)  # D, (B, H, N_q, 1)
    lse = lse.unsqueeze(-1)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for j in range(0, k.shape[-2], block_k):  # outer loop: key tiles
        kj, vj = k[..., j : j + block_k, :], v[..., j : j + block_k, :]
        for i in range(0, q.shape[-2], block_q):  # inner loop: query tiles
            qi, doi = q[..., i : i + block_q, :], dout[..., i : i + block_q, :]
            p = torch.exp(scale * (qi @ kj.transpose(-2, -1)) - lse[..., i : i + block_q, :])
            dv[..., j : j + block_k, :] += p.transpose(-2, -1) @ doi
            ds = p * (doi @ vj.transpose(-2, -1) - d_row[..., i : i + block_q, :])
            dk[..., j : j + block_k, :] += scale * ds.transpose(-2, -1) @ qi
            dq[..., i : i + block_q, :] += scale * ds @ kj
    return dq.to(dtype), dk.to(dtype), dv.to(dtype)
