"""Reference answers for notebook 03's exercises; tests/test_exercises.py puts each section into its cell."""

# Exercise 03.1  number of tokens of a video
def token_count(frames, height, width, tf, sf, patch_size):
    pt, ph, pw = patch_size
    latent_t, latent_h, latent_w = 1 + (frames - 1) // tf, height // sf, width // sf  # the VAE's latent
    return (latent_t // pt) * (latent_h // ph) * (latent_w // pw)  # patches along each axis, multiplied


# Exercise 03.2  the 3D position of a token
def token_position(n, grid):
    nt, nh, nw = grid
    per_slot = nh * nw  # tokens in one time slot
    return (n // per_slot, (n % per_slot) // nw, n % nw)
