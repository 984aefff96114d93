"""Measuring interactions: does a generated "a red circle hits a blue square" show a collision, and cause and effect?

Two metrics join those of minisora.evaluate, scored only when the prompt asks for a hit (world.parse_caption
finds "A hits / pushes / bumps into / strikes B": scene.hits = (a, b)). Both read the two objects' tracks:
their centroids (interpolated over frames where one is not seen) and their radii (every world shape has the
area of a circle of radius r, so r = sqrt(area / pi) of a clear view). The gap between them is the distance
of the centroids minus the two radii: 0 when the world's disks touch, negative when they overlap.

    collision  the two approach, touch (the smallest gap is about 0), do not pass through each other (the
               line from one to the other never turns around near the contact, and they never overlap by
               more than a third of their radii), and leave: the gap grows after the contact at least half
               as fast as it shrank before it (an elastic collision reflects the relative velocity along the line
               of centres). Product of touched, not-passed-through and reflected, in [0, 1].
    causality  the struck object does not move before the contact (still in every frame before the step
               that holds it), moves after it (by 1.5 px within two frames), and away from the striker
               (cosine of its motion with the line of centres). Product, in [0, 1]; 0 without a contact.

Validated in tests/test_causality.py: the world's own hits score >= 0.9 on both; the same scene with
collisions off (the striker passes through), a target that sets off before it is hit, and one that never
moves (interactions.counterfactual) each score <= 0.3 on the metric they break.
"""

from __future__ import annotations

import numpy as np

METRICS = ("collision", "causality")
STILL_PX = 0.5  # a still object's centroid moves less than this (world: 0; generated: a little wobble)


def centres(trk: list) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) centroids of a track, interpolated (and held at the ends) where it was not seen; (T,) seen."""
    T = len(trk)
    seen = np.array([b is not None for b in trk])
    if not seen.any():
        return np.full((T, 2), np.nan), seen
    frames = np.flatnonzero(seen)
    xy = np.array([[trk[t].x, trk[t].y] for t in frames])
    return np.stack([np.interp(np.arange(T), frames, xy[:, 0]), np.interp(np.arange(T), frames, xy[:, 1])], -1), seen


def radius(trk: list) -> float:
    """Equal-area radius of an object from its clear views (all views when it always touches something)."""
    areas = [b.area for b in trk if b is not None and not b.touching] or [b.area for b in trk if b is not None]
    return float(np.sqrt(np.median(areas) / np.pi)) if areas else 0.0


def pair(trk_a: list, trk_b: list) -> dict | None:
    """Positions, gap series and contact frame of two tracks; None when either is seen in fewer than 3 frames."""
    pa, seen_a = centres(trk_a)
    pb, seen_b = centres(trk_b)
    if seen_a.sum() < 3 or seen_b.sum() < 3:
        return None
    reach = radius(trk_a) + radius(trk_b)
    gap = np.linalg.norm(pb - pa, axis=-1) - reach
    tolerance = 0.25 * reach + 0.5
    # The first contact: the first frame within tolerance where the gap stops shrinking (a target that
    # comes back off a wall may touch again later); the closest approach when there is none.
    near = [t for t in range(len(gap)) if gap[t] <= tolerance and (t + 1 == len(gap) or gap[t + 1] >= gap[t])]
    return {"a": pa, "b": pb, "gap": gap, "reach": reach, "contact": near[0] if near else int(np.argmin(gap)),
            "tolerance": tolerance}


def touched(p: dict) -> float:
    """1 when the smallest gap is within tolerance, falling to 0 at twice it."""
    return float(np.clip(2 - p["gap"][p["contact"]] / p["tolerance"], 0, 1))


def collision_rate(p: dict | None) -> float:
    """The collision metric of a pair (see the module docstring); 0 when the pair cannot be measured."""
    if p is None:
        return 0.0
    gap, tc, T = p["gap"], p["contact"], len(p["gap"])
    # The contact happens in the step into or out of frame tc: the steps just before and after it show
    # the gap closing and opening. Elastic: it opens as fast as it closed (we ask for half: walls and pixels).
    steps = np.diff(gap)
    before, after = steps[max(0, tc - 2):tc + 1], steps[tc:tc + 3]
    if len(before) < 1 or len(after) < 1:  # the contact at the very start or end: nothing to see
        return 0.0
    closing, opening = -float(before.min()), float(after.max())
    reflected = float(np.clip(opening / max(closing, 1e-6) / 0.5, 0, 1)) if closing > 0.25 else 0.0
    window = slice(max(0, tc - 3), min(T, tc + 4))
    line = p["b"] - p["a"]
    normal = line[window.start] / max(np.linalg.norm(line[window.start]), 1e-9)
    turned = bool((line[window] @ normal < 0).any())  # one went to the other side of the other
    overlapped = bool(gap.min() < -p["reach"] / 3)
    return touched(p) * (not turned and not overlapped) * reflected


def causality_rate(p: dict | None) -> float:
    """The causality metric of a pair, b the struck object (see the module docstring)."""
    if p is None:
        return 0.0
    pb, tc, T = p["b"], p["contact"], len(p["gap"])
    moved_by = np.linalg.norm(pb - pb[0], axis=-1)
    quiet = moved_by[1:max(1, tc)]  # frames before the step that may hold the contact
    still_before = float(np.mean(quiet <= STILL_PX)) if len(quiet) else 1.0
    start = max(0, tc - 1)
    later = [k for k in range(tc, min(T, tc + 3)) if np.linalg.norm(pb[k] - pb[start]) >= 1.5] or [min(T - 1, tc + 2)]
    push = pb[later[0]] - pb[start]  # the first clear move after the contact
    moved = float(np.clip(np.linalg.norm(push) / 1.5, 0, 1))
    line = pb[start] - p["a"][start]
    cosine = float(push @ line) / max(float(np.linalg.norm(push) * np.linalg.norm(line)), 1e-9)
    away = float(np.clip(cosine / 0.7, 0, 1))
    return touched(p) * still_before * moved * away


def hit_metrics(tracks: list, hits: tuple[int, int] | None) -> tuple[dict[str, float], tuple[int, ...]]:
    """{"collision", "causality"} for the prompt's hit (a, b) and the frames around its contact (for the
    evaluator's smoothness and launch velocities, which a hit changes); ({}, ()) when no hit was asked."""
    if hits is None:
        return {}, ()
    p = pair(tracks[hits[0]], tracks[hits[1]])
    impacts = () if p is None else (max(0, p["contact"] - 1), p["contact"])
    return {"collision": collision_rate(p), "causality": causality_rate(p)}, impacts
