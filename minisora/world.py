"""The shapes world: a tiny procedural universe of captioned videos whose ground truth we know.

Training on real video needs GPUs and weeks. A world of coloured shapes that move, bounce off the walls,
fall under gravity and pass behind a grey bar keeps the essence of text-to-video (words -> a spacetime
volume of pixels that obeys them) while a laptop can learn it. Because we *make* these videos, we know
where every object is in every frame, so we can later *measure* whether a generated video obeys its
prompt (see minisora.evaluate) instead of squinting at it.

    sample_scene(rng)        -> Scene: objects (shape, colour, size, motion), where they start, how fast
    caption(scene, rng)      -> "a small red circle bounces to the left"   (paraphrased English)
    parse_caption(text)      -> Scene                                       (the inverse, for prompts)
    simulate(scene, T, H, W) -> ground truth per frame: positions, velocities, masks, visibility
    render(scene or text)    -> WorldVideo(video (T, H, W, 3) uint8, truth, scene, caption)
    split_words(text)        -> ["a", "small", "red", ...]: how every part of minisora cuts text into words

Objects may also collide (Scene(..., collisions=True)) and one may hit another ("a red circle hits a blue
square"): the physics, placement and words of that live in minisora.interactions.

Coordinates are pixels with x to the right and y down; pixel (row i, column j) covers [j, j+1) x [i, i+1),
so its centre is (j + 0.5, i + 0.5). Drawing is vectorised: each object's signed distance (negative
inside the shape, see minisora.physics) is evaluated for all T frames at once on the (T, H, W) pixel grid
by numpy broadcasting.

Worlds of simple objects with known physics are an old tool for asking whether a model understands
motion: CLEVRER (arXiv:1910.01442) and Physion (arXiv:2106.08261) ask it of video models, Sora's report
("Video generation models as world simulators", OpenAI 2024) claims it of a generator.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from . import combinations, physics

SHAPES = ("circle", "square", "triangle", "diamond")
# Saturated colours far apart in hue, far from the dark background and from the grey occluder, so an
# evaluator can find each object by its colour alone.
COLORS = {
    "red": (230, 45, 45),
    "green": (40, 200, 70),
    "blue": (50, 100, 245),
    "yellow": (240, 215, 40),
    "purple": (190, 60, 220),
    "cyan": (40, 215, 225),
}
SIZES = {"small": 0.1, "medium": 0.15, "large": 0.2}  # radius as a fraction of min(height, width)
_DIAG = 0.5**0.5
MOTIONS = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
    "up-left": (-_DIAG, -_DIAG), "up-right": (_DIAG, -_DIAG),
    "down-left": (-_DIAG, _DIAG), "down-right": (_DIAG, _DIAG),
    "still": (0.0, 0.0),
}
BACKGROUND = (16, 16, 24)
OCCLUDER_COLOR = (128, 128, 128)
SPEED_RANGE = (0.06, 0.10)  # fraction of the width per frame: 2-3 px per frame at 32x32
GRAVITY = 0.012  # downward acceleration, fraction of the height per frame**2


@dataclass
class ObjectSpec:
    """One object: what it is, where it starts (x, y in [0, 1] of width/height), speed in widths/frame."""

    shape: str
    color: str
    size: str = "medium"
    motion: str = "still"
    x: float = 0.5
    y: float = 0.5
    speed: float = 0.08

    def __post_init__(self):
        for name, valid in _ATTRIBUTES.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {valid}")


@dataclass
class Scene:
    """Objects drawn in list order (later ones in front); occluder = (x0, x1) fractions of the width.

    collisions: objects bounce off each other (see minisora.interactions); hits = (a, b): object a is set
    on course for object b, which is still until a hits it ("a red circle hits a blue square").
    """

    objects: list[ObjectSpec]
    gravity: bool = False
    occluder: tuple[float, float] | None = None
    collisions: bool = False
    hits: tuple[int, int] | None = None


@dataclass
class WorldVideo:
    """A rendered clip: video (T, H, W, 3) uint8, its ground truth (see `simulate`), scene and caption."""

    video: np.ndarray
    truth: dict
    scene: Scene
    caption: str


_ATTRIBUTES = {"shape": SHAPES, "color": tuple(COLORS), "size": tuple(SIZES), "motion": tuple(MOTIONS)}
_INDEX = {name: {value: i for i, value in enumerate(values)} for name, values in _ATTRIBUTES.items()}


# ----------------------------------------------------------------------------------------------- sampling
def _start(u: np.ndarray) -> dict[str, float]:
    """Three uniform numbers in [0, 1) -> a start (x, y) away from the walls and a speed."""
    return dict(x=float(0.2 + 0.6 * u[0]), y=float(0.2 + 0.6 * u[1]),
                speed=float(SPEED_RANGE[0] + (SPEED_RANGE[1] - SPEED_RANGE[0]) * u[2]))


def sample_scene(rng: np.random.Generator, max_objects: int = 2, gravity_prob: float = 0.0,
                 occluder_prob: float = 0.0, holdout=(), collision_prob: float = 0.0) -> Scene:
    """A random scene of 1..max_objects objects with distinct colours (so each can be found by colour).

    holdout: attribute combinations never produced, e.g. [("red", "circle")] or [{"size": "large",
    "motion": "left"}], to test later whether the model composes words it never saw together.
    """
    if not 1 <= max_objects <= len(COLORS):
        raise ValueError(f"max_objects must be between 1 and {len(COLORS)}, got {max_objects}")
    allowed = combinations.allowed(holdout, _ATTRIBUTES)
    if len(allowed) == 0:
        raise ValueError(f"holdout {holdout!r} excludes every object; hold out fewer combinations")
    n = int(rng.integers(1, max_objects + 1))
    draws = rng.random((n, 5))  # one row per object: which combination, x, y, speed, a spare pick
    used = np.zeros(len(COLORS), dtype=bool)
    objects = []
    for u in draws:
        s, c, z, m = allowed[int(u[0] * len(allowed))]
        if used[c]:  # colour taken: pick again among the rest, still uniformly
            candidates = allowed[~used[allowed[:, 1]]]
            if len(candidates) == 0:
                raise ValueError(f"holdout {holdout!r} leaves no object to draw; hold out fewer combinations")
            s, c, z, m = candidates[int(u[4] * len(candidates))]
        used[c] = True
        objects.append(ObjectSpec(SHAPES[s], _ATTRIBUTES["color"][c], _ATTRIBUTES["size"][z],
                                  _ATTRIBUTES["motion"][m], **_start(u[1:4])))
    gravity, has_bar, centre, width = rng.random(4)
    occluder = None
    if has_bar < occluder_prob:  # wide enough to hide a small object completely
        centre, half = 0.35 + 0.3 * centre, 0.1 + 0.04 * width
        occluder = (float(centre - half), float(centre + half))
    scene = Scene(objects, gravity=bool(gravity < gravity_prob), occluder=occluder)
    if collision_prob > 0 and rng.random() < collision_prob:  # drawn only then: other streams stay as they were
        from . import interactions

        scene.collisions = True
        if n >= 2:  # the first object hits the second (see interactions.place_hit)
            scene.hits = (0, 1)
            interactions.fit_hit(scene)
            interactions.place_hit(scene, rng)
    return scene


# ----------------------------------------------------------------------------------------------- language
_SIZE_WORDS = {"small": ("small", "tiny", "little"), "medium": ("medium",), "large": ("large", "big")}
_MOTION_WORDS = {
    "left": ("to the left", "left", "leftward"), "right": ("to the right", "right", "rightward"),
    "up": ("up", "upward", "to the top"), "down": ("down", "downward", "to the bottom"),
    "up-left": ("up and to the left", "to the upper left", "diagonally up and left"),
    "up-right": ("up and to the right", "to the upper right", "diagonally up and right"),
    "down-left": ("down and to the left", "to the lower left", "diagonally down and left"),
    "down-right": ("down and to the right", "to the lower right", "diagonally down and right"),
}
_VERBS = ("moves", "bounces", "slides", "drifts", "travels")
_STILL = ("stays still", "sits still", "does not move")
_FALL = ("falls", "drops")  # what a "still" object does under gravity
# {move} is a verb + motion phrase (or a still phrase), {moving} is "moving <motion>" or "not moving".
_TEMPLATES = ("a {size} {color} {shape} {move}", "a {color} {shape}, {size}, {moving}",
              "a {size} {color} {shape} that {move}")
_GRAVITY_PHRASES = (", under gravity", ", with gravity on", ", as gravity pulls")
_OCCLUDER_PHRASES = (", behind a grey bar", ", passing behind a grey bar", ", with a grey bar in front")

_SIZE_OF = {word: size for size, words_ in _SIZE_WORDS.items() for word in words_}
_HORIZONTAL = {"left": -1, "leftward": -1, "right": 1, "rightward": 1}
_VERTICAL = {"up": -1, "upward": -1, "upper": -1, "top": -1, "down": 1, "downward": 1, "lower": 1, "bottom": 1}
_MOTION_OF = {(int(np.sign(dx)), int(np.sign(dy))): name for name, (dx, dy) in MOTIONS.items()}
_ADJECTIVES = {"a", "an", "the", "one", *COLORS, *_SIZE_OF}


# A word: letters/digits, optionally joined by inner hyphens or apostrophes ("up-left", "it's").
# Everything else (punctuation, spaces) separates words.
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def split_words(text: str) -> list[str]:
    """The lower-case words of `text`, punctuation stripped: "A red, up-left!" -> ["a", "red", "up-left"].

    The one word splitter of minisora: the tokenizer (minisora.text), `vocabulary`, `parse_caption` and
    the evaluator all cut text here, so a word the model cannot read is one the evaluator does not score.
    """
    return _WORD.findall(text.lower())


def _pick(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def motion_phrase(motion: str, rng: np.random.Generator | None = None, gravity: bool = False) -> str:
    """A verb phrase for a motion: "moves to the left", "bounces up", "stays still" ("falls" under gravity)."""
    if motion == "still":
        return _pick(_FALL if gravity else _STILL, rng)
    return f"{_pick(_VERBS, rng)} {_pick(_MOTION_WORDS[motion], rng)}"


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """Describe a scene in English; rng picks paraphrases, rng=None gives the canonical wording."""
    if scene.hits is not None:
        from . import interactions

        return interactions.hit_caption(scene, rng)
    phrases = []
    for o in scene.objects:
        moving = "not moving" if o.motion == "still" else f"moving {_pick(_MOTION_WORDS[o.motion], rng)}"
        phrases.append(_pick(_TEMPLATES, rng).format(
            size=_pick(_SIZE_WORDS[o.size], rng), color=o.color, shape=o.shape,
            move=motion_phrase(o.motion, rng, scene.gravity), moving=moving))
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    if scene.gravity:
        text += _pick(_GRAVITY_PHRASES, rng)
    if scene.occluder is not None:
        text += _pick(_OCCLUDER_PHRASES, rng)
    return text


def vocabulary() -> list[str]:
    """Every word `caption` can produce, sorted (build a tokenizer from it)."""
    texts = [*SHAPES, *COLORS, *_SIZE_OF, *_VERBS, *_STILL, *_FALL, *_GRAVITY_PHRASES, *_OCCLUDER_PHRASES,
             *(p for ps in _MOTION_WORDS.values() for p in ps), "and", "moving", "not moving",
             *(re.sub(r"\{\w+\}", " ", t) for t in _TEMPLATES), *_interaction_phrases()]
    return sorted({w for t in texts for w in split_words(t)})


def _interaction_phrases() -> tuple[str, ...]:
    from . import interactions

    return interactions.PHRASES


def parse_caption(text: str) -> Scene:
    """Read shapes, colours, sizes, motions, gravity and the occluder back out of a caption or prompt.

    Each shape word starts an object (colour words do when there is no shape word); the object's
    attributes are the words from its run of "a small red" just before it up to the next object's run.
    Missing attributes get defaults: shape circle, an unused colour, size medium, motion still. Objects
    are spread along the middle row at speed 0.08; `render(text, seed=...)` re-places them at random.
    """
    if not isinstance(text, str):
        raise ValueError(f"a caption must be a string, got {type(text).__name__}")
    toks = split_words(text)
    anchors = [i for i, w in enumerate(toks) if w in SHAPES] or [i for i, w in enumerate(toks) if w in COLORS]
    if not anchors:
        raise ValueError(f"no shape or colour word in {text!r}; name at least one shape {SHAPES} or colour "
                         f"{tuple(COLORS)}, e.g. 'a small red circle moves to the left'")
    starts = []
    for k, a in enumerate(anchors):
        s, floor = a, (anchors[k - 1] + 1 if k else 0)
        while s > floor and toks[s - 1] in _ADJECTIVES:
            s -= 1
        starts.append(s)
    found = []
    for a, s, e in zip(anchors, [0] + starts[1:], starts[1:] + [len(toks)]):
        clause = toks[s:e]
        found.append(dict(
            shape=toks[a] if toks[a] in SHAPES else "circle",
            color=next((w for w in clause if w in COLORS), None),
            size=next((_SIZE_OF[w] for w in clause if w in _SIZE_OF), "medium"),
            motion=_MOTION_OF[(next((_HORIZONTAL[w] for w in clause if w in _HORIZONTAL), 0),
                               next((_VERTICAL[w] for w in clause if w in _VERTICAL), 0))]))
    spare = iter(c for c in COLORS if c not in {f["color"] for f in found})
    objects = [ObjectSpec(**{**f, "color": f["color"] or next(spare, "red")}, x=(k + 1) / (len(found) + 1))
               for k, f in enumerate(found)]
    from .interactions import parse_hits  # "a red circle hits a blue square": cause and effect

    hits = parse_hits(toks, anchors)
    return Scene(objects, gravity="gravity" in toks,
                 occluder=(0.4, 0.6) if {"bar", "occluder"} & set(toks) else None,
                 collisions=hits is not None or bool({"collide", "collisions", "collision"} & set(toks)), hits=hits)


# ------------------------------------------------------------------------------------- physics + drawing
def _occluder_coverage(scene: Scene, width: int) -> np.ndarray | None:
    """Fraction of each pixel column the bar covers: (W,) float32, or None without an occluder."""
    if scene.occluder is None:
        return None
    x0, x1 = scene.occluder[0] * width, scene.occluder[1] * width
    left = np.arange(width, dtype=np.float32)
    return np.clip(np.minimum(left + 1, x1) - np.maximum(left, x0), 0, 1)


def _simulate(scene: Scene, num_frames: int, height: int, width: int) -> tuple[dict, np.ndarray]:
    """Ground truth (see `simulate`) plus each object's signed distance (K, T, H, W) for drawing."""
    if min(num_frames, height, width) < 1:
        raise ValueError(f"num_frames, height and width must be >= 1, got {(num_frames, height, width)}")
    if not scene.objects:
        raise ValueError("a scene needs at least one object")
    objs, T, H, W = scene.objects, num_frames, height, width
    radius = np.array([SIZES[o.size] for o in objs]) * min(H, W)
    extent = np.array([physics.extent(o.shape, r) for o, r in zip(objs, radius)])  # (K, 4)
    start = np.array([[o.x * W, o.y * H] for o in objs])
    velocity = np.array([MOTIONS[o.motion] for o in objs]) * np.array([[o.speed * W] for o in objs])
    if scene.collisions:  # objects bounce off each other too (minisora.interactions)
        from .interactions import collide

        pos, vel, contacts = collide(start, velocity, extent[:, :2], np.array([W, H]) - extent[:, 2:], radius, T,
                                     GRAVITY * H if scene.gravity else 0.0)
    else:
        pos, vel = physics.bounce(start, velocity, extent[:, :2], np.array([W, H]) - extent[:, 2:], T,
                                  GRAVITY * H if scene.gravity else 0.0)
        contacts = np.zeros((0, 12), dtype=np.float32)
    xs, ys = np.arange(W, dtype=np.float32) + 0.5, np.arange(H, dtype=np.float32) + 0.5
    centres = pos.astype(np.float32)
    sd = np.empty((len(objs), T, H, W), dtype=np.float32)
    for k, o in enumerate(objs):
        dx, dy = xs - centres[:, k, 0, None, None], ys[:, None] - centres[:, k, 1, None, None]  # (T,1,W), (T,H,1)
        sd[k] = physics.signed_distance(o.shape, dx, dy, radius[k])
    # A pixel belongs to the frontmost thing covering it: the bar, then objects from last to first.
    coverage = _occluder_coverage(scene, W)
    hidden = np.zeros((T, H, W), dtype=bool)
    if coverage is not None:
        hidden |= coverage >= 0.5
    mask = np.empty((T, len(objs), H, W), dtype=bool)
    for k in reversed(range(len(objs))):
        inside = sd[k] <= 0
        mask[:, k] = inside & ~hidden
        hidden |= inside
    truth = {
        "position": centres, "velocity": vel.astype(np.float32), "mask": mask, "visible": mask.any(axis=(2, 3)),
        **{name: np.array([_INDEX[name][getattr(o, name)] for o in objs], dtype=np.int64) for name in _INDEX},
        "rgb": np.array([COLORS[o.color] for o in objs], dtype=np.uint8),
        "radius": radius.astype(np.float32),
        "gravity": np.array(scene.gravity),
        "occluder": np.array(scene.occluder or (0.0, 0.0), dtype=np.float32) * W,
        "contacts": contacts,
    }
    return truth, sd


