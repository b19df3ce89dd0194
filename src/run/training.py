"""One training run, in named stages: check the job (:func:`checked_job`), build the GAN, open
its MLflow run (new or resumed), fit it with the callbacks that record each epoch, and record
its end. ``train(cfg)`` is a plain function; ``src/train.py`` adds Hydra and error reporting.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig, OmegaConf

from src.config import resources, schema
from src.core import messages, signals
from src.data.mnist import DataError
from src.run import recording, shared_inputs
from src.run.budget import Budget, budget_of
from src.run.checkpoint import Checkpoint, State, run_key
from src.run.description import dataset_name, run_description
from src.tracking import naming, store

schema.register()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

# Errors that mean "fix the input": reported as one line, never as a traceback.
USER_ERRORS = (schema.ConfigError, DataError, store.TrackingError, resources.ThreadsError)


class TrainingDiverged(RuntimeError):
    """A loss or metric became NaN or Inf; the run is FAILED, its last good checkpoint kept."""


@dataclass
class Job:
    """One run's settings and where it is recorded, checked before TensorFlow starts."""

    cfg: DictConfig
    settings: schema.Config
    resolved: dict[str, Any]
    name: str
    uri: str
    outage_seconds: float
    checkpoint: Checkpoint
    state: State | None  # the checkpoint's, when resume=true found one


@dataclass
class Loop:
    """The callbacks of one run's ``fit``: what each epoch logs, evaluates and saves."""

    logger: Any
    stopper: Any
    evaluator: Any
    meter: Any  # src.run.callbacks.ComputeMeter: the compute spent, and the budget's stops
    callbacks: list[Any]


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
    job = checked_job(cfg)
    if job.state is not None and job.state.finished:
        messages.say(f"{job.name}: already finished (run {job.state.run_id}); nothing to resume")
        return {"run_id": job.state.run_id, "name": job.name, "status": "SKIPPED"}
    settings = job.settings
    resources.apply_threads(settings.train.threads)  # before TensorFlow runs anything
    data = shared_inputs.full_data(settings)
    # After the data's checks: a bad data file leaves no checkpoint folder behind.
    schema.check_writable(Path(settings.paths.checkpoint_dir), "paths.checkpoint_dir")
    # Only now, with the input known good, is anything written to the tracking store.
    tracking = settings.tracking
    experiment_id = store.ensure_experiment(
        job.uri, tracking.experiment, tracking.artifact_location, tracking.lock_seconds
    )
    images = shared_inputs.training_images(data, settings)
    # Before the run's own seeding: the classifier seeds itself when it has to be trained.
    classifier, reference = shared_inputs.classifier_and_reference(data, settings)
    gan, steps, flops_per_image = _build(settings, len(images))
    tags = partial(
        _new_run_tags, job, data, classifier, reference, gan, len(images), flops_per_image
    )
    run, first_epoch = _open_run(job, gan, experiment_id, sweep_id, tags)
    if on_run_open is not None:
        on_run_open(run.run_id)
    dataset = dataset_name(settings, len(images), len(data.x_train))
    describe = partial(run_description, settings, job.name, sweep_id, dataset, len(images))
    loop = _loop(job, run, gan, flops_per_image, classifier, reference, progress)
    started = time.perf_counter()
    with ended_run(run, job):
        if first_epoch == 0:
            recording.log_run_start(run, cfg, job.resolved, gan.generator, gan.discriminator)
            run.log_dataset(images, dataset, recording.digest(images), Path(data.source))
            run.describe(describe())
            loop.logger.log_samples(step=0)
            loop.meter.log(step=0)
            loop.evaluator.evaluate(step=0)
        history = _fit(gan, images, steps, first_epoch, job, loop)
        seconds = time.perf_counter() - started
        _record_end(run, job, gan, loop, seconds)
        run.describe(describe({**loop.evaluator.latest, "seconds": seconds}))
    losses = history.history if history is not None else {}  # None: no round was left to run
    return _finished(job, run.run_id, experiment_id, seconds, losses, loop)


