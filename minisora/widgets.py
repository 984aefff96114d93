"""The sampling studio: a small ipywidgets UI for watching a video being denoised.

    from minisora.widgets import Studio
    studio = Studio(model)
    display(studio.widget)     # prompt, sizes, steps, guidance, sampler, seed -> Generate

All the work happens in `run_sampling`, a pure function of its arguments: it runs `MiniSora.generate`
and records, at every sampling step, the current noisy latent z_t and the model's guess of the clean
latent z0, both decoded to pixels. `Studio` only turns controls into arguments and results into
pictures, so everything it shows can be reproduced (and tested) without a browser:

    video, trajectory = run_sampling(model, "a red circle moves to the right", 9, 32, 32, steps=20,
                                     guidance=3.0, sampler="euler", seed=0)
    trajectory[i].t, trajectory[i].noisy, trajectory[i].predicted   # t, (T, H, W, 3) uint8 twice

The size menus offer only sizes the model can make (a whole number of VAE steps in time, of VAE x patch
cells in space), and bad input (an empty prompt, a prompt of unknown words) is reported in the UI.
"""

from __future__ import annotations

import html
import warnings
from typing import Callable, NamedTuple

import ipywidgets as W
import numpy as np
import torch

from .viz import video_html


class TrajectoryStep(NamedTuple):
    """One sampling step: the time t, the decoded noisy latent z_t and the decoded predicted z0."""

    t: float
    noisy: np.ndarray  # (T, H, W, 3) uint8
    predicted: np.ndarray  # (T, H, W, 3) uint8


def _fits(model, num_frames: int, height: int, width: int) -> bool:
    try:
        model.check_size(num_frames, height, width)
    except ValueError:
        return False
    return True


def valid_sizes(model, max_frames: int | None = None, max_side: int | None = None) -> dict[str, list[int]]:
    """{"frames": [...], "heights": [...], "widths": [...]}: the sizes `model` can generate.

    Defaults go up to twice the training size (longer and larger than trained works, with weaker results).
    The rules come from `model.check_size` itself, so the menus can never offer a size it refuses.
    """
    data = model.config.data
    max_frames = max_frames or 2 * data.num_frames - 1
    max_side = max_side or 2 * max(data.height, data.width)
    _, ph, pw = model.config.dit.patch_size
    unit_h, unit_w = model.vae.spatial_factor * ph, model.vae.spatial_factor * pw  # smallest valid height, width
    return {
        "frames": [n for n in range(1, max_frames + 1) if _fits(model, n, unit_h, unit_w)],
        "heights": list(range(unit_h, max_side + 1, unit_h)),
        "widths": list(range(unit_w, max_side + 1, unit_w)),
    }


@torch.no_grad()
def run_sampling(model, prompt: str, num_frames: int, height: int, width: int, steps: int, guidance: float,
                 sampler: str = "euler", seed: int = 0,
                 on_step: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[TrajectoryStep]]:
    """Generate one video and its denoising trajectory.

    Returns video (T, H, W, 3) uint8 and one TrajectoryStep per sampling step (len == steps).
    on_step(step) is called after each step is recorded (e.g. to move a progress bar). Raises ValueError
    for bad input (empty prompt, no known word, a size the model cannot make), as `generate` does.
    """
    trajectory: list[TrajectoryStep] = []

    def callback(step: int, t: float, zt: torch.Tensor, z0_pred: torch.Tensor) -> None:
        # latents (B, C, T', H', W') -> (T, H, W, 3) uint8 of the first video
        trajectory.append(TrajectoryStep(float(t), model.latent_to_pixels(zt[:1]), model.latent_to_pixels(z0_pred[:1])))
        if on_step is not None:
            on_step(step)

    video = model.generate(prompt, num_frames, height, width, steps=steps, guidance=guidance, seed=seed,
                           sampler=sampler, callback=callback, progress=False)
    return video, trajectory


def _note(text: str, colour: str) -> str:
    """A coloured message box (HTML) for the studio's message line."""
    return (f'<div style="border-left: 4px solid {colour}; padding: 4px 8px; white-space: pre-wrap">'
            f"{html.escape(text)}</div>")


