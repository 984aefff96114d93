"""The world-physics evaluator: does a generated video obey its prompt and the laws of its world?

Judging generated video usually means squinting at it, or a score such as FVD that says nothing about
physics. The shapes world (minisora.world) changes that. Its objects have colours from a small palette,
a few shapes, and move in straight lines that bounce off the walls (and bend under gravity), so we can
*measure* a generated video the way a physicist measures an experiment, and check it against the prompt:

    pixels --nearest palette colour--> colour map (T, H, W)
           --connected regions-------> blobs: an object seen in one frame (area, centroid, box, outline)
           --one blob per frame------> a track for each object the prompt asked for
           --compare with the prompt and with the world's laws--> metrics in [0, 1]

    presence    the object of the asked colour is in each frame (or plausibly hidden behind something)
    shape       its outline is the asked shape
    direction   it moves the asked way: cosine of its velocity with the asked direction; "still" = no motion
    speed       it moves about as fast as world objects do (world.SPEED_RANGE), roughly
    permanence  each frame shows as many objects as asked for: nothing vanishes, nothing pops up
    rigidity    its area stays the same: nothing shrinks, grows or melts
    smoothness  no jerks, no teleports: velocity only changes by gravity and at bounces
    bounce      when it reaches a wall it comes back
    collision   "A hits B": the two touch without passing through each other and leave (minisora.causality)
    causality   "A hits B": B is still until the contact, then moves away from A
    overall     the harmonic mean of the metrics that apply

Only what the prompt says is scored: no shape word, no "shape"; no motion words, no "direction" or
"speed". A metric with nothing to measure is left out too: "bounce" when no wall is reached, "smoothness"
when the object is never seen whole in three frames in a row. (A metric that cannot be measured because
the object is mostly missing scores 0 instead.) So every key of the result applies, and "overall" is over
them. Objects are told apart by colour, as in the world; a prompt that repeats a colour is scored less
reliably. Real world videos score near 1 and noise near 0: tests/test_evaluate.py checks the evaluator so.

    score(video (T, H, W, 3) uint8, "a red circle moves to the left") -> {"presence": 1.0, ..., "overall": 0.97}
    evaluate_model(model, prompts, samples=4) -> results (JSON-ready);  format_table(results) -> str
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from . import causality, world

# The colour map holds indices into COLOR_NAMES: 0 background, 1 the grey occluder, 2.. object colours.
COLOR_NAMES = ("background", "occluder", *world.COLORS)
PALETTE = np.array([world.BACKGROUND, world.OCCLUDER_COLOR, *world.COLORS.values()], dtype=np.float32)
FIRST_OBJECT = 2
# A pixel further than this (RGB distance) from every palette colour is no colour at all: noise, or a blend
# at an anti-aliased edge. World colours are >= 117 apart, so the nearest one is never ambiguous.
MAX_COLOR_DISTANCE = 90.0
METRICS = ("presence", "shape", "direction", "speed", "permanence", "rigidity", "smoothness", "bounce")
METRICS += causality.METRICS  # "collision", "causality": only for "A hits B" prompts (see minisora.causality)
# parse_caption reads "still" by default; these words say it, so only then is "still" scored.
STILL_WORDS = {"still", "not", "stationary", "static", "falls", "drops"}
Track = list  # T entries: the Blob of the object in that frame, or None where it was not seen


# ------------------------------------------------------------------------------------------ finding objects
def as_video(video) -> np.ndarray:
    """(T, H, W, 3) uint8 as `MiniSora.generate` returns it; a torch (3, T, H, W) in [-1, 1] is converted."""
    if isinstance(video, torch.Tensor):
        if video.dim() != 4 or video.shape[0] != 3:
            raise ValueError(f"a torch video must be (3, T, H, W) in [-1, 1], got shape {tuple(video.shape)}")
        video = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video.permute(1, 2, 3, 0).cpu().numpy()
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"a video must be a (T, H, W, 3) uint8 array as MiniSora.generate returns, got "
                         f"{video.dtype} {video.shape}; a torch (3, T, H, W) tensor in [-1, 1] works too")
    return video


@functools.lru_cache(maxsize=1)
def _color_table() -> np.ndarray:
    """Nearest palette colour for RGB in steps of 4: (64, 64, 64) int8, -1 = none; computed once."""
    levels = np.arange(64, dtype=np.float32) * 4 + 1.5  # the middle of each step
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1)  # (64, 64, 64, 3)
    distance = np.linalg.norm(rgb[..., None, :] - PALETTE, axis=-1)  # (64, 64, 64, P)
    return np.where(distance.min(-1) <= MAX_COLOR_DISTANCE, distance.argmin(-1), -1).astype(np.int8)


def color_map(video: np.ndarray) -> np.ndarray:
    """Nearest palette colour of every pixel: (T, H, W, 3) uint8 -> (T, H, W) int64 index into COLOR_NAMES.

    -1 = no palette colour. A lookup table instead of T*H*W*P distances: 30x faster, and rounding RGB to
    steps of 4 changes nothing that matters.
    """
    q = video >> 2
    return _color_table()[q[..., 0], q[..., 1], q[..., 2]].astype(np.int64)


def label_regions(colors: np.ndarray) -> np.ndarray:
    """Connected regions of one object colour in one frame: (T, H, W) colour map -> (T, H, W) labels, 0 = none.

    Every object pixel starts with its own label (its flat index) and repeatedly takes the smallest label
    among its four neighbours of the same colour, then the label held by the pixel its label names
    ("pointer jumping", which spreads small labels much faster). When nothing changes, all pixels of a
    region hold the index of its first pixel: a flood fill in whole-array numpy steps.
    """
    inside = colors >= FIRST_OBJECT
    none = colors.size  # the label of outside pixels: larger than any other, so `minimum` ignores it
    labels = np.where(inside, np.arange(none).reshape(colors.shape), none)
    same_x = inside[:, :, 1:] & (colors[:, :, 1:] == colors[:, :, :-1])  # pixel and its left neighbour
    same_y = inside[:, 1:, :] & (colors[:, 1:, :] == colors[:, :-1, :])  # pixel and its upper neighbour
    while True:
        new = labels.copy()
        np.minimum(new[:, :, 1:], np.where(same_x, labels[:, :, :-1], none), out=new[:, :, 1:])
        np.minimum(new[:, :, :-1], np.where(same_x, labels[:, :, 1:], none), out=new[:, :, :-1])
        np.minimum(new[:, 1:, :], np.where(same_y, labels[:, :-1, :], none), out=new[:, 1:, :])
        np.minimum(new[:, :-1, :], np.where(same_y, labels[:, 1:, :], none), out=new[:, :-1, :])
        new = np.append(new.ravel(), none)[new]
        if np.array_equal(new, labels):
            return np.where(inside, labels + 1, 0)
        labels = new


@dataclass
class Blob:
    """One connected region of one colour in one frame: an object as the camera saw it.

    x, y: centroid in pixels (pixel centres at +0.5, as in world); box: (top, left, bottom, right),
    inclusive rows and columns; at_occluder, at_object: it touches the occluder (which is always in front)
    or another object (which may be in front or behind); features: see `shape_features`.
    """

    frame: int
    color: str
    area: int
    x: float
    y: float
    box: tuple[int, int, int, int]
    at_occluder: bool
    at_object: bool
    features: np.ndarray

    @property
    def touching(self) -> bool:
        return self.at_occluder or self.at_object


def shape_features(mask: np.ndarray) -> np.ndarray:
    """Three numbers that tell the world's shapes apart at any size, from a (h, w) bool mask cut to its box.

    fill     share of the box covered                 square 1, circle 0.79, triangle and diamond ~0.5
    corners  share of the box's four corners covered  square 1, circle ~0.55, triangle ~0.35, diamond ~0
             (the triangles outside the diamond through the box's edge midpoints)
    balance  depth of the centroid in the box         0.5 for the symmetric shapes, ~0.65 for the
             (top = 0, bottom = 1)                    triangle, whose mass sits at its base
    """
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    corner = np.abs(xs / w - 0.5) + np.abs(ys / h - 0.5) > 0.5
    corners = mask[corner].mean() if corner.any() else 1.0
    return np.array([mask.mean(), corners, ys[mask].mean() / h])


def find_objects(video: np.ndarray, min_area: float | None = None) -> tuple[list[Blob], np.ndarray]:
    """All blobs of object colours in a (T, H, W, 3) uint8 video, and its colour map (T, H, W).

    min_area (pixels) drops specks; by default 30% of the world's smallest object, so that a small object
    half hidden still counts while noise does not.
    """
    T, H, W, _ = video.shape
    if min_area is None:
        min_area = max(3.0, 0.3 * np.pi * (min(world.SIZES.values()) * min(H, W)) ** 2)
    colors = color_map(video)
    labels = label_regions(colors)
    # Pixels with a 4-neighbour of the occluder, or of another object colour.
    padded = np.pad(colors, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    neighbours = (padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:])
    at_occluder = np.any([n == 1 for n in neighbours], axis=0)
    at_object = np.any([(n >= FIRST_OBJECT) & (n != colors) for n in neighbours], axis=0)
    ids, first, area = np.unique(labels, return_index=True, return_counts=True)
    keep = (ids > 0) & (area >= min_area)
    blobs = []
    for label, index, n in zip(ids[keep], first[keep], area[keep]):
        t = index // (H * W)
        own = labels[t] == label
        rows, cols = np.nonzero(own)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        blobs.append(Blob(int(t), COLOR_NAMES[colors.flat[index]], int(n), cols.mean() + 0.5, rows.mean() + 0.5,
                          (int(top), int(left), int(bottom), int(right)), bool(at_occluder[t][own].any()),
                          bool(at_object[t][own].any()),
                          shape_features(own[top:bottom + 1, left:right + 1])))
    return blobs, colors


@functools.lru_cache(maxsize=1)
def shape_prototypes() -> dict[str, np.ndarray]:
    """The mean `shape_features` of each world shape, measured on the world's own drawings: shape -> (3,).

    Every size, at 32x32 and 64x64, at a few places (sub-pixel offsets change small outlines). Learning
    them from world.render keeps the evaluator in step with how the world draws.
    """
    rng = np.random.default_rng(0)
    prototypes = {}
    for shape in world.SHAPES:
        features = []
        for size, pixels, _ in itertools.product(world.SIZES, (32, 64), range(4)):
            spec = world.ObjectSpec(shape, "red", size, x=rng.uniform(0.3, 0.7), y=rng.uniform(0.3, 0.7))
            blobs, _ = find_objects(world.render(world.Scene([spec]), 1, pixels, pixels).video)
            features.append(blobs[0].features)
        prototypes[shape] = np.mean(features, axis=0)
    return prototypes


def classify_shape(blob: Blob) -> str:
    """The world shape whose prototype is nearest to the blob's features."""
    # balance only spans 0.5-0.66 where fill and corners span 0-1: weigh it up so that it counts as much.
    weights, prototypes = np.array([1.0, 1.0, 3.0]), shape_prototypes()
    return min(prototypes, key=lambda shape: np.linalg.norm(weights * (blob.features - prototypes[shape])))


# ------------------------------------------------------------------------------------------------- tracking
def track(blobs: list[Blob], color: str, count: int, num_frames: int) -> list[Track]:
    """Follow `count` objects of one colour: `count` tracks of `num_frames` blobs (None = not seen).

    In each frame the `count` largest blobs of the colour (smaller ones are fragments or noise) go to the
    tracks so that the total jump from each track's last position is smallest.
    """
    tracks = [[None] * num_frames for _ in range(count)]
    last = [None] * count
    for t in range(num_frames):
        here = sorted((b for b in blobs if b.frame == t and b.color == color), key=lambda b: -b.area)[:count]

        def jump(order):  # order[n] = the track that gets here[n]
            return sum(0.0 if last[k] is None else np.hypot(b.x - last[k].x, b.y - last[k].y)
                       for k, b in zip(order, here))

        for k, b in zip(min(itertools.permutations(range(count), len(here)), key=jump), here):
            tracks[k][t] = last[k] = b
    return tracks


def whole_views(trk: Track) -> list[bool]:
    """(T,) which views show all of the object, so that its outline, area and centroid are true.

    Those that touch nothing, and those that touch only other objects but are as large as the object is
    when it touches nothing (90% of that median area or more): it is the one in front. Never those that
    touch the occluder: it is always in front.
    """
    clear = [b.area for b in trk if b is not None and not b.touching]
    typical = np.median(clear) if clear else np.inf
    return [b is not None and not b.at_occluder and (not b.at_object or b.area >= 0.9 * typical) for b in trk]


def hidden_frames(trk: Track, colors: np.ndarray, occluder: bool) -> np.ndarray:
    """(T,) bool: frames where the object is not seen but something opaque covers the place it should be.

    That place is interpolated between the frames it was seen in, and carried on at its first/last velocity
    before/after them. Hidden if at least half of its footprint there shows an object colour, or the
    occluder's grey when the prompt asked for one (`occluder`): an object that vanishes in the open, or
    in a grey mess nobody asked for, is not hidden, and one never seen is never hidden.
    """
    T, H, W = colors.shape
    seen = [t for t, b in enumerate(trk) if b is not None]
    if not seen:
        return np.zeros(T, dtype=bool)
    frames, xy = np.arange(T), np.array([[trk[t].x, trk[t].y] for t in seen])
    where = np.stack([np.interp(frames, seen, xy[:, 0]), np.interp(frames, seen, xy[:, 1])], axis=-1)
    if len(seen) >= 2:
        first, last = (xy[1] - xy[0]) / (seen[1] - seen[0]), (xy[-1] - xy[-2]) / (seen[-1] - seen[-2])
        before, after = np.minimum(frames - seen[0], 0), np.maximum(frames - seen[-1], 0)  # frames beyond the ends
        where += before[:, None] * first + after[:, None] * last
    radius = np.sqrt(np.median([trk[t].area for t in seen]) / np.pi)
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    footprint = np.hypot(cols - where[:, 0, None, None], rows - where[:, 1, None, None]) <= radius  # (T, H, W)
    opaque = colors >= (1 if occluder else FIRST_OBJECT)
    covered = (footprint & opaque).sum(axis=(1, 2)) >= 0.5 * footprint.sum(axis=(1, 2))
    return covered & footprint.any(axis=(1, 2)) & np.array([b is None for b in trk])


def wall_contacts(trk: Track, size: tuple[int, int], asked: tuple[float, float], slack: float,
                  fastest: float) -> list[tuple[int, int, int]]:
    """Frames where the object is about to hit a wall it moves towards: [(frame, axis, side)].

    axis 0 = x, 1 = y; side -1 = left/top wall, +1 = right/bottom wall. "About to hit": the gap between
    its box and that wall is at most its last step (capped at `fastest`, the world's top speed) plus
    `slack` pixels (rounding, gravity). The same wall in the frame before is the same contact. The first
    frame the object is seen in is a contact too if it is at a wall that the asked motion `asked`
    (dx, dy) points into and its first step comes away from it: it bounced before we could see it come.
    Steps over 2 * fastest are tracking jumps (say, across the occluder), not motion.
    """
    seen = [t for t, b in enumerate(trk) if b is not None]
    contacts = []
    for t in seen:
        first = t == seen[0]
        start, end = (t, t + 1) if first else (t - 1, t)  # the step into frame t (out of it, if first)
        if start not in seen or end not in seen:
            continue
        step = (trk[end].x - trk[start].x, trk[end].y - trk[start].y)
        if np.hypot(*step) > 2 * fastest:
            continue
        top, left, bottom, right = trk[t].box
        gaps = {(0, -1): left, (0, 1): size[1] - 1 - right, (1, -1): top, (1, 1): size[0] - 1 - bottom}
        for axis in (0, 1):
            side = (1 if step[axis] > 0 else -1) * (-1 if first else 1)  # the wall it heads for (came from)
            if first and asked[axis] * side <= 0:
                continue
            reach = min(abs(step[axis]), fastest) + slack
            if abs(step[axis]) >= 0.5 and gaps[axis, side] <= reach and (t - 1, axis, side) not in contacts:
                contacts.append((t, axis, side))
    return contacts


def velocities(trk: Track, whole: list[bool], contacts: list[tuple[int, int, int]], gravity_px: float,
               stop_at_floor: bool) -> dict[int, np.ndarray]:
    """{t: velocity (2,) pixels/frame from frame t to t + 1}, for steps between two whole views.

    Steps that may hold a bounce (from a contact frame and the one after it) are left out, and the
    velocities are "unfolded": mirrored once for every earlier bounce on each axis, so that they all
    continue the motion the prompt asked for. Gravity's share, gravity_px * (t + 1) down (the world adds
    gravity_px to the downward speed before every step), is taken out, so a falling object moves at
    the speed it started with. Unfolding cannot undo a bounce while falling: stop_at_floor keeps only
    steps before the first contact with the floor or ceiling.
    """
    bad = np.zeros(len(trk), dtype=bool)
    for t, axis, _ in contacts:
        bad[t:t + 2] = True
        if stop_at_floor and axis == 1:
            bad[t:] = True
    steps = {}
    for t, (a, b) in enumerate(zip(trk, trk[1:])):
        if whole[t] and whole[t + 1] and not bad[t]:
            mirror = [(-1.0) ** sum(c_axis == axis and c_t < t for c_t, c_axis, _ in contacts) for axis in (0, 1)]
            steps[t] = np.array(mirror) * np.array([b.x - a.x, b.y - a.y - gravity_px * (t + 1)])
    return steps


# -------------------------------------------------------------------------------------------------- metrics
def direction_rate(steps: dict[int, np.ndarray], motion: str, width: int) -> float | None:
    """How well the mean velocity matches the asked motion, in [0, 1]; None without steps.

    Moving: the cosine with the asked direction (0 when opposite or sideways), dividing by at least half
    the world's slowest speed so that an object that hardly moves cannot score by luck. "still": 1 for
    no motion, falling to 0 at the world's slowest speed.
    """
    if not steps:
        return None
    velocity, slowest = np.mean(list(steps.values()), axis=0), world.SPEED_RANGE[0] * width
    if motion == "still":
        return float(max(0.0, 1 - np.linalg.norm(velocity) / slowest))
    along = max(0.0, float(np.dot(velocity, world.MOTIONS[motion])))
    return along / max(float(np.linalg.norm(velocity)), 0.5 * slowest)


def speed_rate(steps: dict[int, np.ndarray], width: int) -> float | None:
    """1 when the mean speed (widths/frame) is within world.SPEED_RANGE, falling to 0 at half or twice its ends."""
    if not steps:
        return None
    speed = max(float(np.linalg.norm(np.mean(list(steps.values()), axis=0))) / width, 1e-6)
    return max(0.0, 1 - abs(float(np.log2(speed / np.clip(speed, *world.SPEED_RANGE)))))


def smoothness_rate(steps: dict[int, np.ndarray], tolerance: float) -> float | None:
    """Share of consecutive steps whose velocity changes by at most `tolerance` pixels/frame.

    Steps are free of gravity and bounces, so a world object's velocity does not change at all: a larger
    change is a jerk or a teleport. None without two consecutive steps.
    """
    changes = [np.linalg.norm(steps[t + 1] - steps[t]) for t in steps if t + 1 in steps]
    return float(np.mean(np.array(changes) <= tolerance)) if changes else None


def bounce_rate(trk: Track, hidden: np.ndarray, contacts: list[tuple[int, int, int]]) -> float | None:
    """Share of wall contacts after which the object comes back: within 3 frames its centroid moves away
    from the wall (by a quarter pixel) from the closest point it reached.

    An object that sticks to the wall, or leaves the frame and is lost in the open, fails. (A centroid
    seen partly hidden still moves the right way, if slower.) None when no contact can be judged.
    """
    verdicts = []
    for t, axis, side in contacts:
        later = range(t, min(t + 4, len(trk)))
        if len(later) < 3:  # too close to the end to see the way back
            continue
        towards = [side * (trk[s].x, trk[s].y)[axis] for s in later if trk[s] is not None]
        lost = any(trk[s] is None and not hidden[s] for s in later)
        verdicts.append(not lost and any(p <= max(towards[:k]) - 0.25 for k, p in enumerate(towards) if k))
    return float(np.mean(verdicts)) if verdicts else None


def rigidity_rate(whole: list[Blob], tolerance: float = 1.3) -> float | None:
    """Share of whole views whose area is within a factor `tolerance` of the median area; None below 2 views.

    Pixels make a small moving shape's area wobble too: by up to 1.2x at 32x32 in 99% of world views.
    """
    if len(whole) < 2:
        return None
    area = np.array([b.area for b in whole], dtype=np.float64)
    return float(np.mean(np.abs(np.log(area / np.median(area))) <= np.log(tolerance)))


def shape_rate(whole: list[Blob], shape: str) -> float | None:
    """Share of whole views classified as the asked shape; None without whole views."""
    return float(np.mean([classify_shape(b) == shape for b in whole])) if whole else None


def permanence_rate(tracks: list[Track], hidden: list[np.ndarray], blobs: list[Blob], fastest: float) -> float:
    """Share of frames that show exactly the objects the prompt asked for, each where it just was.

    Counted: each asked object seen or hidden, plus every other blob (an object that popped up, a piece
    that split off), except that the pieces of one colour that touch something in front of them are one
    object peeking out on both sides of it. An object seen whole 2 * `fastest` pixels or more away from
    where it was seen whole the frame before is not the same object: one vanished, another appeared.
    """
    tracked = {id(b) for trk in tracks for b in trk if b is not None}
    whole, kept = [whole_views(trk) for trk in tracks], []
    for t in range(len(tracks[0])):
        count = sum(trk[t] is not None or hid[t] for trk, hid in zip(tracks, hidden))
        extra = [b for b in blobs if b.frame == t and id(b) not in tracked]
        peeking = {trk[t].color for trk in tracks if trk[t] is not None and trk[t].touching}
        count += sum(not b.touching for b in extra) + len({b.color for b in extra if b.touching} - peeking)
        jumped = any(t > 0 and w[t - 1] and w[t] and np.hypot(trk[t].x - trk[t - 1].x, trk[t].y - trk[t - 1].y)
                     >= 2 * fastest for trk, w in zip(tracks, whole))
        kept.append(count == len(tracks) and not jumped)
    return float(np.mean(kept))


# ---------------------------------------------------------------------------------------------------- score
def asked_tracks(scene: world.Scene, said: set[str], blobs: list[Blob], num_frames: int) -> list[Track]:
    """One track per object of the prompt, in the prompt's order.

    An object whose colour the prompt does not name (parse_caption made one up) takes the unnamed colour
    with the most blob pixels in the video. Objects that share a colour share its tracks in the order
    that best matches the shapes they asked for.
    """
    named = {o.color for o in scene.objects if o.color in said}
    pixels = {c: sum(b.area for b in blobs if b.color == c) for c in world.COLORS if c not in named}
    spare = iter(sorted(pixels, key=lambda c: -pixels[c]))
    color_of = [o.color if o.color in said else next(spare, "red") for o in scene.objects]
    tracks: list[Track] = [[] for _ in scene.objects]
    for color in dict.fromkeys(color_of):
        members = [k for k, c in enumerate(color_of) if c == color]
        found = track(blobs, color, len(members), num_frames)

        def agreement(order):  # clear views showing the shape asked of the object they would go to
            return sum(classify_shape(b) == scene.objects[k].shape
                       for k, n in zip(members, order) for b in found[n] if b is not None and not b.touching)

        for k, n in zip(members, max(itertools.permutations(range(len(members))), key=agreement)):
            tracks[k] = found[n]
    return tracks


def top_speed(gravity: bool, shape: tuple[int, ...]) -> float:
    """Pixels per frame that no world object exceeds in a (T, H, W, ...) video: the fastest launch speed,
    plus what gravity adds by the last frame."""
    T, H, W = shape[:3]
    return world.SPEED_RANGE[1] * W + (world.GRAVITY * H * T if gravity else 0.0)


def object_metrics(trk: Track, hidden: np.ndarray, spec: world.ObjectSpec, shape_said: bool, motion_said: bool,
                   gravity: bool, size: tuple[int, int], impacts: tuple[int, ...] = ()) -> dict[str, float]:
    """The per-object metrics that apply to one asked object, from its track (see the module docstring)."""
    height, width = size
    gravity_px = world.GRAVITY * height if gravity else 0.0
    whole = whole_views(trk)
    views = [b for b, w in zip(trk, whole) if w]
    contacts = wall_contacts(trk, size, world.MOTIONS[spec.motion] if motion_said else (0.0, 0.0),
                             slack=1.0 + gravity_px, fastest=top_speed(gravity, (len(trk), height, width)))
    contacts_all = contacts + [(t, 2, 0) for t in impacts]  # a hit by/of another object changes velocity too
    launch = velocities(trk, whole, contacts_all, gravity_px, stop_at_floor=gravity)  # what the prompt describes
    launch = {t: step for t, step in launch.items() if not impacts or t < min(impacts)}  # before a hit
    metrics = {"presence": float(np.mean([b is not None or h for b, h in zip(trk, hidden)])),
               "rigidity": rigidity_rate(views),
               # Centroids of world shapes wobble by up to ~1.4 px/frame (99%); a teleport jumps far more.
               "smoothness": smoothness_rate(velocities(trk, whole, contacts_all, gravity_px, stop_at_floor=False),
                                             tolerance=0.05 * min(height, width)),
               "bounce": bounce_rate(trk, hidden, contacts)}
    if shape_said:
        metrics["shape"] = shape_rate(views, spec.shape)
    if motion_said:
        metrics["direction"] = direction_rate(launch, spec.motion, width)
        if spec.motion != "still":
            metrics["speed"] = speed_rate(launch, width)
    # None = nothing to measure. For an object that is mostly missing that is a failure, not an excuse
    # (bounce aside: not reaching a wall is no failure).
    missing = metrics["presence"] < 0.5
    return {name: 0.0 if value is None else value for name, value in metrics.items()
            if value is not None or (missing and name != "bounce")}


def overall(metrics: dict[str, float]) -> float:
    """The harmonic mean of the metrics: like the F1 score, high only if every metric is high.

    Shuffling the frames of a world video keeps presence, shape and rigidity perfect and breaks only time:
    the arithmetic mean of its metrics is still about 0.75, the harmonic mean about 0.15 (real videos
    score about 0.97 either way). Any metric at 0 makes it 0.
    """
    values = [metrics[name] for name in METRICS if name in metrics]
    return 0.0 if min(values) <= 0 else len(values) / sum(1 / v for v in values)


def score(video, prompt: str) -> dict[str, float]:
    """Score a video against its prompt: {metric: value in [0, 1]} for the metrics that apply, and "overall".

    video: (T, H, W, 3) uint8 as `MiniSora.generate` returns it, or a torch (3, T, H, W) in [-1, 1].
    prompt: English as `world.caption` writes it. Only what it names is scored (a shape word, a colour
    word, a motion); "gravity" changes the expected motion. Per-object metrics are averaged over objects.
    """
    video = as_video(video)
    scene, said = world.parse_caption(prompt), set(world.words(prompt))
    blobs, colors = find_objects(video)
    tracks = asked_tracks(scene, said, blobs, len(video))
    hidden = [hidden_frames(trk, colors, scene.occluder is not None) for trk in tracks]
    shape_said, still_said = bool(said & set(world.SHAPES)), bool(said & STILL_WORDS)
    hit, impacts = causality.hit_metrics(tracks, scene.hits)  # "A hits B": collision and causality
    per_object = [object_metrics(trk, hid, spec, shape_said, spec.motion != "still" or still_said, scene.gravity,
                                 colors.shape[1:], impacts) for trk, hid, spec in zip(tracks, hidden, scene.objects)]
    metrics = {"permanence": permanence_rate(tracks, hidden, blobs, top_speed(scene.gravity, video.shape)), **hit}
    for name in METRICS:
        if values := [m[name] for m in per_object if name in m]:
            metrics[name] = float(np.mean(values))
    metrics = {name: metrics[name] for name in METRICS if name in metrics}  # in the usual order
    return {**metrics, "overall": overall(metrics)}


# ------------------------------------------------------------------------------------------- scoring models
def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric means of several `score` results, each over the videos where that metric applies."""
    names = (*METRICS, "overall")
    return {name: float(np.mean([s[name] for s in scores if name in s])) for name in names
            if any(name in s for s in scores)}


def evaluate_model(model, prompts: list[str], samples: int = 4, seed: int = 0, num_frames: int | None = None,
                   height: int | None = None, width: int | None = None, steps: int | None = None,
                   guidance: float | None = None, progress: bool = True) -> dict:
    """Generate `samples` videos per prompt (seeds seed, seed + 1, ...) and score each against its prompt.

    model: anything with `generate(prompt, num_frames, height, width, steps, guidance, seed, progress)`
    returning (T, H, W, 3) uint8, like MiniSora (None sizes/steps/guidance = the model's defaults).
    Returns a JSON-ready dict:
        {"prompts": [{"prompt": str, "mean": {metric: value}, "samples": [score(...) per video]}, ...],
         "mean": {metric: mean over all videos}, "videos": int, "settings": {...}}
    `python -m minisora eval --model DIR --prompts FILE --samples N --json OUT` runs this with the prompts
    of FILE (one per line) and prints `format_table(results)`.
    """
    if not prompts:
        raise ValueError("evaluate_model needs at least one prompt, e.g. ['a red circle moves to the right']")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    rows = []
    for prompt in tqdm(prompts, desc="evaluate", disable=not progress):
        scores = [score(model.generate(prompt, num_frames=num_frames, height=height, width=width, steps=steps,
                                       guidance=guidance, seed=seed + k, progress=False), prompt)
                  for k in range(samples)]
        rows.append({"prompt": prompt, "mean": mean_scores(scores), "samples": scores})
    settings = {"samples": samples, "seed": seed, "num_frames": num_frames, "height": height, "width": width,
                "steps": steps, "guidance": guidance}
    return {"prompts": rows, "mean": mean_scores([s for row in rows for s in row["samples"]]),
            "videos": len(prompts) * samples, "settings": settings}


def format_table(results: dict, width: int = 44) -> str:
    """The results of `evaluate_model` as a text table: one row per prompt and the mean; "-" = not scored."""
    names = (*METRICS, "overall")
    lines = [f"{'prompt':<{width}} " + " ".join(f"{name[:10]:>10}" for name in names)]
    rows = [(row["prompt"], row["mean"]) for row in results["prompts"]]
    for label, means in rows + [(f"mean over {results['videos']} videos", results["mean"])]:
        label = label if len(label) <= width else label[:width - 3] + "..."
        lines.append(f"{label:<{width}} " + " ".join(f"{means[n]:>10.2f}" if n in means else f"{'-':>10}"
                                                     for n in names))
    return "\n".join(lines)
