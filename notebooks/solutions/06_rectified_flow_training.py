"""Reference answers for notebook 06's exercises (tests/test_exercises.py puts each section into its cell)."""

# Exercise 06.1  zt at t = 0.25
zt_quarter = (1 - 0.25) * x0_show[0] + 0.25 * eps_show[0]  # a quarter of the way from the data to the noise

# Exercise 06.2  network evaluations of Euler and Heun
def network_calls(sampler, steps):
    """How many times flow.sample(..., steps=steps, sampler=sampler) calls its velocity function."""
    return steps if sampler == "euler" else 2 * steps  # Heun measures a second slope at the end of every step

# Exercise 06.3  t = 0.5 after the time shift
s, t = 3.0, 0.5
shifted_half = s * t / (1 + (s - 1) * t)  # 0.75: the middle step sits at higher noise
