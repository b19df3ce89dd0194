"""Keras callbacks that carry a GAN's epochs into MLflow."""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np

from src.images import sample_grid


class MlflowEpochLogger(keras.callbacks.Callback):
    """After each epoch: the epoch's losses and timing, and a sample grid, at step = epoch number.

    Epochs are numbered from 1 so that step 0 can stand for the untrained generator.
    ``mlflow.keras``'s callback is not used: it logs the compiled optimizer, which in a GAN is
    a placeholder, and it has no notion of sample grids.
    """

    def __init__(self, run: Any, latents: np.ndarray, images_per_epoch: int, zoom: int):
        super().__init__()
        self.run = run
        self.latents = latents
        self.images_per_epoch = images_per_epoch
        self.zoom = zoom
        self.started = 0.0

    def log_samples(self, step: int) -> None:
        """Draw the fixed latent batch through the generator and log the grid at ``step``."""
        images = self.model.generator.predict_on_batch(self.latents)
        self.run.log_image(sample_grid(np.asarray(images), self.zoom), key="samples", step=step)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self.started
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        metrics["epoch_seconds"] = seconds
        metrics["images_per_second"] = self.images_per_epoch / seconds
        self.run.log_metrics(metrics, step=epoch + 1)
        self.log_samples(step=epoch + 1)
