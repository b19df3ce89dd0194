"""Train one GAN variant and record it in MLflow.

``python -m src.train upsampler=transpose seed=1`` runs one job; add ``--multirun`` for a sweep.
``train(cfg)`` is the testable entry point; ``main`` only adds Hydra and error reporting.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src import schema, tracking
from src.data import DataError, load_mnist

schema.register()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out


def run_name(settings: schema.Config) -> str:
    """Run names encode the variant and the seed: ``<upsampler>-s<seed>``."""
    return f"{settings.upsampler.name}-s{settings.seed}"


def fixed_latents(settings: schema.Config) -> Any:
    """Sample-grid latents: the same for every run of every variant (own seed, not the run's)."""
    import numpy as np

    rng = np.random.default_rng(settings.tracking.sample_seed)
    shape = (settings.tracking.sample_count, settings.generator.latent_dim)
    return rng.standard_normal(shape).astype(np.float32)


def train(cfg: DictConfig, sweep_id: str | None = None) -> dict[str, Any]:
    """Validate ``cfg``, train one GAN, log it to MLflow and return its final numbers.

    Everything that can be checked cheaply (config ranges, the data file, the tracking store)
    is checked before TensorFlow is imported or a run is created.
    """
    settings = schema.to_settings(cfg)
    uri = tracking.resolve_uri(settings.tracking.uri, settings.paths.root)
    experiment_id = tracking.ensure_experiment(
        uri, settings.tracking.experiment, settings.tracking.artifact_location
    )
    output_dir = Path(settings.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = load_mnist(settings.data, settings.paths.cache_dir)

    import keras

    from src.callbacks import MlflowEpochLogger
    from src.flops import count_flops
    from src.gan import GAN
    from src.networks import build_discriminator, build_generator

    keras.utils.set_random_seed(settings.seed)
    generator = build_generator(settings.generator, settings.upsampler)
    discriminator = build_discriminator(settings.discriminator, settings.data.image_size)
    gan = GAN(generator, discriminator, seed=settings.seed)
    adam = lambda: keras.optimizers.Adam(settings.train.learning_rate, settings.train.beta_1)  # noqa: E731
    gan.compile(
        d_optimizer=adam(),
        g_optimizer=adam(),
        jit_compile=settings.train.jit_compile,
        steps_per_execution=settings.train.steps_per_execution,
    )

    commit, dirty = tracking.git_state(settings.paths.root)
    tags = {
        "upsampler": settings.upsampler.name,
        "seed": settings.seed,
        "git_commit": commit,
        "git_dirty": dirty,
        "data_sha256": data.source_sha256,
    }
    if sweep_id:
        tags["sweep_id"] = sweep_id
    run = tracking.start_run(uri, experiment_id, run_name(settings), tags)
    started = time.perf_counter()
    try:
        with _sigterm_as_interrupt():
            run.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
            run.log_metrics(
                {
                    "generator_params": generator.count_params(),
                    "discriminator_params": discriminator.count_params(),
                    "generator_flops": count_flops(generator),
                    "train_images": len(data.x_train),
                },
                step=0,
            )
            run.log_text(_summaries(generator, discriminator), "model_summary.txt")
            run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            logger = MlflowEpochLogger(
                run, fixed_latents(settings), len(data.x_train), settings.tracking.sample_zoom
            )
            logger.set_model(gan)
            logger.log_samples(step=0)
            history = gan.fit(
                data.x_train,
                batch_size=settings.train.batch_size,
                epochs=settings.train.epochs,
                shuffle=True,
                callbacks=[logger],
                verbose=_verbosity(settings.train.verbose),
            )
            seconds = time.perf_counter() - started
            _save_models(run, output_dir, generator, discriminator)
            hydra_dir = output_dir / ".hydra"
            if hydra_dir.is_dir():
                run.log_artifact(hydra_dir, "hydra")
            run.log_metrics({"train_seconds": seconds}, step=settings.train.epochs)
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    final = {key: float(values[-1]) for key, values in history.history.items()}
    return {"run_id": run.run_id, "name": run_name(settings), "seconds": seconds, **final}


def _verbosity(verbose: str) -> int:
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def _summaries(*models: Any) -> str:
    lines: list[str] = []
    for model in models:
        model.summary(print_fn=lambda line, **_: lines.append(line), line_length=100)
        lines.append("")
    return "\n".join(lines)


def _save_models(run: Any, output_dir: Path, *models: Any) -> None:
    for model, name in zip(models, ("generator", "discriminator"), strict=True):
        path = output_dir / f"{name}.keras"
        model.save(path)
        run.log_artifact(path, name)


class _sigterm_as_interrupt:
    """Within the block SIGTERM raises KeyboardInterrupt, so a killed job ends its run KILLED."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry point: one job of a run or a multirun."""
    from hydra.core.hydra_config import HydraConfig

    from src.sweep import job_sweep_id

    try:
        result = train(cfg, sweep_id=job_sweep_id(HydraConfig.get()))
    except (schema.ConfigError, DataError, tracking.TrackingError) as error:
        sys.exit(f"error: {error}")
    print(
        f"{result['name']}: d_loss={result['d_loss']:.3f} g_loss={result['g_loss']:.3f} "
        f"in {result['seconds']:.1f}s (run {result['run_id']})"
    )
    return result


if __name__ == "__main__":
    main()
