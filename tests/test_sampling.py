"""The sampling engine looks before it leaps: a size is priced in tokens, memory and time before any work,
what cannot fit is refused with a message and what will take long is announced with its estimate."""

import warnings

import pytest
import torch

from minisora import MiniSora, flow, sampling
from minisora.__main__ import main

PROMPT = "a red circle moves to the right"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniSora.from_preset("tiny").eval()


@pytest.fixture
def no_sampling(monkeypatch):
    """Sampling itself fails the test: every check must come before it."""
    def sample(*args, **kwargs):
        raise AssertionError("sampling started")
    monkeypatch.setattr(flow, "sample", sample)


def test_the_cost_grows_with_the_pixels(model):
    small = sampling.sampling_cost(model, 9, 32, 32, steps=20, guidance=3.0, sampler="euler")
    huge = sampling.sampling_cost(model, 9, 4096, 4096, steps=1, guidance=3.0, sampler="euler")
    assert small["tokens"] == 5 * 16 * 16 // 16 and small["bytes"] < 2**28 and small["seconds"] < 60  # 4x4 patches
    assert huge["tokens"] == 5 * 2048 * 2048 // 16
    assert huge["bytes"] > 16 * 2**30  # the decoder alone holds several float32 copies of 9x4096x4096x8
    assert huge["seconds"] > 300  # a million tokens attend to each other, even once


def test_what_cannot_fit_in_memory_is_refused_before_sampling(model, monkeypatch, no_sampling):
    monkeypatch.setattr(sampling, "_device_memory", lambda device: 8 * 2**30)
    with pytest.raises(ValueError, match=r"9 frames of 4096x4096 need about \d+ GiB of memory.*8 GiB.*fewer pixels"):
        model.generate(PROMPT, height=4096, width=4096, steps=1, progress=False)


def test_cli_sample_at_4096_says_why_at_once(model, monkeypatch, no_sampling, tmp_path, capsys):
    monkeypatch.setattr(sampling, "_device_memory", lambda device: 8 * 2**30)
    saved = model.save_pretrained(tmp_path / "tiny")
    assert main(["sample", "--model", str(saved), "--prompt", PROMPT, "--height", "4096", "--width", "4096",
                 "--steps", "1", "--out", str(tmp_path / "big.gif")]) == 2
    err = capsys.readouterr().err
    assert "GiB of memory" in err and "Traceback" not in err


def test_what_will_take_long_is_announced_with_its_estimate(model, monkeypatch):
    monkeypatch.setattr(sampling, "_flops_per_second", lambda device: 1e3)  # a very slow machine
    estimate = r"9 frames of 16x16 \(20 tokens, 2 steps\) will take about \d+ (minutes|hours)"
    with pytest.warns(UserWarning, match=estimate):
        model.generate(PROMPT, height=16, width=16, steps=2, progress=False)
    with pytest.warns(UserWarning, match="will take about"):  # every mode goes through the same engine
        model.generate_long(PROMPT, seconds=1, fps=5, height=16, width=16, steps=1, progress=False)


def test_the_training_size_samples_without_a_word(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.generate(PROMPT, steps=2, progress=False).shape == (9, 32, 32, 3)
