"""The training images: MNIST from a local file, downscaled and cached, and their batches."""
