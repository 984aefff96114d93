"""Collisions and cause and effect: the world's ground truth (momentum kept at every contact, the struck
object still until it is hit) and the evaluator's collision/causality metrics, validated on the world's own
videos and on the failures they are named after (minisora.interactions.counterfactual)."""

import dataclasses

import numpy as np
import pytest

from minisora import causality, evaluate, interactions, world
from minisora.data import ShapesWorld

SIZES = ((9, 32, 32), (17, 64, 64))


def hit_scenes(count: int, seed: int) -> list[tuple[world.Scene, str]]:
    """Random "A hits B" scenes (sizes, shapes, directions, paraphrases) as the dataset makes them."""
    rng, scenes = np.random.default_rng(seed), []
    while len(scenes) < count:
        scene = world.sample_scene(rng, max_objects=2, collision_prob=1.0)
        if scene.hits is not None:
            scenes.append((scene, world.caption(scene, rng)))
    return scenes


def test_scene_api_and_contacts_truth():
    red = world.ObjectSpec("circle", "red", "medium", "right", x=0.25, y=0.5, speed=0.08)
    blue = world.ObjectSpec("square", "blue", "medium", "still", x=0.6, y=0.5)
    clip = world.render(world.Scene([red, blue], collisions=True), 9, 32, 32)
    contacts = clip.truth["contacts"]
    assert contacts.shape[1] == len(interactions.CONTACT_FIELDS) and len(contacts) >= 1
    frame, i, j = contacts[0, :3].astype(int)
    assert (i, j) == (0, 1)
    # Equal areas, head on: the velocities swap. The square is still until the step of the contact.
    np.testing.assert_allclose(contacts[0, 8:12], [0, 0, 0.08 * 32, 0], atol=1e-4)
    pos = clip.truth["position"][:, 1]
    assert (pos[:frame + 1] == pos[0]).all() and pos[frame + 1, 0] > pos[0, 0]
    gap = np.linalg.norm(clip.truth["position"][:, 1] - clip.truth["position"][:, 0], axis=-1) - clip.truth["radius"].sum()
    assert gap.min() >= -1e-3  # never through each other
    # Collisions off: the same scene passes through and records no contact.
    through = world.render(world.Scene([red, blue]), 9, 32, 32)
    assert len(through.truth["contacts"]) == 0 and (through.truth["position"][:, 1] == pos[0]).all()
    assert "contacts" in world.simulate(world.Scene([red]), 5, 16, 16)


@pytest.mark.parametrize("seed", range(3))
def test_momentum_is_conserved_at_every_contact(seed):
    rng, checked = np.random.default_rng(seed), 0
    for _ in range(40):
        scene = world.sample_scene(rng, max_objects=3, gravity_prob=0.3, collision_prob=1.0)
        truth = world.simulate(scene, 17, 48, 48)
        if len(truth["contacts"]):
            before, after = interactions.momentum(truth["contacts"], truth["radius"])
            scale = np.linalg.norm(before, axis=-1).clip(min=1e-6)
            assert (np.linalg.norm(after - before, axis=-1) <= 0.02 * scale + 1e-4).all()
            i, j = truth["contacts"][:, 1].astype(int), truth["contacts"][:, 2].astype(int)
            m = truth["radius"] ** 2  # kinetic energy too (elastic)
            energy = lambda a, b: m[i] * (a ** 2).sum(-1) + m[j] * (b ** 2).sum(-1)  # noqa: E731
            c = truth["contacts"]
            np.testing.assert_allclose(energy(c[:, 8:10], c[:, 10:12]), energy(c[:, 4:6], c[:, 6:8]), rtol=1e-3)
            checked += len(truth["contacts"])
    assert checked >= 10


