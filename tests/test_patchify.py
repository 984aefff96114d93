"""Spacetime patches (exact inverse, token layout, size errors) and 3D rotary positions."""

import pytest
import torch

from minisora.patchify import Patchifier, RotaryEmbedding3D, apply_rotary


@pytest.mark.parametrize("patch_size, latent_size", [
    ((1, 2, 2), (1, 4, 4)),  # an image
    ((1, 2, 2), (3, 8, 8)),  # the tiny preset
    ((1, 2, 2), (3, 4, 12)),  # wide
    ((1, 2, 2), (5, 16, 6)),  # tall
    ((1, 1, 1), (3, 5, 7)),
    ((2, 2, 2), (4, 8, 4)),
    ((1, 4, 2), (6, 16, 8)),
])
def test_unpatchify_inverts_patchify(patch_size, latent_size):
    patchifier = Patchifier(patch_size)
    z = torch.randn(2, 4, *latent_size, generator=torch.Generator().manual_seed(0))
    tokens, grid = patchifier.patchify(z)
    assert grid == tuple(n // p for n, p in zip(latent_size, patch_size))
    assert tokens.shape == (2, grid[0] * grid[1] * grid[2], 4 * patch_size[0] * patch_size[1] * patch_size[2])
    assert torch.equal(patchifier.unpatchify(tokens, grid), z)


def test_token_order_matches_positions():
    """Token i holds exactly the patch at positions[i] = (t, y, x), channels first."""
    patchifier = Patchifier((1, 2, 2))
    z = torch.randn(1, 3, 2, 4, 6)
    tokens, grid = patchifier.patchify(z)
    positions = patchifier.positions(grid)
    assert positions.shape == (2 * 2 * 3, 3) and positions.dtype == torch.float32
    for i, (t, y, x) in enumerate(positions.long().tolist()):
        patch = z[0, :, t, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2]
        assert torch.equal(tokens[0, i], patch.reshape(-1))


def test_size_that_does_not_divide_names_sizes_that_would():
    with pytest.raises(ValueError, match=r"H'=5 \(nearest that divide: 4 or 6\)"):
        Patchifier((1, 2, 2)).patchify(torch.zeros(1, 4, 3, 5, 8))
    with pytest.raises(ValueError, match=r"T'=3 .*W'=7"):
        Patchifier((2, 2, 2)).patchify(torch.zeros(1, 4, 3, 4, 7))
    with pytest.raises(ValueError, match="patch_size"):
        Patchifier((0, 2, 2))


def test_rope_splits_head_dim_evenly_over_three_axes():
    rope = RotaryEmbedding3D(32)
    assert rope.axis_pairs == (6, 5, 5) and sum(rope.axis_pairs) * 2 == 32
    assert RotaryEmbedding3D(64).axis_pairs == (12, 10, 10)
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryEmbedding3D(15)


def _rotated_dot(rope, q, k, pos_q, pos_k):
    cos_q, sin_q = rope(pos_q[None])
    cos_k, sin_k = rope(pos_k[None])
    q_rot = apply_rotary(q.view(1, 1, 1, -1), cos_q, sin_q)
    k_rot = apply_rotary(k.view(1, 1, 1, -1), cos_k, sin_k)
    return (q_rot * k_rot).sum()


def test_rope_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    rope = RotaryEmbedding3D(32).double()
    q, k = torch.randn(32, generator=g, dtype=torch.float64), torch.randn(32, generator=g, dtype=torch.float64)
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 5.0, 1.0])
    base = _rotated_dot(rope, q, k, a, b)
    # Shift both tokens by the same offset, including to far, fractional places never seen in training.
    for offset in ([1.0, 0.0, 0.0], [0.0, 3.0, 7.0], [40.0, 63.5, 127.25]):
        offset = torch.tensor(offset)
        assert torch.allclose(_rotated_dot(rope, q, k, a + offset, b + offset), base, atol=1e-4)
    # ...but a different relative offset on any axis changes the score.
    for axis in range(3):
        moved = b.clone()
        moved[axis] += 1.0
        assert not torch.allclose(_rotated_dot(rope, q, k, a, moved), base, atol=1e-3)


def test_rope_keeps_norms_and_handles_unseen_grid_sizes():
    patchifier, rope = Patchifier((1, 2, 2)), RotaryEmbedding3D(16)
    for grid in [(1, 2, 2), (3, 4, 4), (9, 16, 32)]:
        positions = patchifier.positions(grid)
        cos, sin = rope(positions)
        x = torch.randn(2, 3, positions.shape[0], 16)
        rotated = apply_rotary(x, cos, sin)
        assert rotated.shape == x.shape and torch.isfinite(rotated).all()
        assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-4)
    # Position (0, 0, 0) is the identity rotation.
    cos, sin = rope(torch.zeros(1, 3))
    x = torch.randn(1, 1, 1, 16)
    assert torch.allclose(apply_rotary(x, cos, sin), x)
