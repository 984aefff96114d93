"""The sampling studio, driven headless: set the controls, click Generate, read what it shows."""

import numpy as np
import pytest
import torch

from minisora import MiniSora
from minisora.widgets import Studio, run_sampling, valid_sizes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniSora.from_preset("tiny").eval()  # untrained: the plumbing is under test, not the pictures


def test_size_menus_offer_exactly_the_sizes_the_model_accepts(model):
    sizes = valid_sizes(model)
    assert sizes["frames"] == [1, 3, 5, 7, 9, 11, 13, 15, 17]  # 1 + 2k up to twice the training length
    assert sizes["heights"] == sizes["widths"] == [8, 16, 24, 32, 40, 48, 56, 64]  # VAE 2x times patch 4
    for n in range(1, 18):
        accepted = True
        try:
            model.check_size(n, 32, 32)
        except ValueError:
            accepted = False
        assert accepted == (n in sizes["frames"])
    studio = Studio(model)
    assert list(studio.frames.options) == sizes["frames"] and studio.frames.value == 9
    assert list(studio.width.options) == sizes["widths"] and studio.height.value == 32


def test_generate_button_makes_a_video_and_a_scrubbable_trajectory(model):
    studio = Studio(model)
    studio.prompt.value = "a small blue square moves up"
    studio.frames.value, studio.height.value, studio.width.value = 5, 16, 24
    studio.steps.value, studio.guidance.value, studio.sampler.value, studio.seed.value = 3, 2.0, "heun", 7
    studio.generate_button.click()

    assert studio.message.value == ""
    assert studio.video.shape == (5, 16, 24, 3) and studio.video.dtype == np.uint8
    assert len(studio.trajectory) == 3
    assert studio.progress.value == studio.progress.max == 3
    assert (studio.scrub.min, studio.scrub.max, studio.scrub.value) == (0, 2, 2) and not studio.scrub.disabled
    assert "data:image/gif;base64" in studio.video_view.value
    times = [step.t for step in studio.trajectory]
    assert times[0] == pytest.approx(1.0) and times == sorted(times, reverse=True)
    for step in studio.trajectory:
        assert step.noisy.shape == step.predicted.shape == (5, 16, 24, 3)

    last_view = studio.scrub_view.value
    assert "t = " in last_view and "predicted z0" in last_view
    studio.scrub.value = 0
    assert studio.scrub_view.value != last_view and "t = 1.00" in studio.scrub_view.value

    # A second run with fewer steps shrinks the scrub range with it.
    studio.steps.value, studio.sampler.value = 2, "euler"
    studio.generate_button.click()
    assert len(studio.trajectory) == 2 and studio.scrub.max == 1 and studio.progress.value == 2


def test_run_sampling_is_generate_plus_its_trajectory(model):
    args = dict(num_frames=9, height=32, width=32, steps=4, guidance=3.0, sampler="euler", seed=3)
    video, trajectory = run_sampling(model, "a red circle moves to the right", **args)
    again, _ = run_sampling(model, "a red circle moves to the right", **args)
    direct = model.generate("a red circle moves to the right", **args, progress=False)
    np.testing.assert_array_equal(video, again)
    np.testing.assert_array_equal(video, direct)
    assert len(trajectory) == 4
    # Euler's last step lands exactly on the model's last prediction of z0.
    np.testing.assert_array_equal(trajectory[-1].predicted, video)


@pytest.mark.parametrize("prompt, expected", [("", "empty"), ("   ", "empty"), ("xyzzy plugh", "vocabulary")])
def test_bad_prompt_shows_a_message_not_a_traceback(model, prompt, expected):
    studio = Studio(model)
    studio.steps.value = 2
    studio.prompt.value = prompt
    studio.generate_button.click()
    assert expected in studio.message.value
    assert studio.video is None and studio.trajectory == [] and studio.scrub.disabled
    assert not studio.generate_button.disabled
    assert studio.generate() is False  # called directly: still no exception


def test_unknown_words_are_named_in_the_ui_but_sampling_goes_on(model):
    studio = Studio(model, prompt="a red circle zooms to the right")
    studio.steps.value = 2
    studio.generate_button.click()
    assert "zooms" in studio.message.value
    assert studio.video.shape == (9, 32, 32, 3)
