"""Sora's prompting modes: each method's defining property, on the tiny preset.

Most properties hold by construction, so an untrained model checks them: given frames are held clean
by the sampler and come back as the VAE reproduces them, edit at strength 0 is a VAE round trip and at
strength 1 forgets its input, long videos run in windows of one size.

"Extension continues motion direction" needs a model that knows how things move. Training one that
does takes minutes of CPU, far over this file's budget, so here the DiT and VAE are replaced by
stand-ins with one law built in (things keep moving as they moved; see `ConstantVelocity`). That checks
everything the pipeline adds: which frames are given, where in the window they go, that the model sees
them at t = 0, and where the new frames land in the output, window after window. How well a briefly
trained model continues motion is measured in benchmarks/native_aspect.py (benchmarks/RESULTS.md).
"""

import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from minisora import MiniSora, prompting, sampling
from minisora.__main__ import build_parser, main
from minisora.config import FlowConfig, get_preset
from minisora.frames import to_model
from minisora.prompting import loop_seam
from minisora.text import Tokenizer
from minisora.train import FlowObjective
from minisora.world import ObjectSpec, Scene, render, vocabulary

PROMPT = "a red circle moves to the right"
FAST = {"steps": 2, "guidance": 1.0, "progress": False}


@pytest.fixture(scope="module")
def model():
    # A VAE that compresses 4x in time, as the colab and large presets do: groups of 4 frames make the
    # window arithmetic below easy to follow (the tiny preset's 2x is checked by
    # test_messages_name_the_vae_time_factor_of_this_model).
    cfg = get_preset("tiny")
    cfg.vae = dataclasses.replace(cfg.vae, channel_mults=(1, 2, 4), time_downsamples=2)
    cfg.dit.patch_size = (1, 2, 2)
    torch.manual_seed(0)
    model = MiniSora(cfg, Tokenizer.from_words(vocabulary())).eval()
    # The DiT's output layers start at zero (it predicts v = 0 whatever it sees), which would make some
    # properties hold trivially; random weights there make every output depend on every input.
    with torch.no_grad():
        for p in model.dit.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def clip():
    # 16x16 (the smallest size the tiny grid allows) keeps these tests cheap; sizes do not matter here.
    return render(PROMPT, num_frames=9, height=16, width=16, seed=0).video  # (9, 16, 16, 3) uint8


def round_trip(model, frames):
    """What the VAE makes of frames: encode, decode. (T, H, W, 3) uint8 -> same."""
    with torch.no_grad():
        return model.vae.decode_latent(model.vae.encode_latent(to_model(frames)))[0]


def to_pixels(video):
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()


# ------------------------------------------------------------------------------------------ the one engine
def test_window_returns_given_frames_as_the_vae_reproduces_them(model, clip, monkeypatch):
    sampled = []
    original = sampling.sample_latents
    monkeypatch.setattr(sampling, "sample_latents", lambda *a, **k: sampled.append(original(*a, **k)) or sampled[-1])
    window = sampling.sample_window(model, PROMPT, head=clip[-5:], tail=clip[:4], new_frames=4, **FAST)
    assert window.shape == (13, 16, 16, 3)
    # Head: a causal VAE's latents of a clip are the first latents of any video that starts with it, and
    # the sampler holds them, so the head comes back exactly as a round trip of the clip alone.
    head_error = np.abs(window[:5].astype(int) - to_pixels(round_trip(model, clip[-5:])).astype(int))
    assert head_error.max() <= 1
    # Tail: its latent (the group f0..f3 encoded after a still f0) is held exactly; its pixels are then
    # decoded after generated frames, which an untrained decoder lets show through, so check the latent.
    with torch.no_grad():
        tail_latent = model.vae.encode_latent(to_model(np.concatenate([clip[:1], clip[:4]])))[:, :, 1:]
    assert torch.equal(sampled[0][:, :, -1:], tail_latent)
    assert not torch.equal(sampled[0][:, :, 2], tail_latent[:, :, 0])  # the new latent is not a copy


