"""Train one GAN variant and record it in MLflow.

``python -m src.train upsampler=transpose seed=1`` runs one job; add ``--multirun`` for a sweep.
``train(cfg)`` is the testable entry point; ``main`` only adds Hydra and error reporting.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import hydra
from omegaconf import DictConfig, OmegaConf

from src import console, inputs, names, resources, schema, signals, tracking
from src.checkpoint import Checkpoint, State, run_key
from src.data import DataError
from src.descriptions import dataset_name, run_description

schema.register()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

# Errors that mean "fix the input": reported as one line, never as a traceback.
USER_ERRORS = (schema.ConfigError, DataError, tracking.TrackingError, resources.ThreadsError)
VERSIONED_PACKAGES = ("tensorflow", "keras", "mlflow", "hydra-core", "numpy")
# Config keys always logged as MLflow params, with ``upsampler`` (its name) and every key the
# command line sets: mlflow ui prints all of a run's params above its sample grid, so they are
# few (README, "Reading the results in mlflow ui"). The run's config.yaml holds the whole config.
LOGGED_PARAMS = ("seed", "train.threads")
# Keys that say where to read or record, not what is trained: never params, even when set.
NOT_PARAMS = ("paths", "tracking", "data.path", "resume", "sweep", "train.verbose")


_task_started = False  # whether Hydra got as far as calling main (its folders exist by then)


class TrainingDiverged(RuntimeError):
    """A loss or metric became NaN or Inf; the run is FAILED, its last good checkpoint kept."""


def latents(seed: int, count: int, latent_dim: int) -> Any:
    """A fixed latent batch from its own seed (not the run's): identical for every run and
    variant, so sample grids and evaluations compare generators on the same z."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)


def installed(name: str) -> tuple[str, str] | None:
    """The distribution installed for ``name`` (``tensorflow`` may be ``tensorflow-cpu``) and
    its version; None when neither is installed."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in (name, f"{name}-cpu"):
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            continue
    return None


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, for the run's tags."""
    found = {name: installed(name) for name in VERSIONED_PACKAGES}
    return {f"version.{name}": dist[1] for name, dist in found.items() if dist}


def train(
    cfg: DictConfig,
    sweep_id: str | None = None,
    progress: TextIO | None = None,
    on_run_open: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Validate ``cfg``, train one GAN, log it to MLflow and return its final numbers.

    Everything that can be checked cheaply (config ranges, output folder, tracking store, data
    file) is checked before TensorFlow is imported or a run is created. With ``resume=true``
    an interrupted run of the same config continues in its MLflow run; a finished one is skipped.
    ``progress``, when given, gets one line per epoch (a sweep job's terminal);
    ``on_run_open`` is called with the MLflow run id once the run is open, new or resumed.
    """
    settings = schema.to_settings(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    output_dir = Path(settings.paths.output_dir)
    schema.check_writable(output_dir, "hydra.run.dir (or paths.output_dir)")
    schema.check_writable(Path(settings.paths.cache_dir), "paths.cache_dir")
    uri = tracking.resolve_uri(settings.tracking.uri, settings.paths.root)
    outage = tracking.limit_outages(settings.tracking.outage_seconds)
    tracking.check_reachable(uri)
    name = names.run_name(settings)
    checkpoint = Checkpoint(Path(settings.paths.checkpoint_dir) / run_key(name, resolved))
    state = checkpoint.read() if settings.resume else None
    if state is not None and state.finished:
        print(f"{name}: already finished (run {state.run_id}); nothing to resume")
        return {"run_id": state.run_id, "name": name, "status": "SKIPPED"}
    resources.apply_threads(settings.train.threads)  # before TensorFlow runs anything
    data = inputs.full_data(settings)
    # After the data's checks: a bad data file leaves no checkpoint folder behind.
    schema.check_writable(Path(settings.paths.checkpoint_dir), "paths.checkpoint_dir")
    # Only now, with the input known good, is anything written to the tracking store.
    experiment_id = tracking.ensure_experiment(
        uri, settings.tracking.experiment, settings.tracking.artifact_location
    )
    train_images = data.x_train[: settings.data.limit]

    from src.batches import epoch_batches, steps_per_epoch
    from src.callbacks import (
        EpochCheckpoint,
        EpochLine,
        MlflowEpochLogger,
        QualityEvaluator,
        StopOnDivergence,
    )
    from src.gan import build_gan

    # Before the run's own seeding: the classifier seeds itself when it has to be trained.
    classifier, reference = inputs.judges(data, settings)

    if settings.train.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    steps = steps_per_epoch(len(train_images), settings.train.batch_size)
    gan = build_gan(settings, steps)  # seeds Python, NumPy and Keras with settings.seed
    generator, discriminator = gan.generator, gan.discriminator
    gan.build_optimizers()
    first_epoch = 0
    if state is not None:
        if state.epoch > 0:  # else it stopped before its first epoch: it starts over, in its run
            gan.load_weights(checkpoint.weights(state.epoch))
            first_epoch = state.epoch
        run = tracking.reopen_run(uri, state.run_id)
        print(f"{name}: resuming run {state.run_id} after epoch {first_epoch}")
    else:
        checkpoint.clear()
        tags = {
            **_identity_tags(settings, data, classifier, checkpoint.folder),
            **names.real_tags(reference.summary),
            **_size_tags(generator, discriminator, len(train_images)),
        }
        if sweep_id:
            tags["sweep_id"] = sweep_id
        run = tracking.start_run(uri, experiment_id, name, tags)
        checkpoint.write_state(State(run_id=run.run_id, epoch=0))
    if on_run_open is not None:
        on_run_open(run.run_id)

    dataset = dataset_name(settings, len(train_images), len(data.x_train))

    def describe(final: dict[str, Any] | None = None) -> str:
        return run_description(settings, name, sweep_id, dataset, len(train_images), final)

    started = time.perf_counter()
    latent_dim = settings.generator.latent_dim
    logger = MlflowEpochLogger(
        run,
        latents(settings.tracking.sample_seed, settings.tracking.sample_count, latent_dim),
        steps * settings.train.batch_size,
        settings.tracking.sample_zoom,
        settings.tracking.sample_columns,
    )
    stopper = StopOnDivergence()
    evaluator = QualityEvaluator(
        run,
        classifier,
        reference,
        latents(settings.eval.seed, settings.eval.samples, latent_dim),
        settings.eval.every_epochs,
        settings.train.epochs,
    )
    evaluator.set_model(gan)
    callbacks = [logger, stopper, evaluator, EpochCheckpoint(checkpoint, run.run_id)]
    if progress is not None:
        callbacks.append(EpochLine(progress, name, settings.train.epochs, logger, evaluator))
    try:
        with signals.sigterm_raises():
            if first_epoch == 0:
                _log_run_start(run, cfg, resolved, generator, discriminator)
                run.log_dataset(train_images, dataset, _digest(train_images), Path(data.source))
                run.describe(describe())
                logger.set_model(gan)
                logger.log_samples(step=0)
                evaluator.evaluate(step=0)
            history = gan.fit(
                epoch_batches(
                    train_images,
                    settings.train.batch_size,
                    settings.seed,
                    first_epoch,
                    settings.train.epochs,
                ),
                epochs=settings.train.epochs,
                initial_epoch=first_epoch,
                steps_per_epoch=steps,
                shuffle=False,  # epoch_batches already shuffles, per (seed, epoch)
                callbacks=callbacks,
                verbose=_verbosity(settings.train.verbose),
            )
            if stopper.diverged:
                raise TrainingDiverged(f"{name} diverged: {stopper.diverged}")
            seconds = time.perf_counter() - started
            evaluator.log_spectrum()
            _save_models(run, output_dir, generator, discriminator)
            _log_generator_model(run, generator, settings)
            hydra_dir = output_dir / ".hydra"
            if hydra_dir.is_dir():
                run.log_artifact(hydra_dir, "hydra")
            run.log_metrics(names.sectioned({"train_seconds": seconds}), step=settings.train.epochs)
            run.describe(describe({**evaluator.latest, "seconds": seconds}))
    except (KeyboardInterrupt, SystemExit) as error:
        # Stopped from outside: Ctrl-C, SIGTERM, or submitit's exit after it requeued a SLURM
        # job at its time limit (which also SIGTERMs it): resume=true continues the run.
        run.end("KILLED")
        if isinstance(error, SystemExit):
            raise
        done = _epochs_done(checkpoint)
        raise signals.Stopped(
            f"{name} KILLED after epoch {done}; the same command with resume=true continues it",
            error,
        ) from None
    except BaseException as error:
        if tracking.is_outage(error):
            raise _outage(run, name, uri, outage, _epochs_done(checkpoint)) from None
        run.set_tag(tracking.FAILURE_TAG, f"{type(error).__name__}: {error}"[:5000])
        run.end("FAILED")
        raise
    run.end("FINISHED")
    checkpoint.write_state(State(run_id=run.run_id, epoch=settings.train.epochs, finished=True))
    final = {key: float(values[-1]) for key, values in history.history.items()}
    quality = {key: value for key, value in evaluator.latest.items() if key != "step"}
    link = tracking.run_link(uri, experiment_id, run.run_id)
    return {"run_id": run.run_id, "name": name, "seconds": seconds, "status": "FINISHED",
            "link": link, **quality, **final}  # fmt: skip


def _epochs_done(checkpoint: Checkpoint) -> int:
    """The epochs of the run its checkpoint holds (what resume=true continues after)."""
    state = checkpoint.read()
    return state.epoch if state is not None else 0


def _outage(run: Any, name: str, uri: str, seconds: float, done: int) -> tracking.TrackingOutage:
    """The error that ends a run whose tracking server stayed away: one try, without
    retries, to mark the run FAILED, and the line that says what happened and what to do."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        run.set_tag(tracking.FAILURE_TAG, f"tracking server unreachable for over {seconds:.0f} s")
        run.end("FAILED")
        shown = "FAILED"
    except Exception:
        shown = "RUNNING until resumed"
    return tracking.TrackingOutage(
        f"{name}: the tracking server {uri} did not answer for {seconds:.0f} s "
        f"(tracking.outage_seconds); stopped after epoch {done} (its MLflow run shows {shown}), "
        "checkpoint kept: once the server is back, the same command with resume=true continues it"
    )


def _log_run_start(run: Any, cfg: Any, resolved: dict, generator: Any, disc: Any) -> None:
    """Params, summaries and the resolved config: logged once per run."""
    run.log_params(_params(tracking.flatten(resolved)))
    run.log_text(_summaries(generator, disc), "model_summary.txt")
    run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def _params(flat: dict[str, Any]) -> dict[str, Any]:
    """The run's MLflow params: ``LOGGED_PARAMS`` and every key the command line set, as
    resolved (a config group as the option chosen, ``data=mnist10``)."""
    from hydra.core.hydra_config import HydraConfig

    params = {"upsampler": flat["upsampler.name"], **{key: flat[key] for key in LOGGED_PARAMS}}
    if HydraConfig.initialized():
        for override in HydraConfig.get().overrides.task:
            key, _, typed = override.partition("=")
            key = key.lstrip("+~")
            where = any(key == k or key.startswith(k + ".") for k in NOT_PARAMS)
            if key not in params and not where:
                params[key] = flat.get(key, typed)
    return params


def _identity_tags(settings: schema.Config, data: Any, classifier: Any, folder: Path) -> dict:
    """What the run is and what it ran on: variant, seed, code, data, judge, versions; the
    source tags are the ones mlflow ui shows in its Source column."""
    import getpass

    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    commit, dirty = tracking.git_state(settings.paths.root)
    return {
        "upsampler": settings.upsampler.name,
        "seed": settings.seed,
        "git_commit": commit,
        "git_dirty": dirty,
        "data_sha256": data.source_sha256,
        "checkpoint": str(folder),
        "classifier_key": classifier.key,
        "classifier_accuracy": f"{classifier.accuracy:.4f}",
        MLFLOW_SOURCE_NAME: "src/train.py",
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_USER: getpass.getuser(),
        **({MLFLOW_GIT_COMMIT: commit} if commit != "unknown" else {}),
        **package_versions(),
    }


def _size_tags(generator: Any, discriminator: Any, images: int) -> dict[str, int]:
    """Parameter counts, the generator's FLOPs per image and the training images."""
    from src.flops import count_flops

    sizes = (generator.count_params(), discriminator.count_params(), count_flops(generator))
    return dict(zip(names.SIZE_TAGS, (*sizes, images), strict=True))


def _digest(images: Any) -> str:
    """SHA-256 of the training images as trained on (after downscaling and ``data.limit``)."""
    import hashlib

    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def _log_generator_model(run: Any, generator: Any, settings: schema.Config) -> None:
    """The generator as an MLflow model, with its size attached."""
    from src.flops import count_flops
    from src.networks import portable

    example = latents(settings.tracking.sample_seed, 4, settings.generator.latent_dim)
    found = [installed(name) for name in ("keras", "tensorflow")]
    requirements = [f"{dist}=={version}" for dist, version in filter(None, found)]
    params = {"parameters": generator.count_params(), "flops_per_image": count_flops(generator)}
    run.log_keras_model(portable(generator), "generator", example, settings.train.epochs,
                        params, requirements)  # fmt: skip


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
    from src.networks import portable

    output_dir.mkdir(parents=True, exist_ok=True)  # Hydra made it; a direct train(cfg) may not
    for model, name in zip(models, ("generator", "discriminator"), strict=True):
        path = output_dir / f"{name}.keras"
        portable(model).save(path)  # loadable by any Keras, without this project's code
        run.log_artifact(path, name)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry point: one job of a run or a multirun."""
    from hydra.core.hydra_config import HydraConfig

    from src.sweep import job_sweep_id

    global _task_started
    _task_started = True
    hydra_cfg = HydraConfig.get()
    sweep_id = job_sweep_id(hydra_cfg)
    if sweep_id is None:
        return _single_run(cfg)
    return _sweep_job(cfg, sweep_id, hydra_cfg)


def _single_run(cfg: DictConfig) -> dict[str, Any]:
    """A run on its own: bad input and divergence end it with one line, Keras' progress shows."""
    try:
        result = train(cfg)
    except (*USER_ERRORS, TrainingDiverged) as error:
        sys.exit(f"error: {error}")
    if result["status"] == "FINISHED":
        print(
            f"{result['name']}: d_loss={result['d_loss']:.3f} g_loss={result['g_loss']:.3f} "
            f"in {result['seconds']:.1f}s (run {result['run_id']})"
        )
        if result["link"]:
            print(f"{result['name']}: charts and samples at {result['link']} (make ui serves it)")
    return result


def _sweep_job(cfg: DictConfig, sweep_id: str, hydra_cfg: Any) -> dict[str, Any]:
    """A job of a multirun: its output goes to ``job.log`` in its folder; the terminal gets a
    line per epoch and one when it ends. A job that fails is reported and the sweep goes on (its
    MLflow run is FAILED; the sweep's exit status says so at the end)."""
    from src.progress import Progress
    from src.sweep import JOB_LOG

    progress = Progress(hydra_cfg.sweep.dir)
    job = int(hydra_cfg.job.num)
    log = Path(hydra_cfg.runtime.output_dir) / JOB_LOG
    with console.job_output(log) as terminal:
        name = f"job {job}"
        try:
            name = names.run_name(schema.to_settings(cfg))
            result = train(
                cfg,
                sweep_id=sweep_id,
                progress=terminal.out,
                on_run_open=lambda run_id: progress.opened(job, name, run_id),
            )
        except Exception as error:
            traceback.print_exc()  # the whole story for the job's log; the terminal gets a line
            result = {"name": name, "status": "FAILED", "error": schema.one_line(error)}
        counter = progress.finish(job, name, result["status"])
        terminal.out.write(console.job_line(result, counter, log))
    return result


def cli() -> None:
    """``main`` with bad input (a wrong type, an unknown key or option, any error Hydra meets
    while composing the config) on one line, and interrupts as one line and their exit status."""
    from hydra.core.hydra_config import HydraConfig

    from src import sweep

    os.environ["HYDRA_FULL_ERROR"] = "1"  # let them reach us instead of Hydra's multi-line report
    try:
        main()
    except KeyboardInterrupt as error:
        # Ctrl-C or SIGTERM: the runs are KILLED (by train, or here for workers the launcher
        # killed first); one line instead of the traceback.
        stopped = str(error) if isinstance(error, signals.Stopped) else None
        print(
            sweep.end_interrupted_sweep() or stopped or "interrupted before any run started",
            file=sys.stderr,
        )
        sys.exit(signals.exit_status(error))
    except Exception as error:
        if isinstance(error, OSError) and error.filename and not _task_started:
            # Hydra creating the run's folder (hydra.run.dir) before the task starts
            sys.exit(f"error: cannot create {error.filename} ({error.strerror}); set hydra.run.dir")
        if HydraConfig.initialized() or sweep.started():
            raise  # from a job or the sweep: a bug, whose traceback is needed
        from hydra.errors import HydraException

        # From composing the config, so from the input. Hydra's own errors say which; others
        # (OmegaConf failing on an override Hydra let through) need the context.
        context = "" if isinstance(error, HydraException) else "cannot compose the config: "
        sys.exit(f"error: {context}{schema.one_line(error)}")


if __name__ == "__main__":
    cli()
