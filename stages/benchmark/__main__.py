"""Pretraining throughput: `python -m stages.benchmark --help`."""

from stages.benchmark.throughput import main

main()
