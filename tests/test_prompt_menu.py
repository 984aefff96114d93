"""benchmarks/prompt_menu.py ranks prompts by the evaluator's score, and says when a score measured little."""

import pytest
import torch

from minisora import MiniSora


@pytest.fixture(scope="module")
def menu(load_benchmark):
    return load_benchmark("prompt_menu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniSora.from_preset("tiny").eval()  # untrained: the ranking and the table are under test


def test_default_menu_is_a_dozen_one_object_prompts_with_still_ones(menu):
    from minisora import world

    assert len(menu.PROMPTS) == 12 and len(set(menu.PROMPTS)) == 12
    scenes = [world.parse_caption(p) for p in menu.PROMPTS]
    assert all(len(s.objects) == 1 for s in scenes)
    motions = {s.objects[0].motion for s in scenes}
    assert "still" in motions and len(motions) >= 4
    assert {s.objects[0].color for s in scenes} == set(world.COLORS)


def test_asked_metrics_follow_the_prompt(menu):
    assert menu.asked_metrics("a red circle moves to the right") == {"shape", "direction"}
    assert menu.asked_metrics("a green circle stays still") == {"shape", "direction"}
    assert menu.asked_metrics("a red thing moves up") == {"direction"}
    assert menu.asked_metrics("a large blue square") == {"shape"}


def test_rows_are_sorted_and_the_table_has_one_line_per_prompt(menu, model):
    prompts = ["a red circle moves to the right", "a green circle stays still"]
    rows = menu.prompt_menu(model, prompts, seeds=2, steps=2)
    assert sorted(r["prompt"] for r in rows) == sorted(prompts)
    overall = [r["mean"]["overall"] for r in rows]
    assert overall == sorted(overall, reverse=True)
    for r in rows:
        assert r["videos"] == 2 and 0 <= r["worst"] <= r["mean"]["overall"] <= 1 and 0 <= r["measured"] <= 1
    table = menu.markdown(rows)
    assert table.count("\n") == 2 + len(prompts) and table.startswith("| prompt | overall | worst | measured |")


def test_main_prints_the_table_for_a_saved_model(menu, model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "m")
    menu.main(["--model", str(tmp_path / "m"), "--prompts", "a blue square moves up", "--seeds", "1",
               "--steps", "2"])
    out = capsys.readouterr().out
    assert "| a blue square moves up |" in out and "1 videos in" in out
    with pytest.raises(SystemExit):
        menu.main(["--model", str(tmp_path / "missing")])


@pytest.mark.parametrize("bad, says", [(["--seeds", "0"], "--seeds 1 or more"), (["--steps", "0"], "--steps must be"),
                                       (["--prompts-file", "nowhere.txt"], "no such file")])
def test_main_says_what_to_change_on_bad_arguments(menu, bad, says, capsys):
    with pytest.raises(SystemExit):
        menu.main(bad)
    assert says in capsys.readouterr().err
