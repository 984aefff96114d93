# Reference answers for notebooks/04_attention_kernel.ipynb: each section replaces the answer cell with
# the same header line (tests/test_exercises.py swaps them in and requires every check to say right).

# Exercise 04.1  memory of the score table against the fused kernel's output
n_large = tokens[3]
d_large = get_preset("large").dit.dim // get_preset("large").dit.heads  # channels per head
score_bytes = 4 * n_large * n_large   # float32 N x N scores of one head
kernel_bytes = 4 * n_large * d_large + 4 * n_large  # float32 (N, d) output plus N lse values of one head
print(f"{score_bytes / 2**20:.0f} MiB of scores against {kernel_bytes / 2**20:.1f} MiB: "
      f"{score_bytes / kernel_bytes:.0f}x less")

# Exercise 04.2  merge two tiles' (max, sum)
def merge(m_a, l_a, m_b, l_b):
    """(max, sum of exp(s - max)) of tiles A and B -> the same pair for A and B together."""
    m = torch.maximum(m_a, m_b)
    return m, l_a * torch.exp(m_a - m) + l_b * torch.exp(m_b - m)
