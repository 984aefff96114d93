"""The diffusion transformer (DiT): predicts the flow velocity of a noisy latent video.

After Peebles & Xie, "Scalable Diffusion Models with Transformers" (DiT, arXiv:2212.09748), the
backbone Sora's report names, with cross-attention to text (as in PixArt-alpha, arXiv:2310.00426),
3D rotary positions (RoPE, arXiv:2104.09864) and QK-norm (arXiv:2302.05442).

    v = DiT(cfg, latent_channels, text_dim)(zt, t, context, context_mask)

Reading order, top to bottom:
1. `zt (B, C, T', H', W')` is cut into spacetime patches (patchify.py) and each patch is projected
   to a `dim`-wide token. Tokens are kept grouped by time slot as `(B, nT, S, dim)`, S = nH * nW
   tokens per slot, because that is the granularity of the timestep.
2. The timestep `t (B, T')` is *per latent frame*: given frames (image-to-video, extension, ...)
   have t = 0 and the rest are noisy. Each frame's t goes through a sinusoidal embedding and an MLP
   to a conditioning vector `c (B, nT, 1, dim)` that every token of that frame shares.
3. N `DiTBlock`s, each: self-attention over all spacetime tokens (3D RoPE, QK-norm), cross-attention
   to the text, an MLP. adaLN-Zero: the conditioning vector sets a shift, scale and gate for each of
   the three; the gates start at zero, so every block starts as the identity and training opens
   them gradually (the DiT paper found this the most stable way to inject the timestep).
4. A final adaLN + Linear (zero-initialised: the untrained model predicts v = 0) maps tokens back to
   patches, and unpatchify restores `(B, C, T', H', W')`.

Nothing depends on the number of tokens, so one set of weights handles every (T', H', W') the patch
size divides: images, short and long videos, any aspect ratio.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, reduce
from torch import nn

from minisora.attention import attention
from minisora.config import DiTConfig
from minisora.patchify import Patchifier, RotaryEmbedding3D, apply_rotary

TIME_FREQ_DIM = 256  # width of the sinusoidal timestep features


def timestep_embedding(t: torch.Tensor, dim: int = TIME_FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: `(...)` -> `(..., dim)`.

    t is scaled by 1000 first, so that the fastest frequencies resolve small changes of t (the
    classic recipe was designed for integer diffusion steps 0..999).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = 1000.0 * t.float()[..., None] * freqs  # (..., half)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x `(B, nT, S, D)` with shift/scale `(B, nT, 1, D)`, one per time slot. Scale is 1 + scale,
    so zero modulation leaves x unchanged."""
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim. Used on q and k (QK-norm): keeps attention logits
    bounded however large the activations grow, a known fix for transformer training blow-ups."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_float = x.float()
        normed = x_float * torch.rsqrt(x_float.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight).to(x.dtype)  # keep x's dtype: q, k, v must match under autocast


class SelfAttention(nn.Module):
    """Full attention over every spacetime token, with 3D rotary positions on q and k."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, backend: str):
        super().__init__()
        self.heads, self.backend = heads, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x `(B, nT, S, D)`, cos/sin `(N, head_dim/2)` with N = nT * S -> `(B, nT, S, D)`."""
        q, k, v = rearrange(self.qkv(x), "b t s (three h d) -> three b h (t s) d", three=3, h=self.heads)
        q = apply_rotary(self.q_norm(q), cos, sin)
        k = apply_rotary(self.k_norm(k), cos, sin)
        out = attention(q, k, v, backend=self.backend)  # (B, H, N, d)
        return self.proj(rearrange(out, "b h (t s) d -> b t s (h d)", t=x.shape[1]))