def _finished(
    job: Job, run_id: str, experiment_id: str, seconds: float, history: dict, loop: Loop
) -> dict[str, Any]:
    """What a finished run returns: its identity and link, its last losses and its last
    quality metrics."""
    final = {key: float(values[-1]) for key, values in history.items()}
    quality = {key: value for key, value in loop.evaluator.latest.items() if key != "step"}
    link = store.run_link(job.uri, experiment_id, run_id)
    identity = {"run_id": run_id, "name": job.name, "seconds": seconds, "link": link}
    return {**identity, "status": "FINISHED", **quality, **final}


def checked_job(cfg: DictConfig) -> Job:
    """The run's settings, name, store and checkpoint, with every check that needs neither
    TensorFlow nor the data: config ranges, writable folders, a reachable tracking store."""
    settings = schema.to_settings(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    schema.check_writable(Path(settings.paths.output_dir), "hydra.run.dir (or paths.output_dir)")
    schema.check_writable(Path(settings.paths.cache_dir), "paths.cache_dir")
    uri = store.resolve_uri(settings.tracking.uri, settings.paths.root)
    outage_seconds = store.limit_outages(settings.tracking.outage_seconds)
    store.check_reachable(uri)
    name = naming.run_name(settings)
    # by what is trained, not by a search's trial number: a trial asked again resumes it
    key = run_key(naming.config_name(settings), resolved)
    checkpoint = Checkpoint(Path(settings.paths.checkpoint_dir) / key)
    state = checkpoint.read() if settings.resume else None
    return Job(cfg, settings, resolved, name, uri, outage_seconds, checkpoint, state)


def _build(settings: schema.Config, images: int) -> tuple[Any, int, float]:
    """The seeded GAN with both optimizers built (a checkpoint restores their state only then),
    the steps of an epoch and the training FLOPs per image."""
    from src.data.batches import steps_per_epoch
    from src.evaluation.flops import train_flops_per_image
    from src.models.gan import build_gan

    if settings.train.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    steps = steps_per_epoch(images, settings.train.batch_size)
    gan = build_gan(settings, steps)  # seeds Python, NumPy and Keras with settings.seed
    gan.build_optimizers()
    flops = train_flops_per_image(gan, settings.train.batch_size, settings.data.image_size)
    return gan, steps, flops


def _open_run(
    job: Job, gan: Any, experiment_id: str, sweep_id: str | None, new_tags: Callable[[], dict]
) -> tuple[Any, int]:
    """The MLflow run and the epoch training starts after: the checkpoint's run and epoch when
    resuming (its weights loaded), else a new run with its tags and a checkpoint naming it."""
    state = job.state
    if state is not None:
        first_epoch = state.epoch  # 0: stopped before its first epoch; starts over, in its run
        if first_epoch > 0:
            gan.load_weights(job.checkpoint.weights(first_epoch))
        run = store.reopen_run(job.uri, state.run_id)
        messages.say(f"{job.name}: resuming run {state.run_id} after epoch {first_epoch}")
        return run, first_epoch
    job.checkpoint.clear()
    tags = new_tags()
    if sweep_id:
        tags["sweep_id"] = sweep_id
    run = store.start_run(job.uri, experiment_id, job.name, tags)
    job.checkpoint.write_state(State(run_id=run.run_id, epoch=0))
    return run, 0


def _new_run_tags(
    job: Job,
    data: Any,
    classifier: Any,
    reference: Any,
    gan: Any,
    images: int,
    flops_per_image: float,
) -> dict[str, Any]:
    """A new run's tags: what it is and ran on, what real data scores, its size and budget."""
    budget = budget_of(job.settings)
    return {
        **recording.identity_tags(job.settings, data, classifier, job.checkpoint.folder),
        **naming.real_tags(reference.summary),
        **recording.size_tags(gan.generator, gan.discriminator, images, flops_per_image),
        "budget": f"{budget.amount:g} {budget.unit}",
        "eval_split": shared_inputs.eval_split(job.settings),
        **_trial_tags(job.settings),
    }


def _trial_tags(settings: schema.Config) -> dict[str, Any]:
    """A search trial's run nests under its search's run in mlflow ui (MLflow's convention
    for hyperparameter searches) and carries its trial number."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tune = settings.tune
    if tune.trial is None:
        return {}
    return {MLFLOW_PARENT_RUN_ID: tune.parent_run, naming.TRIAL_TAG: tune.trial}


def _loop(
    job: Job,
    run: Any,
    gan: Any,
    flops_per_image: float,
    classifier: Any,
    reference: Any,
    progress: TextIO | None,
) -> Loop:
    """The run's callbacks: the compute meter first (so that its seconds leave out the others'
    work), MLflow logging, divergence stop, quality evaluation, checkpoints, and the sweep
    terminal's epoch line when ``progress`` is given."""
    from src.run.callbacks import (
        ComputeMeter,
        EpochCheckpoint,
        EpochLine,
        MlflowEpochLogger,
        QualityEvaluator,
        StopOnDivergence,
    )

    settings, track = job.settings, job.settings.tracking
    budget = budget_of(settings)
    latent_dim = settings.generator.latent_dim
    seconds = job.state.seconds if job.state is not None else 0.0
    meter = ComputeMeter(run, budget, settings.train.batch_size, flops_per_image, seconds)
    logger = MlflowEpochLogger(
        run,
        recording.latents(track.sample_seed, track.sample_count, latent_dim),
        settings.train.batch_size,
        track.sample_zoom,
        track.sample_columns,
    )
    evaluator = QualityEvaluator(
        run,
        classifier,
        reference,
        recording.latents(settings.eval.seed, settings.eval.samples, latent_dim),
        settings.eval.every_epochs if budget.unit == "epochs" else 1,
        budget.rounds,
        settings.generator.steps,
    )
    for callback in (meter, logger, evaluator):
        callback.set_model(gan)
    stopper = StopOnDivergence()
    checkpoint = EpochCheckpoint(job.checkpoint, run.run_id, meter)
    callbacks = [meter, logger, stopper, evaluator, checkpoint]
    if progress is not None:
        callbacks.append(EpochLine(progress, job.name, budget.rounds, logger, evaluator))
    return Loop(logger, stopper, evaluator, meter, callbacks)


