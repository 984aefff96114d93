"""Prompting with images and videos: Sora's modes beyond text-to-video, as one mechanism.

Some latent frames are *given* (held clean, t = 0) and the rest are generated around them
(`sample_window`). Every mode is a choice of given frames:

    generate_image(prompt)             nothing given, one frame (in pipeline.py)
    animate(image, prompt)             the image is the first frame
    extend(video, prompt, direction)   its last (forward) or first (backward) frames, window after window
    connect(video_a, video_b)          the end of a and the start of b, new frames between
    loop(video_or_prompt)              connect a video to itself: its end flows into its start
    edit(video, prompt, strength)      nothing given: SDEdit starts from the video noised to `strength`
    generate_long(prompt, seconds)     text-to-video, then forward extension window by window

Frames you give are returned exactly as you gave them; the model only adds frames (edit aside, which
changes them all). `PromptingMixin` holds these methods; `MiniSora` (pipeline.py) inherits them.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import fit_video
from .viz import to_uint8

MAX_SECONDS = 60  # generate_long's limit, as Sora's


class PromptingMixin:
    """Image-to-video, extension, connecting, looping, editing and long videos for `MiniSora`."""

    # ---------------------------------------------------------------- prompting with frames
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
    def sample_window(self, prompt: str | None, head: np.ndarray | None = None, tail: np.ndarray | None = None,
                      new_frames: int = 8, *, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                      sampler: str | None = None, progress: bool = True) -> np.ndarray:
        """The one mechanism of every prompting mode: given frames at the start and/or end, new frames between.

        Args:
            prompt: the text, or None for none (the unconditional model).
            head: (1 + 4p, H, W, 3) uint8 frames given at the start of the window, or None.
            tail: (4q, H, W, 3) uint8 frames given at the end of the window, or None.
            new_frames: frames to generate between them: a multiple of 4 after a head, 1 + 4k without one.
        Returns:
            the whole window (len(head) + new_frames + len(tail), H, W, 3) uint8, decoded in one go: given
            frames come back as the VAE reproduces them, new frames continue from them.

            window = model.sample_window("a red circle moves to the right", head=video[-5:], new_frames=4)
        """
        if head is None and tail is None:
            raise ValueError("sample_window needs head= and/or tail= frames; for no given frame use generate")
        head = None if head is None else self._pixels(head, "head", None, None)
        tail = None if tail is None else self._pixels(tail, "tail", None, None)
        tf, given = self.vae.temporal_factor, [x for x in (head, tail) if x is not None]
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
        channels, latent_frames, *latent_hw = self.latent_shape(num_frames, height, width)
        cond = torch.zeros(1, channels, latent_frames, *latent_hw, device=self.device)
        cond_mask = torch.zeros(1, latent_frames, dtype=torch.bool, device=self.device)
        self.eval()
        if head is not None:
            z_head = self.vae.encode_latent(self._to_model(head))  # (1, C, 1 + p, H', W')
            cond[:, :, :z_head.shape[2]], cond_mask[:, :z_head.shape[2]] = z_head, True
        if tail is not None:
            clip = self._to_model(np.concatenate([tail[:1], tail]))  # f0 as the past, see the comment above
            z_tail = self.vae.encode_latent(clip)[:, :, 1:]  # (1, C, q, H', W')
            cond[:, :, -z_tail.shape[2]:], cond_mask[:, -z_tail.shape[2]:] = z_tail, True
        flow_cfg = self.config.flow
        z0 = self.sample_latents([prompt], num_frames, height, width, steps=flow_cfg.steps if steps is None else steps,
                                 guidance=flow_cfg.guidance if guidance is None else guidance, seed=seed,
                                 sampler=sampler or flow_cfg.sampler, cond=cond, cond_mask=cond_mask,
                                 progress=progress)
        return to_uint8(self.vae.decode_latent(z0)[0])

    @torch.no_grad()
    def animate(self, image, prompt: str, num_frames: int | None = None, height: int | None = None,
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
        image = self._pixels(np.asarray(image)[None], "image", height, width, image=True)
        num_frames = self.config.data.num_frames if num_frames is None else num_frames
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
            raise ValueError(f"num_frames must be an integer >= 2 (the image and what follows), got {num_frames!r}")
        return self.extend(image, prompt, num_frames=num_frames - 1, **options)

    @torch.no_grad()
    def extend(self, video, prompt: str, direction: str = "forward", num_frames: int | None = None,
               context_frames: int | None = None, height: int | None = None, width: int | None = None,
               **options) -> np.ndarray:
        """Extend a video forward (frames after it) or backward (frames before it), window by window.

        Each window gives the model the `context_frames` nearest frames and generates new ones next to
        them; only that context is kept between windows, so any length costs the same memory.

        Args:
            video: (T, H, W, 3) uint8 (or float in [0, 1]), any length (backward needs T >= 4).
            direction: "forward" or "backward".
            num_frames: how many frames to add, any number >= 1 (default: the training length - 1).
            context_frames: frames of the video each window sees; forward 1 + 4p, backward 4q (default:
                about half the training window). More context = more coherent, fewer new frames per window.
            options: steps, guidance, seed, sampler, progress (as in generate); window k uses seed + k.
        Returns:
            the longer video (T + num_frames, H, W, 3) uint8: `video` unchanged, followed (forward) or
            preceded (backward) by the new frames: `out[T:]` forward, `out[:num_frames]` backward.

            longer = model.extend(video, "a red circle moves to the right", num_frames=8)
        """
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
        video = self._pixels(video, "video", height, width)
        num_frames = self.config.data.num_frames - 1 if num_frames is None else num_frames
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames (frames to add) must be an integer >= 1, got {num_frames!r}")
        new = list(self._extension(video, prompt, direction, num_frames, context_frames, options))
        return np.concatenate([video, *new] if direction == "forward" else [*new[::-1], video])

    def _extension(self, video, prompt, direction, num_frames, context_frames, options):
        """Yield the new frames window by window; between windows only `recent` (the context) is kept."""
        tf, window, forward = self.vae.temporal_factor, self._train_latents(), direction == "forward"
        if context_frames is None:  # about half the window is context, the rest new frames
            context_frames = 1 + tf * ((window + 1) // 2 - 1) if forward else tf * max(1, window // 2)
        if isinstance(context_frames, bool) or not isinstance(context_frames, int) or context_frames < 1 or (
                (context_frames - forward) % tf):
            raise ValueError(f"context_frames must be {'1 + 4k' if forward else 'a multiple of 4'} for "
                             f"{direction} extension (latent groups of the causal VAE), got {context_frames!r}")
        if not forward and len(video) < tf:
            raise ValueError(f"extending backward needs a video of at least {tf} frames (the frames given at the "
                             f"end of a window are whole groups of {tf}), got {len(video)}")
        options = dict(options)
        seed, done, k = options.pop("seed", 0), 0, 0
        recent = video[-context_frames:] if forward else video[:context_frames]
        while done < num_frames:
            left = num_frames - done
            if forward:  # the last 1 + 4p frames start the window, new latent groups follow
                head = recent[(len(recent) - 1) % tf:]
                groups = min(max(1, window - (1 + (len(head) - 1) // tf)), math.ceil(left / tf))
                frames = self.sample_window(prompt, head=head, new_frames=tf * groups, seed=seed + k, **options)
                new = frames[len(head):][:left]  # extra frames of the last window: drop the farthest
                recent = np.concatenate([recent, new])[-context_frames:]
            else:  # the first 4q frames end the window, the new ones (first latent a single frame) precede
                tail = recent[:tf * (len(recent) // tf)]
                groups = min(max(1, window - len(tail) // tf), 1 + math.ceil((left - 1) / tf))
                frames = self.sample_window(prompt, tail=tail, new_frames=1 + tf * (groups - 1), seed=seed + k,
                                            **options)
                new = frames[:-len(tail)][-left:]
                recent = np.concatenate([new, recent])[:context_frames]
            done, k = done + len(new), k + 1
            yield new

    @torch.no_grad()
    def connect(self, video_a, video_b, num_frames: int | None = None, prompt: str | None = None,
                height: int | None = None, width: int | None = None, **options) -> np.ndarray:
        """A transition from the end of `video_a` to the start of `video_b`: a + new frames + b.

        One window: the last frames of a at its start, the first 4 (or more) frames of b at its end.

        Args:
            video_a, video_b: (T, H, W, 3) uint8 of the same size (or give height/width to resize both);
                video_b needs at least 4 frames.
            num_frames: frames of the transition, a multiple of 4 (default: what fills a training window).
            prompt: text for the transition, or None for none.
            options: steps, guidance, seed, sampler, progress (as in generate).
        Returns:
            (len(a) + num_frames + len(b), H, W, 3) uint8; a and b unchanged, the transition is
            `out[len(a):len(a) + num_frames]`.

            both = model.connect(left_clip, right_clip, num_frames=4)
        """
        a = self._pixels(video_a, "video_a", height, width)
        b = self._pixels(video_b, "video_b", height, width)
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"connect needs two videos of the same size, got {a.shape[1]}x{a.shape[2]} and "
                             f"{b.shape[1]}x{b.shape[2]}; pass height= and width= to resize both")
        return np.concatenate([a, self._transition(a, b, num_frames, prompt, options), b])

    def _transition(self, a, b, num_frames, prompt, options) -> np.ndarray:
        """The new frames between the end of a and the start of b (see connect)."""
        tf, window = self.vae.temporal_factor, self._train_latents()
        num_frames = tf * max(1, window - 2) if num_frames is None else num_frames
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < tf or num_frames % tf:
            raise ValueError(f"num_frames (of the transition) must be a multiple of {tf}, such as {tf} or "
                             f"{2 * tf}, got {num_frames!r}")
        if len(b) < tf:
            raise ValueError(f"the video connected to needs at least {tf} frames (the frames given at the end "
                             f"of a window are whole groups of {tf}), got {len(b)}")
        # What the window has room for besides the transition, split between the two ends.
        room = max(2, window - num_frames // tf)
        q = min(max(1, room // 2), len(b) // tf)
        p = min(max(0, room - q - 1), (len(a) - 1) // tf)
        head, tail = a[len(a) - 1 - tf * p:], b[:tf * q]
        return self.sample_window(prompt, head=head, tail=tail, new_frames=num_frames, **options)[
            len(head):len(head) + num_frames]

    @torch.no_grad()
    def loop(self, video_or_prompt, prompt: str | None = None, num_frames: int | None = None,
             height: int | None = None, width: int | None = None, **options) -> np.ndarray:
        """A seamless loop: a video followed by a transition that flows from its last frame into its first.

        Args:
            video_or_prompt: a video (T >= 4, H, W, 3) uint8 to close into a loop, or a prompt: a video
                is generated first (size from height/width and the training length), then closed.
            prompt: the text for the transition (default: the prompt given as video_or_prompt, else none).
            num_frames: frames of the closing transition, a multiple of 4 (as in connect).
            options: steps, guidance, seed, sampler, progress; the transition uses seed + 1.
        Returns:
            (T + num_frames, H, W, 3) uint8 that plays in a loop; measure it with `loop_seam`.

            clip = model.loop("a red circle moves to the right", seed=0);  loop_seam(clip)["ratio"]
        """
        options = dict(options)
        seed = options.pop("seed", 0)
        if isinstance(video_or_prompt, str):
            prompt = video_or_prompt if prompt is None else prompt
            video = self.generate(video_or_prompt, height=height, width=width, seed=seed, **options)
        else:
            video = self._pixels(video_or_prompt, "video", height, width)
        return np.concatenate([video, self._transition(video, video, num_frames, prompt,
                                                       {**options, "seed": seed + 1})])

    @torch.no_grad()
    def edit(self, video, prompt: str, strength: float = 0.6, height: int | None = None, width: int | None = None,
             steps: int | None = None, guidance: float | None = None, seed: int = 0, sampler: str | None = None,
             progress: bool = True) -> np.ndarray:
        """SDEdit video-to-video: noise the video's latent to t = strength, then denoise it with a new prompt.

        No training is needed: at t = strength the model sees a noisy video and pulls it towards the
        prompt. Low strength keeps layout and motion, high strength keeps little.

        Args:
            video: (T, H, W, 3) uint8 with T = 1 + 4k (or float in [0, 1]).
            strength: in [0, 1]. 0 returns the input as the VAE reproduces it, 1 ignores it entirely.
            steps: steps of a full denoise (default the config's); an edit takes round(strength * steps).
            guidance, seed, sampler, progress: as in generate.
        Returns:
            (T, H, W, 3) uint8.

            blue = model.edit(video, "a blue circle moves to the right", strength=0.5)
        """
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 1:
            raise ValueError(f"strength must be a number in [0, 1] (0 keeps the video, 1 ignores it), got {strength!r}")
        video = self._pixels(video, "video", height, width)
        self.check_size(*video.shape[:3])
        flow_cfg = self.config.flow
        steps = max(1, round(float(strength) * (flow_cfg.steps if steps is None else steps)))
        self.eval()
        z_init = self.vae.encode_latent(self._to_model(video))
        z0 = self.sample_latents([prompt], *video.shape[:3], steps=steps, z_init=z_init, t_start=float(strength),
                                 guidance=flow_cfg.guidance if guidance is None else guidance, seed=seed,
                                 sampler=sampler or flow_cfg.sampler, progress=progress)
        return to_uint8(self.vae.decode_latent(z0)[0])

    @torch.no_grad()
    def generate_long(self, prompt: str, seconds: float, fps: int | None = None, height: int | None = None,
                      width: int | None = None, context_frames: int | None = None, on_window=None,
                      **options) -> np.ndarray:
        """A long video, up to 60 s: one text-to-video window, then forward extension window by window.

        Memory does not grow with length: each window has the same size, only its context frames are
        kept for the next one (re-encoded, see the comment above sample_window), and finished frames go
        straight into the uint8 output. A progress bar advances per window.

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
        fps = self.config.data.fps if fps is None else fps
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_SECONDS}], got {seconds!r}")
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
            raise ValueError(f"fps must be a whole number >= 1, got {fps!r}")
        total, tf = max(1, round(seconds * fps)), self.vae.temporal_factor
        options = dict(options)
        seed, progress = options.pop("seed", 0), options.pop("progress", True)
        options["progress"] = False  # one bar for the whole video instead of one per window
        first = self.generate(prompt, num_frames=min(self.config.data.num_frames, 1 + tf * math.ceil((total - 1) / tf)),
                              height=height, width=width, seed=seed, **options)[:total]
        out = np.empty((total, *first.shape[1:]), dtype=np.uint8)  # the only thing that grows with length
        out[:len(first)], done = first, len(first)
        bar = tqdm(total=total, initial=done, desc="long video", unit="frame", disable=not progress)
        if on_window is not None:
            on_window(0, first)
        windows = self._extension(first, prompt, "forward", total - done, context_frames, {**options, "seed": seed + 1})
        for index, new in enumerate(windows, start=1):
            out[done:done + len(new)] = new
            done += len(new)
            bar.update(len(new))
            if on_window is not None:
                on_window(index, new)
        bar.close()
        return out

    # ---------------------------------------------------------------- frames in and out
    def _train_latents(self) -> int:
        """Latent frames of the training clips: the window length the model knows best."""
        return 1 + (self.config.data.num_frames - 1) // self.vae.temporal_factor

    def _to_model(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (1, 3, T, H, W) float in [-1, 1] on the model's device."""
        return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].to(self.device).float() / 127.5 - 1

    def _pixels(self, frames, what: str, height: int | None, width: int | None, image: bool = False) -> np.ndarray:
        """User frames -> (T, H, W, 3) uint8 at a size the model can make, or a ValueError saying what to change.

        uint8 pixels 0..255 and floats in [0, 1] are accepted; a different height/width than asked is
        resized (centre crop to the aspect ratio, then resize) with a warning.
        """
        shape_name = "(H, W, 3)" if image else "(T, H, W, 3)"
        if torch.is_tensor(frames):
            frames = frames.detach().cpu().numpy()
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
            got = frames.shape[1:] if image else frames.shape
            raise ValueError(f"{what} must be {shape_name} RGB pixels as generate returns, got shape {got}")
        if np.issubdtype(frames.dtype, np.floating):
            low, high = float(np.min(frames)), float(np.max(frames))
            if not (np.isfinite(frames).all() and 0 <= low and high <= 1):
                raise ValueError(f"{what} is float with values in [{low:.3g}, {high:.3g}]: give uint8 pixels 0..255 "
                                 f"or floats in [0, 1] (model tensors in [-1, 1] need (x + 1) / 2)")
            frames = np.round(frames * 255).astype(np.uint8)
        elif frames.dtype != np.uint8:
            raise ValueError(f"{what} has dtype {frames.dtype}: give uint8 pixels 0..255 (x.astype(np.uint8) if "
                             f"its values are already 0..255) or floats in [0, 1]")
        h, w = frames.shape[1:3]
        height, width = height or h, width or w
        try:
            self.check_size(1, height, width)
        except ValueError as err:
            hint = "" if (height, width) != (h, w) else "; pass height= and width= to resize it"
            raise ValueError(f"{what} of {h}x{w}: {err}{hint}") from err
        if (height, width) != (h, w):
            warnings.warn(f"{what} of {h}x{w} resized to {height}x{width} (centre crop to that aspect ratio, "
                          f"then resize)", stacklevel=3)
            frames = to_uint8(fit_video(frames, height, width))
        return frames


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
