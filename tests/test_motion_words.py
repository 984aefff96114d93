"""benchmarks/motion_words.py measures whether a model's object moves the way each motion word says."""

import numpy as np
import pytest
import torch

from minisora import MiniSora, world


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("motion_words")


class WorldAsModel:
    """Draws the world's own video of a prompt: a 'model' that follows every motion word."""

    config = MiniSora.from_preset("tiny").config

    def generate(self, prompt, seed=0, **_):
        return world.render(prompt, 9, 32, 32, seed=seed).video


class IgnoresMotionWords(WorldAsModel):
    """Moves the object to the right whatever the prompt says: the failure the benchmark is for."""

    def generate(self, prompt, seed=0, **_):
        thing = prompt.split(" moves ")[0].split(" stays ")[0]
        return world.render(f"{thing} moves to the right", 9, 32, 32, seed=seed).video


def test_spread_is_zero_when_every_word_gives_the_same_velocity(bench):
    same = {m: np.array([[1.0, 0.0], [0.0, 2.0]]) for m in world.MOTIONS}
    assert bench.spread(same) == 0.0
    apart = {m: np.array([d, d]) * 2.0 for m, d in world.MOTIONS.items()}
    assert bench.spread(apart) == pytest.approx(2.0)
    apart["left"][0] = np.nan  # not measured: left out of its seed, not a NaN spread
    assert np.isfinite(bench.spread(apart))


def test_a_model_that_ignores_motion_words_is_caught(bench):
    follows = bench.motion_words(WorldAsModel(), seeds=2)
    ignores = bench.motion_words(IgnoresMotionWords(), seeds=2)
    assert follows["spread"]["model"] > 2.0 and ignores["spread"]["model"] < 0.3
    assert follows["spread"]["world"] == pytest.approx(ignores["spread"]["world"])  # same reference
    left = next(r for r in ignores["rows"] if r["motion"] == "left")
    assert left["model"]["direction"] < 0.1 and left["world"]["direction"] > 0.9
    table = bench.markdown(ignores)
    assert table.count("\n| a large red square ") == len(world.MOTIONS) and "px/frame apart" in table


def test_main_runs_on_a_saved_model_and_refuses_bad_input(bench, tmp_path, capsys):
    torch.manual_seed(0)
    MiniSora.from_preset("tiny").save_pretrained(tmp_path / "m")
    bench.main(["--model", str(tmp_path / "m"), "--seeds", "2", "--steps", "1"])
    assert "| a large red square stays still |" in capsys.readouterr().out
    for bad, says in [(["--seeds", "1"], "--seeds must be 2"), (["--object", "a red circle moves up"], "--object"),
                      (["--model", str(tmp_path / "missing")], "no saved model")]:
        with pytest.raises(SystemExit):
            bench.main(["--model", str(tmp_path / "m"), *bad] if "--model" not in bad else bad)
        assert says in capsys.readouterr().err
