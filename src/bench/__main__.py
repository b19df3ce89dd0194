"""``python -m src.bench`` (``make bench``, ``make bench-scaling``): the harness against a plain
Keras GAN; see :mod:`src.bench.benchmark`."""

from src.bench.benchmark import main

main()
