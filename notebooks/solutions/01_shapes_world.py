"""Reference answers for notebooks/01_shapes_world.ipynb (tests/test_exercises.py swaps each section in)."""

# Exercise 01.1  a bounce, by hand
def bounce_1d(x0, v, lo, hi, num_frames):
    """The positions of the point in frames 0 .. num_frames - 1 (a list of floats; the first is x0)."""
    x, positions = float(x0), []
    for _ in range(num_frames):
        positions.append(x)
        x += v
        if x > hi:  # mirror the overshoot back inside, and turn round
            x, v = 2 * hi - x, -v
        elif x < lo:
            x, v = 2 * lo - x, -v
    return positions

# Exercise 01.2  the motion word of a velocity
def motion_word(vx, vy):
    """The key of world.MOTIONS closest in direction to the velocity (vx, vy); "still" for no motion."""
    if np.hypot(vx, vy) < 1e-9:
        return "still"
    moving = [m for m in world.MOTIONS if m != "still"]
    return max(moving, key=lambda m: np.dot(world.MOTIONS[m], (vx, vy)))  # the largest cosine (unit vectors)
