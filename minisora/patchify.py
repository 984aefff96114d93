"""Spacetime patches and 3D rotary positions: how a latent video becomes a sequence of tokens.

Sora's central trick: cut the latent video into small boxes ("spacetime patches") and treat each
box as one token of a transformer. A latent `z` of shape `(B, C, T', H', W')` with patch size
`(pt, ph, pw)` becomes `N = (T'/pt) * (H'/ph) * (W'/pw)` tokens of `C * pt * ph * pw` numbers each.
Nothing in this cut depends on the video's size, so one transformer serves every duration,
resolution and aspect ratio, and an image is simply a video with one latent frame.

Tokens are ordered frame-major: all patches of time slot 0 (row by row), then time slot 1, and so
on. The transformer needs to know where each token came from; `Patchifier.positions` returns the
(t, y, x) coordinate of every token, and `RotaryEmbedding3D` turns those coordinates into rotations
of the attention queries and keys (RoPE), so attention scores depend on *relative* offsets in time
and space. Positions are plain floats: a size never seen in training just has more of them.

Sources: Sora's report ("Video generation models as world simulators", OpenAI 2024); spacetime
"tubelet" patches from ViViT (arXiv:2103.15691); any aspect ratio and resolution from NaViT
(arXiv:2307.06304); rotary positions from RoFormer (RoPE, arXiv:2104.09864).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

Grid = tuple[int, int, int]  # (nT, nH, nW): number of patches along time, height, width


class Patchifier:
    """Cuts latents into spacetime patches and glues them back.

    Args:
        patch_size: `(pt, ph, pw)` in latent cells, e.g. `(1, 2, 2)`: one latent frame, 2x2 cells.
    """

    def __init__(self, patch_size: tuple[int, int, int] = (1, 2, 2)):
        if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
            raise ValueError(f"patch_size must be three positive ints (pt, ph, pw), got {patch_size}")
        self.patch_size = tuple(int(p) for p in patch_size)

    def grid_shape(self, latent_size: tuple[int, int, int]) -> Grid:
        """Number of patches `(nT, nH, nW)` for a latent of size `(T', H', W')`.

        Raises ValueError naming each size that does not divide, with the nearest ones that would.
        """
        problems = []
        for name, size, p in zip(("T'", "H'", "W'"), latent_size, self.patch_size):
            if size < 1 or size % p:
                lower = (size // p) * p
                fits = [n for n in (lower, lower + p) if n > 0]
                problems.append(f"{name}={size} (nearest that divide: {' or '.join(map(str, fits))})")
        if problems:
            raise ValueError(
                f"latent size (T', H', W') = {tuple(latent_size)} is not divisible by the patch size "
                f"{self.patch_size}: {', '.join(problems)}. Choose frames/height/width whose latent "
                f"sizes divide by the patch size."
            )
        return tuple(size // p for size, p in zip(latent_size, self.patch_size))

    def patchify(self, z: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """`(B, C, T', H', W')` -> tokens `(B, N, C*pt*ph*pw)` and the grid `(nT, nH, nW)`."""
        if z.dim() != 5:
            raise ValueError(f"expected a latent of shape (B, C, T', H', W'), got {tuple(z.shape)}")
        grid = self.grid_shape(tuple(z.shape[2:]))
        pt, ph, pw = self.patch_size
        tokens = rearrange(z, "b c (nt pt) (nh ph) (nw pw) -> b (nt nh nw) (c pt ph pw)", pt=pt, ph=ph, pw=pw)
        return tokens, grid

    def unpatchify(self, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Exact inverse of `patchify`: tokens `(B, N, C*pt*ph*pw)` + grid -> `(B, C, T', H', W')`."""
        nt, nh, nw = grid
        if tokens.dim() != 3 or tokens.shape[1] != nt * nh * nw:
            raise ValueError(f"expected tokens of shape (B, {nt * nh * nw}, D) for grid {tuple(grid)}, "
                             f"got {tuple(tokens.shape)}")
        pt, ph, pw = self.patch_size
        return rearrange(tokens, "b (nt nh nw) (c pt ph pw) -> b c (nt pt) (nh ph) (nw pw)",
                         nt=nt, nh=nh, nw=nw, pt=pt, ph=ph, pw=pw)

    def positions(self, grid: Grid, device=None) -> torch.Tensor:
        """Coordinates `(N, 3)` float of every token, as (t, y, x) in patch units, in token order."""
        t, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32, device=device) for n in grid), indexing="ij")
        return rearrange(torch.stack([t, y, x], dim=-1), "nt nh nw three -> (nt nh nw) three")


class RotaryEmbedding3D(nn.Module):
    """Rotary position embedding (RoPE) over three axes: time, height, width.

    RoPE rotates pairs of channels of q and k by an angle `position * frequency`. Since a rotation
    by a and one by b leave a dot product depending only on a - b, attention scores see relative
    positions. In 3D the head dimension is split into three groups of pairs, one per axis: y and x
    get the same number of pairs, time gets the rest (so it is never smaller). Each group uses
    geometric frequencies from 1 radian per patch down towards `1/base`.

    Args:
        head_dim: channels per attention head; even and at least 6 (one pair per axis).
        base: sets the slowest frequency. Our grids are small (4 to 32 patches a side), so the
            default 100 keeps every frequency useful; the language-model 10000 would give pairs
            that barely turn across a whole video.
    """

    def __init__(self, head_dim: int, base: float = 100.0):
        super().__init__()
        if head_dim % 2 or head_dim < 6:
            raise ValueError(f"RoPE needs an even head_dim >= 6 (a pair of channels per axis), got {head_dim}")
        pairs = head_dim // 2
        spatial = pairs // 3
        self.axis_pairs = (pairs - 2 * spatial, spatial, spatial)  # pairs for (t, y, x)
        inv_freq = torch.cat([base ** (-torch.arange(n, dtype=torch.float32) / n) for n in self.axis_pairs])
        axis = torch.cat([torch.full((n,), i) for i, n in enumerate(self.axis_pairs)])  # which coordinate each pair reads
        # Derived from head_dim, not learned: kept out of the state dict.
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (head_dim/2,)
        self.register_buffer("axis", axis, persistent=False)  # (head_dim/2,)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions `(N, 3)` float (t, y, x) -> (cos, sin), each `(N, head_dim/2)`."""
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3) as (t, y, x), got {tuple(positions.shape)}")
        angles = positions.float()[:, self.axis] * self.inv_freq  # (N, head_dim/2)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (0,1), (2,3), ... of `x (B, H, N, d)` by the angles behind `cos, sin (N, d/2)`."""
    if cos.shape != (x.shape[-2], x.shape[-1] // 2) or x.shape[-1] % 2:
        raise ValueError(f"x {tuple(x.shape)} needs cos/sin of shape (N, d/2) = "
                         f"{(x.shape[-2], x.shape[-1] // 2)}, got {tuple(cos.shape)}")
    # In float32 even under autocast: angles of far-apart tokens lose precision in bf16.
    x1, x2 = rearrange(x.float(), "b h n (p two) -> two b h n p", two=2)
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos])
    return rearrange(rotated, "two b h n p -> b h n (p two)").to(x.dtype)
