"""Interactions in the shapes world: objects that collide, and cause and effect ("a red circle hits a blue square").

The Sora report names *specific cause and effect* and *physical interactions* among what a video generator
gets wrong (its chair that is not rigid). Our world can show both, and knows their ground truth:

    collide(start, velocity, lo, hi, radius, T, gravity) -> positions, velocities, contacts
        Objects bounce off the walls and off each other, elastically. Each is a disk of its own equal-area
        radius (every world shape has the area of a circle of radius r) and mass proportional to its area,
        so equal sizes swap their velocities along the line of centres, and momentum and energy are kept
        exactly at every contact. A contact inside a step is found exactly (the time the two disks touch),
        so objects never pass through each other.
    place_hit(scene, rng)   puts a striker on course for a still target (a "hits" scene)
    hit_caption(scene, rng) "a red circle hits a blue square, which starts to move" and paraphrases
    parse_hits(toks, anchors) reads "A hits / pushes / bumps into / strikes B" back
    draw(scene, positions, H, W) draws objects at given centres: the counterfactual videos of the evaluator
    counterfactual(scene, kind, T, H, W) the failures a generator might show: "passes-through",
        "moves-before-hit", "never-moves"

Ground truth `contacts` (N, 12) float32 rows, one per contact, fields CONTACT_FIELDS: the frame t of the step
it happens in (t -> t + 1), the two objects i < j, the exact time (t + fraction), and both velocities (pixels
per frame) before and after it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import physics, world

CONTACT_FIELDS = ("frame", "i", "j", "time", "vi_x", "vi_y", "vj_x", "vj_y", "vi_x_after", "vi_y_after",
                  "vj_x_after", "vj_y_after")
# "A hits B": the verbs of cause and effect, and what B then does (the struck object is still before).
HIT_VERBS = {"hits": "hits", "pushes": "pushes", "strikes": "strikes", "bumps": "bumps into", "knocks": "knocks",
             "hit": "hit", "push": "push", "collides": "collides with"}
_HIT_PHRASES = ("hits", "pushes", "bumps into", "strikes")
_EFFECTS = ("", ", which starts to move", ", which then moves", ", setting it in motion")
# {a}/{b} are "a small red circle", {move} the striker's motion phrase.
_HIT_TEMPLATES = ("{a} {hit} {b}{effect}", "{a} {move} and {hit} {b}{effect}")
PHRASES = (*_HIT_PHRASES, *_EFFECTS, " and ", "with", "collides", "hit", "push", "knocks")


# ------------------------------------------------------------------------------------------------- physics
def _first_contact(p: np.ndarray, v: np.ndarray, radius: np.ndarray, within: float):
    """The earliest time s in [0, within] at which two approaching disks touch: (s, i, j) or None."""
    best = None
    K = len(p)
    for i in range(K):
        for j in range(i + 1, K):
            dp, dv, reach = p[j] - p[i], v[j] - v[i], radius[i] + radius[j]
            b = 2 * float(dp @ dv)
            if b >= 0:  # not approaching
                continue
            a, c = float(dv @ dv), float(dp @ dp) - reach**2
            if c <= 0:  # already touching (a scene that starts overlapping): bounce now
                s = 0.0
            else:
                disc = b * b - 4 * a * c
                if disc < 0:
                    continue
                s = (-b - disc**0.5) / (2 * a)
            if s <= within and (best is None or s < best[0]):
                best = (s, i, j)
    return best


def collide(start: np.ndarray, velocity: np.ndarray, lo: np.ndarray, hi: np.ndarray, radius: np.ndarray,
            num_frames: int, gravity: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """physics.bounce with the objects bouncing off each other too: positions (T, K, 2), velocities (T, K, 2)
    (the step about to be taken from frame t, as in `physics.bounce`) and contacts (N, 12), see CONTACT_FIELDS.

    radius (K,) pixels: the disk each object collides as; mass = radius**2 (proportional to area).
    """
    hi = np.maximum(hi, lo)
    p = np.clip(np.asarray(start, dtype=np.float64), lo, hi)
    v = np.array(velocity, dtype=np.float64)
    radius = np.asarray(radius, dtype=np.float64)
    mass = radius**2
    positions, velocities = np.empty((2, num_frames) + p.shape)
    contacts = []
    for t in range(num_frames):
        positions[t] = p
        v[:, 1] += gravity
        velocities[t] = v
        left = 1.0
        for _ in range(4 * len(p)):  # a few contacts per step at most; never loop forever
            hit = _first_contact(p, v, radius, left)
            if hit is None:
                break
            s, i, j = hit
            p, left = p + v * s, left - s
            n = (p[j] - p[i]) / max(np.linalg.norm(p[j] - p[i]), 1e-9)
            u = float((v[i] - v[j]) @ n)  # closing speed along the line of centres, > 0
            before = np.concatenate([v[i], v[j]])
            v[i] -= 2 * mass[j] / (mass[i] + mass[j]) * u * n
            v[j] += 2 * mass[i] / (mass[i] + mass[j]) * u * n
            contacts.append([t, i, j, t + 1 - left, *before, *v[i], *v[j]])
        p = p + v * left
        over, under = p > hi, p < lo  # walls, as in physics.bounce
        p = np.clip(np.where(over, 2 * hi - p, np.where(under, 2 * lo - p, p)), lo, hi)
        v = np.where(over | under, -v, v)
    return positions, velocities, np.array(contacts, dtype=np.float32).reshape(-1, len(CONTACT_FIELDS))


def momentum(contacts: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Total momentum (N, 2) of each contact's two objects before and after it (mass = radius**2)."""
    i, j = contacts[:, 1].astype(int), contacts[:, 2].astype(int)
    mi, mj = radius[i, None] ** 2, radius[j, None] ** 2
    return mi * contacts[:, 4:6] + mj * contacts[:, 6:8], mi * contacts[:, 8:10] + mj * contacts[:, 10:12]