def _fit(gan: Any, images: Any, steps: int, first_epoch: int, job: Job, loop: Loop) -> Any:
    """Train from ``first_epoch`` to the end of the budget; a diverged run raises."""
    budget = budget_of(job.settings)
    if budget.unit == "epochs":
        history = _fit_epochs(gan, images, steps, first_epoch, job, loop)
    else:
        history = _fit_rounds(gan, images, budget, first_epoch, job, loop)
    if loop.stopper.diverged:
        raise TrainingDiverged(f"{job.name} diverged: {loop.stopper.diverged}")
    return history


def _fit_epochs(gan: Any, images: Any, steps: int, first_epoch: int, job: Job, loop: Loop) -> Any:
    """Train from epoch ``first_epoch`` to ``train.epochs`` in one ``fit``."""
    from src.data.batches import epoch_batches

    settings, train = job.settings, job.settings.train
    return gan.fit(
        epoch_batches(images, train.batch_size, settings.seed, first_epoch, train.epochs),
        epochs=train.epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        shuffle=False,  # epoch_batches already shuffles, per (seed, epoch)
        callbacks=loop.callbacks,
        verbose=_verbosity(train.verbose),
    )


def _fit_rounds(
    gan: Any, images: Any, budget: Budget, first_round: int, job: Job, loop: Loop
) -> Any:
    """Train a FLOPs or seconds budget round by round: one ``fit`` per round, on the batch
    stream from where the last round stopped, each ended by the meter at its share."""
    from src.data.batches import ENDLESS_EPOCHS, batches_from

    settings, train = job.settings, job.settings.train
    history = None
    for index in range(first_round, budget.rounds):
        done = int(gan.g_optimizer.iterations)
        history = gan.fit(
            batches_from(images, train.batch_size, settings.seed, done),
            epochs=index + 1,
            initial_epoch=index,
            steps_per_epoch=ENDLESS_EPOCHS,  # the meter ends the round
            shuffle=False,
            callbacks=loop.callbacks,
            verbose=_verbosity(train.verbose),
        )
        if loop.stopper.diverged:
            break
    return history


