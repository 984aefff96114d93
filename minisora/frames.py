"""Pixel formats in one place: what the model computes on, what people look at, what files hold.

    model tensor   (3, T, H, W) float in [-1, 1], batched (B, 3, T, H, W): what the VAE reads and writes
    pixels         (T, H, W, 3) uint8: what `generate` returns, what files hold and plots show
    user frames    pixels, or floats in [0, 1]: what the prompting modes accept

    to_uint8(video)                model tensor -> pixels (pixels pass through unchanged)
    to_model(pixels, device)       pixels -> model tensor (1, 3, T, H, W)
    as_pixels(frames, what)        user frames -> pixels, or a ValueError that says what to change
    fit_video(frames, H, W)        any frames -> model tensor of H x W: centre crop to the aspect ratio, resize
    read_video(path)               .png/.jpg/.gif/.mp4 -> pixels (an image is a one-frame video)
    save_video(video, path, fps)   -> .gif/.mp4, upscaled for screens;  save_image(image, path) -> .png/.jpg

Every other module converts through these, so a video never changes format by accident on the way
from a file through the model to a plot.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


# ---------------------------------------------------------------------------- tensor <-> uint8
def to_uint8(video) -> np.ndarray:
    """A model tensor (3, T, H, W) or (1, 3, T, H, W) in [-1, 1], or pixels, -> pixels (T, H, W, 3) uint8."""
    if not torch.is_tensor(video):
        video = np.asarray(video)
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"a video must be (T, H, W, 3) uint8 pixels as MiniSora.generate returns, got "
                             f"{video.dtype} {video.shape}; a torch (3, T, H, W) tensor in [-1, 1] works too")
        return video
    video = video.detach().float().cpu()
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one video; got a batch of {video.shape[0]}: index it first")
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"a torch video must be (3, T, H, W) in [-1, 1], got shape {tuple(video.shape)}")
    pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(pixels, "c t h w -> t h w c").numpy()


def to_model(pixels: np.ndarray, device=None) -> torch.Tensor:
    """Pixels (T, H, W, 3) uint8 -> model tensor (1, 3, T, H, W) float in [-1, 1] on `device`."""
    video = rearrange(torch.from_numpy(np.ascontiguousarray(pixels)), "t h w c -> 1 c t h w")
    return video.to(device).float() / 127.5 - 1


def as_pixels(frames, what: str, image: bool = False) -> np.ndarray:
    """User frames -> pixels (T, H, W, 3) uint8, or a ValueError naming `what` and what to change.

    Accepts uint8 pixels 0..255 and floats in [0, 1] (numpy or torch). image=True words the messages
    for one (H, W, 3) image (the caller has added the time axis).
    """
    if torch.is_tensor(frames):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        shape_name, got = ("(H, W, 3)", frames.shape[1:]) if image else ("(T, H, W, 3)", frames.shape)
        raise ValueError(f"{what} must be {shape_name} RGB pixels as generate returns, got shape {got}")
    if np.issubdtype(frames.dtype, np.floating):
        low, high = float(np.min(frames)), float(np.max(frames))
        if not (np.isfinite(frames).all() and 0 <= low and high <= 1):
            raise ValueError(f"{what} is float with values in [{low:.3g}, {high:.3g}]: give uint8 pixels 0..255 "
                             f"or floats in [0, 1] (model tensors in [-1, 1] need (x + 1) / 2)")
        return np.round(frames * 255).astype(np.uint8)
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} has dtype {frames.dtype}: give uint8 pixels 0..255 (x.astype(np.uint8) if "
                         f"its values are already 0..255) or floats in [0, 1]")
    return frames


# ---------------------------------------------------------------------------- sizes
def fit_video(frames, height: int, width: int) -> torch.Tensor:
    """Frames (T, H, W), (T, H, W, 1|3|4) -> model tensor (3, T, height, width) float32 in [-1, 1].

    Integer frames are 0..255, float frames 0..1. The frames are centre-cropped to the aspect ratio of
    (height, width) first, so nothing is stretched, then resized with antialiasing.
    """
    x = torch.tensor(np.asarray(frames))  # a copy: decoded frames are often read-only
    if x.ndim == 3:  # grayscale
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or 0 in x.shape:
        raise ValueError(f"expected frames shaped (T, H, W) or (T, H, W, 1|3|4), got {tuple(x.shape)}")
    x = x.float() if x.is_floating_point() else x.float() / 255
    x = x[..., :3].expand(-1, -1, -1, 3) if x.shape[-1] == 1 else x[..., :3]  # gray -> RGB, drop alpha
    x = rearrange(x, "t h w c -> t c h w")
    h, w = x.shape[-2:]
    if w * height > h * width:  # too wide: keep the middle columns
        keep = max(1, round(h * width / height))
        x = x[..., (w - keep) // 2:(w - keep) // 2 + keep]
    else:  # too tall: keep the middle rows
        keep = max(1, round(w * height / width))
        x = x[..., (h - keep) // 2:(h - keep) // 2 + keep, :]
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return rearrange(x.clamp(0, 1) * 2 - 1, "t c h w -> c t h w").contiguous()


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling so 32x32 videos are visible on a screen. (T, H, W, 3) -> (T, fH, fW, 3)."""
    return video.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else video