@pytest.mark.parametrize("kwargs,message", [
    ({"head": np.zeros((4, 32, 32, 3), np.uint8)}, "1 \\+ 4k"),
    ({"tail": np.zeros((5, 32, 32, 3), np.uint8)}, "multiple of 4"),
    ({"head": np.zeros((5, 32, 32, 3), np.uint8), "new_frames": 5}, "multiple of 4"),
    ({}, "head= and/or tail="),
])
def test_window_refuses_frame_counts_the_vae_cannot_place(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampling.sample_window(model, PROMPT, **{"new_frames": 4, **kwargs}, **FAST)


# ------------------------------------------------------------------------------------------ the modes
def test_generate_image_is_one_frame_of_any_aspect(model):
    image = model.generate_image(PROMPT, height=16, width=32, **FAST)
    assert image.shape == (16, 32, 3) and image.dtype == np.uint8


def test_animate_starts_with_the_image(model, clip):
    video = model.animate(clip[0], PROMPT, num_frames=9, **FAST)
    assert video.shape == (9, 16, 16, 3)
    assert np.array_equal(video[0], clip[0])
    longer = model.animate(clip[0], PROMPT, num_frames=14, **FAST)  # two windows, the last one trimmed
    assert longer.shape == (14, 16, 16, 3) and np.array_equal(longer[0], clip[0])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_extend_keeps_the_video_and_adds_frames_on_its_side(model, clip, direction):
    out = model.extend(clip, PROMPT, direction=direction, new_frames=6, **FAST)
    assert out.shape == (15, 16, 16, 3)
    kept = out[:9] if direction == "forward" else out[6:]
    assert np.array_equal(kept, clip)


def test_extend_gives_the_model_the_nearest_frames(model, clip, monkeypatch):
    seen = []
    original = prompting.sample_window
    monkeypatch.setattr(prompting, "sample_window", lambda *a, **k: seen.append(k) or original(*a, **k))
    model.extend(clip, PROMPT, new_frames=4, **FAST)
    model.extend(clip, PROMPT, direction="backward", new_frames=5, **FAST)
    model.connect(clip, clip[::-1].copy(), new_frames=4, **FAST)
    forward, backward, connect = seen
    assert np.array_equal(forward["head"], clip[-5:]) and forward["new_frames"] == 4
    assert np.array_equal(backward["tail"], clip[:4]) and backward["new_frames"] == 5
    assert np.array_equal(connect["head"], clip[-1:]) and np.array_equal(connect["tail"], clip[::-1][:4])


def test_connect_keeps_both_videos_around_the_transition(model, clip):
    other = render("a blue square moves up", num_frames=5, height=16, width=16, seed=1).video
    out = model.connect(clip, other, new_frames=4, **FAST)
    assert out.shape == (9 + 4 + 5, 16, 16, 3)
    assert np.array_equal(out[:9], clip) and np.array_equal(out[-5:], other)


def test_edit_strength_zero_is_a_round_trip_and_one_forgets_the_input(model, clip):
    assert np.array_equal(model.edit(clip, PROMPT, strength=0.0, **FAST), to_pixels(round_trip(model, clip)))
    other = render("a blue square moves up", num_frames=9, height=16, width=16, seed=1).video
    a = model.edit(clip, PROMPT, strength=1.0, seed=3, **FAST)
    b = model.edit(other, PROMPT, strength=1.0, seed=3, **FAST)
    assert np.array_equal(a, b)
    half_a = model.edit(clip, PROMPT, strength=0.5, seed=3, **FAST)
    half_b = model.edit(other, PROMPT, strength=0.5, seed=3, **FAST)
    assert not np.array_equal(half_a, half_b)  # in between, the input matters


def test_long_video_runs_in_windows_of_one_size_with_flat_memory(model):
    shapes, peaks = [], []
    hook = model.dit.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))

    def on_window(index, frames):
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        video = model.generate_long(PROMPT, seconds=4, fps=8, height=16, width=16, on_window=on_window, steps=1,
                                    guidance=1.0, progress=False)
    finally:
        tracemalloc.stop()
        hook.remove()
    assert video.shape == (32, 16, 16, 3) and video.dtype == np.uint8
    windows = len(peaks)
    assert windows == 1 + 6  # 9 frames of text-to-video, then 23 more in windows of 5 given + 4 new
    # Every extension window asks the DiT the same question, whatever came before...
    assert len(set(shapes[1:])) == 1 and len(shapes) == windows
    # ...and keeps nothing from it but the context: Python-side memory of window 2k is that of window k.
    assert peaks[6] <= 1.2 * peaks[3] + 64_000


