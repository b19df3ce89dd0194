"""Many training jobs logging to one tracking store at once, replayed, timed and read back.

Each replayed job is a light process (no TensorFlow) that logs one run the way
``src.run.training.train`` does, through ``src.tracking.store``'s ``start_run`` and ``Run``, in the
same order and at the harness's real sizes: tags, params, ``model_summary.txt`` and ``config.yaml``,
the dataset input, the description, then per epoch the losses and speed metrics (step = epoch) and a
``samples`` grid (step 0 too), the quality metrics at epoch 0, every ``eval.every_epochs`` and the
last, and at the end ``spectrum.json``/``.png``, ``generator.keras``, ``discriminator.keras``, the
generator as an MLflow logged model, Hydra's folder, ``train_seconds``, the final description,
FINISHED. What it logs is built once, before the jobs start, by a spawned process that composes the
real config and builds the real models (``prepare``): the ``.keras`` files, the logged model's
folder, the grids (the untrained generator's at step 0, real 10x10 test digits after that), the
training images as trained on.

All jobs start together (a barrier), log as fast as the store takes it (``--epoch-seconds``
paces them like training instead), and time every logging call; MLflow's HTTP client retries
5xx answers (sqlite's "database is locked" is a 503), and each retry is counted from urllib3's
own log. ``--train N`` starts N real ``python -m src.train`` runs first and lets the jobs go
once those have opened their MLflow runs, so that their logging falls inside the replay. Afterwards
every run is read back through the store: FINISHED, every step of every metric with the
values logged, every grid, every artifact, the dataset and the model. ::

    python -m src.loadtest --uri http://127.0.0.1:5000 --jobs 32 --train 2 --json out.json

prints one JSON summary (jobs, calls, calls per second, slowest call, retries, HTTP errors,
problems found) and exits 1 if any run is not FINISHED or lost anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from src.run import recording
from src.tracking import naming, store

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "logging-load"
# What a run logs, by when (src/run/callbacks.py, src/run/training.py), in MLflow's names.
EPOCH_METRICS = tuple(naming.metric(n) for n in naming.EPOCH_NAMES)
QUALITY_METRICS = tuple(
    f"{section}/{name}"
    for section in ("quality", "classes", "artifacts")
    for name in naming.SECTIONS[section]
)
FINAL_METRIC = naming.metric("train_seconds")
ARTIFACTS = (
    "config.yaml",
    "model_summary.txt",
    "spectrum.json",
    "spectrum.png",
    "generator/generator.keras",
    "discriminator/discriminator.keras",
)
TAGS = (
    "upsampler",
    "seed",
    "git_commit",
    "data_sha256",
    "generator_params",
    "train_images",
    "real.class_coverage",
    "mlflow.source.name",
    store.DESCRIPTION_TAG,
)
READERS = 8  # threads reading the runs back
RUN_ID = re.compile(r"\(run ([0-9a-f]{32})\)")


def eval_steps(epochs: int, every: int) -> list[int]:
    """The steps a run logs its quality metrics at: 0, multiples of ``every``, the last."""
    return sorted({0, epochs, *range(every, epochs + 1, every)})


def value(job: int, key: str, step: int) -> float:
    """The number a replayed job logs for ``key`` at ``step``: fixed, so reading back checks it."""
    return zlib.crc32(f"{job}/{key}/{step}".encode()) / 2**32


# --- what the jobs log, built once ----------------------------------------------------------


def prepare(folder: Path, overrides: Sequence[str]) -> None:
    """Build everything a replayed run logs into ``folder`` (``manifest.json`` and files) from
    the project's config with ``overrides``. Imports TensorFlow: run it in its own process."""
    from hydra import compose, initialize_config_dir

    from src.config import schema
    from src.data.batches import steps_per_epoch
    from src.models.gan import build_gan
    from src.run import shared_inputs

    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.output_dir={folder}", *overrides])
        with_hydra = compose("config", overrides=list(overrides), return_hydra_config=True)
    settings = schema.to_settings(cfg)
    data = shared_inputs.full_data(settings)
    images = data.x_train[: settings.data.limit]
    gan = build_gan(settings, steps_per_epoch(len(images), settings.train.batch_size))
    _save_models(folder, settings, gan.generator, gan.discriminator)
    _save_grids(folder, settings, gan.generator, data.x_test)
    import numpy as np

    np.save(folder / "train_images.npy", images)
    _save_hydra_folder(folder / ".hydra", cfg, with_hydra, overrides)
    manifest = _manifest(folder, settings, cfg, overrides, data, images, gan)
    manifest["spectrum"] = _save_spectrum(folder / "spectrum.png", settings.data.image_size)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _save_models(folder: Path, settings: Any, generator: Any, discriminator: Any) -> None:
    """The ``.keras`` files of both networks and the generator's MLflow model folder."""
    import mlflow.keras
    from mlflow.models import infer_signature

    from src.models.networks import with_keras_leaky_relu

    for model, name in ((generator, "generator"), (discriminator, "discriminator")):
        with_keras_leaky_relu(model).save(folder / f"{name}.keras")
    example = recording.latents(settings.tracking.sample_seed, 4, settings.generator.latent_dim)
    mlflow.keras.save_model(
        with_keras_leaky_relu(generator),
        str(folder / "generator-model"),
        signature=infer_signature(example, generator.predict_on_batch(example)),
        pip_requirements=recording.model_requirements(),
    )