class CrossAttention(nn.Module):
    """Video tokens (queries) read the text (keys/values). Padding keys are masked out."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, backend: str):
        super().__init__()
        self.heads = heads
        # Our custom attention op takes no masks; SDPA handles the (short) masked text keys.
        self.backend = "sdpa" if backend == "minisora" else backend
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x `(B, nT, S, D)`, context `(B, L, D)`, keep `(B, L)` bool (True = attend) -> `(B, nT, S, D)`."""
        q = self.q_norm(rearrange(self.q(x), "b t s (h d) -> b h (t s) d", h=self.heads))
        k, v = rearrange(self.kv(context), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        out = attention(q, self.k_norm(k), v, backend=self.backend, key_padding_mask=keep)
        return self.proj(rearrange(out, "b h (t s) d -> b t s (h d)", t=x.shape[1]))


class DiTBlock(nn.Module):
    """adaLN-Zero block: x += gate * f(modulate(norm(x), shift, scale)) for f in (self-attn, cross-attn, MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, backend: str):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        # No learned affine in the norms: the timestep-dependent shift/scale take that role.
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads, qk_norm, backend)
        self.cross = CrossAttention(dim, heads, qk_norm, backend)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))  # zero-initialised by DiT

    def forward(self, x, c, cos, sin, context, keep):
        """x `(B, nT, S, D)`, c `(B, nT, 1, D)` per time slot; see the attention modules for the rest."""
        (shift_a, scale_a, gate_a, shift_c, scale_c, gate_c,
         shift_m, scale_m, gate_m) = self.modulation(c).chunk(9, dim=-1)  # each (B, nT, 1, D)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a), cos, sin)
        x = x + gate_c * self.cross(modulate(self.norm2(x), shift_c, scale_c), context, keep)
        x = x + gate_m * self.mlp(modulate(self.norm3(x), shift_m, scale_m))
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a Linear from tokens back to patch values."""

    def __init__(self, dim: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer over spacetime patches, conditioned on per-frame timesteps and text.

    Args:
        cfg: `DiTConfig` (patch_size, dim, depth, heads, mlp_ratio, qk_norm, attention_backend).
        latent_channels: C of the VAE latent.
        text_dim: width of the text encoder's output.
    """

    def __init__(self, cfg: DiTConfig, latent_channels: int, text_dim: int):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"DiT dim {cfg.dim} must be divisible by heads {cfg.heads}")
        self.cfg, self.latent_channels, self.text_dim = cfg, latent_channels, text_dim
        self.patchifier = Patchifier(cfg.patch_size)
        self.patch_dim = latent_channels * math.prod(cfg.patch_size)
        dim = cfg.dim
        self.patch_embed = nn.Linear(self.patch_dim, dim)
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FREQ_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.context_proj = nn.Linear(text_dim, dim)
        # The prompt's mean word vector joins the timestep in the adaLN conditioning, so every token of
        # every frame hears the whole prompt at once. Cross-attention alone lets each token read the
        # words it finds useful; a tiny DiT learned colour, size and shape that way but not motion,
        # which must agree across all frames (DiT and SD3 condition adaLN on a pooled text/class vector too).
        self.text_pool = nn.Linear(text_dim, dim)
        # Always the first cross-attention key: with every word masked (dropped prompt), attention
        # still has one key to read, and what it reads is a learned "no prompt".
        self.null_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.rope = RotaryEmbedding3D(dim // cfg.heads)
        self.blocks = nn.ModuleList(
            DiTBlock(dim, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.attention_backend) for _ in range(cfg.depth)
        )
        self.final = FinalLayer(dim, self.patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for linear in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(linear.weight, std=0.02)
        # adaLN-Zero: all gates (and shifts/scales) start at 0, so each block is the identity, and
        # the output layer starts at 0, so the first prediction is v = 0.
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for linear in (self.final.modulation[-1], self.final.linear):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, zt: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the velocity v = eps - z0.

        Args:
            zt: noisy latent `(B, C, T', H', W')`.
            t: timesteps `(B, T')` in [0, 1], one per latent frame (`(B,)` = same for all frames).
            context: text encoder output `(B, L, text_dim)`, or None for no prompt.
            context_mask: `(B, L)` bool, True = real word; None = all True. All False = no prompt.
        Returns:
            v `(B, C, T', H', W')`.
        """
        b, num_latent_frames = self._check_inputs(zt, t, context, context_mask)
        tokens, grid = self.patchifier.patchify(zt)  # (B, N, patch_dim)
        x = rearrange(self.patch_embed(tokens), "b (t s) d -> b t s d", t=grid[0])  # (B, nT, S, D)

        if t.dim() == 1:
            t = t[:, None].expand(b, num_latent_frames)
        c = self.time_mlp(timestep_embedding(t)) + self._pooled_text(b, context, context_mask)  # (B, T', D)
        # A patch spanning pt latent frames averages their embeddings (exact for the default pt = 1).
        c = reduce(c, "b (t pt) d -> b t 1 d", "mean", pt=self.cfg.patch_size[0])  # (B, nT, 1, D)

        cos, sin = self.rope(self.patchifier.positions(grid, device=zt.device))
        context, keep = self._prepend_null(b, context, context_mask)
        for block in self.blocks:
            x = block(x, c, cos, sin, context, keep)
        x = self.final(x, c)  # (B, nT, S, patch_dim)
        return self.patchifier.unpatchify(rearrange(x, "b t s p -> b (t s) p"), grid)

    def _pooled_text(self, b, context, context_mask) -> torch.Tensor:
        """Mean over the prompt's words, projected: `(B, 1, D)`; no prompt (or no word) gives the bias alone."""
        if context is None:
            return self.text_pool.bias.expand(b, 1, -1)
        keep = (torch.ones(context.shape[:2], dtype=torch.bool, device=context.device) if context_mask is None
                else context_mask).to(context.dtype)[..., None]  # (B, L, 1)
        pooled = (context * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (B, Dt)
        return self.text_pool(pooled)[:, None, :]

    def _prepend_null(self, b, context, context_mask):
        """-> context `(B, 1 + L, D)` with the null token first, keep `(B, 1 + L)` bool."""
        null = self.null_token.expand(b, 1, -1)
        always = torch.ones(b, 1, dtype=torch.bool, device=null.device)
        if context is None:
            return null, always
        if context_mask is None:
            context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        return torch.cat([null, self.context_proj(context)], dim=1), torch.cat([always, context_mask], dim=1)

    def _check_inputs(self, zt, t, context, context_mask) -> tuple[int, int]:
        if zt.dim() != 5 or zt.shape[1] != self.latent_channels:
            raise ValueError(f"zt must be (B, {self.latent_channels}, T', H', W'), got {tuple(zt.shape)}")
        b, num_latent_frames = zt.shape[0], zt.shape[2]
        if tuple(t.shape) not in ((b, num_latent_frames), (b,)):
            raise ValueError(f"t must be (B, T') = {(b, num_latent_frames)} (one timestep per latent frame) or (B,), "
                             f"got {tuple(t.shape)}")
        if context is not None and (context.dim() != 3 or context.shape[0] != b or context.shape[2] != self.text_dim):
            raise ValueError(f"context must be (B, L, {self.text_dim}) with B={b}, got {tuple(context.shape)}")
        if context_mask is not None and (context is None or context_mask.shape != context.shape[:2]
                                         or context_mask.dtype != torch.bool):
            raise ValueError("context_mask must be a bool tensor (B, L) matching context (True = real word)")
        return b, num_latent_frames

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_forward(self, num_tokens: int, text_len: int) -> int:
        """Matmul FLOPs (multiply + add = 2) of one forward pass for ONE sample.

        Counts the per-token linear layers and both attentions; leaves out norms, activations and
        the timestep/modulation MLPs (run once per latent frame, not per token). Multiply by the
        batch size, and by about 3 for forward + backward.
        """
        n, l, d = num_tokens, text_len + 1, self.cfg.dim  # + 1: the null token
        hidden = int(d * self.cfg.mlp_ratio)
        self_attn = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d  # qkv, QK^T and PV, out proj
        cross_attn = 2 * n * d * d + 2 * l * d * 2 * d + 2 * 2 * n * l * d + 2 * n * d * d
        mlp = 2 * 2 * n * d * hidden
        embed = 2 * n * self.patch_dim * d * 2 + 2 * text_len * self.text_dim * d  # patch in/out, text proj
        return self.cfg.depth * (self_attn + cross_attn + mlp) + embed
