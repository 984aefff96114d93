"""Prompting with images and videos: Sora's modes beyond text-to-video, as one mechanism.

Some latent frames are *given* (held clean, t = 0) and the rest are generated around them
(`sampling.sample_window`). Every mode is a choice of given frames:

    generate_image(model, prompt)            nothing given, one frame (in sampling.py)
    animate(model, image, prompt)            the image is the first frame
    extend(model, video, prompt, direction)  its last (forward) or first (backward) frames, window by window
    connect(model, video_a, video_b)         the end of a and the start of b, new frames between
    loop(model, video_or_prompt)             connect a video to itself: its end flows into its start
    edit(model, video, prompt, strength)     nothing given: SDEdit (Meng et al., arXiv:2108.01073) starts
                                             from the video noised to `strength`
    generate_long(model, prompt, seconds)    text-to-video, then forward extension window by window

`num_frames` is always a length in pixel frames (animate's whole video); the frames a mode *adds*
(extend, connect, loop) are `new_frames`. Frames you give are returned exactly as you gave them; the
model only adds frames (edit aside, which changes them all). `MiniSora` has each mode as a method:
`model.extend(video, prompt)` is `extend(model, video, prompt)`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from tqdm.auto import tqdm

from .sampling import generate, given_pixels, sample_latents, sample_window

MAX_SECONDS = 60  # generate_long's limit, as Sora's


def training_window(model) -> int:
    """num_latent_frames of the training clips: the window length the model knows best."""
    return 1 + (model.config.data.num_frames - 1) // model.vae.temporal_factor


@torch.no_grad()
def animate(model, image, prompt: str, num_frames: int | None = None, height: int | None = None,
            width: int | None = None, **options) -> np.ndarray:
    """Image-to-video: a video whose first frame is `image`.

    Args:
        image: (H, W, 3) uint8 (or float in [0, 1]); resized with a warning when height/width differ.
        num_frames: length of the video, the image included (default: the training length); longer
            videos are made window by window, like `extend`.
        options: steps, guidance, seed, sampler, progress (as in generate), context_frames (as in extend).
    Returns:
        (num_frames, H, W, 3) uint8; frame 0 is the image itself.

        video = model.animate(image, "a red circle moves to the right", num_frames=9)
    """
    image = given_pixels(model, np.asarray(image)[None], "image", height, width, image=True)
    num_frames = model.config.data.num_frames if num_frames is None else num_frames
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"num_frames must be an integer >= 2 (the image and what follows), got {num_frames!r}")
    return extend(model, image, prompt, new_frames=num_frames - 1, **options)


@torch.no_grad()
def extend(model, video, prompt: str, direction: str = "forward", new_frames: int | None = None,
           context_frames: int | None = None, height: int | None = None, width: int | None = None,
           **options) -> np.ndarray:
    """Extend a video forward (frames after it) or backward (frames before it), window by window.

    Each window gives the model the `context_frames` nearest frames and generates new ones next to
    them; only that context is kept between windows, so any length costs the same memory.

    Args:
        video: (T, H, W, 3) uint8 (or float in [0, 1]), any length (backward needs T >= 4).
        direction: "forward" or "backward".
        new_frames: how many frames to add, any number >= 1 (default: the training length - 1).
        context_frames: frames of the video each window sees; forward 1 + 4p, backward 4q (default:
            about half the training window). More context = more coherent, fewer new frames per window.
        options: steps, guidance, seed, sampler, progress (as in generate); window k uses seed + k.
    Returns:
        the longer video (T + new_frames, H, W, 3) uint8: `video` unchanged, followed (forward) or
        preceded (backward) by the new frames: `out[T:]` forward, `out[:new_frames]` backward.

        longer = model.extend(video, "a red circle moves to the right", new_frames=8)
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    video = given_pixels(model, video, "video", height, width)
    new_frames = model.config.data.num_frames - 1 if new_frames is None else new_frames
    if isinstance(new_frames, bool) or not isinstance(new_frames, int) or new_frames < 1:
        raise ValueError(f"new_frames (frames to add) must be an integer >= 1, got {new_frames!r}")
    new = list(_extension(model, video, prompt, direction, new_frames, context_frames, options))
    return np.concatenate([video, *new] if direction == "forward" else [*new[::-1], video])


