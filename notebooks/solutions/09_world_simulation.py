"""Reference answers for notebooks/09_world_simulation.ipynb: each section replaces the answer cell with the
same `# Exercise` header (tests/test_exercises.py runs the notebook with them)."""

# Exercise 09.1  hide it
# The circle's centre in frame 6 and its radius, as fractions of the 32-pixel width; the bar covers the circle
# with a margin of one pixel on each side (a column counts as covered when half of it is).
x = hide_clip.truth["position"][6, 0, 0] / 32
r = hide_clip.truth["radius"][0] / 32
bar = (float(x - r - 0.03), float(x + r + 0.03))

# Exercise 09.2  count the objects
def objects_per_frame(video):
    blobs, _ = perceive.find_objects(video)
    return [sum(b.frame == t for b in blobs) for t in range(len(video))]
