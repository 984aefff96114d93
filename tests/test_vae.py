"""Tests for the causal video VAE (minisora/vae.py): shapes, causality, training, calibration, errors."""

import dataclasses

import pytest
import torch

from minisora.config import VAEConfig
from minisora.vae import VideoVAE, check_video_size

# A narrow VAE with the tiny preset's structure (4x time, 4x space) so every test runs in seconds.
SMALL = VAEConfig(base_channels=8, channel_mults=(1, 2, 2), time_downsamples=2, latent_channels=4)


def make_vae(cfg=SMALL, seed=0):
    torch.manual_seed(seed)
    return VideoVAE(cfg)


def moving_blobs(n, num_frames, height, width, seed=0):
    """(n, 3, T, H, W) in [-1, 1]: one soft coloured disc per video moving in a straight line on grey."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    start = torch.rand(n, 2, generator=g) * torch.tensor([width, height])
    velocity = (torch.rand(n, 2, generator=g) - 0.5) * 4
    t = torch.arange(num_frames).float()
    cx = (start[:, 0, None] + velocity[:, 0, None] * t)[..., None, None]  # (n, T, 1, 1)
    cy = (start[:, 1, None] + velocity[:, 1, None] * t)[..., None, None]
    radius = (3 + torch.rand(n, generator=g) * min(height, width) / 4)[:, None, None, None]
    inside = torch.sigmoid(2 * (radius - ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()))  # (n, T, H, W)
    color = torch.rand(n, 3, generator=g) * 2 - 1
    background = -0.4
    return background + inside[:, None] * (color[:, :, None, None, None] - background)


def test_tiny_preset_compresses_2x_time_and_space():
    vae = VideoVAE(VAEConfig())
    assert (vae.spatial_factor, vae.temporal_factor, vae.latent_channels) == (2, 2, 4)
    assert vae.latent_shape(9, 32, 32) == (4, 5, 16, 16)
    mean, logvar = vae.encode(torch.zeros(1, 3, 9, 32, 32))
    assert mean.shape == logvar.shape == (1, 4, 5, 16, 16)


def test_object_pixels_weigh_more_in_the_reconstruction_loss():
    video = torch.full((1, 3, 3, 8, 8), -0.9)  # a dark backdrop ...
    video[:, 0, :, 2:4, 5:7] = 0.8  # ... and a small red object, 4 pixels per frame
    weights = make_vae().pixel_weights(video)
    assert weights.shape == (1, 1, 3, 8, 8)
    assert (weights[:, :, :, 2:4, 5:7] == SMALL.object_weight).all()
    assert weights.sum().item() == 3 * (60 + 4 * SMALL.object_weight)  # everything else weighs 1
    plain = make_vae(dataclasses.replace(SMALL, object_weight=1.0))
    assert (plain.pixel_weights(video) == 1).all()


@pytest.mark.parametrize("num_frames,height,width", [(1, 16, 16), (5, 16, 24), (9, 32, 32), (13, 8, 40)])
def test_shapes_round_trip_for_any_valid_size(num_frames, height, width):
    vae = make_vae()  # the same weights every time: nothing depends on the size
    video = torch.rand(2, 3, num_frames, height, width) * 2 - 1
    mean, logvar = vae.encode(video)
    assert mean.shape == logvar.shape == (2, *vae.latent_shape(num_frames, height, width))
    assert vae.decode(mean).shape == video.shape
    out = vae(video)
    assert out["recon"].shape == video.shape and out["mean"].shape == mean.shape
    assert vae.decode_latent(vae.encode_latent(video)).shape == video.shape


def test_encoder_is_causal():
    vae = make_vae()
    video = moving_blobs(2, 13, 16, 16, seed=1)
    with torch.no_grad():
        base, _ = vae.encode(video)
        for k in (1, 4, 5, 12):  # latent frame j sees video frames <= 4j
            changed = video.clone()
            changed[:, :, k] = torch.rand_like(changed[:, :, k])
            new, _ = vae.encode(changed)
            first_affected = -(-k // 4)
            torch.testing.assert_close(new[:, :, :first_affected], base[:, :, :first_affected], rtol=0, atol=1e-6)
            assert (new[:, :, first_affected] - base[:, :, first_affected]).abs().max() > 1e-4


def test_image_is_a_one_frame_video():
    vae = make_vae()
    video = moving_blobs(2, 9, 16, 16, seed=2)
    with torch.no_grad():
        mean, _ = vae.encode(video)
        image_mean, _ = vae.encode(video[:, :, :1])
        torch.testing.assert_close(image_mean, mean[:, :, :1], rtol=0, atol=1e-5)
        # The decoder is causal too: decoded frame 0 comes from latent frame 0 alone.
        torch.testing.assert_close(vae.decode(mean[:, :, :1]), vae.decode(mean)[:, :, :1], rtol=0, atol=1e-5)


def test_reconstruction_improves_with_training():
    vae = make_vae()
    video = moving_blobs(8, 5, 16, 16, seed=3)
    best_constant = ((video - video.mean(dim=(0, 2, 3, 4), keepdim=True)) ** 2).mean().item()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        out = vae.loss(video, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon_loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        mse = ((vae(video, sample=False)["recon"] - video) ** 2).mean().item()
    assert mse < 0.8 * best_constant, (mse, best_constant)  # it learned the blobs, not just the mean colour


def test_loss_is_deterministic_with_a_generator_and_weights_kl():
    vae = make_vae()
    video = moving_blobs(2, 5, 8, 8, seed=4)
    a = vae.loss(video, generator=torch.Generator().manual_seed(7))
    b = vae.loss(video, generator=torch.Generator().manual_seed(7))
    assert set(a) == {"loss", "recon_loss", "kl"}
    assert a["loss"].item() == b["loss"].item()
    # The KL term is weighted: trained alike from the same start, a heavy weight pulls the posterior to
    # N(0, I) (small KL), the tiny default lets it drift for the sake of reconstruction.
    kls = {}
    for weight in (SMALL.kl_weight, 1.0):
        vae = make_vae(dataclasses.replace(SMALL, kl_weight=weight))
        opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
        for step in range(15):
            out = vae.loss(video, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        kls[weight] = out["kl"].item()
    assert kls[1.0] < 0.5 * kls[SMALL.kl_weight], kls


def test_calibrate_gives_unit_variance_latents_and_is_saved():
    vae = make_vae()
    videos = moving_blobs(16, 9, 16, 16, seed=5)
    shift, scale = vae.calibrate(videos.split(4))  # an iterable of batches, like a DataLoader
    assert shift.shape == scale.shape == (4,)
    with torch.no_grad():
        z0 = vae.encode_latent(videos)
        per_channel = z0.transpose(0, 1).reshape(4, -1)
        torch.testing.assert_close(per_channel.mean(1), torch.zeros(4), rtol=0, atol=1e-4)
        torch.testing.assert_close(per_channel.std(1, unbiased=False), torch.ones(4), rtol=0, atol=1e-3)
        held_out = vae.encode_latent(moving_blobs(16, 9, 16, 16, seed=6))
        assert 0.5 < held_out.std().item() < 2.0
        # decode_latent undoes the normalisation before decoding
        torch.testing.assert_close(vae.decode_latent(z0), vae.decode(vae.encode(videos)[0]), rtol=1e-4, atol=1e-4)
    # The statistics travel with the weights (and so into safetensors files).
    state = vae.state_dict()
    torch.testing.assert_close(state["latent_shift"], shift)
    torch.testing.assert_close(state["latent_scale"], scale)
    loaded = make_vae(seed=1)
    loaded.load_state_dict(state)
    torch.testing.assert_close(loaded.encode_latent(videos[:2]), z0[:2])


def test_calibrate_accepts_dataset_batches_and_refuses_nothing():
    vae = make_vae()
    videos = moving_blobs(4, 5, 8, 8, seed=8)
    shift, scale = vae.calibrate([{"video": videos[:2]}, {"video": videos[2:]}])
    shift2, scale2 = vae.calibrate(videos)
    torch.testing.assert_close(shift, shift2)
    torch.testing.assert_close(scale, scale2)
    with pytest.raises(ValueError, match="no videos"):
        vae.calibrate([])


def test_check_video_size_accepts_valid_sizes():
    assert check_video_size(9, 32, 32, 4, 4) is None
    assert check_video_size(1, 8, 24, 4, 4) is None
    assert check_video_size(5, 32, 48, 4, 4, patch_size=(2, 2, 2)) is None  # 2 latent frames


def test_check_video_size_suggests_valid_values():
    with pytest.raises(ValueError) as err:
        check_video_size(10, 32, 32, 4, 4)
    assert "num_frames=10" in str(err.value) and "9 or 13" in str(err.value)

    with pytest.raises(ValueError) as err:
        check_video_size(9, 30, 36, 4, 4, patch_size=(1, 2, 2))
    message = str(err.value)
    assert "height=30" in message and "multiple of 8" in message and "24 or 32" in message
    assert "width=36" in message and "32 or 40" in message
    assert "num_frames" not in message  # 9 frames are fine

    with pytest.raises(ValueError) as err:  # 9 frames -> 3 latent frames, not a multiple of pt=2
        check_video_size(9, 32, 32, 4, 4, patch_size=(2, 2, 2))
    assert "5 or 13" in str(err.value)

    with pytest.raises(ValueError, match="such as 5$"):  # an image cannot fill a patch 2 latent frames long
        check_video_size(1, 32, 32, 4, 4, patch_size=(2, 1, 1))
    with pytest.raises(ValueError, match="try 8$"):
        check_video_size(1, 32, 3, 4, 4, patch_size=(1, 1, 2))
    with pytest.raises(ValueError, match="at least 1"):
        check_video_size(0, 32, 32, 4, 4)
    with pytest.raises(ValueError, match="whole number"):
        check_video_size(9, 32.5, 32, 4, 4)


def test_wrong_size_video_gives_a_clear_error_not_a_conv_error():
    vae = make_vae()
    with pytest.raises(ValueError, match="9 or 13"):
        vae.encode(torch.zeros(1, 3, 10, 16, 16))
    with pytest.raises(ValueError, match="height=18"):
        vae.encode(torch.zeros(1, 3, 9, 18, 16))
    with pytest.raises(ValueError, match="try 12 or 16"):
        vae.latent_shape(9, 16, 14)


def test_bad_rank_channels_and_dtype_are_explained():
    vae = make_vae()
    with pytest.raises(ValueError, match=r"video\[None\]"):
        vae.encode(torch.zeros(3, 9, 16, 16))
    with pytest.raises(ValueError, match="3 channels"):
        vae.encode(torch.zeros(1, 9, 16, 16, 3))
    with pytest.raises(ValueError, match="127.5"):
        vae.encode(torch.zeros(1, 3, 9, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="torch tensor"):
        vae.encode([[0.0]])
    with pytest.raises(ValueError, match=r"\(B, 4, T', H', W'\)"):
        vae.decode(torch.zeros(1, 3, 3, 4, 4))
    with pytest.raises(ValueError, match="channel_mults"):
        VideoVAE(VAEConfig(channel_mults=(1, 2), time_downsamples=2))


def test_object_weight_must_be_positive():
    with pytest.raises(ValueError, match="object_weight must be > 0"):
        make_vae(dataclasses.replace(SMALL, object_weight=0.0))
