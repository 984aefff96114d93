"""Grids and plots: turning videos into things a person can look at in a notebook.

Every function takes the user-facing video format, numpy `(T, H, W, 3)` uint8, or a model tensor
`(3, T, H, W)` / `(1, 3, T, H, W)` in [-1, 1]; `frames.to_uint8` converts the latter into the former
(files are written by `frames.save_video`).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch

from .frames import display_scale, to_uint8, upscale


def video_row(videos, gap: int = 2) -> np.ndarray:
    """Several videos of one size side by side, as one (T, H, n*W + gaps, 3) uint8 video."""
    frames = [to_uint8(v) for v in videos]
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"video_row needs videos of one size, got {sorted({f.shape for f in frames})}")
    spacer = np.full((*frames[0].shape[:2], gap, 3), 255, np.uint8)
    pieces = [piece for f in frames for piece in (f, spacer)][:-1]
    return np.concatenate(pieces, axis=2)


def video_html(video, fps: int = 8, scale: int | None = None) -> str:
    """An <img> tag holding the video as an inline GIF, for notebooks (works on Colab and in nbval)."""
    import imageio.v2 as imageio

    frames = to_uint8(video)
    frames = upscale(frames, display_scale(frames.shape[1]) if scale is None else scale)
    buffer = io.BytesIO()
    imageio.mimsave(buffer, list(frames), format="GIF", duration=1000 / fps, loop=0)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/gif;base64,{data}" style="image-rendering: pixelated"/>'


def show_video(video, fps: int = 8, scale: int | None = None):
    """Display a video inline in Jupyter. Returns the IPython HTML object."""
    from IPython.display import HTML, display

    html = HTML(video_html(video, fps=fps, scale=scale))
    display(html)
    return html


def frame_strip(video, max_frames: int = 9) -> np.ndarray:
    """Frames side by side in one image, (H, n*W, 3) uint8, with a 1-pixel gap, for print and plots."""
    frames = to_uint8(video)
    index = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    height = frames.shape[1]
    gap = np.full((height, 1, 3), 255, np.uint8)
    pieces = []
    for i in index:
        pieces += [frames[i], gap]
    return np.concatenate(pieces[:-1], axis=1)


def plot_videos(videos, titles=None, max_frames: int = 9, ax_height: float = 1.2):
    """A matplotlib figure with one row of frames per video. Returns the figure."""
    import matplotlib.pyplot as plt

    videos = list(videos)
    fig, axes = plt.subplots(len(videos), 1, figsize=(max_frames * ax_height, ax_height * len(videos) + 0.3),
                             squeeze=False)
    for row, video in enumerate(videos):
        ax = axes[row, 0]
        ax.imshow(frame_strip(video, max_frames), interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[row], fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def plot_losses(history: dict[str, list[float]], ax=None, title: str | None = None):
    """Plot loss curves {name: values per logged step} on a log scale. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for name, values in history.items():
        ax.plot(values, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("logged step")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------------- lesson figures
def _frame_axes(num_frames: int, max_frames: int, ax_height: float, rows: int = 1):
    """A row (or rows) of frame axes and the indices of the frames to show in them."""
    import matplotlib.pyplot as plt

    index = np.linspace(0, num_frames - 1, min(max_frames, num_frames)).round().astype(int)
    fig, axes = plt.subplots(rows, len(index), figsize=(ax_height * len(index), ax_height * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes, index


def plot_ground_truth(video, truth: dict, max_frames: int = 9, ax_height: float = 1.6):
    """Frames with the world's ground truth drawn over them: each object's mask outline, centre and velocity.

    video: (T, H, W, 3) uint8 (or a model tensor); truth: `world.simulate`'s dict (position (T, K, 2),
    velocity (T, K, 2), mask (T, K, H, W), visible (T, K), rgb (K, 3)). A hidden object keeps its centre
    (drawn hollow): the ground truth knows where it is even when the pixels do not show it.
    """
    frames = to_uint8(video)
    position, velocity = np.asarray(truth["position"]), np.asarray(truth["velocity"])
    mask, visible, rgb = np.asarray(truth["mask"]), np.asarray(truth["visible"]), np.asarray(truth["rgb"])
    fig, axes, index = _frame_axes(len(frames), max_frames, ax_height)
    for ax, t in zip(axes[0], index):
        ax.imshow(frames[t], interpolation="nearest")
        for k in range(position.shape[1]):
            colour = rgb[k] / 255
            if mask[t, k].any():  # the outline sits between pixel centres: contour at 0.5
                ax.contour(mask[t, k].astype(float), levels=[0.5], colors="white", linewidths=0.8)
            x, y = position[t, k] - 0.5  # pixel centres are at +0.5; imshow puts them on integers
            ax.plot(x, y, "o", ms=5, mec="white", mfc=colour if visible[t, k] else "none")
            ax.arrow(x, y, *(velocity[t, k] * 2), color="white", width=0.3, head_width=1.5, length_includes_head=True)
        ax.set_title(f"frame {t}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_patch_grid(video, spatial_factor: int, temporal_factor: int, patch_size=(1, 2, 2),
                    max_frames: int = 9, ax_height: float = 1.6):
    """Frames with the spacetime patch grid drawn over them; the colour of the grid is the token's time slot.

    A token covers patch_size = (pt, ph, pw) latent cells, i.e. ph*sf x pw*sf pixels, and pt latent
    frames: video frame 0 alone is latent frame 0, frames 1..tf are latent frame 1, and so on.
    """
    import matplotlib.pyplot as plt

    frames = to_uint8(video)
    pt, ph, pw = patch_size
    step_y, step_x = ph * spatial_factor, pw * spatial_factor
    colours = plt.get_cmap("tab10").colors
    fig, axes, index = _frame_axes(len(frames), max_frames, ax_height)
    height, width = frames.shape[1:3]
    for ax, t in zip(axes[0], index):
        latent_frame = 0 if t == 0 else (t - 1) // temporal_factor + 1
        slot = latent_frame // pt
        ax.imshow(frames[t], interpolation="nearest")
        for y in range(0, height + 1, step_y):
            ax.axhline(y - 0.5, color=colours[slot % 10], lw=1.2)
        for x in range(0, width + 1, step_x):
            ax.axvline(x - 0.5, color=colours[slot % 10], lw=1.2)
        ax.set_title(f"frame {t}\nlatent {latent_frame}, slot {slot}", fontsize=8, color=colours[slot % 10])
    fig.tight_layout()
    return fig


def plot_latent_channels(z, ax_height: float = 1.2):
    """One latent (C, T', H', W') as pictures: a row per channel, a column per latent frame, one colour scale."""
    import matplotlib.pyplot as plt

    z = torch.as_tensor(z).detach().float().cpu()
    if z.ndim == 5:
        z = z[0]
    if z.ndim != 4:
        raise ValueError(f"expected a latent (C, T', H', W') or (1, C, T', H', W'), got shape {tuple(z.shape)}")
    channels, frames = z.shape[:2]
    limit = float(z.abs().max()) or 1.0
    fig, axes = plt.subplots(channels, frames, figsize=(ax_height * frames + 0.8, ax_height * channels), squeeze=False)
    for c in range(channels):
        for t in range(frames):
            image = axes[c, t].imshow(z[c, t], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            axes[c, t].set_xticks([])
            axes[c, t].set_yticks([])
        axes[c, 0].set_ylabel(f"channel {c}", fontsize=8)
    for t in range(frames):
        axes[0, t].set_title(f"latent frame {t}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8)
    return fig


def plot_trajectory(trajectory, rows: int = 5, max_frames: int = 5, ax_height: float = 1.0):
    """A denoising trajectory as a still figure: for a few steps, the decoded z_t next to the predicted z0.

    trajectory: a sequence of (t, noisy, predicted), one per sampling step, noisy/predicted (T, H, W, 3)
    uint8 (as `minisora.widgets.run_sampling` returns). Returns the figure.
    """
    import matplotlib.pyplot as plt

    if len(trajectory) == 0:
        raise ValueError("the trajectory is empty: sample with at least one step")
    index = np.unique(np.linspace(0, len(trajectory) - 1, min(rows, len(trajectory))).round().astype(int))
    strips = [(trajectory[i][0], frame_strip(trajectory[i][1], max_frames), frame_strip(trajectory[i][2], max_frames))
              for i in index]
    aspect = strips[0][1].shape[1] / strips[0][1].shape[0]
    fig, axes = plt.subplots(len(index), 2, squeeze=False,  # + 0.35 per row leaves room for the titles
                             figsize=(2 * ax_height * aspect + 0.5, (ax_height + 0.35) * len(index) + 0.3))
    for row, (step, (t, noisy, predicted)) in enumerate(zip(index, strips)):
        for col, (image, what) in enumerate(((noisy, "z_t decoded"), (predicted, "predicted z0"))):
            axes[row, col].imshow(image, interpolation="nearest")
            axes[row, col].set_axis_off()
            axes[row, col].set_title(f"step {step}, t = {t:.2f}: {what}", fontsize=8, loc="left")
    fig.tight_layout()
    return fig