def simulate(scene: Scene, num_frames: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Ground truth of a scene, K = number of objects, T = num_frames:

    position (T, K, 2) float32   centre (x, y) in pixels (a shape's centroid)
    velocity (T, K, 2) float32   pixels per frame the object is about to move from frame t
    mask     (T, K, H, W) bool   pixels where the object is visible (not behind later objects or the bar)
    visible  (T, K) bool         any visible pixel at all
    shape, color, size, motion (K,) int64   indices into SHAPES, list(COLORS), list(SIZES), list(MOTIONS)
    rgb (K, 3) uint8, radius (K,) float32 pixels, gravity () bool,
    occluder (2,) float32        the bar's x-range in pixels ((0, 0) when there is none)
    contacts (N, 12) float32     one row per contact between objects: frame, i, j, time, velocities of i and
                                 j before and after (interactions.CONTACT_FIELDS); none without collisions
    """
    return _simulate(scene, num_frames, height, width)[0]


def render(caption_or_scene: str | Scene, num_frames: int = 9, height: int = 32, width: int = 32,
           seed: int = 0) -> WorldVideo:
    """Draw a scene, or a caption parsed into one, as a video (T, H, W, 3) uint8 with its ground truth.

    For a caption the words choose the objects and `seed` chooses where they start and how fast they
    go; a Scene is drawn exactly as given. Edges are anti-aliased: a pixel takes the share of an
    object's colour that the object covers of it (estimated from the signed distance).
    """
    if isinstance(caption_or_scene, str):
        text, rng = caption_or_scene, np.random.default_rng(seed)
        scene = parse_caption(text)
        draws = rng.random((len(scene.objects) + 1, 3))
        scene.objects = [dataclasses.replace(o, **_start(u)) for o, u in zip(scene.objects, draws)]
        if scene.occluder is not None:
            centre = 0.35 + 0.3 * draws[-1, 0]
            scene.occluder = (float(centre - 0.12), float(centre + 0.12))
        if scene.hits is not None:  # the striker on course for its target
            from .interactions import place_hit

            place_hit(scene, rng)
    elif isinstance(caption_or_scene, Scene):
        scene = caption_or_scene
        text = caption(scene)
    else:
        raise TypeError(f"render takes a caption (str) or a Scene, got {type(caption_or_scene).__name__}")
    truth, sd = _simulate(scene, num_frames, height, width)
    # Channels first, so every numpy operation runs over long contiguous (T, H, W) blocks.
    video = np.empty((3, num_frames, height, width), dtype=np.float32)
    video[:] = np.array(BACKGROUND, dtype=np.float32)[:, None, None, None]
    for k, o in enumerate(scene.objects):
        alpha = np.clip(0.5 - sd[k], 0, 1)  # share of each pixel the object covers
        video += alpha * (np.array(COLORS[o.color], dtype=np.float32)[:, None, None, None] - video)
    coverage = _occluder_coverage(scene, width)
    if coverage is not None:  # the bar is drawn last, in front of everything
        video += coverage * (np.array(OCCLUDER_COLOR, dtype=np.float32)[:, None, None, None] - video)
    video += 0.5  # round to nearest when casting
    video = np.moveaxis(video, 0, -1).astype(np.uint8, order="C")
    return WorldVideo(video, truth, scene, text)
