"""Perception: what the evaluator sees in a video of the shapes world, from pixels to moving objects.

The world (minisora.world) draws objects in a few saturated colours on a dark background, so finding
them needs no learned detector, only a few array operations:

    pixels (T, H, W, 3) --nearest palette colour--> colour map (T, H, W)            color_map
                        --connected regions-------> blobs: an object in one frame  find_objects
                        --its outline-------------> one of the world's shapes      classify_shape
                        --one blob per frame------> a track per object             track
                        --centroid steps----------> velocities, wall contacts      velocities, wall_contacts

A blob that touches the occluder or another object may be only part of it (`whole_views` says which
views show all of it); a frame where an object is missing because something covers it is `hidden`.
minisora.evaluate turns tracks into scores; nothing here knows about prompts.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from . import world

# The colour map holds indices into COLOR_NAMES: 0 background, 1 the grey occluder, 2.. object colours.
COLOR_NAMES = ("background", "occluder", *world.COLORS)
PALETTE = np.array([world.BACKGROUND, world.OCCLUDER_COLOR, *world.COLORS.values()], dtype=np.float32)
FIRST_OBJECT = 2
# A pixel further than this (RGB distance) from every palette colour is no colour at all: noise, or a blend
# at an anti-aliased edge. World colours are >= 117 apart, so the nearest one is never ambiguous.
MAX_COLOR_DISTANCE = 90.0
Track = list  # T entries: the Blob of the object in that frame, or None where it was not seen


# ------------------------------------------------------------------------------------------ finding objects
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