# ------------------------------------------------------------------------------------------- placing a hit
def fit_hit(scene: world.Scene, max_reach: float = 0.3) -> world.Scene:
    """Shrink the larger of a hit's two objects (large -> medium -> small) until their radii sum to at most
    `max_reach` of the frame, so that the run-up, the hit and the target's motion after it fit in the frame
    (two large objects in 32x32 pixels would pin each other against a wall). For sampled training scenes;
    a prompt that asks for two large objects gets them, cramped."""
    order = list(world.SIZES)
    a, b = scene.hits
    while world.SIZES[scene.objects[a].size] + world.SIZES[scene.objects[b].size] > max_reach + 1e-9:
        k = a if world.SIZES[scene.objects[a].size] >= world.SIZES[scene.objects[b].size] else b
        scene.objects[k] = dataclasses.replace(scene.objects[k], size=order[order.index(scene.objects[k].size) - 1])
    return scene


def place_hit(scene: world.Scene, rng: np.random.Generator, lead: tuple[float, float] = (2.0, 3.5)) -> world.Scene:
    """Put scene.hits = (a, b)'s striker a on course for its target b, which is still; in place, returned.

    The striker keeps its motion (or gets a random one when still) and reaches the target after `lead`
    frames (uniform in the range), a little off-centre at times. It starts near the wall behind it, so that
    the target has room to move after the hit. Positions are fractions for a square frame.
    """
    a, b = scene.hits
    striker, target = scene.objects[a], scene.objects[b]
    u = rng.random(5)
    motion = striker.motion
    if motion == "still":
        motion = [m for m in world.MOTIONS if m != "still"][int(u[0] * 8)]
    direction = np.array(world.MOTIONS[motion])
    ra, rb = world.SIZES[striker.size], world.SIZES[target.size]
    reach = ra + rb  # centre distance at contact (fractions)
    gap = (lead[0] + (lead[1] - lead[0]) * u[1]) * striker.speed
    # A small frame cannot fit every pair with room for the target to move: shorten the run-up first.
    span = (1 - 1.25 * (ra + rb) - 0.02) / max(np.abs(direction).max(), 1e-9)
    gap = max(min(gap, span - reach - 0.15), 1.0 * striker.speed)
    side = np.array([-direction[1], direction[0]]) * (u[2] - 0.5) * 0.5 * reach  # off-centre: an oblique hit
    back = np.where(direction > 0, 1.25 * ra + 0.02, np.where(direction < 0, 1 - 1.25 * ra - 0.02, 0.3 + 0.4 * u[3:5]))
    at_b = back + direction * (reach + gap) + side
    room = np.where(direction != 0, (np.where(direction > 0, 1 - at_b, at_b) - rb) / np.maximum(np.abs(direction), 1e-9),
                    np.inf)
    shift = u[4] * max(0.0, float(room.min()) - 0.3) * direction  # keep 0.3 of room ahead of the target
    at_a, at_b = back + shift, at_b + shift
    scene.objects[a] = dataclasses.replace(striker, motion=motion, x=float(at_a[0]), y=float(at_a[1]))
    scene.objects[b] = dataclasses.replace(target, motion="still", x=float(at_b[0]), y=float(at_b[1]))
    scene.collisions = True
    return scene


# ------------------------------------------------------------------------------------------------ language
def _noun(o: world.ObjectSpec, rng) -> str:
    return f"a {world._pick(world._SIZE_WORDS[o.size], rng)} {o.color} {o.shape}"


