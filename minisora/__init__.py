"""minisora: a small, teachable, working Sora."""