def _save_grids(folder: Path, settings: Any, generator: Any, real: Any) -> None:
    """The sample grids, one per step: the untrained generator's at step 0, real test digits
    after that (``grids.npy``)."""
    import numpy as np

    from src.evaluation.sample_grid import sample_grid

    track, epochs = settings.tracking, settings.train.epochs
    count = track.sample_count
    untrained = generator.predict_on_batch(
        recording.latents(track.sample_seed, count, settings.generator.latent_dim)
    )
    batches = [np.asarray(untrained)] + [
        real[(step - 1) * count : step * count] for step in range(1, epochs + 1)
    ]
    grids = [
        sample_grid(batch, track.sample_zoom, track.sample_columns or None) for batch in batches
    ]
    np.save(folder / "grids.npy", np.stack(grids))


def _save_hydra_folder(
    hydra_dir: Path, cfg: Any, with_hydra: Any, overrides: Sequence[str]
) -> None:
    """The ``.hydra`` folder a Hydra run leaves: its config, Hydra's config, the overrides."""
    from omegaconf import OmegaConf

    hydra_dir.mkdir()
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (hydra_dir / "hydra.yaml").write_text(OmegaConf.to_yaml(with_hydra.hydra))
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))


def _save_spectrum(path: Path, image_size: int) -> dict[str, list[float]]:
    """A spectrum of the real size with replayed values, and its plot at ``path``."""
    from src.evaluation.plots import save, spectrum_figure

    bins = image_size // 2 + 1
    spectrum = {
        key: [value(0, key, i) for i in range(bins)]
        for key in ("frequency", "real", "generated", "relative_error")
    }
    figure = spectrum_figure(
        spectrum["frequency"],
        spectrum["real"],
        {"generated": spectrum["generated"]},
        "Azimuthally averaged power spectrum",
    )
    save(figure, path, dpi="figure")  # as MLflow's log_figure saves the run's own
    return spectrum


def _size_tags(settings: Any, gan: Any, images: int) -> dict[str, Any]:
    """The size tags a real run of ``settings`` sets, its training step's FLOPs included."""
    from src.evaluation.flops import train_flops_per_image

    gan.build_optimizers()  # the training step is traced for its FLOPs, as a real run's is
    flops = train_flops_per_image(gan, settings.train.batch_size, settings.data.image_size)
    return recording.size_tags(gan.generator, gan.discriminator, images, flops)


