"""Running the stages end to end: the demo and the benchmarks share its stage runner."""
