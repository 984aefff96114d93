"""The laws of the shapes world, in pixels: how things move, and where a shape is.

    bounce(start, velocity, lo, hi, T, gravity)   K points moving in straight lines (falling, with
                                                  gravity), bouncing elastically off the walls
    extent(shape, r)                              how far a shape reaches from its centre
    signed_distance(shape, dx, dy, r)             distance to its edge from every pixel, negative inside

Pure numpy on arrays of pixels, no scenes or captions: minisora.world builds its videos from these, and
the moving digits of minisora.data bounce with the same law. The four shapes (circle, square, diamond,
triangle) all have the area of a circle of radius r, so "small" and "large" mean the same amount of
colour whatever the shape.
"""

from __future__ import annotations

import numpy as np

# Every shape has the area of a circle of its radius r, so "small"/"large" mean the same amount of colour.
_SQUARE = np.pi**0.5 / 2  # half side
_DIAMOND = (np.pi / 2) ** 0.5  # half diagonal
_TRIANGLE = (4 * np.pi / 3**1.5) ** 0.5  # distance from centroid to a vertex
_COS30 = 3**0.5 / 2


def bounce(start: np.ndarray, velocity: np.ndarray, lo: np.ndarray, hi: np.ndarray, num_frames: int,
           gravity: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Move K points at constant velocity (plus gravity on y), bouncing elastically inside [lo, hi].

    start, velocity, lo, hi: (K, 2) pixels (x, y) and pixels per frame; gravity: pixels per frame**2.
    Returns positions (T, K, 2) and velocities (T, K, 2), where velocity[t] is the step the point is
    about to take from frame t (a wall hit during that step reverses it for the next frame).
    """
    hi = np.maximum(hi, lo)  # an object larger than the frame stays centred on its lower bound
    p = np.clip(np.asarray(start, dtype=np.float64), lo, hi)  # objects start fully inside the frame
    v = np.array(velocity, dtype=np.float64)
    if gravity == 0:
        # Without gravity, bouncing between two walls is a triangle wave: unfold the walls into a
        # straight line of period 2L, walk along it, and fold back. All frames at once, no loop.
        span = np.maximum(hi - lo, 1e-9)
        walked = np.mod(p - lo + v * np.arange(num_frames)[:, None, None], 2 * span)
        positions = lo + span - np.abs(walked - span)
        return positions, np.where(walked < span, v, -v)
    positions, velocities = np.empty((2, num_frames) + p.shape)
    for t in range(num_frames):
        positions[t] = p
        v[:, 1] += gravity
        velocities[t] = v
        p = p + v
        # An elastic wall mirrors the overshoot back inside and flips the velocity component.
        over, under = p > hi, p < lo
        p = np.clip(np.where(over, 2 * hi - p, np.where(under, 2 * lo - p, p)), lo, hi)
        v = np.where(over | under, -v, v)
    return positions, velocities


def extent(shape: str, r: float) -> tuple[float, float, float, float]:
    """How far a shape reaches from its centre: (left, up, right, down) in pixels."""
    if shape == "triangle":  # pointing up, centred on its centroid: the apex is further than the base
        R = r * _TRIANGLE
        return R * _COS30, R, R * _COS30, R / 2
    half = {"circle": r, "square": r * _SQUARE, "diamond": r * _DIAMOND}[shape]
    return half, half, half, half


def signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Distance in pixels from each pixel centre to the shape's edge, negative inside.

    dx (T, 1, W) and dy (T, H, 1) are pixel centres minus the object's centre; the result is (T, H, W).
    Exact near the edges, which is all anti-aliasing and masks need.
    """
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - r * _SQUARE
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - r * _DIAMOND) * 0.5**0.5
    # triangle: inside all three edges, each at the inradius R/2 from the centroid
    edges = np.maximum(np.maximum(dy, _COS30 * dx - 0.5 * dy), -_COS30 * dx - 0.5 * dy)
    return edges - r * _TRIANGLE / 2
