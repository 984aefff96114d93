"""Reference answers for notebooks/00_tour_and_setup.ipynb (tests/test_exercises.py swaps each section in)."""

# Exercise 00.1  tokens of a video
def count_tokens(num_frames, height, width):
    """The number of DiT tokens (spacetime patches) of a num_frames x height x width video."""
    time_factor, space_factor = model.vae.temporal_factor, model.vae.spatial_factor
    pt, ph, pw = model.config.dit.patch_size
    latent_frames = 1 + (num_frames - 1) // time_factor  # frame 0 alone, then one latent frame per group
    return (latent_frames // pt) * (height // space_factor // ph) * (width // space_factor // pw)

# Exercise 00.2  the overall score
def overall_score(metrics):
    """The harmonic mean of the values of the dict `metrics`; 0 if any of them is 0."""
    values = list(metrics.values())
    if min(values) <= 0:
        return 0.0
    return len(values) / sum(1 / v for v in values)
