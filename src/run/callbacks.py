"""Keras callbacks that carry a GAN's epochs into MLflow."""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np

from src.evaluation.sample_grid import sample_grid
from src.run.budget import Budget
from src.run.checkpoint import Checkpoint, State
from src.tracking.naming import sectioned


def all_finite(logs: dict[str, Any] | None) -> bool:
    """True when every logged value is a finite number."""
    return all(np.isfinite(float(value)) for value in (logs or {}).values())


class MlflowEpochLogger(keras.callbacks.Callback):
    """After each epoch: the epoch's losses and timing, and a sample grid, at step = epoch number.

    Epochs are numbered from 1 so that step 0 can stand for the untrained generator.
    ``mlflow.keras``'s callback is not used: it logs the compiled optimizer, which in a GAN is
    a placeholder, and it has no notion of sample grids.
    """

    def __init__(self, run: Any, latents: np.ndarray, batch_size: int, zoom: int, columns: int = 0):
        super().__init__()
        self.run = run
        self.latents = latents
        self.batch_size = batch_size
        self.first_step = 0  # the generator optimizer's step count when the epoch began
        self.zoom = zoom
        self.columns = columns or None
        self.started = 0.0
        self.last_seconds = 0.0  # the last epoch's training time, for EpochLine

    def log_samples(self, step: int) -> None:
        """Draw the fixed latent batch through the generator and log the grid at ``step``."""
        images = self.model.generator.predict_on_batch(self.latents)
        grid = sample_grid(np.asarray(images), self.zoom, self.columns)
        self.run.log_image(grid, key="samples", step=step)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.first_step = int(self.model.g_optimizer.iterations)
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = self.last_seconds = time.perf_counter() - self.started
        # counted, not assumed: a budgeted round ends part of the way through a pass
        images = (int(self.model.g_optimizer.iterations) - self.first_step) * self.batch_size
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        metrics["epoch_seconds"] = seconds
        metrics["images_per_second"] = images / seconds
        self.run.log_metrics(sectioned(metrics), step=epoch + 1)
        self.log_samples(step=epoch + 1)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops ``fit`` at the first NaN or Inf in any logged loss or metric, and remembers where.

    Keras' ``TerminateOnNaN`` watches only a ``loss`` key, which a GAN's ``train_step`` does not
    have (it reports ``d_loss`` and ``g_loss``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.diverged: str | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.diverged is None and not all_finite(logs):
            bad = sorted(k for k, v in (logs or {}).items() if not np.isfinite(float(v)))
            self.diverged = f"non-finite {', '.join(bad)} in epoch {self.epoch}"
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the GAN's full state, and the training seconds ``meter`` has counted, after every
    epoch whose numbers are all finite."""

    def __init__(self, checkpoint: Checkpoint, run_id: str, meter: Any):
        super().__init__()
        self.checkpoint = checkpoint
        self.run_id = run_id
        self.meter = meter

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if all_finite(logs):
            state = State(run_id=self.run_id, epoch=epoch + 1, seconds=self.meter.seconds)
            self.checkpoint.save(self.model, state)


class QualityEvaluator(keras.callbacks.Callback):
    """Quality and artifact metrics (src/evaluation/metrics.py) at epoch 0, every ``every``
    epochs, and the last epoch, at step = epoch, on samples from one fixed latent batch;
    ``steps``: the generator's upsampling steps, whose checkerboards are measured."""

    def __init__(
        self,
        run: Any,
        classifier: Any,
        reference: Any,
        latents: np.ndarray,
        every: int,
        epochs: int,
        steps: int = 1,
    ):
        super().__init__()
        self.steps = steps
        self.run = run
        self.classifier = classifier
        self.reference = reference
        self.latents = latents
        self.every = every
        self.epochs = epochs
        self.latest: dict[str, float] = {}  # for EpochLine and train's result: the last evaluation

    def samples(self) -> np.ndarray:
        """The generator's images for the fixed evaluation latents."""
        return np.asarray(self.model.generator.predict(self.latents, batch_size=2000, verbose=0))

    def evaluate(self, step: int) -> dict[str, float]:
        """Compute and log every metric at ``step``; returns them."""
        from src.evaluation.metrics import evaluate

        images = self.samples()
        if not np.isfinite(images).all():
            return {}  # a diverged generator: the divergence stop reports it
        metrics = evaluate(images, self.classifier, self.reference, steps=self.steps)
        self.run.log_metrics(sectioned(metrics), step=step)
        self.latest = {"step": step, **metrics}
        return metrics

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if (done % self.every == 0 or done == self.epochs) and all_finite(logs):
            self.evaluate(step=done)

    def log_spectrum(self) -> None:
        """The final samples' radial power spectrum against real data: JSON and a plot."""
        from src.evaluation.metrics import spectra
        from src.evaluation.plots import pyplot, spectrum_figure

        data = spectra(self.samples(), self.reference)
        self.run.client.log_dict(self.run.run_id, data, "spectrum.json")
        fig = spectrum_figure(
            data["frequency"],
            data["real"],
            {"generated": data["generated"]},
            "Azimuthally averaged power spectrum",
        )
        self.run.client.log_figure(self.run.run_id, fig, "spectrum.png")
        pyplot().close(fig)


class EpochLine(keras.callbacks.Callback):
    """One line per epoch on ``stream``, prefixed with the run's name: what a sweep's job shows
    on the shared terminal while Keras' own output goes to the job's log. The time is the
    epoch's training time as ``logger`` logged it; FD shows on evaluated epochs."""

    def __init__(
        self,
        stream: Any,
        name: str,
        epochs: int,
        logger: MlflowEpochLogger,
        evaluator: QualityEvaluator,
    ):
        super().__init__()
        self.stream = stream
        self.name = name
        self.epochs = epochs
        self.logger = logger
        self.evaluator = evaluator

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Write the epoch's line (after the logger and the evaluator have run)."""
        from src.run.job_output import epoch_line

        done = epoch + 1
        evaluated = self.evaluator.latest if self.evaluator.latest.get("step") == done else {}
        self.stream.write(
            epoch_line(
                self.name, done, self.epochs, logs or {}, evaluated, self.logger.last_seconds
            )
        )


class ComputeMeter(keras.callbacks.Callback):
    """Counts what training has spent and logs it (``compute/images``, ``compute/flops``,
    ``compute/seconds``) after each round, at step = rounds done; in a FLOPs or seconds budget
    it ends each round at its share of the budget.

    Images and FLOPs come from the generator optimizer's step counter, so they survive a resume
    with the weights; seconds are training time only (no evaluation, logging or checkpoints),
    restored from the checkpoint. It checks after every compiled call (``steps_per_execution``
    batches), so a round overshoots its share by less than one call.
    """

    def __init__(
        self, run: Any, budget: Budget, batch_size: int, flops_per_image: float, seconds: float
    ):
        super().__init__()
        self.run = run
        self.budget = budget
        self.batch_size = batch_size
        self.flops_per_image = flops_per_image
        self.seconds = seconds  # training seconds of the finished rounds
        self.started = 0.0
        self.target: float | None = None

    def spent(self, seconds: float | None = None) -> dict[str, float]:
        """Images, FLOPs and seconds of training so far (``seconds``: this instant's count)."""
        images = int(self.model.g_optimizer.iterations) * self.batch_size
        return {
            "images": float(images),
            "flops": images * self.flops_per_image,
            "seconds": self.seconds if seconds is None else seconds,
        }

    def log(self, step: int) -> None:
        """Log what has been spent at ``step``."""
        self.run.log_metrics(sectioned(self.spent()), step=step)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.target = self.budget.share(epoch)
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.target is None:
            return
        now = self.seconds + time.perf_counter() - self.started
        if self.spent(now)[self.budget.unit] >= self.target:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds += time.perf_counter() - self.started
        self.log(step=epoch + 1)
