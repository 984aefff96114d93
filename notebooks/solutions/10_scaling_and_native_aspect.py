"""Reference answers for notebooks/10_scaling_and_native_aspect.ipynb: each section replaces the answer cell with
the same `# Exercise` header (tests/test_exercises.py runs the notebook with them)."""

# Exercise 10.1  tokens of a video
def num_tokens(num_frames, height, width):
    _, frames, rows, cols = SHIPPED.latent_shape(num_frames, height, width)  # (C, T', H', W')
    pt, ph, pw = SHIPPED.config.dit.patch_size
    return (frames // pt) * (rows // ph) * (cols // pw)

# Exercise 10.2  the square crop
def centre_crop(video):
    _, height, width, _ = video.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return video[:, top:top + side, left:left + side]
