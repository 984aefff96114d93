"""Reference answers for notebook 05's exercises (tests/test_exercises.py puts each section into its cell)."""

# Exercise 05.1  parameters of one block's adaLN modulation
modulation_params = D * 9 * D + 9 * D  # one Linear D -> 9D: weights plus biases

# Exercise 05.2  open only the MLP's gate
def open_mlp_gate(block):
    """Change a new MyDiTBlock in place so that it computes x + mlp(norm3(x))."""
    bias = block.modulation[1].bias  # with zero weights, the modulation's output is this bias
    dim = bias.numel() // 9
    with torch.no_grad():
        bias[8 * dim:] = 1.0  # the ninth chunk is gate_m; every shift, scale and other gate stays 0

# Exercise 05.3  tokens of a 17-frame 32x64 video
frames = 1 + (17 - 1) // model.vae.temporal_factor  # latent frames: the first, then one per time factor
height, width = 32 // model.vae.spatial_factor, 64 // model.vae.spatial_factor
pt, ph, pw = dit.cfg.patch_size
num_tokens_17x32x64 = (frames // pt) * (height // ph) * (width // pw)