def _manifest(
    folder: Path,
    settings: Any,
    cfg: Any,
    overrides: Sequence[str],
    data: Any,
    images: Any,
    gan: Any,
) -> dict[str, Any]:
    """What every replayed run logs besides files: tags, params, texts, dataset, sizes."""
    from omegaconf import OmegaConf

    from src.run.description import dataset_name, run_description

    epochs = settings.train.epochs
    commit, dirty = store.git_state(ROOT)
    sizes = _size_tags(settings, gan, len(images))
    real = {
        f"real_{key}": 0.5
        for key in ("class_coverage", "class_kl", "classifier_score", "confidence", "nyquist_share")
    }
    tags = {
        "upsampler": settings.upsampler.name,
        "git_commit": commit,
        "git_dirty": dirty,
        "data_sha256": data.source_sha256,
        "checkpoint": str(folder / "checkpoint"),
        "classifier_key": "logging-load",
        "classifier_accuracy": "0.9900",
        "mlflow.source.name": "src/loadtest/tracking_load.py",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": os.environ.get("USER", "replay"),
        **recording.package_versions(),
        **naming.real_tags(real),
        **sizes,
    }
    dataset = dataset_name(settings, len(images), len(data.x_train))
    final = {"fd": 30.0, "checkerboard": 0.1, "step": epochs, "seconds": 60.0}
    return {
        "epochs": epochs,
        "every": settings.eval.every_epochs,
        "tags": {key: str(item) for key, item in tags.items()},
        "params": {
            "upsampler": settings.upsampler.name,
            "train.threads": settings.train.threads,
            **{o.partition("=")[0]: o.partition("=")[2] for o in overrides},
        },
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "summary": recording.summaries(gan.generator, gan.discriminator),
        "dataset": {"name": dataset, "digest": recording.digest(images), "source": data.source},
        # descriptions with NAME and SWEEP as placeholders: one text per job
        "describe": run_description(settings, "NAME", "SWEEP", dataset, len(images)),
        "describe_final": run_description(settings, "NAME", "SWEEP", dataset, len(images), final),
        "model_params": {
            "parameters": sizes["generator_params"],
            "flops_per_image": sizes["generator_flops"],
        },
    }


def _prepare_in_subprocess(folder: Path, overrides: Sequence[str]) -> None:
    """:func:`prepare` in a spawned process, so that this one never imports TensorFlow (the
    replayed jobs are forked from it)."""
    worker = multiprocessing.get_context("spawn").Process(
        target=prepare, args=(folder, list(overrides))
    )
    worker.start()
    worker.join()
    if worker.exitcode != 0:
        raise RuntimeError(f"preparing the replay failed (exit {worker.exitcode})")


# --- one replayed job ---------------------------------------------------------------------------


