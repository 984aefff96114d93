"""Reference answers for notebook 02's exercises; tests/test_exercises.py puts each section into its cell."""

# Exercise 02.1  latent shape from the VAE's factors
def latent_shape(frames, height, width, channels, tf, sf):
    # frame 0 is a latent frame of its own; every further tf frames make one more
    return (channels, 1 + (frames - 1) // tf, height // sf, width // sf)


# Exercise 02.2  receptive field in time of a causal stack
def time_receptive_field(num_layers, kernel_size):
    # each layer looks kernel_size - 1 frames further back, on top of the current frame
    return num_layers * (kernel_size - 1) + 1
