"""References used only by tests and benchmarks (the PyTorch notebook path); never imported by the core."""