def test_long_video_from_a_1_second_prompt_is_one_window(model):
    assert model.generate_long(PROMPT, seconds=1, fps=5, height=16, width=16, **FAST).shape == (5, 16, 16, 3)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call,message", [
    (lambda m, v: m.animate(np.zeros((30, 30, 3), np.uint8), PROMPT), "32.*height="),
    (lambda m, v: m.animate(np.zeros((30, 30), np.uint8), PROMPT), "\\(H, W, 3\\)"),
    (lambda m, v: m.extend(v.astype(np.float32), PROMPT), "float with values in .*255"),
    (lambda m, v: m.extend(v / 127.5 - 1, PROMPT), "\\(x \\+ 1\\) / 2"),
    (lambda m, v: m.extend(v.astype(np.int64), PROMPT), "dtype int64"),
    (lambda m, v: m.extend(v, PROMPT, direction="sideways"), "forward"),
    (lambda m, v: m.extend(v, PROMPT, new_frames=0), "new_frames"),
    (lambda m, v: m.extend(v, PROMPT, context_frames=4), "1 \\+ 4k"),
    (lambda m, v: m.extend(v[:3], PROMPT, direction="backward"), "at least 4 frames"),
    (lambda m, v: m.edit(v, PROMPT, strength=1.5), "strength"),
    (lambda m, v: m.edit(v, PROMPT, strength=-0.1), "strength"),
    (lambda m, v: m.edit(v, PROMPT, strength="half"), "strength"),
    (lambda m, v: m.edit(v[:8], PROMPT), "num_frames=8.*9"),
    (lambda m, v: m.connect(v, np.zeros((9, 16, 32, 3), np.uint8)), "same size.*16x16 and 16x32"),
    (lambda m, v: m.connect(v, v[:2]), "at least 4 frames"),
    (lambda m, v: m.loop(v, new_frames=6), "multiple of 4"),
    (lambda m, v: m.generate_long(PROMPT, seconds=0), "seconds"),
    (lambda m, v: m.generate_long(PROMPT, seconds=61), "\\(0, 60\\]"),
    (lambda m, v: m.generate_long(PROMPT, seconds=-2), "seconds"),
    (lambda m, v: m.generate_long(PROMPT, seconds=5, fps=0), "fps"),
])
def test_bad_input_says_what_to_change(model, clip, call, message):
    with pytest.raises(ValueError, match=message):
        call(model, clip)


@pytest.mark.parametrize("direction,context,rule", [("forward", 4, "1 \\+ 2k"), ("backward", 3, "a multiple of 2")])
def test_messages_name_the_vae_time_factor_of_this_model(clip, direction, context, rule):
    config = get_preset("tiny")
    config.vae.time_downsamples = 1  # a VAE that halves time: latent groups of 2 frames, not 4
    model = MiniSora(config, Tokenizer.from_words(vocabulary()))
    with pytest.raises(ValueError, match=f"context_frames must be {rule}"):
        model.extend(clip, PROMPT, direction=direction, context_frames=context, **FAST)


def test_wrong_size_is_resized_with_a_warning(model):
    big = render(PROMPT, num_frames=1, height=32, width=48, seed=0).video[0]
    with pytest.warns(UserWarning, match="32x48 resized to 16x16"):
        video = model.animate(big, PROMPT, num_frames=5, height=16, width=16, **FAST)
    assert video.shape == (5, 16, 16, 3)


def test_loop_seam_measures_the_jump_back_to_the_start():
    clip = moving_right(0.2)
    crossing = loop_seam(clip)  # the circle jumps from its last place back to its first
    ping_pong = loop_seam(np.concatenate([clip, clip[-2:0:-1]]))  # there and back: loops by construction
    assert crossing["ratio"] > 3 and ping_pong["ratio"] < 1.5
    assert loop_seam(np.repeat(clip[:1], 4, axis=0)) == {"seam": 0.0, "step": 0.0, "ratio": 0.0}


