"""Tools, not the harness: `make bench` (``python -m src.bench``), the harness's speed
against a plain Keras GAN. Nothing in the harness imports this package."""
