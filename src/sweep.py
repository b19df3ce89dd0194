"""Hydra callback for multiruns: check and prepare everything once before the jobs start,
count them as they finish, and summarise and report at the end.

The sweep folder holds the sweep's shared state, so that jobs in other processes (joblib
workers, submitit, SLURM) can take part: ``sweep_id.txt`` (the id every job tags its run
with) and ``progress.jsonl`` (a line per finished job, and the job count on its first line).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import console, resources, tracking

SWEEP_ID_FILE = "sweep_id.txt"
PROGRESS_FILE = "progress.jsonl"
JOB_LOG = "job.log"  # each job's full output (Keras, TensorFlow, tracebacks), in its job folder
WORKERS_LOG = "workers.log"  # the joblib workers' output while they warm up, in the sweep folder
REPORT_TAG = "report"  # set on report runs, which share the sweep_id tag with training runs
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"

_active: SweepCallback | None = None  # the sweep this process drives, for an interrupted end


def job_sweep_id(hydra_cfg: Any) -> str | None:
    """The sweep id of a multirun job (written by :class:`SweepCallback`), ``None`` for a run."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    marker = Path(hydra_cfg.sweep.dir) / SWEEP_ID_FILE
    return marker.read_text().strip() if marker.is_file() else Path(hydra_cfg.sweep.dir).name