def _extension(model, video, prompt, direction, new_frames, context_frames, options):
    """Yield the new frames window by window; between windows only `recent` (the context) is kept."""
    tf, window, forward = model.vae.temporal_factor, training_window(model), direction == "forward"
    if context_frames is None:  # about half the window is context, the rest new frames
        context_frames = 1 + tf * ((window + 1) // 2 - 1) if forward else tf * max(1, window // 2)
    if isinstance(context_frames, bool) or not isinstance(context_frames, int) or context_frames < 1 or (
            (context_frames - forward) % tf):
        raise ValueError(f"context_frames must be {f'1 + {tf}k' if forward else f'a multiple of {tf}'} for "
                         f"{direction} extension (latent groups of the causal VAE), got {context_frames!r}")
    if not forward and len(video) < tf:
        raise ValueError(f"extending backward needs a video of at least {tf} frames (the frames given at the "
                         f"end of a window are whole groups of {tf}), got {len(video)}")
    options = dict(options)
    seed, done, k = options.pop("seed", 0), 0, 0
    recent = video[-context_frames:] if forward else video[:context_frames]
    while done < new_frames:
        left = new_frames - done
        if forward:  # the last 1 + 4p frames start the window, new latent groups follow
            head = recent[(len(recent) - 1) % tf:]
            groups = min(max(1, window - (1 + (len(head) - 1) // tf)), math.ceil(left / tf))
            frames = sample_window(model, prompt, head=head, new_frames=tf * groups, seed=seed + k, **options)
            new = frames[len(head):][:left]  # extra frames of the last window: drop the farthest
            recent = np.concatenate([recent, new])[-context_frames:]
        else:  # the first 4q frames end the window, the new ones (first latent a single frame) precede
            tail = recent[:tf * (len(recent) // tf)]
            groups = min(max(1, window - len(tail) // tf), 1 + math.ceil((left - 1) / tf))
            frames = sample_window(model, prompt, tail=tail, new_frames=1 + tf * (groups - 1), seed=seed + k,
                                   **options)
            new = frames[:-len(tail)][-left:]
            recent = np.concatenate([new, recent])[:context_frames]
        done, k = done + len(new), k + 1
        yield new


@torch.no_grad()
def connect(model, video_a, video_b, new_frames: int | None = None, prompt: str | None = None,
            height: int | None = None, width: int | None = None, **options) -> np.ndarray:
    """A transition from the end of `video_a` to the start of `video_b`: a + new frames + b.

    One window: the last frames of a at its start, the first 4 (or more) frames of b at its end.

    Args:
        video_a, video_b: (T, H, W, 3) uint8 of the same size (or give height/width to resize both);
            video_b needs at least 4 frames.
        new_frames: frames of the transition, a multiple of 4 (default: what fills a training window).
        prompt: text for the transition, or None for none.
        options: steps, guidance, seed, sampler, progress (as in generate).
    Returns:
        (len(a) + new_frames + len(b), H, W, 3) uint8; a and b unchanged, the transition is
        `out[len(a):len(a) + new_frames]`.

        both = model.connect(left_clip, right_clip, new_frames=4)
    """
    a = given_pixels(model, video_a, "video_a", height, width)
    b = given_pixels(model, video_b, "video_b", height, width)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"connect needs two videos of the same size, got {a.shape[1]}x{a.shape[2]} and "
                         f"{b.shape[1]}x{b.shape[2]}; pass height= and width= to resize both")
    return np.concatenate([a, _transition(model, a, b, new_frames, prompt, options), b])


def _transition(model, a, b, new_frames, prompt, options) -> np.ndarray:
    """The new frames between the end of a and the start of b (see connect)."""
    tf, window = model.vae.temporal_factor, training_window(model)
    new_frames = tf * max(1, window - 2) if new_frames is None else new_frames
    if isinstance(new_frames, bool) or not isinstance(new_frames, int) or new_frames < tf or new_frames % tf:
        raise ValueError(f"new_frames (of the transition) must be a multiple of {tf}, such as {tf} or "
                         f"{2 * tf}, got {new_frames!r}")
    if len(b) < tf:
        raise ValueError(f"the video connected to needs at least {tf} frames (the frames given at the end "
                         f"of a window are whole groups of {tf}), got {len(b)}")
    # What the window has room for besides the transition, split between the two ends.
    room = max(2, window - new_frames // tf)
    q = min(max(1, room // 2), len(b) // tf)
    p = min(max(0, room - q - 1), (len(a) - 1) // tf)
    head, tail = a[len(a) - 1 - tf * p:], b[:tf * q]
    window_frames = sample_window(model, prompt, head=head, tail=tail, new_frames=new_frames, **options)
    return window_frames[len(head):len(head) + new_frames]


@torch.no_grad()
def loop(model, video_or_prompt, prompt: str | None = None, new_frames: int | None = None,
         height: int | None = None, width: int | None = None, **options) -> np.ndarray:
    """A seamless loop: a video followed by a transition that flows from its last frame into its first.

    Args:
        video_or_prompt: a video (T >= 4, H, W, 3) uint8 to close into a loop, or a prompt: a video
            is generated first (size from height/width and the training length), then closed.
        prompt: the text for the transition (default: the prompt given as video_or_prompt, else none).
        new_frames: frames of the closing transition, a multiple of 4 (as in connect).
        options: steps, guidance, seed, sampler, progress; the transition uses seed + 1.
    Returns:
        (T + new_frames, H, W, 3) uint8 that plays in a loop; measure it with `loop_seam`.

        clip = model.loop("a red circle moves to the right", seed=0);  loop_seam(clip)["ratio"]
    """
    options = dict(options)
    seed = options.pop("seed", 0)
    if isinstance(video_or_prompt, str):
        prompt = video_or_prompt if prompt is None else prompt
        video = generate(model, video_or_prompt, height=height, width=width, seed=seed, **options)
    else:
        video = given_pixels(model, video_or_prompt, "video", height, width)
    return np.concatenate([video, _transition(model, video, video, new_frames, prompt,
                                              {**options, "seed": seed + 1})])


@torch.no_grad()
def edit(model, video, prompt: str, strength: float = 0.6, height: int | None = None, width: int | None = None,
         steps: int | None = None, guidance: float | None = None, seed: int = 0, sampler: str | None = None,
         progress: bool = True) -> np.ndarray:
    """SDEdit video-to-video: noise the video's latent to t = strength, then denoise it with a new prompt.

    No training is needed: at t = strength the model sees a noisy video and pulls it towards the
    prompt. Low strength keeps layout and motion, high strength keeps little.

    Args:
        video: (T, H, W, 3) uint8 with T = 1 + tf*k, tf = the VAE's time factor (or float in [0, 1]).
        strength: in [0, 1]. 0 returns the input as the VAE reproduces it, 1 ignores it entirely.
        steps: steps of a full denoise (default the config's); an edit takes round(strength * steps).
        guidance, seed, sampler, progress: as in generate.
    Returns:
        (T, H, W, 3) uint8.

        blue = model.edit(video, "a blue circle moves to the right", strength=0.5)
    """
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 1:
        raise ValueError(f"strength must be a number in [0, 1] (0 keeps the video, 1 ignores it), got {strength!r}")
    video = given_pixels(model, video, "video", height, width)
    model.check_size(*video.shape[:3])
    model.eval()
    z0 = sample_latents(model, [prompt], *video.shape[:3], steps=steps, guidance=guidance, seed=seed,
                        sampler=sampler, z_init=model.pixels_to_latent(video), t_start=float(strength),
                        progress=progress)
    return model.latent_to_pixels(z0)


@torch.no_grad()
def generate_long(model, prompt: str, seconds: float, fps: int | None = None, height: int | None = None,
                  width: int | None = None, context_frames: int | None = None, on_window=None,
                  **options) -> np.ndarray:
    """A long video, up to 60 s: one text-to-video window, then forward extension window by window.

    Memory does not grow with length: each window has the same size, only its context frames are
    kept for the next one (re-encoded, see the comment above sampling.sample_window), and finished
    frames go straight into the uint8 output. A progress bar advances per window.

    Args:
        seconds: length in (0, 60]. fps: frames per second (default config.data.fps); T = seconds * fps.
        context_frames: as in extend.
        on_window: called as on_window(index, frames (n, H, W, 3) uint8) after each window, e.g. to
            stream frames to a file or a notebook.
        options: steps, guidance, seed, sampler (as in generate); window k uses seed + k.
    Returns:
        (round(seconds * fps), H, W, 3) uint8.

        video = model.generate_long("a red circle moves to the right", seconds=10)  # 80 frames at 8 fps
    """
    fps = model.config.data.fps if fps is None else fps
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS}], got {seconds!r}")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a whole number >= 1, got {fps!r}")
    total, tf = max(1, round(seconds * fps)), model.vae.temporal_factor
    options = dict(options)
    seed, progress = options.pop("seed", 0), options.pop("progress", True)
    options["progress"] = False  # one bar for the whole video instead of one per window
    first_frames = min(model.config.data.num_frames, 1 + tf * math.ceil((total - 1) / tf))
    first = generate(model, prompt, num_frames=first_frames, height=height, width=width, seed=seed,
                     **options)[:total]
    out = np.empty((total, *first.shape[1:]), dtype=np.uint8)  # the only thing that grows with length
    out[:len(first)], done = first, len(first)
    bar = tqdm(total=total, initial=done, desc="long video", unit="frame", disable=not progress)
    if on_window is not None:
        on_window(0, first)
    windows = _extension(model, first, prompt, "forward", total - done, context_frames, {**options, "seed": seed + 1})
    for index, new in enumerate(windows, start=1):
        out[done:done + len(new)] = new
        done += len(new)
        bar.update(len(new))
        if on_window is not None:
            on_window(index, new)
    bar.close()
    return out


def loop_seam(video) -> dict[str, float]:
    """How well a video loops, in mean absolute pixel difference (0..255) of (T, H, W, 3) frames.

    {"seam": |last frame - first frame|, "step": mean |frame i+1 - frame i|, "ratio": seam / step}.
    A ratio near 1 means the jump from the end back to the start looks like any other step of the
    video; a video that does not loop (an object that crossed the frame) has a ratio well above 1.
    """
    frames = np.asarray(video).astype(np.float32)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"loop_seam needs a (T, H, W, 3) video of at least 2 frames, got shape {frames.shape}")
    seam = float(np.abs(frames[0] - frames[-1]).mean())
    step = float(np.abs(np.diff(frames, axis=0)).mean())
    return {"seam": seam, "step": step, "ratio": seam / max(step, 1e-6)}