def _figure(video: np.ndarray, caption: str, fps: int) -> str:
    return (f'<figure style="margin: 0 12px 0 0; text-align: center">{video_html(video, fps=fps)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


class Studio:
    """The sampling studio UI. `studio.widget` is the root box; the controls are attributes:

    prompt (Text), frames / height / width (Dropdown of valid sizes), steps (IntSlider), guidance
    (FloatSlider), sampler (ToggleButtons), seed (IntText), generate_button (Button), progress
    (IntProgress), message (HTML), video_view (HTML), scrub (IntSlider over the trajectory), scrub_view
    (HTML). After a generation, `studio.video` and `studio.trajectory` hold the results.

    The default prompt is one the shipped model (assets/tiny-shapes) draws: it scored 0.99 on the
    evaluator over 4 seeds in benchmarks/prompt_menu.py, every asked metric measured. Rerun that script
    after retraining and pick the default from its table.
    """

    def __init__(self, model, prompt: str = "a blue diamond moves to the right", seed: int = 0,
                 max_steps: int = 100):
        self.model = model
        data, flow = model.config.data, model.config.flow
        sizes = valid_sizes(model)
        self.video: np.ndarray | None = None
        self.trajectory: list[TrajectoryStep] = []

        wide = W.Layout(width="95%")
        self.prompt = W.Text(value=prompt, description="prompt", placeholder="a blue circle stays still",
                             layout=wide)
        self.frames = W.Dropdown(options=sizes["frames"], value=data.num_frames, description="frames")
        self.height = W.Dropdown(options=sizes["heights"], value=data.height, description="height")
        self.width = W.Dropdown(options=sizes["widths"], value=data.width, description="width")
        self.steps = W.IntSlider(value=min(flow.steps, max_steps), min=1, max=max_steps, description="steps")
        self.guidance = W.FloatSlider(value=flow.guidance, min=0.0, max=10.0, step=0.5, description="guidance")
        self.sampler = W.ToggleButtons(options=["euler", "heun"], value=flow.sampler, description="sampler")
        self.seed = W.IntText(value=seed, description="seed")
        self.generate_button = W.Button(description="Generate", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=self.steps.value, description="sampling")
        self.message = W.HTML()
        self.video_view = W.HTML()
        self.scrub = W.IntSlider(value=0, min=0, max=0, description="step", disabled=True, layout=wide)
        self.scrub_view = W.HTML()

        W.dlink((self.steps, "value"), (self.progress, "max"))  # the bar always counts the chosen steps
        self.generate_button.on_click(lambda _: self.generate())
        self.scrub.observe(lambda change: self.show_step(change["new"]), names="value")
        self.widget = W.VBox([
            self.prompt,
            W.HBox([self.frames, self.height, self.width]),
            W.HBox([self.steps, self.guidance]),
            W.HBox([self.sampler, self.seed]),
            W.HBox([self.generate_button, self.progress]),
            self.message,
            W.HTML("<b>Video</b>"), self.video_view,
            W.HTML("<b>Denoising trajectory</b>: drag to watch noise become a video"), self.scrub, self.scrub_view,
        ])

    def generate(self) -> bool:
        """Sample with the current control values and show the result. Returns False (and shows why) on bad input."""
        self.generate_button.disabled = True
        self.progress.value = 0
        self.message.value = _note("sampling ...", "#888")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # the tokenizer warns about unknown words: show them
                video, trajectory = run_sampling(
                    self.model, self.prompt.value, self.frames.value, self.height.value, self.width.value,
                    steps=self.steps.value, guidance=self.guidance.value, sampler=self.sampler.value,
                    seed=self.seed.value, on_step=self._advance)
        except ValueError as err:  # every input check in minisora raises ValueError with what to change
            self.message.value = _note(str(err), "#d33")
            return False
        finally:
            self.generate_button.disabled = False
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        self.message.value = _note("\n".join(notes), "#e90") if notes else ""
        self.video, self.trajectory = video, trajectory
        self.video_view.value = _figure(video, f"{video.shape[0]} frames of {video.shape[1]}x{video.shape[2]}",
                                        self.model.config.data.fps)
        self.scrub.disabled = False
        self.scrub.max = len(trajectory) - 1
        self.scrub.value = len(trajectory) - 1
        self.show_step(self.scrub.value)  # in case the value did not change (no observer call)
        return True

    def save(self, path) -> "Path":
        """Write the last generated video (.gif/.mp4, or .png for one frame) with its provenance record."""
        from . import provenance

        if self.video is None:
            raise ValueError("nothing to save yet: press Generate first")
        rec = provenance.record(self.model, prompt=self.prompt.value, seed=self.seed.value, steps=self.steps.value,
                                guidance=self.guidance.value, mode="generate", sampler=self.sampler.value)
        return provenance.save(self.video, path, rec, fps=self.model.config.data.fps)

    def _advance(self, step: int) -> None:
        self.progress.value = step + 1

    def show_step(self, step: int) -> None:
        """Show the decoded z_t and the predicted z0 of one trajectory step side by side."""
        if not 0 <= step < len(self.trajectory):
            return
        t, noisy, predicted = self.trajectory[step]
        fps = self.model.config.data.fps
        self.scrub_view.value = ('<div style="display: flex">' + _figure(noisy, f"z_t decoded (t = {t:.2f})", fps)
                                 + _figure(predicted, "predicted z0", fps) + "</div>")
