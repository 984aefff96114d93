"""MiniSora end to end: sizes, determinism, saving/loading and every bad input a user would try."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from minisora import MiniSora
from minisora.__main__ import main

PROMPT = "a red circle moves to the right"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniSora.from_preset("tiny")


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


@pytest.mark.parametrize("frames,height,width", [(9, 32, 32), (1, 32, 32), (5, 32, 48), (13, 48, 32)])
def test_generate_any_size_with_one_model(model, frames, height, width):
    video = model.generate(PROMPT, num_frames=frames, height=height, width=width, steps=2, progress=False)
    assert video.shape == (frames, height, width, 3) and video.dtype == np.uint8


def test_generate_is_deterministic_for_a_seed(model):
    a = model.generate(PROMPT, steps=3, seed=7, progress=False)
    b = model.generate(PROMPT, steps=3, seed=7, progress=False)
    c = model.generate(PROMPT, steps=3, seed=8, progress=False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_save_load_round_trip_is_bit_exact(model, saved):
    loaded = MiniSora.from_pretrained(saved)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.tokenizer.to_dict() == model.tokenizer.to_dict()
    assert loaded.config == model.config
    assert np.array_equal(model.generate(PROMPT, steps=2, seed=1, progress=False),
                          loaded.generate(PROMPT, steps=2, seed=1, progress=False))
    assert {p.name for p in saved.iterdir()} == {"config.json", "tokenizer.json", "model.safetensors", "README.md"}


def test_a_save_stopped_between_its_renames_keeps_the_old_model(model, tmp_path, monkeypatch):
    path = model.save_pretrained(tmp_path / "tiny", card_notes=["- the old model"])
    rename, calls = Path.rename, []

    def stop_at_second_rename(self, target):  # the old folder goes aside, then Ctrl-C
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", stop_at_second_rename)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(path, card_notes=["- the new model"])
    monkeypatch.undo()
    assert "the old model" in (path / "README.md").read_text()
    assert MiniSora.from_pretrained(path).config == model.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temporary folder left behind


def test_a_save_killed_between_its_renames_leaves_a_loadable_model(model, tmp_path):
    path = model.save_pretrained(tmp_path / "tiny")
    path.rename(tmp_path / ".tiny.old")  # what a process killed between the two renames leaves
    assert MiniSora.from_pretrained(path).config == model.config
    model.save_pretrained(path)  # the next save puts things straight
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


@pytest.mark.parametrize("prompt,message", [("", "empty"), ("   ", "empty"), ("zorblax quuxify", "vocabulary")])
def test_bad_prompts(model, prompt, message):
    with pytest.raises(ValueError, match=message):
        model.generate(prompt, steps=1, progress=False)


def test_unknown_words_warn_by_name(model):
    with pytest.warns(UserWarning, match="zorblax"):
        model.generate("a red zorblax circle", steps=1, progress=False)


@pytest.mark.parametrize("kwargs,hint", [
    ({"num_frames": 10}, "9"), ({"num_frames": 0}, "num_frames"), ({"height": 30}, "32"),
    ({"width": 20}, "24"), ({"steps": 0}, "steps"), ({"steps": -3}, "steps"), ({"guidance": -1.0}, "guidance"),
])
def test_bad_sizes_and_settings_say_what_works(model, kwargs, hint):
    with pytest.raises(ValueError, match=hint):
        model.generate(PROMPT, **{"steps": 1, "progress": False, **kwargs})


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder"):
        MiniSora.from_pretrained(tmp_path / "nope")


def test_truncated_weights(saved, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        MiniSora.from_pretrained(broken)


def test_weights_from_another_config(saved, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(saved, other)
    config = json.loads((other / "config.json").read_text())
    config["dit"]["dim"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit its config"):
        MiniSora.from_pretrained(other)


def test_a_folder_of_an_older_format_says_what_changed(saved, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    config = json.loads((old / "config.json").read_text())
    config["format_version"] = 1  # saved before the text encoder got word_norm
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version 1, this minisora reads 2: since it was saved, the text encoder"):
        MiniSora.from_pretrained(old)


def test_pickle_checkpoint_is_refused(model, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "model.pt")
    with pytest.raises(ValueError, match="never unpickles"):
        MiniSora.from_pretrained(folder)


def test_missing_file_in_folder(saved, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(saved, partial)
    (partial / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        MiniSora.from_pretrained(partial)


def test_weights_with_missing_tensor(saved, model, tmp_path):
    cut = tmp_path / "cut"
    shutil.copytree(saved, cut)
    state = {k: v.contiguous() for k, v in list(model.state_dict().items())[:-1]}
    save_file(state, str(cut / "model.safetensors"))
    with pytest.raises(ValueError, match="do not fit"):
        MiniSora.from_pretrained(cut)


def test_cli_sample_writes_a_gif(saved, tmp_path, capsys):
    out = tmp_path / "clip.gif"
    assert main(["sample", "--model", str(saved), "--prompt", PROMPT, "--steps", "2", "--out", str(out)]) == 0
    assert out.exists() and out.stat().st_size > 0


def test_cli_reports_errors_without_traceback(saved, tmp_path, capsys):
    assert main(["sample", "--model", str(saved), "--prompt", PROMPT, "--frames", "10",
                 "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert main(["sample", "--model", str(tmp_path / "missing"), "--prompt", PROMPT]) == 2