def test_struck_object_is_still_until_contact():
    for scene, _ in hit_scenes(20, seed=1):
        truth = world.simulate(scene, 9, 32, 32)
        a, b = scene.hits
        first = [c for c in truth["contacts"] if {int(c[1]), int(c[2])} == {a, b}]
        assert first, "a hit scene must show its hit"
        t = int(first[0][0])
        pos = truth["position"][:, b]
        assert (pos[:t + 1] == pos[0]).all() and np.abs(pos[t + 1] - pos[0]).max() > 0


def test_captions_and_parse_round_trip():
    for scene, text in hit_scenes(30, seed=2):
        parsed = world.parse_caption(text)
        assert parsed.hits == (0, 1) and parsed.collisions, text
        assert [(o.color, o.shape, o.size) for o in parsed.objects] == \
            [(o.color, o.shape, o.size) for o in scene.objects], text
        assert parsed.objects[1].motion == "still"
        assert set(world.split_words(text)) <= set(world.vocabulary()), text
    for text in ("a red circle pushes a blue square", "the red circle hits the blue square, which starts to move",
                 "a red circle bumps into a blue square"):
        assert world.parse_caption(text).hits == (0, 1)
        clip = world.render(text, 9, 32, 32, seed=4)  # from text alone
        assert clip.scene.collisions and len(clip.truth["contacts"]) >= 1
    assert world.parse_caption("a red circle moves left and a blue square moves up").hits is None


def test_dataset_switch_and_old_streams_unchanged():
    old = ShapesWorld(9, 32, 32, seed=3, length=20)
    same = ShapesWorld(9, 32, 32, seed=3, length=20, collisions=0.0)
    assert [old._scene(i)[1] for i in range(20)] == [same._scene(i)[1] for i in range(20)]
    hits = ShapesWorld(9, 32, 32, seed=3, length=40, collisions=1.0)
    captions = [hits._scene(i)[1] for i in range(40)]
    assert sum(world.parse_caption(c).hits is not None for c in captions) >= 10
    item = hits[0]
    assert "contacts" not in item["truth"] and item["video"].shape == (3, 9, 32, 32)


def _validation(count: int, size) -> dict[str, dict[str, float]]:
    results = {"world": [], **{kind: [] for kind in interactions.COUNTERFACTUALS}}
    for scene, text in hit_scenes(count, seed=5):
        results["world"].append(evaluate.score(world.render(scene, *size).video, text))
        for kind in interactions.COUNTERFACTUALS:
            try:
                video = interactions.counterfactual(scene, kind, *size)
            except ValueError:  # no contact inside the clip
                continue
            results[kind].append(evaluate.score(video, text))
    return {kind: {m: round(float(np.mean([s[m] for s in scores])), 3) for m in causality.METRICS}
            for kind, scores in results.items()}


@pytest.mark.parametrize("size", SIZES)
def test_evaluator_validation_collision_and_causality(size):
    figures = _validation(30 if size[0] == 9 else 12, size)
    print(size, figures)
    assert figures["world"]["collision"] >= 0.9 and figures["world"]["causality"] >= 0.9, figures
    assert figures["passes-through"]["collision"] <= 0.3, figures
    assert figures["moves-before-hit"]["causality"] <= 0.3, figures
    assert figures["never-moves"]["causality"] <= 0.3, figures


def test_metrics_only_when_asked_and_old_scores_unchanged():
    clip = world.render("a red circle moves to the right and a blue square moves up", 9, 32, 32, seed=1)
    result = evaluate.score(clip.video, "a red circle moves to the right and a blue square moves up")
    assert not set(causality.METRICS) & set(result)
    scene, text = hit_scenes(1, seed=7)[0]
    result = evaluate.score(world.render(scene, 9, 32, 32).video, text)
    assert set(causality.METRICS) <= set(result)
    # A hit prompt scored on a video without the second object: nothing to measure is a failure.
    alone = world.render(dataclasses.replace(scene, objects=scene.objects[:1], hits=None), 9, 32, 32).video
    assert evaluate.score(alone, text)["collision"] == 0.0
