"""Benchmarks of the training step and the data path (`python -m stages.benchmark`); no stage imports them."""