# ------------------------------------------------------------------------------------------ training side
class Spy(nn.Module):
    """A DiT stand-in that records what it sees and answers `v_given` on the frames in `given`."""

    def __init__(self, given_value: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.given_value, self.seen = given_value, []

    def forward(self, zt, t, context, mask):
        self.seen.append((zt.detach().clone(), t.detach().clone()))
        v = torch.zeros_like(zt) + self.weight
        return torch.where((t == 0)[:, None, :, None, None], torch.full_like(zt, self.given_value), v)


class NoText(nn.Module):
    def forward(self, ids, mask):
        return torch.zeros(*ids.shape, 4)


def test_training_loss_ignores_given_frames_and_sees_them_clean():
    z0 = torch.randn(6, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    batch = {"z0": z0, "ids": torch.ones(6, 5, dtype=torch.long), "context_mask": torch.ones(6, 5, dtype=torch.bool)}
    cfg = FlowConfig(cond_probs={"first": 1.0})  # every sample: frame 0 given
    losses = []
    for given_value in (0.0, 1e6):  # the model's answer on given frames must not matter
        spy = Spy(given_value)
        objective = FlowObjective(NoText(), spy, cfg, patch_size=(1, 2, 2))
        losses.append(objective(batch, torch.Generator().manual_seed(1))["loss"].item())
        zt, t = spy.seen[0]
        assert (t[:, 0] == 0).all() and (t[:, 1:] > 0).all()
        assert torch.equal(zt[:, :, 0], z0[:, :, 0])  # given frames enter clean
    assert losses[0] == losses[1] < 100


# ------------------------------------------------------------------------------------------ motion, with stand-ins
class PixelVAE(nn.Module):
    """A lossless stand-in for the causal VAE: latent 0 = frame 0, latent j = frame 4j (the last frame of
    its group, all a causal latent can see up to); decoding holds latent j over frames 4j-3..4j."""

    spatial_factor, temporal_factor, latent_channels = 1, 4, 3

    def latent_shape(self, num_frames, height, width):
        return (3, 1 + (num_frames - 1) // 4, height, width)

    def encode_latent(self, video):
        return video[:, :, ::4]

    def decode_latent(self, z):
        return torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)


def centroid(frame):
    """(x, y) of what differs from the background in (C, H, W) or (H, W, 3) pixels."""
    frame = torch.as_tensor(np.asarray(frame, dtype=np.float32))
    frame = frame.permute(2, 0, 1) if frame.shape[-1] == 3 else frame
    weight = (frame - frame.flatten(1).median(dim=1).values[:, None, None]).abs().sum(0)  # (H, W)
    ys, xs = torch.meshgrid(torch.arange(frame.shape[1]), torch.arange(frame.shape[2]), indexing="ij")
    return torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum().clamp(min=1e-6)


class ConstantVelocity(nn.Module):
    """A stand-in DiT that knows one law: things keep moving as they moved.

    For each generated latent frame it finds the given frames (t = 0): between given frames it blends
    them; past them it shifts the nearest given frame by the motion between the two nearest, continued.
    It returns v = (zt - z0) / t, the velocity that lands the sampler exactly on that z0.
    """

    def forward(self, zt, t, context, mask):
        v = torch.zeros_like(zt)
        for b in range(zt.shape[0]):
            given = [j for j in range(zt.shape[2]) if t[b, j] == 0]
            for j in range(zt.shape[2]):
                if t[b, j] > 0:
                    v[b, :, j] = (zt[b, :, j] - self.predict(zt[b], given, j)) / t[b, j]
        return v

    @staticmethod
    def predict(z, given, j):
        before, after = [g for g in given if g < j], [g for g in given if g > j]
        if before and after:
            w = (j - before[-1]) / (after[0] - before[-1])
            return (1 - w) * z[:, before[-1]] + w * z[:, after[0]]
        near, far = (before[-1], before[-2]) if len(before) > 1 else (after[0], after[1])
        dx, dy = (centroid(z[:, near]) - centroid(z[:, far])).round().int().tolist()
        return torch.roll(z[:, near], (dy * abs(j - near), dx * abs(j - near)), dims=(1, 2))


@pytest.fixture(scope="module")
def physics():
    torch.manual_seed(0)
    model = MiniSora.from_preset("tiny").eval()
    model.vae, model.dit = PixelVAE(), ConstantVelocity()
    return model


def moving_right(x, num_frames=9):
    scene = Scene([ObjectSpec("circle", "red", "small", "right", x=x, y=0.5, speed=0.02)])
    return render(scene, num_frames=num_frames, height=32, width=64).video


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_extension_continues_the_motion_across_windows(physics, direction):
    video = moving_right(0.2 if direction == "forward" else 0.55)
    # Backward, 8 context frames: two given latents, so the stand-in can see a velocity (the real VAE's
    # latent holds 4 frames of motion; the stand-in's only one frame).
    context = 5 if direction == "forward" else 8
    out = physics.extend(video, PROMPT, direction=direction, new_frames=12, context_frames=context, **FAST)
    x = np.array([centroid(frame)[0].item() for frame in out])
    new = x[9:] if direction == "forward" else x[:12]
    assert (np.diff(x) > -0.5).all()  # never goes back left
    if direction == "forward":
        assert new[-1] - x[8] > 0.9 * 12 * 0.02 * 64 * 0.6  # and keeps going right after the video ends
    else:
        assert x[12] - new[0] > 0.9 * 12 * 0.02 * 64 * 0.6  # it came from the left before the video began


def test_loop_transition_carries_the_end_back_to_the_start(physics):
    video = moving_right(0.3)
    looped = physics.loop(video, PROMPT, new_frames=8, **FAST)
    assert looped.shape == (17, 32, 64, 3) and np.array_equal(looped[:9], video)
    x = np.array([centroid(frame)[0].item() for frame in looped])
    # The circle went right; the transition brings it back left, towards where the loop starts again.
    assert (np.diff(x[8:]) < 0.5).all() and x[9] < x[8]
    assert x[-1] - x[0] < 0.7 * (x[8] - x[0])


# ------------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


def test_every_flag_of_the_new_commands_is_explained():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("image", "animate", "extend", "loop", "edit", "connect", "long"):
        for action in commands[name]._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"


def test_cli_modes_read_and_write_files(saved, clip, tmp_path):
    import imageio.v3 as iio

    flags = ["--model", str(saved), "--steps", "1", "--no-progress", "--height", "16", "--width", "16"]
    iio.imwrite(tmp_path / "first.png", clip[0])
    iio.imwrite(tmp_path / "clip.gif", clip, duration=125, loop=0)
    runs = {
        "image.png": ["image", "--prompt", PROMPT],
        "animate.gif": ["animate", "--image", str(tmp_path / "first.png"), "--prompt", PROMPT, "--frames", "5"],
        "extend.gif": ["extend", "--video", str(tmp_path / "clip.gif"), "--prompt", PROMPT, "--frames", "4",
                       "--direction", "backward"],
        "loop.gif": ["loop", "--prompt", PROMPT],
        "edit.gif": ["edit", "--video", str(tmp_path / "clip.gif"), "--prompt", "a blue circle", "--strength", "0.5"],
        "connect.gif": ["connect", "--video-a", str(tmp_path / "clip.gif"), "--video-b", str(tmp_path / "clip.gif")],
        "long.gif": ["long", "--prompt", PROMPT, "--seconds", "1.5"],
    }
    for name, args in runs.items():
        assert main([*args, *flags, "--out", str(tmp_path / name)]) == 0, name
        assert (tmp_path / name).stat().st_size > 0
    assert iio.imread(tmp_path / "image.png").shape == (16, 16, 3)


def test_cli_bad_strength_is_an_error_message(saved, clip, tmp_path, capsys):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "clip.gif", clip, duration=125, loop=0)
    assert main(["edit", "--model", str(saved), "--video", str(tmp_path / "clip.gif"), "--prompt", PROMPT,
                 "--strength", "2", "--height", "16", "--width", "16", "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert "strength" in err and "Traceback" not in err
