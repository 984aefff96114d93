"""Rectified flow: timesteps, conditioning masks, the loss, samplers against an exact field, guidance."""

import pytest
import torch

from minisora.config import DiTConfig
from minisora.dit import DiT
from minisora.flow import (add_noise, conditioning_mask, flow_loss, guided_velocity, resolution_shift,
                           sample, sample_t, shift_time)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- timesteps


def test_sample_t_is_logit_normal_in_open_interval_and_seeded():
    t = sample_t(10_000, _gen(), logit_mean=0.0, logit_std=1.0)
    assert t.shape == (10_000,) and (t > 0).all() and (t < 1).all()
    assert abs(t.median().item() - 0.5) < 0.02
    assert torch.equal(t, sample_t(10_000, _gen()))
    assert sample_t(10_000, _gen(), logit_mean=1.0).median() > 0.7
    # Shift > 1 spends more time at high noise; it is exactly shift * t / (1 + (shift - 1) t).
    shifted = sample_t(10_000, _gen(), shift=3.0)
    assert torch.allclose(shifted, 3 * t / (1 + 2 * t))
    assert shifted.mean() > t.mean() + 0.1


def test_shift_keeps_endpoints_and_resolution_shift_grows_with_tokens():
    ends = torch.tensor([0.0, 1.0])
    assert torch.equal(shift_time(ends, 4.0), ends)
    assert resolution_shift(1.0, 48, 48) == 1.0
    assert resolution_shift(2.0, 4 * 48, 48) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="base_shift"):
        resolution_shift(0.0, 48, 48)


# ---------------------------------------------------------------- conditioning masks


@pytest.mark.parametrize("frames", [3, 5, 9])
def test_each_conditioning_pattern(frames):
    b = 200

    def only(name):
        return conditioning_mask(b, frames, {name: 1.0}, _gen())

    assert not only("none").any()
    first = only("first")
    assert first[:, 0].all() and not first[:, 1:].any()
    first_k, last_k, both = only("first_k"), only("last_k"), only("both_ends")
    k = first_k.sum(1)
    assert (k >= 1).all() and (k <= frames - 1).all() and len(k.unique()) == frames - 1
    assert torch.equal(first_k, torch.arange(frames) < k[:, None])  # a prefix
    assert torch.equal(last_k.flip(1), torch.arange(frames) < last_k.sum(1)[:, None])  # a suffix
    assert both[:, 0].all() and both[:, -1].all()
    assert torch.equal(both, both.flip(1))  # k at each end
    for mask in (first_k, last_k, both):
        assert (~mask).any(dim=1).all()  # always something left to generate


def test_conditioning_mix_follows_probabilities_and_collapses_for_short_videos():
    mask = conditioning_mask(4000, 5, {"none": 0.5, "first": 0.5}, _gen())
    assert abs((~mask.any(1)).float().mean().item() - 0.5) < 0.05
    assert torch.equal(mask, conditioning_mask(4000, 5, {"none": 0.5, "first": 0.5}, _gen()))
    all_patterns = {"none": 1, "first": 1, "first_k": 1, "last_k": 1, "both_ends": 1}
    assert not conditioning_mask(100, 1, all_patterns, _gen()).any()  # an image: nothing can be given
    two = conditioning_mask(100, 2, {"both_ends": 1.0}, _gen())
    assert not two.any()  # both ends of 2 frames would leave nothing to generate
    with pytest.raises(ValueError, match="unknown conditioning patterns"):
        conditioning_mask(4, 3, {"middle": 1.0}, _gen())
    with pytest.raises(ValueError, match="positive sum"):
        conditioning_mask(4, 3, {"none": 0.0}, _gen())


# ---------------------------------------------------------------- noise and loss


