"""Benchmarks: ours and a baseline side by side, in one run, on the same inputs."""
