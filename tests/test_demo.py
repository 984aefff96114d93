"""The README's first command, `make demo`, end to end in smoke mode (a few steps of everything)."""

from minisora import MiniSora
from minisora.__main__ import DEMO_PROMPTS, main


def test_demo_writes_videos_and_a_loadable_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINISORA_SMOKE", "1")
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    gifs = sorted(tmp_path.glob("[0-9]_*.gif"))
    assert len(gifs) == len(DEMO_PROMPTS) and all(g.stat().st_size > 0 for g in gifs)
    summary = capsys.readouterr().out
    assert "final loss" in summary and "model saved to" in summary
    model = MiniSora.from_pretrained(tmp_path / "model")
    assert model.generate(DEMO_PROMPTS[0], steps=1, progress=False).shape == (9, 32, 32, 3)
    assert (tmp_path / "checkpoints" / "dit" / "latest").exists()


def test_demo_refuses_zero_steps_instead_of_training_the_preset_length(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--vae-steps", "0", "--no-progress"]) == 2
    assert "steps must be a whole number >= 1, got 0" in capsys.readouterr().err