def test_add_noise_endpoints_and_per_frame_t():
    z0, eps = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    assert torch.equal(add_noise(z0, eps, 0.0), z0)
    assert torch.equal(add_noise(z0, eps, 1.0), eps)
    t = torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.0, 0.0]])
    zt = add_noise(z0, eps, t)
    assert torch.equal(zt[0, :, 0], z0[0, :, 0]) and torch.equal(zt[1, :, 2], z0[1, :, 2])
    assert torch.allclose(zt[0, :, 1], 0.5 * (z0[0, :, 1] + eps[0, :, 1]))


def test_flow_loss_keeps_condition_frames_clean_and_scores_only_the_rest():
    g = _gen()
    z0, eps = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    t = torch.full((2, 3), 0.7)
    cond = torch.tensor([[True, False, False], [False, False, True]])
    seen = {}

    def model_fn(zt, t_in):
        seen["zt"], seen["t"] = zt, t_in
        v = eps - z0  # perfect on generated frames...
        return torch.where(cond[:, None, :, None, None], torch.full_like(v, 100.0), v)  # ...wild on given ones

    assert flow_loss(model_fn, z0, t, eps, cond).item() == 0.0
    assert torch.equal(seen["t"][cond], torch.zeros(2)) and (seen["t"][~cond] == 0.7).all()
    assert torch.equal(seen["zt"][0, :, 0], z0[0, :, 0]) and torch.equal(seen["zt"][1, :, 2], z0[1, :, 2])
    # Without the mask the wild given frames count: the loss is no longer zero.
    assert flow_loss(model_fn, z0, t, eps) > 1.0
    # Plain MSE when nothing is given; a (B,) t is shared by all frames.
    assert torch.allclose(flow_loss(lambda zt, t_in: torch.zeros_like(zt), z0, t[:, 0], eps),
                          ((eps - z0) ** 2).mean())


def test_tiny_dit_overfits_one_batch():
    torch.manual_seed(0)
    model = DiT(DiTConfig(dim=64, depth=2, heads=4, attention_backend="sdpa"), latent_channels=4, text_dim=16)
    g = _gen()
    z0, eps = torch.randn(4, 4, 3, 8, 8, generator=g), torch.randn(4, 4, 3, 8, 8, generator=g)
    t = torch.rand(4, 1, generator=g).expand(4, 3)
    cond = torch.tensor([[False] * 3, [True, False, False], [False, False, True], [True, False, True]])
    context, context_mask = torch.randn(4, 3, 16, generator=g), torch.ones(4, 3, dtype=torch.bool)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = flow_loss(lambda zt, t_in: model(zt, t_in, context, context_mask), z0, t, eps, cond)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, losses[::10]


# ---------------------------------------------------------------- samplers


MU, STD = 1.5, 0.5  # target: every latent value ~ N(MU, STD^2)


def gaussian_velocity(zt, t):
    """The exact rectified-flow velocity E[eps - z0 | zt] for z0 ~ N(MU, STD^2), eps ~ N(0, 1).
    Its ODE maps noise n to exactly MU + STD * n."""
    t = t[:, None, :, None, None]
    var = (1 - t) ** 2 * STD**2 + t**2  # Var(zt)
    centred = zt - (1 - t) * MU
    return t / var * centred - (MU + (1 - t) * STD**2 / var * centred)


def _noise(seed=0):
    return torch.randn(2, 4, 3, 4, 4, generator=_gen(seed), dtype=torch.float64)


def _error(z, noise):
    return (z - (MU + STD * noise)).abs().max().item()


def test_euler_converges_and_heun_is_more_accurate_at_equal_steps():
    noise = _noise()
    euler_fine = _error(sample(gaussian_velocity, noise, 400, progress=False), noise)
    assert euler_fine < 1e-2
    euler = _error(sample(gaussian_velocity, noise, 8, "euler", progress=False), noise)
    heun = _error(sample(gaussian_velocity, noise, 8, "heun", progress=False), noise)
    assert heun < 1e-2 and heun < euler / 5
    shifted = _error(sample(gaussian_velocity, noise, 16, "heun", shift=3.0, progress=False), noise)
    assert shifted < 1e-2


