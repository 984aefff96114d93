"""The diffusion transformer: any size with one set of weights, adaLN-Zero, null-token text, per-frame t."""

import dataclasses

import pytest
import torch
import torch.utils.flop_counter

from minisora.config import DiTConfig, get_preset
from minisora.dit import TIME_FREQ_DIM, DiT

C, TEXT_DIM = 4, 16


def _dit(seed=0, **overrides) -> DiT:
    torch.manual_seed(seed)
    cfg = DiTConfig(patch_size=(1, 2, 2), dim=32, depth=2, heads=2, attention_backend="reference")
    return DiT(dataclasses.replace(cfg, **overrides), latent_channels=C, text_dim=TEXT_DIM)


def _randomize(model: DiT, seed=1) -> DiT:
    """Perturb every weight, so zero-initialised gates and outputs are open (a 'trained' model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def _inputs(b, t_frames, h, w, text_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    zt = torch.randn(b, C, t_frames, h, w, generator=g)
    t = torch.rand(b, t_frames, generator=g)
    context = torch.randn(b, text_len, TEXT_DIM, generator=g)
    mask = torch.ones(b, text_len, dtype=torch.bool)
    mask[0, 3:] = False
    return zt, t, context, mask


SIZES = [(3, 8, 8), (1, 8, 8), (1, 4, 12), (5, 6, 10), (2, 12, 4)]  # incl. an image and non-square


def test_one_set_of_weights_serves_every_size_and_starts_at_zero():
    model = _dit()
    for size in SIZES:
        zt, t, context, mask = _inputs(2, *size)
        v = model(zt, t, context, mask)
        assert v.shape == zt.shape
        assert (v == 0).all()  # adaLN-Zero + zero output layer: the untrained model predicts v = 0


def test_randomized_model_runs_every_size_with_finite_output():
    model = _randomize(_dit())
    for size in SIZES:
        zt, t, context, mask = _inputs(2, *size)
        v = model(zt, t, context, mask)
        assert v.shape == zt.shape and torch.isfinite(v).all() and v.abs().mean() > 0


def test_blocks_start_as_identity():
    model = _dit()
    zt, t, context, mask = _inputs(2, 3, 8, 8)
    x = torch.randn(2, 3, 16, 32)
    c = torch.randn(2, 3, 1, 32)
    cos, sin = model.rope(model.patchifier.positions((3, 4, 4)))
    ctx, keep = model._prepend_null(2, context, mask)
    assert torch.equal(model.blocks[0](x, c, cos, sin, ctx, keep), x)


def test_one_optimiser_step_moves_the_output_off_zero():
    model = _dit()
    zt, t, context, mask = _inputs(2, 3, 8, 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = (model(zt, t, context, mask) - torch.randn_like(zt)).pow(2).mean()
    loss.backward()
    optimizer.step()
    assert model(zt, t, context, mask).abs().mean() > 0


def test_no_prompt_via_all_false_mask_has_no_nan_and_ignores_the_words():
    model = _randomize(_dit())
    zt, t, context, _ = _inputs(2, 3, 8, 8)
    no_words = torch.zeros(2, 5, dtype=torch.bool)
    v = model(zt, t, context, no_words)
    assert torch.isfinite(v).all()
    # With every word masked, what the words are does not matter: only the null token is read...
    assert torch.allclose(model(zt, t, torch.randn_like(context), no_words), v, atol=1e-5)
    # ...and it equals passing no context at all.
    assert torch.allclose(model(zt, t, None, None), v, atol=1e-5)
    # With words visible, the prompt changes the prediction.
    assert not torch.allclose(model(zt, t, context, ~no_words), v, atol=1e-3)
    # The gradient through a fully masked batch is finite as well.
    model(zt, t, context, no_words).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_timestep_modulates_only_the_tokens_of_its_own_frame():
    """With no blocks (no attention mixing frames), changing frame 1's t changes only frame 1's output."""
    model = _randomize(_dit(depth=0))
    zt, t, context, mask = _inputs(2, 3, 8, 8)
    v = model(zt, t, context, mask)
    t2 = t.clone()
    t2[:, 1] = 1.0 - t2[:, 1]
    v2 = model(zt, t2, context, mask)
    assert torch.equal(v2[:, :, [0, 2]], v[:, :, [0, 2]])
    assert not torch.allclose(v2[:, :, 1], v[:, :, 1], atol=1e-3)


def test_timesteps_per_frame_or_per_sample():
    model = _randomize(_dit())
    zt, t, context, mask = _inputs(2, 3, 8, 8)
    same = t[:, :1].expand(2, 3).contiguous()
    assert torch.allclose(model(zt, t[:, 0], context, mask), model(zt, same, context, mask), atol=1e-6)
    # Differing timesteps per frame give a different prediction than a shared one.
    assert not torch.allclose(model(zt, t, context, mask), model(zt, same, context, mask), atol=1e-3)


def test_attention_backends_agree():
    model = _randomize(_dit())
    zt, t, context, mask = _inputs(2, 3, 8, 8)
    v_ref = model(zt, t, context, mask)
    for module in model.modules():
        if hasattr(module, "backend"):
            module.backend = "sdpa"
    assert torch.allclose(model(zt, t, context, mask), v_ref, atol=1e-4)


def test_bad_inputs_say_what_is_expected():
    model = _dit()
    zt, t, context, mask = _inputs(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"zt must be \(B, 4"):
        model(zt[:, :3], t, context, mask)
    with pytest.raises(ValueError, match=r"W'=7 \(nearest that divide: 6 or 8\)"):
        model(zt[..., :7], t, context, mask)
    with pytest.raises(ValueError, match="one timestep per latent frame"):
        model(zt, t[:, :2], context, mask)
    with pytest.raises(ValueError, match="context must be"):
        model(zt, t, context[..., :8], mask)
    with pytest.raises(ValueError, match="context_mask"):
        model(zt, t, context, mask.float())
    with pytest.raises(ValueError, match="divisible by heads"):
        _dit(dim=30, heads=4)


def test_parameter_and_flop_counts():
    cfg = get_preset("tiny")
    model = DiT(dataclasses.replace(cfg.dit, attention_backend="reference"),
                latent_channels=cfg.vae.latent_channels, text_dim=cfg.text.dim)
    assert model.num_params() == dit_params_by_hand(model.cfg, cfg.vae.latent_channels, cfg.text.dim)
    other = DiTConfig(patch_size=(2, 1, 1), dim=48, depth=1, heads=2, mlp_ratio=2.0, qk_norm=False)
    assert DiT(other, latent_channels=3, text_dim=16).num_params() == dit_params_by_hand(other, 3, 16)
    assert 0.5e6 < model.num_params() < 3e6  # DESIGN.md: the tiny DiT has about a million parameters
    # The formula agrees with PyTorch's own count of one forward's matmul FLOPs (tiny: 5x16x16 latents
    # in 4x4 patches -> 80 tokens). PyTorch also counts the per-frame modulation MLPs, which the formula
    # leaves out.
    zt, t, context, mask = _inputs(1, 5, 16, 16, text_len=24)
    context = torch.randn(1, 24, cfg.text.dim)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        model(zt, t, context, mask)
    predicted = model.flops_per_forward(num_tokens=80, text_len=24)
    assert 0.9 < predicted / counter.get_total_flops() <= 1.0
    assert model.flops_per_forward(160, 24) > 2 * predicted  # attention grows quadratically


def dit_params_by_hand(cfg: DiTConfig, latent_channels: int, text_dim: int) -> int:
    """The DiT's parameter count from its architecture, layer by layer (weights + biases)."""
    d, hidden, head = cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.dim // cfg.heads
    patch = latent_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    qk_norms = 2 * head if cfg.qk_norm else 0
    block = (linear(d, 3 * d) + qk_norms + linear(d, d)  # self-attention: qkv, q/k RMSNorm, out
             + linear(d, d) + linear(d, 2 * d) + qk_norms + linear(d, d)  # cross-attention: q, kv, out
             + linear(d, hidden) + linear(hidden, d)  # MLP
             + linear(d, 9 * d))  # adaLN-Zero: shift, scale, gate for each of the three
    embeddings = (linear(patch, d) + linear(TIME_FREQ_DIM, d) + linear(d, d)  # patches, timestep MLP
                  + linear(text_dim, d) + d  # text projection, null token
                  + linear(text_dim, d))  # pooled prompt into the adaLN conditioning
    final = linear(d, 2 * d) + linear(d, patch)
    return cfg.depth * block + embeddings + final