def display_scale(height: int, target: int = 192) -> int:
    """An integer zoom that brings a small video to about `target` pixels tall."""
    return max(1, target // max(height, 1))


# ---------------------------------------------------------------------------- files
def read_video(path: str | os.PathLike, num_frames: int | None = None) -> np.ndarray:
    """An image or video file -> pixels (T, H, W, 3) uint8; an image is one frame.

    Anything imageio reads: .png/.jpg/.gif, .mp4 with imageio-ffmpeg. Gray becomes RGB, alpha is dropped.
    num_frames: keep only the first num_frames (a ValueError if the file has fewer).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no file at '{path}'")
    frames = []
    try:
        for frame in iio.imiter(path):
            frames.append(np.asarray(frame))
            if len(frames) == num_frames:
                break
    except Exception as error:  # imageio raises many types for broken files; say which file it was
        raise ValueError(f"cannot read video {path} ({type(error).__name__}: {error}); use .png/.jpg/.gif, or "
                         ".mp4 with imageio-ffmpeg installed (`pip install imageio-ffmpeg`)") from error
    if num_frames is not None and len(frames) < num_frames:
        raise ValueError(f"video {path} has {len(frames)} frames but num_frames={num_frames}; "
                         f"use num_frames <= {len(frames)} or a longer clip")
    video = np.stack(frames)
    if video.ndim == 3:  # grayscale
        video = np.repeat(video[..., None], 3, axis=-1)
    return np.ascontiguousarray(video[..., :3]).astype(np.uint8)


def save_video(video, path: str | os.PathLike, fps: int = 8, scale: int | None = None) -> Path:
    """Write pixels or a model tensor as .gif (always available) or .mp4 (needs imageio-ffmpeg).

    Small videos are upscaled by `scale` (default: to about 192 pixels tall). The file is written under a
    temporary name and renamed, so an interrupted write never leaves a half-written file behind.
    """
    import imageio.v2 as imageio

    path = Path(path)
    frames = to_uint8(video)
    frames = upscale(frames, display_scale(frames.shape[1]) if scale is None else scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if path.suffix.lower() == ".gif":
        imageio.mimsave(tmp, list(frames), duration=1000 / fps, loop=0)
    elif path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (imageio needs it for mp4)
        except ImportError as err:
            raise RuntimeError("writing .mp4 needs imageio-ffmpeg: pip install imageio-ffmpeg "
                               "(or save as .gif)") from err
        # Codecs want sizes divisible by 16; pad rather than let ffmpeg rescale silently.
        pad_h, pad_w = (-frames.shape[1]) % 16, (-frames.shape[2]) % 16
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        imageio.mimsave(tmp, list(frames), fps=fps, macro_block_size=1)
    else:
        raise ValueError(f"unsupported video extension '{path.suffix}': use .gif or .mp4")
    os.replace(tmp, path)
    return path


def save_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write one (H, W, 3) uint8 image as .png/.jpg at its own size, atomically as save_video does."""
    path = Path(path)
    if np.ndim(image) != 3:
        raise ValueError(f"'{path}' is an image file but the result is a video: use .gif or .mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    iio.imwrite(tmp, image)
    os.replace(tmp, path)
    return path