def _record_end(run: Any, job: Job, gan: Any, loop: Loop, seconds: float) -> None:
    """What a finished run adds: its spectrum, models, Hydra's folder and its training time."""
    output_dir = Path(job.settings.paths.output_dir)
    loop.evaluator.log_spectrum()
    recording.save_models(run, output_dir, gan.generator, gan.discriminator)
    recording.log_generator_model(run, gan.generator, job.settings)
    hydra_dir = output_dir / ".hydra"
    if hydra_dir.is_dir():
        run.log_artifact(hydra_dir, "hydra")
    step = budget_of(job.settings).rounds
    run.log_metrics(naming.sectioned({"train_seconds": seconds}), step=step)


@contextmanager
def ended_run(run: Any, job: Job) -> Iterator[None]:
    """The block trains the run; however it leaves, the run's MLflow status says how. Stopped
    from outside (Ctrl-C, SIGTERM, submitit's exit after requeuing a SLURM job): KILLED, and
    resume=true continues it. A tracking server away longer than ``tracking.outage_seconds``:
    one line, the checkpoint kept. Any other error: FAILED with its reason. Else FINISHED, and
    the checkpoint says so (resume=true skips it)."""
    try:
        with signals.sigterm_raises():
            yield
    except (KeyboardInterrupt, SystemExit) as error:
        run.end("KILLED")
        if isinstance(error, SystemExit):
            raise
        done = _recorded(job.checkpoint).epoch
        raise signals.Stopped(
            f"{job.name} KILLED after epoch {done}; the same command with resume=true continues it",
            error,
        ) from None
    except BaseException as error:
        if store.is_outage(error):
            done = _recorded(job.checkpoint).epoch
            raise _outage(run, job.name, job.uri, job.outage_seconds, done) from None
        run.set_tag(store.FAILURE_TAG, f"{type(error).__name__}: {error}"[:5000])
        run.end("FAILED")
        raise
    run.end("FINISHED")
    rounds, seconds = budget_of(job.settings).rounds, _recorded(job.checkpoint).seconds
    job.checkpoint.write_state(State(run.run_id, rounds, finished=True, seconds=seconds))


def _recorded(checkpoint: Checkpoint) -> State:
    """What the run's checkpoint records: the epochs (rounds) resume=true continues after and
    the training seconds spent by then; nothing done yet when there is no checkpoint."""
    return checkpoint.read() or State(run_id="", epoch=0)


def _outage(run: Any, name: str, uri: str, seconds: float, done: int) -> store.TrackingOutage:
    """The error that ends a run whose tracking server stayed away: one try, without
    retries, to mark the run FAILED, and the line that says what happened and what to do."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        run.set_tag(store.FAILURE_TAG, f"tracking server unreachable for over {seconds:.0f} s")
        run.end("FAILED")
        shown = "FAILED"
    except Exception:
        shown = "RUNNING until resumed"
    return store.TrackingOutage(
        f"{name}: the tracking server {uri} did not answer for {seconds:.0f} s "
        f"(tracking.outage_seconds); stopped after epoch {done} (its MLflow run shows {shown}), "
        "checkpoint kept: once the server is back, the same command with resume=true continues it"
    )


def _verbosity(verbose: str) -> int:
    """Keras' ``verbose`` for ``train.verbose``: ``auto`` is a progress bar on a terminal and
    one line per epoch otherwise (a log file)."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)