class Progress:
    """Jobs done out of the sweep's total, shared through ``progress.jsonl`` in the sweep folder.

    The first line records the job count and the start time; each finished job appends one
    line under an exclusive lock, so concurrent jobs each get their own count.
    """

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / PROGRESS_FILE

    def start(self, total: int) -> None:
        """Begin counting a sweep of ``total`` jobs (a re-used folder starts again)."""
        self.path.write_text(json.dumps({"total": total, "started": time.time()}) + "\n")

    def finish(self, name: str, status: str) -> str:
        """Record a finished job; returns ``[done/total, about N min left]`` for its line."""
        try:
            with open(self.path, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.write(json.dumps({"name": name, "status": status}) + "\n")
                handle.flush()
                handle.seek(0)
                header, *jobs = [json.loads(line) for line in handle if line.strip()]
        except (OSError, ValueError):  # no counter (a sweep folder made by another tool)
            return ""
        done, total = len(jobs), header["total"]
        if done >= total:
            return f"[{done}/{total}]"
        left = (time.time() - header["started"]) / done * (total - done)
        return f"[{done}/{total}, about {_duration(left)} left]"

    def jobs(self) -> list[dict[str, str]]:
        """The finished jobs recorded so far (name and status)."""
        try:
            return [json.loads(line) for line in self.path.read_text().splitlines()[1:]]
        except (OSError, ValueError):
            return []


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, in launch order, as Hydra's basic sweeper will split them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [str(item) for item in config.hydra.overrides.task]
    parsed = OverridesParser.create().parse_overrides(arguments)
    # The sweeper's own splitting (a private module of hydra-core 1.3, pinned), so the jobs
    # counted and prepared here are exactly the ones it launches.
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def job_settings(config: DictConfig, config_name: str | None, overrides: list[str]) -> Any:
    """One job's validated settings, as the job will resolve them (raises
    ``src.schema.ConfigError`` on a bad value)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from src import schema

    # The job's defaults depend on its launcher (train.threads): resolve them as the job will,
    # against the multirun's Hydra config, then put back what was there (as `--cfg` does).
    instance = HydraConfig.instance()
    previous = instance.cfg
    instance.set_config(config)
    try:
        cfg = compose(config_name or "config", [*overrides, "paths.output_dir=."])
        return schema.to_settings(cfg)
    finally:
        instance.cfg = previous
        OmegaConf.set_readonly(config.hydra, None)


def in_process(launcher: Any) -> bool:
    """Whether the launcher runs the jobs in this process (one after another)."""
    if launcher.get("_target_") == BASIC_LAUNCHER:
        return True
    return launcher.get("n_jobs") is not None and resources.joblib_workers(launcher.n_jobs) == 1


def is_joblib(launcher: Any) -> bool:
    """Whether the launcher is Hydra's joblib launcher (jobs in reusable worker processes)."""
    return "hydra_joblib_launcher" in str(launcher.get("_target_", ""))


def prepare_inputs(settings: Any) -> list[str]:
    """Build what is not cached yet of one data version's shared inputs; their names."""
    from src import inputs

    return [name for name, cached in inputs.prepare(settings).items() if not cached]


def warm_worker(settings: Any | None, threads: int, log: str) -> list[str]:
    """In a joblib worker, before the jobs: give TensorFlow the jobs' threads, import what a
    job imports, and build one data version's shared inputs when ``settings`` is given. Output
    (TensorFlow's start-up lines) goes to ``log``."""
    with console.job_output(Path(log)) as terminal:
        resources.apply_threads(threads)
        import keras  # noqa: F401 - the import is the point: it takes seconds
        import mlflow  # noqa: F401

        if settings is None:
            return []
        with contextlib.redirect_stderr(terminal.err):  # notices (a classifier being trained)
            return prepare_inputs(settings)


def _prepare_in_workers(
    launcher: Any, versions: list[Any], threads: int, log: str
) -> list[list[str]]:
    """Run :func:`warm_worker` on every worker of the executor the joblib launcher will use.

    joblib keeps a loky executor alive between ``Parallel`` calls made with the same settings,
    so the same arguments as hydra-joblib-launcher's make the sweep's jobs run in these warm
    workers instead of starting TensorFlow again (about 4 s each on 2 cores, measured).
    """
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed

    joblib_cfg = OmegaConf.to_container(launcher, resolve=True)
    joblib_cfg.pop("_target_", None)
    joblib_cfg["backend"] = "loky"  # as the launcher sets it
    process_joblib_cfg(joblib_cfg)
    workers = resources.joblib_workers(launcher.n_jobs)
    tasks = [*versions, *[None] * max(0, workers - len(versions))]
    return Parallel(**joblib_cfg)(delayed(warm_worker)(item, threads, log) for item in tasks)


def concurrency(launcher: Any) -> str:
    """How the launcher runs the jobs, in words, for the sweep's first line."""
    if in_process(launcher):
        return "one at a time"
    if launcher.get("n_jobs") is not None:
        return f"{resources.joblib_workers(launcher.n_jobs)} at a time"
    return "as the launcher schedules them"


class SweepCallback(Callback):
    """Before the jobs: name the sweep, create the store and experiment once (fresh sqlite
    stores race on schema creation under parallel jobs), check every job's config and build
    the shared inputs (data cache, classifier, real-data reference) once. After: one line per
    run, the comparison report, and a non-zero exit status when any job did not finish."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        marker = sweep_dir / SWEEP_ID_FILE
        if not marker.is_file():
            marker.write_text(f"{sweep_dir.name}-{secrets.token_hex(3)}\n")
        self.sweep_id = marker.read_text().strip()
        self.uri = tracking.resolve_uri(config.tracking.uri, config.paths.root)
        self.experiment = config.tracking.experiment
        self.reports_dir = Path(config.paths.reports_dir)
        self.progress = Progress(sweep_dir)
        jobs = self._check_jobs(config, kwargs.get("config_name"))
        try:
            self.experiment_id = tracking.ensure_experiment(
                self.uri, self.experiment, config.tracking.artifact_location
            )
        except tracking.TrackingError as error:
            sys.exit(f"error: {error}")
        self._prepare(config, jobs)
        self.progress.start(len(jobs))
        _active = self
        # A driver stopped with SIGTERM ends its runs KILLED too, as with Ctrl-C.
        signal.signal(signal.SIGTERM, console.raise_terminated)
        threads = sorted({settings.train.threads for settings in jobs})
        print(
            f"sweep {self.sweep_id}: {len(jobs)} jobs, {concurrency(config.hydra.launcher)}, "
            f"train.threads={','.join(map(str, threads))} (0: all cores); "
            f"full logs in {sweep_dir}/<job>/{JOB_LOG}",
            flush=True,
        )

    def _check_jobs(self, config: DictConfig, config_name: str | None) -> list:
        """Every job's settings, validated now: a bad value stops the sweep before any work."""
        from src import schema

        settings = []
        for overrides in job_overrides(config):
            try:
                settings.append(job_settings(config, config_name, overrides))
            except schema.ConfigError as error:
                sys.exit(f"error: job {' '.join(overrides)}: {error}")
        threads = {job.train.threads for job in settings}
        launcher = config.hydra.launcher
        if (in_process(launcher) or is_joblib(launcher)) and len(threads) > 1:
            sys.exit(
                f"error: train.threads={','.join(map(str, sorted(threads)))}: jobs that share "
                "a process (one after another, or joblib's reused workers) share TensorFlow's "
                "threads; give them one value, or use a launcher with a process per job"
            )
        return settings

    def _prepare(self, config: DictConfig, jobs: list) -> None:
        """Data cache, classifier and reference for each data version the jobs use, once:
        in joblib's worker processes when the jobs will run there (the other workers import
        TensorFlow meanwhile, so every job starts in a warm worker), else in this process."""
        from src.data import DataError

        versions: dict[Any, Any] = {}
        for settings in jobs:
            key = (settings.data.path, settings.data.method, settings.data.image_size)
            versions.setdefault((key, settings.paths.cache_dir), settings)
        threads = jobs[0].train.threads
        started = time.perf_counter()
        try:
            if is_joblib(config.hydra.launcher) and not in_process(config.hydra.launcher):
                log = str(Path(config.hydra.sweep.dir) / WORKERS_LOG)
                built = _prepare_in_workers(
                    config.hydra.launcher, list(versions.values()), threads, log
                )
            else:
                # Jobs in this process take TensorFlow as its first use sets it up.
                if in_process(config.hydra.launcher):
                    resources.apply_threads(threads)
                built = [prepare_inputs(settings) for settings in versions.values()]
        except DataError as error:
            sys.exit(f"error: {error}")
        built = sorted({name for names in built for name in names})
        if built:
            print(
                f"prepared the shared inputs ({', '.join(built)}) in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        from mlflow.tracking import MlflowClient

        _active = None
        runs = MlflowClient(self.uri).search_runs(
            [self.experiment_id],
            filter_string=f"tags.sweep_id = '{self.sweep_id}'",
            order_by=["attributes.start_time ASC"],
        )
        runs = [run for run in runs if REPORT_TAG not in run.data.tags]
        print(f"\nsweep {self.sweep_id}: {len(runs)} runs")
        for run in runs:
            metrics = run.data.metrics
            losses = "  ".join(
                f"{key}={metrics[key]:.3f}" for key in ("d_loss", "g_loss") if key in metrics
            )
            seconds = metrics.get("train_seconds", float("nan"))
            print(f"  {run.info.run_name:<16} {run.info.status:<9} {losses}  {seconds:6.1f}s")
        if self.report and runs:
            from src.report import build_report

            path = build_report(self.uri, self.experiment, self.sweep_id, self.reports_dir)
            print(f"report: {path}")
        if self.uri.startswith(("http://", "https://")):
            print(f"open the results: {self.uri}")
        else:
            print(f"open the results: mlflow ui --backend-store-uri {self.uri}")
        unfinished = [run.info.run_name for run in runs if run.info.status != "FINISHED"]
        unfinished += [
            job["name"]
            for job in self.progress.jobs()
            if job["status"] not in ("FINISHED", "SKIPPED") and job["name"] not in unfinished
        ]
        if unfinished:
            sys.exit(f"error: {len(unfinished)} run(s) did not finish: {', '.join(unfinished)}")


def end_interrupted_sweep() -> str | None:
    """After Ctrl-C or SIGTERM in the driver: mark the sweep's runs still RUNNING as KILLED
    (workers the launcher killed could not) and say so in one line; None outside a sweep."""
    if _active is None:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_active.uri)
    running = client.search_runs(
        [_active.experiment_id],
        filter_string=f"tags.sweep_id = '{_active.sweep_id}' and attributes.status = 'RUNNING'",
    )
    for run in running:
        client.set_terminated(run.info.run_id, status="KILLED")
    return (
        f"sweep {_active.sweep_id} interrupted: {len(running)} running job(s) ended KILLED; "
        "the same command with resume=true continues them"
    )