def hit_caption(scene: world.Scene, rng: np.random.Generator | None = None) -> str:
    """"a small red circle hits a large blue square, which starts to move" (rng picks paraphrases).

    Other objects of the scene follow with "and", described as `world.caption` does.
    """
    a, b = scene.hits
    text = world._pick(_HIT_TEMPLATES, rng).format(
        a=_noun(scene.objects[a], rng), b=_noun(scene.objects[b], rng), hit=world._pick(_HIT_PHRASES, rng),
        move=world.motion_phrase(scene.objects[a].motion, rng), effect=world._pick(_EFFECTS, rng))
    others = [o for k, o in enumerate(scene.objects) if k not in (a, b)]
    if others:
        rest = world.caption(world.Scene(others), rng)
        text = f"{text}, and {rest}"
    if scene.gravity:
        text += world._pick(world._GRAVITY_PHRASES, rng)
    if scene.occluder is not None:
        text += world._pick(world._OCCLUDER_PHRASES, rng)
    return text


def parse_hits(toks: list[str], anchors: list[int]) -> tuple[int, int] | None:
    """(striker, struck) object indices when a hit verb stands between two objects' shape words, else None."""
    for k in range(len(anchors) - 1):
        if any(w in HIT_VERBS for w in toks[anchors[k] + 1:anchors[k + 1]]):
            return k, k + 1
    return None


# ------------------------------------------------------------------------------ drawing given trajectories
def draw(scene: world.Scene, positions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Draw the scene's objects at the given centres (T, K, 2) pixels as world.render does: (T, H, W, 3) uint8."""
    T = len(positions)
    xs, ys = np.arange(width, dtype=np.float32) + 0.5, np.arange(height, dtype=np.float32) + 0.5
    video = np.empty((3, T, height, width), dtype=np.float32)
    video[:] = np.array(world.BACKGROUND, dtype=np.float32)[:, None, None, None]
    for k, o in enumerate(scene.objects):
        r = world.SIZES[o.size] * min(height, width)
        dx = xs - positions[:, k, 0, None, None].astype(np.float32)
        dy = ys[:, None] - positions[:, k, 1, None, None].astype(np.float32)
        alpha = np.clip(0.5 - physics.signed_distance(o.shape, dx, dy, r), 0, 1)
        video += alpha * (np.array(world.COLORS[o.color], dtype=np.float32)[:, None, None, None] - video)
    coverage = world._occluder_coverage(scene, width)
    if coverage is not None:
        video += coverage * (np.array(world.OCCLUDER_COLOR, dtype=np.float32)[:, None, None, None] - video)
    return np.moveaxis(video + 0.5, 0, -1).astype(np.uint8)


COUNTERFACTUALS = ("passes-through", "moves-before-hit", "never-moves")


def counterfactual(scene: world.Scene, kind: str, num_frames: int = 9, height: int = 32,
                   width: int = 32) -> np.ndarray:
    """A "hits" scene drawn wrong, the way a generator might get cause and effect wrong: (T, H, W, 3) uint8.

    passes-through    collisions off: the striker goes through the still target, which never moves
    moves-before-hit  the target sets off (at the speed the hit gives it) three frames before the striker
                      reaches it; the striker stops where it would have hit
    never-moves       the striker stops at the target as in the world, but the target stays where it was
    """
    if scene.hits is None:
        raise ValueError("counterfactual needs a scene with hits=(striker, target), e.g. "
                         "world.render('a red circle hits a blue square').scene")
    truth = world.simulate(scene, num_frames, height, width)
    a, b = scene.hits
    pos = truth["position"].copy()
    hit = [c for c in truth["contacts"] if (int(c[1]), int(c[2])) in ((a, b), (b, a))]
    if kind == "passes-through":
        return world.render(dataclasses.replace(scene, collisions=False), num_frames, height, width).video
    if kind not in COUNTERFACTUALS:
        raise ValueError(f"unknown counterfactual {kind!r}; choose one of {COUNTERFACTUALS}")
    if not hit:
        raise ValueError("the striker never reaches its target in this clip: use more frames or another scene")
    t = int(hit[0][0])
    if kind == "moves-before-hit" and t < 2:
        raise ValueError("the hit comes in the first step: there is no time to move before it; use another scene")
    if kind == "never-moves":
        pos[:, b] = pos[0, b]
    else:  # the target's own motion after the hit, started `early` frames before it (from frame 1 at most)
        early = min(3, t)
        moved = np.concatenate([np.repeat(pos[:1, b], max(0, t + 1 - early), axis=0), pos[t + 1:, b]])
        tail = pos[-1, b] + (pos[-1, b] - pos[-2, b]) * np.arange(1, num_frames + 1)[:, None]
        pos[:, b] = np.concatenate([moved, tail])[:num_frames]
    return draw(scene, pos, height, width)
