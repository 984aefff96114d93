"""Sampling: the engine that turns noise into a video, as functions that take a model.

As in diffusers, the model and the way it is sampled live apart: `MiniSora` (pipeline.py) holds the parts
and converts (prompts -> context, pixels <-> latents); the functions here and in prompting.py *use* a
model and never the other way round. `model.generate(...)` is `generate(model, ...)` under another name.

    generate(model, prompt, num_frames, height, width)   text-to-video -> (T, H, W, 3) uint8
    generate_image(model, prompt, height, width)         text-to-image: a one-frame video -> (H, W, 3) uint8
    sample_window(model, prompt, head, tail, new_frames) given frames at the start and/or end of a window,
                                                         new frames between them: every prompting mode's step
    sample_latents(model, prompts, num_frames, ...)      the engine: defaults, a cost check, then flow.sample

The engine integrates the rectified-flow ODE (arXiv:2209.03003) from noise to a clean latent, with
classifier-free guidance (arXiv:2207.12598) and SD3's resolution-dependent time shift (arXiv:2403.03206);
given frames are held clean at t = 0 (one timestep per latent frame, see flow.py).

Every mode ends in `sample_latents`, the one place where steps, guidance and sampler default to the
model's config (`config.flow`) and where a size is checked against memory and time before any work:
what cannot fit is refused with a ValueError, what will take minutes is announced with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import flow
from .frames import as_pixels, fit_video, to_uint8

LONG_SECONDS = 60  # warn before sampling that is expected to take longer than this


@torch.no_grad()
def generate(model, prompt: str, num_frames: int | None = None, height: int | None = None,
             width: int | None = None, steps: int | None = None, guidance: float | None = None,
             seed: int = 0, sampler: str | None = None, callback=None, progress: bool = True) -> np.ndarray:
    """Text-to-video. Returns (T, H, W, 3) uint8. Sizes default to the training size of the preset.

    steps, guidance, sampler default to model.config.flow. callback(step, t, zt, z0_pred) is called at
    every sampling step with latents (for scrubbing).

        video = model.generate("a red circle moves to the right", seed=0)   # (9, 32, 32, 3) in tiny
    """
    data = model.config.data
    num_frames = data.num_frames if num_frames is None else num_frames
    height, width = data.height if height is None else height, data.width if width is None else width
    model.eval()
    z0 = sample_latents(model, [prompt], num_frames, height, width, steps=steps, guidance=guidance, seed=seed,
                        sampler=sampler, callback=callback, progress=progress)
    return model.latent_to_pixels(z0)


@torch.no_grad()
def generate_image(model, prompt: str, height: int | None = None, width: int | None = None,
                   **options) -> np.ndarray:
    """Text-to-image: a one-frame video. Returns (H, W, 3) uint8.

    The causal VAE encodes frame 0 on its own, so an image is simply a video of one frame and the
    same weights make both. `options` are generate's: steps, guidance, seed, sampler, progress.

        image = model.generate_image("a large blue square", height=32, width=64, seed=0)  # (32, 64, 3)
    """
    return generate(model, prompt, num_frames=1, height=height, width=width, **options)[0]


# ---------------------------------------------------------------------------- given frames
# How given frames become given latents, with a causal VAE (latent 0 = frame 0 alone, latent j >= 1 =
# frames 4j-3..4j, each seeing only the past; 4 = the VAE's time factor):
#   * At the start of a window, given frames are a clip of 1 + 4p frames. Encoded on their own they give
#     p + 1 latents that are *exactly* the first latents of the whole window (causality: what comes
#     later cannot change them). So "the last frames of a video" are re-encoded as a clip that starts
#     a window: its first latent is then a proper single frame, as the model saw in training.
#   * At the end of a window, given frames are 4q frames: q whole groups. Their latents depend on the
#     frames before them, which are still to be generated. We encode [f0, f0, f1, ...] and drop the
#     first latent: the encoder sees "f0 held still" as the past, as its own causal padding does at
#     the start of every video. The nearest we can get without the frames the sampler has yet to make.
@torch.no_grad()
def sample_window(model, prompt: str | None, head: np.ndarray | None = None, tail: np.ndarray | None = None,
                  new_frames: int = 8, *, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                  sampler: str | None = None, progress: bool = True) -> np.ndarray:
    """The one mechanism of every prompting mode: given frames at the start and/or end, new frames between.

    Args:
        prompt: the text, or None for none (the unconditional model).
        head: (1 + tf*p, H, W, 3) uint8 frames given at the start of the window, or None (tf = the VAE's
            time factor: 2 in the tiny preset, 4 in the larger ones).
        tail: (tf*q, H, W, 3) uint8 frames given at the end of the window, or None.
        new_frames: frames to generate between them: a multiple of tf after a head, 1 + tf*k without one.
    Returns:
        the whole window (len(head) + new_frames + len(tail), H, W, 3) uint8, decoded in one go: given
        frames come back as the VAE reproduces them, new frames continue from them.

        window = sample_window(model, "a red circle moves to the right", head=video[-5:], new_frames=4)
    """
    if head is None and tail is None:
        raise ValueError("sample_window needs head= and/or tail= frames; for no given frame use generate")
    head = None if head is None else given_pixels(model, head, "head")
    tail = None if tail is None else given_pixels(model, tail, "tail")
    tf, given = model.vae.temporal_factor, [x for x in (head, tail) if x is not None]
    height, width = given[0].shape[1:3]
    if any(x.shape[1:3] != (height, width) for x in given):
        raise ValueError(f"head and tail must have the same size, got {[x.shape[1:3] for x in given]}")
    n_head, n_tail = 0 if head is None else len(head), 0 if tail is None else len(tail)
    if head is not None and (n_head - 1) % tf:
        raise ValueError(f"head must have 1 + {tf}k frames (a clip that starts a window), got {n_head}")
    if tail is not None and (n_tail % tf or n_tail == 0):
        raise ValueError(f"tail must have a multiple of {tf} frames (whole latent groups), got {n_tail}")
    rule = f"a multiple of {tf}" if head is not None else f"1 + {tf}k"
    if isinstance(new_frames, bool) or not isinstance(new_frames, int) or new_frames < 1 or (
            (new_frames - (head is None)) % tf):
        raise ValueError(f"new_frames must be {rule} here (at least 1), got {new_frames!r}")
    num_frames = n_head + new_frames + n_tail
    channels, num_latent_frames, *latent_hw = model.latent_shape(num_frames, height, width)
    cond = torch.zeros(1, channels, num_latent_frames, *latent_hw, device=model.device)
    cond_mask = torch.zeros(1, num_latent_frames, dtype=torch.bool, device=model.device)
    model.eval()
    if head is not None:
        z_head = model.pixels_to_latent(head)  # (1, C, 1 + p, H', W')
        cond[:, :, :z_head.shape[2]], cond_mask[:, :z_head.shape[2]] = z_head, True
    if tail is not None:
        clip = np.concatenate([tail[:1], tail])  # f0 as the past, see the comment above
        z_tail = model.pixels_to_latent(clip)[:, :, 1:]  # (1, C, q, H', W')
        cond[:, :, -z_tail.shape[2]:], cond_mask[:, -z_tail.shape[2]:] = z_tail, True
    z0 = sample_latents(model, [prompt], num_frames, height, width, steps=steps, guidance=guidance, seed=seed,
                        sampler=sampler, cond=cond, cond_mask=cond_mask, progress=progress)
    return model.latent_to_pixels(z0)


def given_pixels(model, frames, what: str, height: int | None = None, width: int | None = None,
                 image: bool = False) -> np.ndarray:
    """User frames -> (T, H, W, 3) uint8 at a size the model can make, or a ValueError saying what to change.

    uint8 pixels 0..255 and floats in [0, 1] are accepted (frames.as_pixels); a different height/width
    than asked is resized (centre crop to the aspect ratio, then resize) with a warning.
    """
    frames = as_pixels(frames, what, image)
    h, w = frames.shape[1:3]
    height, width = height or h, width or w
    try:
        model.check_size(1, height, width)
    except ValueError as err:
        hint = "" if (height, width) != (h, w) else "; pass height= and width= to resize it"
        raise ValueError(f"{what} of {h}x{w}: {err}{hint}") from err
    if (height, width) != (h, w):
        warnings.warn(f"{what} of {h}x{w} resized to {height}x{width} (centre crop to that aspect ratio, "
                      f"then resize)", stacklevel=3)
        frames = to_uint8(fit_video(frames, height, width))
    return frames


# ---------------------------------------------------------------------------- the engine
@torch.no_grad()
def sample_latents(model, prompts: list[str | None], num_frames: int, height: int, width: int, *,
                   steps: int | None = None, guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                   cond: torch.Tensor | None = None, cond_mask: torch.Tensor | None = None,
                   z_init: torch.Tensor | None = None, t_start: float = 1.0, callback=None,
                   progress: bool = True) -> torch.Tensor:
    """Denoise latents z0 (B, C, T', H', W') for `prompts`, from noise: the engine of every mode.

    steps, guidance, sampler: None = model.config.flow's. `steps` counts a full denoise; starting at
    t_start < 1 (SDEdit: `z_init` noised to t_start) takes round(t_start * steps) of them.
    cond/cond_mask give clean latent frames to keep (image-to-video, extension, connecting). Noise comes
    from a CPU generator seeded with `seed`, so a seed gives the same video on the same device.
    `prompts=[None]` samples without text (the unconditional velocity that text dropout trained).
    """
    flow_cfg = model.config.flow
    steps = flow_cfg.steps if steps is None else steps
    guidance = flow_cfg.guidance if guidance is None else guidance
    sampler = flow_cfg.sampler if sampler is None else sampler
    if z_init is not None and 0 <= t_start < 1:  # a partial denoise, as many steps as its share of t
        steps = max(1, round(t_start * steps))
    if prompts == [None]:  # no text: the DiT reads only its learned null token, as in text dropout
        guidance = 1.0
    shape = model.latent_shape(num_frames, height, width)
    check_cost(model, num_frames, height, width, steps, guidance, sampler)

    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(prompts), *shape), generator=generator).to(model.device)
    if prompts == [None]:
        context = torch.zeros(1, 1, model.config.text.dim, device=model.device)
        context_mask = torch.zeros(1, 1, dtype=torch.bool, device=model.device)
    else:
        context, context_mask = model.encode_prompts(prompts)
    velocity_fn = flow.guided_velocity(model.dit, context, context_mask, guidance)
    shift = flow.resolution_shift(flow_cfg.shift, num_tokens(model, shape), flow_cfg.base_tokens)
    return flow.sample(velocity_fn, noise, steps, sampler=sampler, shift=shift, cond=cond, cond_mask=cond_mask,
                       z_init=z_init, t_start=t_start, callback=callback, progress=progress)


# ---------------------------------------------------------------------------- what a size costs
def num_tokens(model, latent_shape: tuple[int, int, int, int]) -> int:
    """Spacetime patches (DiT tokens) of one latent (C, T', H', W')."""
    return math.prod(size // p for size, p in zip(latent_shape[1:], model.config.dit.patch_size))


def sampling_cost(model, num_frames: int, height: int, width: int, steps: int, guidance: float,
                  sampler: str) -> dict[str, float]:
    """Rough cost of sampling one video: {"tokens", "bytes" (peak memory), "seconds"} on the model's device.

    Memory: the larger of the DiT's activations (tokens x width, a batch of two under guidance) and the
    VAE decoder's full-resolution stage (upsampled input, its time-padded copy, the output), in float32.
    Time: matmul FLOPs (DiT.flops_per_forward per model call, plus the decoder's 3x3x3 convolutions)
    over this device's measured matmul speed, at half efficiency. Right within a factor of a few: enough
    to refuse what cannot fit and to warn about what will take minutes.
    """
    cfg, vae_cfg = model.config, model.config.vae
    tokens = num_tokens(model, model.latent_shape(num_frames, height, width))
    batch = 1 if guidance in (0, 1) else 2
    calls = steps * (2 if sampler == "heun" else 1)
    dit_bytes = batch * tokens * cfg.dit.dim * (8 + cfg.dit.mlp_ratio) * 4
    if cfg.dit.attention_backend == "reference":  # the specification keeps every (query, key) score
        dit_bytes += batch * cfg.dit.heads * tokens**2 * 4
    widths = [vae_cfg.base_channels * m for m in vae_cfg.channel_mults]
    pixels = num_frames * height * width
    vae_bytes = (2 * widths[min(1, len(widths) - 1)] + widths[0]) * pixels * 4
    full_res = widths[min(1, len(widths) - 1)] * widths[0] + 2 * vae_cfg.num_res_blocks * widths[0] ** 2
    vae_flops = 1.3 * 2 * 27 * pixels * full_res  # + 30% for the levels below full resolution
    dit_flops = getattr(model.dit, "flops_per_forward", lambda *_: 0)  # a stand-in velocity model is free
    flops = batch * calls * dit_flops(tokens, cfg.text.max_len) + vae_flops
    seconds = flops / (0.5 * _flops_per_second(model.device.type))
    return {"tokens": tokens, "bytes": max(dit_bytes, vae_bytes), "seconds": seconds}


def check_cost(model, num_frames: int, height: int, width: int, steps: int, guidance: float,
               sampler: str) -> None:
    """Refuse (ValueError) a size that cannot fit in the device's memory; warn when it will take long."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return  # no cost to tell: flow.sample refuses such steps with its own message
    cost = sampling_cost(model, num_frames, height, width, steps, guidance, sampler)
    size, device = f"{num_frames} frames of {height}x{width}", model.device.type
    data = model.config.data
    have = _device_memory(model.device)
    if have is not None and cost["bytes"] > have:
        raise ValueError(f"{size} need about {_gib(cost['bytes'])} of memory to sample ({cost['tokens']:,} tokens), "
                         f"more than the {_gib(have)} free on this {device}: ask for fewer pixels (this model was "
                         f"trained on {data.num_frames} frames of {data.height}x{data.width})")
    if cost["seconds"] > LONG_SECONDS:
        minutes = cost["seconds"] / 60
        took = f"{minutes:.0f} minutes" if minutes < 120 else f"{minutes / 60:.0f} hours"
        warnings.warn(f"{size} ({cost['tokens']:,} tokens, {steps} steps) will take about {took} on this {device}, "
                      f"with about {_gib(cost['bytes'])} of memory; fewer pixels or steps are faster", stacklevel=2)


def _gib(size: float) -> str:
    """Bytes as "12 GiB" (or "300 MiB" below a GiB)."""
    return f"{size / 2**30:.0f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def _device_memory(device: torch.device) -> int | None:
    """Bytes this process can still use: a GPU's free memory (and what torch holds unused), or the
    machine's available RAM (/proc/meminfo, else its total); None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts kB
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows) or no such value
        return None


@functools.lru_cache(maxsize=None)
def _flops_per_second(device_type: str) -> float:
    """This device's float32 matmul speed, measured once: 8 products of 512 x 512 matrices."""
    a = torch.randn(512, 512, device=device_type)
    sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)
    a @ a  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(8):
        a @ a
    sync()
    return 8 * 2 * 512**3 / max(time.perf_counter() - start, 1e-9)