class HttpLog(logging.Handler):
    """Counts, from urllib3's debug log, the HTTP requests a process made, their answers by
    status, and the retries urllib3 made (MLflow's client retries 408, 429 and 5xx answers,
    and broken connections)."""

    REQUEST = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE|HEAD) \S+ HTTP/[\d.]+" (\d{3})')
    BROKEN = re.compile(r"after connection broken by '(\w+)")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statuses: Counter[str] = Counter()
        self.retries = 0
        self.broken: Counter[str] = Counter()  # retries after a broken connection, by error

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Incremented Retry"):  # once per retry, whatever its cause
            self.retries += 1
        elif found := self.BROKEN.search(message):
            self.broken[found.group(1)] += 1
        elif found := self.REQUEST.search(message):
            self.statuses[found.group(1)] += 1

    def attach(self) -> None:
        """Listen to urllib3's loggers (and keep their debug lines off the console)."""
        for name in ("urllib3.connectionpool", "urllib3.util.retry"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            logger.addHandler(self)


class _Failed(Exception):
    """A logging call failed for good (after MLflow's retries); the run ends FAILED."""


class Calls:
    """Times every logging call of one job; the first that raises stops the job."""

    def __init__(self) -> None:
        self.timed: list[tuple[str, float]] = []
        self.errors: list[str] = []

    def __call__(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args)
        except Exception as error:
            self.errors.append(f"{name}: {type(error).__name__}: {str(error)[:300]}")
            raise _Failed from error
        finally:
            self.timed.append((name, time.perf_counter() - started))


def replay(
    job: int,
    uri: str,
    experiment_id: str,
    load_id: str,
    folder: Path,
    epoch_seconds: float,
    calls: Calls,
) -> str | None:
    """Log one run as ``src.train`` does (see the module's docstring); returns its id."""
    import numpy as np

    from src.tracking.store import Run, start_run

    manifest = json.loads((folder / "manifest.json").read_text())
    grids = np.load(folder / "grids.npy")
    images = np.load(folder / "train_images.npy", mmap_mode="r")
    epochs, every = manifest["epochs"], manifest["every"]
    name = f"replay-{job:03d}"

    def text(key: str) -> str:
        return manifest[key].replace("NAME", name).replace("SWEEP", load_id)

    def metrics(keys: Sequence[str], step: int) -> dict[str, float]:
        return {key: value(job, key, step) for key in keys}

    tags = {**manifest["tags"], "seed": job, "sweep_id": load_id}
    run: Run = calls("start_run", start_run, uri, experiment_id, name, tags)
    try:
        calls("log_params", run.log_params, {**manifest["params"], "seed": job})
        calls("log_text", run.log_text, manifest["summary"], "model_summary.txt")
        calls("log_text", run.log_text, manifest["config"], "config.yaml")
        data = manifest["dataset"]
        calls(
            "log_dataset",
            run.log_dataset,
            images,
            data["name"],
            data["digest"],
            Path(data["source"]),
        )
        calls("describe", run.describe, text("describe"))
        calls("log_image", run.log_image, grids[0], "samples", 0)
        calls("log_metrics", run.log_metrics, metrics(QUALITY_METRICS, 0), 0)
        for epoch in range(1, epochs + 1):
            time.sleep(epoch_seconds)
            calls("log_metrics", run.log_metrics, metrics(EPOCH_METRICS, epoch), epoch)
            calls("log_image", run.log_image, grids[epoch], "samples", epoch)
            if epoch in eval_steps(epochs, every):
                calls("log_metrics", run.log_metrics, metrics(QUALITY_METRICS, epoch), epoch)
        _log_end(run, folder, manifest, calls)
        calls("log_metrics", run.log_metrics, metrics([FINAL_METRIC], epochs), epochs)
        calls("describe", run.describe, text("describe_final"))
        calls("end", run.end, "FINISHED")
    except _Failed:
        with contextlib.suppress(Exception):  # the store is what failed; the summary says so
            run.end("FAILED")
    return run.run_id


def _log_end(run: Any, folder: Path, manifest: dict, calls: Calls) -> None:
    """What a finished run logs at its end, as ``src.train`` does: the spectrum, both models,
    the generator as a logged model and Hydra's folder."""
    client = run.client
    calls("log_dict", client.log_dict, run.run_id, manifest["spectrum"], "spectrum.json")
    calls("log_artifact", run.log_artifact, folder / "spectrum.png")
    for model in ("generator", "discriminator"):
        calls("log_artifact", run.log_artifact, folder / f"{model}.keras", model)
    _log_model(run, folder / "generator-model", manifest["epochs"], manifest["model_params"], calls)
    calls("log_artifact", run.log_artifact, folder / ".hydra", "hydra")


def _log_model(run: Any, local: Path, step: int, params: dict, calls: Calls) -> None:
    """The generator as a logged model, with the calls ``Run.log_keras_model`` and
    ``mlflow.keras.log_model`` make, its folder saved beforehand (no TensorFlow here)."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    client = run.client
    experiment_id = calls("get_run", client.get_run, run.run_id).info.experiment_id
    texts = {key: str(item) for key, item in params.items()}
    logged = calls(
        "create_logged_model",
        lambda: client.create_logged_model(
            experiment_id,
            name="generator",
            source_run_id=run.run_id,
            params=texts,
            model_type="generator",
        ),
    )
    outputs = [LoggedModelOutput(logged.model_id, step)]
    calls("log_outputs", lambda: client.log_outputs(run.run_id, models=outputs))
    calls("get_logged_model", client.get_logged_model, logged.model_id)
    calls("log_model_artifacts", client.log_model_artifacts, logged.model_id, str(local))
    calls(
        "finalize_logged_model",
        client.finalize_logged_model,
        logged.model_id,
        LoggedModelStatus.READY,
    )


def _job(
    job: int,
    uri: str,
    experiment_id: str,
    load_id: str,
    folder: Path,
    epoch_seconds: float,
    barrier: Any,
    results: Path,
) -> None:
    """A forked process: wait for every job, replay one run, write what happened as JSON."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - MLflow's "View run" lines, 64 times over
    http = HttpLog()
    http.attach()
    calls = Calls()
    barrier.wait()
    started = time.time()
    run_id = None
    try:
        run_id = replay(job, uri, experiment_id, load_id, folder, epoch_seconds, calls)
    except _Failed:  # start_run itself failed
        pass
    except Exception as error:  # a bug here, not the store's: still reported
        calls.errors.append(f"replay: {type(error).__name__}: {error}")
    outcome = {
        "job": job,
        "run_id": run_id,
        "started": started,
        "ended": time.time(),
        "calls": calls.timed,
        "errors": calls.errors,
        "retries": http.retries,
        "statuses": dict(http.statuses),
        "broken": dict(http.broken),
    }
    (results / f"{job}.json").write_text(json.dumps(outcome))


# --- reading back -------------------------------------------------------------------------------


def check_run(
    client: Any, run_id: str, epochs: int, every: int, job: int | None = None
) -> list[str]:
    """What is missing or wrong in a run that ``src.train`` (or a replayed ``job``, whose
    values are known) logged with ``epochs`` and ``eval.every_epochs=every``: [] if nothing."""
    problems: list[str] = []
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        problems.append(f"status {run.info.status}")
    expected = {key: list(range(1, epochs + 1)) for key in EPOCH_METRICS}
    expected |= {key: eval_steps(epochs, every) for key in QUALITY_METRICS}
    expected[FINAL_METRIC] = [epochs]
    for key, steps in expected.items():
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        if [m.step for m in history] != steps:
            problems.append(f"{key}: steps {[m.step for m in history]}, expected {steps}")
        elif job is not None and [m.value for m in history] != [value(job, key, s) for s in steps]:
            problems.append(f"{key}: values differ from those logged")
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    for step in range(epochs + 1):
        for kind in (".png", "+compressed.webp"):
            found = [p for p in images if f"samples+step+{step}+" in p and p.endswith(kind)]
            if len(found) != 1:
                problems.append(f"samples at step {step}: {len(found)} {kind} files")
    present = {a.path for a in client.list_artifacts(run_id)}
    for folder in ("generator", "discriminator", "hydra"):
        present |= {a.path for a in client.list_artifacts(run_id, folder)}
    problems += [f"artifact {path} missing" for path in ARTIFACTS if path not in present]
    if not any(path.startswith("hydra/") for path in present):
        problems.append("artifact hydra/ missing")
    problems += [f"tag {key} missing" for key in TAGS if key not in run.data.tags]
    problems += [
        f"param {key} missing"
        for key in ("upsampler", "seed", "train.threads")
        if key not in run.data.params
    ]
    if len(run.inputs.dataset_inputs) != 1:
        problems.append(f"{len(run.inputs.dataset_inputs)} dataset inputs")
    models = run.outputs.model_outputs if run.outputs else []
    if len(models) != 1:
        problems.append(f"{len(models)} logged models")
    else:
        files = {a.path for a in client.list_logged_model_artifacts(models[0].model_id)}
        if "MLmodel" not in files:
            problems.append(f"logged model without MLmodel ({sorted(files)})")
    return problems


# --- the whole load -----------------------------------------------------------------------------


def _start_training(
    index: int, uri: str, experiment: str, folder: Path, overrides: Sequence[str]
) -> subprocess.Popen:
    """A real ``python -m src.train`` run into ``uri``, its files (and log) under ``folder``."""
    command = [
        sys.executable,
        "-m",
        "src.train",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        f"seed={index}",
        "train.verbose=2",
        f"hydra.run.dir={folder / f'train{index}'}",
        f"paths.checkpoint_dir={folder / 'ck'}",
        f"paths.reports_dir={folder / 'reports'}",
        *overrides,
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(folder / f"train{index}.log", "w") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _await_training_runs(
    uri: str,
    experiment_id: str,
    trainings: list[subprocess.Popen],
    since: float,
    timeout: float = 600,
) -> None:
    """Wait until every training run has opened its MLflow run (TensorFlow, data and judges
    loaded), so that its whole logging falls inside the replay; or until one has ended."""
    from mlflow.tracking import MlflowClient

    if not trainings:
        return
    client = MlflowClient(uri)
    query = (
        f"tags.`mlflow.source.name` = 'src/train.py' "
        f"AND attributes.start_time >= {int(since * 1000)}"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(client.search_runs([experiment_id], query)) >= len(trainings):
            return
        if any(process.poll() is not None for process in trainings):
            return  # it failed early: the read-back reports it
        time.sleep(0.5)


def _read_back(
    client: Any, experiment_id: str, load_id: str, outcomes: list[dict], manifest: dict, jobs: int
) -> list[str]:
    """What the replayed runs lost, read back through ``client``: [] if nothing."""
    problems = []
    found = client.search_runs([experiment_id], f"tags.sweep_id = '{load_id}'", max_results=5000)
    if len(found) != jobs:
        problems.append(f"{len(found)} of {jobs} replayed runs in the store")
    opened = [outcome for outcome in outcomes if outcome["run_id"] is not None]
    problems += [
        f"replay-{o['job']:03d} opened no run: {o['errors']}"
        for o in outcomes
        if o["run_id"] is None
    ]

    def check(outcome: dict) -> list[str]:
        found_wrong = check_run(
            client, outcome["run_id"], manifest["epochs"], manifest["every"], outcome["job"]
        )
        return [
            f"replay-{outcome['job']:03d}: {problem}" for problem in outcome["errors"] + found_wrong
        ]

    with ThreadPoolExecutor(READERS) as pool:  # reading back is mostly waiting for answers
        for found_wrong in pool.map(check, opened):
            problems += found_wrong
    return problems


def _check_trainings(
    client: Any, trainings: list[subprocess.Popen], folder: Path, overrides: Sequence[str]
) -> list[dict[str, Any]]:
    """Each real training run's exit status, run id and what its run lost."""
    settings = dict(override.partition("=")[::2] for override in overrides)
    epochs = int(settings.get("train.epochs", 10))
    every = int(settings.get("eval.every_epochs", 2))
    entries = []
    for index, process in enumerate(trainings):
        text = (folder / f"train{index}.log").read_text()
        run_ids = RUN_ID.findall(text)
        entry: dict[str, Any] = {"exit": process.returncode, "run_id": None, "problems": []}
        if process.returncode != 0 or not run_ids:
            entry["problems"] = [f"exit {process.returncode}: {text[-2000:]}"]
        else:
            entry["run_id"] = run_ids[-1]
            entry["problems"] = check_run(client, run_ids[-1], epochs, every)
        entries.append(entry)
    return entries


def run_load(
    uri: str,
    jobs: int,
    overrides: Sequence[str] = (),
    train: int = 0,
    train_overrides: Sequence[str] = ("train.epochs=2", "data.limit=2048"),
    epoch_seconds: float = 0.0,
    experiment: str = EXPERIMENT,
    scratch: Path | None = None,
) -> dict[str, Any]:
    """Replay ``jobs`` runs (the config with ``overrides``) at once into ``uri``, with ``train``
    real training runs (``train_overrides``) logging meanwhile; read every run back.
    Returns the summary (see ``main``); its ``problems`` list is empty when nothing was lost."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no telemetry thread to fork
    scratch = Path(scratch or tempfile.mkdtemp(prefix="logging-load-"))
    scratch.mkdir(parents=True, exist_ok=True)
    times = {"began": time.time()}
    prepared = scratch / "prepared"
    if not (prepared / "manifest.json").is_file():  # a scratch folder's runs share one preparation
        prepared.mkdir(exist_ok=True)
        _prepare_in_subprocess(prepared, overrides)
    manifest = json.loads((prepared / "manifest.json").read_text())
    load_id = uuid.uuid4().hex[:12]
    store.check_reachable(uri)
    experiment_id = store.ensure_experiment(uri, experiment, None)
    results = scratch / f"results-{load_id}"
    results.mkdir()
    replay_args = (uri, experiment_id, load_id, prepared, epoch_seconds)
    trainings, workers = _launch(
        jobs,
        replay_args,
        results,
        times,
        lambda: [
            _start_training(i, uri, experiment, results, train_overrides) for i in range(train)
        ],
    )
    outcomes, problems = _outcomes(results, workers)
    times["reading"] = time.time()
    client = MlflowClient(uri)
    # MLflow looks a logged model named like an artifact folder ("generator") up through the
    # module-level URI, whatever the client's: point it at the store read here.
    with store.fluent_uri(uri):
        problems += _read_back(client, experiment_id, load_id, outcomes, manifest, jobs)
        training = _check_trainings(client, trainings, results, train_overrides)
        finished = sum(
            client.get_run(o["run_id"]).info.status == "FINISHED" for o in outcomes if o["run_id"]
        )
    problems += [
        f"training {i}: {p}" for i, entry in enumerate(training) for p in entry["problems"]
    ]
    counts = {"runs_finished": finished, "training": training}
    return _summary(uri, jobs, epoch_seconds, manifest, outcomes, problems, times, counts)


def _launch(
    jobs: int,
    replay_args: tuple,
    results: Path,
    times: dict[str, float],
    start_trainings: Callable[[], list[subprocess.Popen]],
) -> tuple[list[subprocess.Popen], list[Any]]:
    """Fork ``jobs`` replaying processes, start the training runs, let the replay go once
    every training run is open, and wait for all of them; ``times`` gets when each phase
    began. Returns the training processes and the replaying ones."""
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(jobs + 1)
    workers = [
        fork.Process(target=_job, args=(job, *replay_args, barrier, results)) for job in range(jobs)
    ]
    for worker in workers:
        worker.start()
    times["began_training"] = time.time()
    trainings = start_trainings()
    uri, experiment_id = replay_args[:2]
    _await_training_runs(uri, experiment_id, trainings, times["began_training"])
    barrier.wait(timeout=600)  # every job is ready, every training run open: go
    times["started"] = time.time()
    for worker in workers:
        worker.join()
    times["replayed"] = time.time()
    for process in trainings:
        process.wait()
    times["ended"] = time.time()  # the last training's end
    return trainings, workers


def _outcomes(results: Path, workers: list[Any]) -> tuple[list[dict], list[str]]:
    """What each replayed job wrote about itself, and the jobs that wrote nothing."""
    outcomes, problems = [], []
    for job, worker in enumerate(workers):
        path = results / f"{job}.json"
        if path.is_file():
            outcomes.append(json.loads(path.read_text()))
        else:
            problems.append(f"job {job} ended (exit {worker.exitcode}) without a result")
    return outcomes, problems


def _summary(
    uri: str,
    jobs: int,
    epoch_seconds: float,
    manifest: dict,
    outcomes: list[dict],
    problems: list[str],
    times: dict[str, float],
    counts: dict,
) -> dict[str, Any]:
    """The load's summary (see ``main``) from the jobs' own records and the read-back."""
    timed = sorted((seconds, name) for o in outcomes for name, seconds in o["calls"])
    if not outcomes or not timed:
        return {"uri": uri, "jobs": jobs, "problems": problems or ["no job logged anything"]}
    statuses: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    for outcome in outcomes:
        statuses.update(outcome["statuses"])
        broken.update(outcome["broken"])
    active = max(o["ended"] for o in outcomes) - min(o["started"] for o in outcomes)
    requests = sum(statuses.values())
    return {
        "uri": uri,
        "jobs": jobs,
        "epochs": manifest["epochs"],
        "every": manifest["every"],
        "epoch_seconds": epoch_seconds,
        "calls": len(timed),
        "http_requests": requests,
        "replay_seconds": round(active, 2),
        "calls_per_second": round(len(timed) / active, 1),
        "requests_per_second": round(requests / active, 1),
        "median_call_seconds": round(timed[len(timed) // 2][0], 4),
        "p99_call_seconds": round(timed[int(len(timed) * 0.99)][0], 3),
        "slowest_call": {"name": timed[-1][1], "seconds": round(timed[-1][0], 2)},
        "retries": sum(o["retries"] for o in outcomes),
        "http_errors": {code: n for code, n in sorted(statuses.items()) if code >= "400"},
        "retried_connections": dict(broken),
        "failed_calls": sum(len(o["errors"]) for o in outcomes),
        **counts,
        "wall_seconds": round(times["ended"] - times["started"], 2),
        "training_opened_seconds": round(times["started"] - times["began_training"], 2),
        "prepare_seconds": round(times["began_training"] - times["began"], 2),
        "read_back_seconds": round(time.time() - times["reading"], 2),
        "replay_wall_seconds": round(times["replayed"] - times["started"], 2),
        "problems": problems,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the load, print (and optionally save) the summary; 1 if anything lost."""
    parser = argparse.ArgumentParser(
        prog="python -m src.loadtest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--uri", required=True, help="tracking URI, e.g. http://127.0.0.1:5000")
    parser.add_argument("--jobs", type=int, default=32, help="replayed runs at once (32)")
    parser.add_argument("--train", type=int, default=0, help="real training runs alongside (0)")
    parser.add_argument(
        "--epoch-seconds",
        type=float,
        default=0.0,
        help="pause before each epoch's logging (0: as fast as the store takes it)",
    )
    parser.add_argument("--experiment", default=EXPERIMENT, help=f"experiment ({EXPERIMENT})")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--scratch", type=Path, help="folder for the prepared files and logs")
    parser.add_argument("overrides", nargs="*", help="config overrides of the replayed runs")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    summary = run_load(
        args.uri,
        args.jobs,
        args.overrides,
        args.train,
        epoch_seconds=args.epoch_seconds,
        experiment=args.experiment,
        scratch=args.scratch,
    )
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if summary["problems"] else 0