def test_condition_frames_come_back_exactly_and_are_seen_clean():
    noise = _noise()
    cond = torch.randn(noise.shape, generator=_gen(1), dtype=torch.float64)
    cond_mask = torch.tensor([[True, False, False], [True, False, True]])
    calls = []

    def velocity(zt, t):
        calls.append((zt.clone(), t.clone()))
        return gaussian_velocity(zt, t)

    for sampler, tolerance in (("euler", 0.3), ("heun", 0.02)):
        z = sample(velocity, noise, 10, sampler, cond=cond, cond_mask=cond_mask, progress=False)
        given = cond_mask[:, None, :, None, None].expand_as(z)
        assert torch.equal(z[given], cond[given])
        assert _error(z[~given], noise[~given]) < tolerance  # the other frames are still generated
    for zt, t in calls:
        assert (t[cond_mask] == 0).all() and torch.equal(zt[given], cond[given])


def test_sdedit_strength_and_callback():
    noise, z_init = _noise(0), _noise(1)
    assert torch.equal(sample(gaussian_velocity, noise, 10, z_init=z_init, t_start=0.0, progress=False), z_init)
    from_noise = sample(gaussian_velocity, noise, 10, progress=False)
    assert torch.equal(sample(gaussian_velocity, noise, 10, z_init=z_init, t_start=1.0, progress=False), from_noise)
    record = []
    z = sample(gaussian_velocity, noise, 6, shift=2.0, z_init=z_init, t_start=0.5, progress=False,
               callback=lambda step, t, zt, z0_pred: record.append((step, t, zt, z0_pred)))
    assert [r[0] for r in record] == list(range(6))
    ts = [r[1] for r in record]
    assert ts[0] == pytest.approx(0.5) and all(a > b for a, b in zip(ts, ts[1:]))
    assert torch.allclose(record[0][2], 0.5 * (z_init + noise))  # started from z_init noised to t = 0.5
    assert torch.allclose(record[-1][3], z, atol=0.05)  # the last clean guess is close to the result


def test_bad_sampler_arguments_raise_clearly():
    noise = _noise()
    for steps in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            sample(gaussian_velocity, noise, steps, progress=False)
    with pytest.raises(ValueError, match="sampler must be"):
        sample(gaussian_velocity, noise, 4, sampler="rk4", progress=False)
    with pytest.raises(ValueError, match=r"t_start .* must be in \[0, 1\]"):
        sample(gaussian_velocity, noise, 4, z_init=noise, t_start=1.5, progress=False)
    with pytest.raises(ValueError, match="pass it as z_init"):
        sample(gaussian_velocity, noise, 4, t_start=0.5, progress=False)
    with pytest.raises(ValueError, match="cond and cond_mask together"):
        sample(gaussian_velocity, noise, 4, cond=noise, progress=False)
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        guided_velocity(lambda *a: None, torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool), -1.0)


# ---------------------------------------------------------------- guidance


def test_guided_velocity_mixes_conditional_and_unconditional():
    calls = []

    def model_fn(zt, t, context, context_mask):
        calls.append(zt.shape[0])
        # "Conditional" output depends on the visible words, "unconditional" is zt itself.
        words = (context * context_mask[..., None]).sum(dim=(1, 2))
        return zt + words[:, None, None, None, None]

    zt, t = torch.randn(2, 4, 3, 4, 4), torch.rand(2, 3)
    context, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    v_c, v_u = model_fn(zt, t, context, mask), zt
    calls.clear()
    assert torch.allclose(guided_velocity(model_fn, context, mask, 1.0)(zt, t), v_c)
    assert calls == [2]  # guidance 1: one pass, no unconditional branch
    assert torch.allclose(guided_velocity(model_fn, context, mask, 0.0)(zt, t), v_u)
    calls.clear()
    assert torch.allclose(guided_velocity(model_fn, context, mask, 3.0)(zt, t), v_u + 3.0 * (v_c - v_u), atol=1e-5)
    assert calls == [4]  # both branches in one batched call
