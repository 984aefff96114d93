"""Reference answers for notebooks/07_sampling_studio.ipynb (tests/test_exercises.py swaps each section in)."""

# Exercise 07.1  same seed, same video
first = model.generate(PROMPT, seed=5, steps=STEPS, progress=False)
second = model.generate(PROMPT, seed=5, steps=STEPS, progress=False)
other = model.generate(PROMPT, seed=6, steps=STEPS, progress=False)

# Exercise 07.2  the predicted clean latent
def predicted_z0(zt, t, v):
    """The clean latent z0 implied by the noisy latent zt at noise level t (a number) and the velocity v."""
    return zt - t * v  # zt - t v = (1 - t) z0 + t eps - t (eps - z0) = z0
