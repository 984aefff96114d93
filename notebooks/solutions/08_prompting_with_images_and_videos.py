"""Reference answers for notebooks/08_prompting_with_images_and_videos.ipynb (tests/test_exercises.py swaps each
section in)."""

# Exercise 08.1  the mask of "extend backward"
def backward_mask(num_latent_frames, k):
    """(num_latent_frames,) bool tensor: True for the given latent frames of a backward extension with k given."""
    return torch.arange(num_latent_frames) >= num_latent_frames - k  # the last k frames

# Exercise 08.2  the loop seam, by hand
def seam_ratio(video):
    """|last frame - first frame| / mean |frame i+1 - frame i| of a (T, H, W, 3) uint8 video, as mean pixel differences."""
    frames = np.asarray(video).astype(np.float32)
    seam = np.abs(frames[-1] - frames[0]).mean()
    step = np.abs(np.diff(frames, axis=0)).mean()
    return float(seam / max(step, 1e-6))
