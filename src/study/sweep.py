"""Hydra callback for multiruns: check and prepare everything once before the jobs start, and
summarise and report at the end.

The sweep folder holds the state the sweep's processes share: ``sweep_id.txt`` (the id every
job tags its run with) and ``progress.jsonl`` (src/run/sweep_progress.py).
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.config import resources
from src.core import messages, signals
from src.run import sweep_job
from src.run.sweep_progress import Progress
from src.study import grid, launchers, tuning
from src.tracking import store
from src.tracking.naming import metric

WORKERS_LOG = "workers.log"  # the joblib workers' output while they warm up, in the sweep folder

_driver_lock: Any = None  # the sweep folder's lock while this process drives it


def job_overrides(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, in launch order, as Hydra's basic sweeper will split them: the
    sweeper's ``params`` from the config, then the command line's."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    return grid.split([*arguments, *(str(item) for item in config.hydra.overrides.task)])


def job_settings(
    config: DictConfig, config_name: str | None, overrides: list[str], with_key: bool = False
) -> Any:
    """One job's validated settings, resolved as the job will resolve them (raises
    ``src.config.schema.ConfigError``, or Hydra's errors for an unknown key or option); with
    ``with_key``, also its checkpoint key (``(settings, key)``)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from src.config import schema
    from src.run.checkpoint import run_key
    from src.tracking import naming

    # Defaults that depend on the launcher (train.threads) read the Hydra config: resolve them
    # against the multirun's, then put back what was there (as Hydra's own `--cfg` does).
    instance = HydraConfig.instance()
    previous = instance.cfg
    instance.set_config(config)
    try:
        cfg = compose(config_name or "config", [*overrides, "paths.output_dir=."])
        settings = schema.to_settings(cfg)
        if not with_key:
            return settings
        key = run_key(naming.config_name(settings), OmegaConf.to_container(cfg, resolve=True))
        return settings, key
    finally:
        instance.cfg = previous
        OmegaConf.set_readonly(config.hydra, None)


class SweepCallback(Callback):
    """Before the jobs: name the sweep, check every job's config, create the store and the
    experiment once (fresh sqlite stores race on schema creation under parallel jobs) and
    build the shared inputs (data cache, classifier, real-data reference) once. After: one
    line per run, the comparison report, and a non-zero exit status when any job did not
    finish. Hydra turns an exception in a callback into a warning and goes on, so every
    failure here ends the sweep itself, in one line."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Everything that must happen once, before any job starts."""
        from src.config import schema
        from src.data.mnist import DataError

        sweep_job.mark_started()

        try:
            self._start(config, kwargs.get("config_name"))
        except (schema.ConfigError, DataError, store.TrackingError) as error:
            sys.exit(f"error: {error}")
        except Exception as error:  # Hydra would only warn, and the jobs would run regardless
            sys.exit(f"error: {schema.one_line(error)}")

    def _start(self, config: DictConfig, config_name: str | None) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        global _driver_lock
        _driver_lock = _claim(sweep_dir)  # held by this process, not pickled with the callback
        self.uri = store.resolve_uri(config.tracking.uri, config.paths.root)
        store.limit_outages(config.tracking.outage_seconds)
        self.experiment = config.tracking.experiment
        self.reports_dir = Path(config.paths.reports_dir)
        self.margins = dict(OmegaConf.to_container(config.report.margin))
        self.progress = Progress(sweep_dir)
        self.launcher = config.hydra.launcher
        jobs, keys = self._check_jobs(config, config_name)
        tracking = config.tracking
        self.experiment_id = store.ensure_experiment(
            self.uri, self.experiment, tracking.artifact_location, tracking.lock_seconds
        )
        marker = sweep_dir / sweep_job.SWEEP_ID_FILE
        self.sweep_id = self._identity(config, keys, marker)
        marker.write_text(f"{self.sweep_id}\n")
        # From here on Ctrl-C or SIGTERM ends the sweep's runs KILLED (src/train.py: cli).
        sweep_job.on_interrupt(self.end_interrupted)
        self.previous_sigterm = signals.sigterm_as_interrupt()
        warm_pids = self._prepare(jobs, sweep_dir)
        total = tuning.planned_jobs(config.hydra.sweeper, len(jobs))
        self.progress.start(total, launchers.workers(self.launcher) or total, warm_pids)
        threads = ",".join(map(str, sorted({job.train.threads for job in jobs})))
        print(
            f"sweep {self.sweep_id}: {total} jobs, {launchers.describe(self.launcher)}, "
            f"train.threads={threads} (0: all cores); "
            f"full logs in {sweep_dir}/<job>/{sweep_job.JOB_LOG}",
            flush=True,
        )

    def _check_jobs(self, config: DictConfig, config_name: str | None) -> tuple[list, list]:
        """Every job's settings, validated now (a bad value stops the sweep before any work),
        and each job's checkpoint key (src/run/checkpoint.py: run_key)."""
        from hydra.errors import HydraException

        from src.config import schema

        jobs, keys = [], []
        every = job_overrides(config)
        if tuning.is_search(config.hydra.sweeper):
            tuning.check_search(config.hydra.sweeper)
            self._check_trial(config, config_name, every[0])
        for number, overrides in enumerate(every):
            try:
                settings, key = job_settings(config, config_name, overrides, with_key=True)
            except (schema.ConfigError, HydraException) as error:
                label = " ".join(_varying(every, overrides)) or str(number)
                raise schema.ConfigError(f"job {label}: {schema.one_line(error)}") from None
            jobs.append(settings)
            keys.append(key)
        _check_one_shape(jobs)
        threads = sorted({job.train.threads for job in jobs})
        if launchers.shares_processes(self.launcher) and len(threads) > 1:
            raise schema.ConfigError(
                f"this sweep's jobs would use train.threads={','.join(map(str, threads))} (by "
                "default deterministic runs use 1), but jobs that share a process (one at a "
                "time, or joblib's reused workers) share TensorFlow's threads: add "
                "train.threads=1, or sweep deterministic and other runs separately"
            )
        for folder in {Path(job.paths.checkpoint_dir) for job in jobs}:
            schema.check_writable(folder, "paths.checkpoint_dir")
        if self.report:
            schema.check_writable(self.reports_dir, "paths.reports_dir")
        return jobs, keys

    def _check_trial(self, config: DictConfig, config_name: str | None, cell: list[str]) -> None:
        """A search trial's config at the space's corners and middle (src/study/tuning.py:
        trial_probes), in one line."""
        from hydra.errors import HydraException

        from src.config import schema

        for probe in tuning.trial_probes(config.hydra.sweeper, cell):
            try:
                job_settings(config, config_name, probe)
            except (schema.ConfigError, HydraException) as error:
                reason = schema.one_line(error)
                raise schema.ConfigError(f"a search trial's config: {reason}") from None

    def _identity(self, config: DictConfig, keys: list[str], marker: Path) -> str:
        """The sweep's id: ``sweep.id`` when given (the sweep to continue), else with
        ``resume=true`` the sweep the jobs' earlier runs belong to, else the one already in
        ``marker`` (a sweep folder used again), else a new one."""
        from src.config import schema

        named = OmegaConf.select(config, "sweep.id")
        resume = bool(OmegaConf.select(config, "resume"))
        if named:
            if not resume:
                raise schema.ConfigError(f"sweep.id={named} continues a sweep: add resume=true")
            self._check_grid(named, keys)
            messages.say(f"continuing sweep {named}")
            return named
        if resume:
            found = self._earlier_sweeps(config, keys)
            if len(found) > 1:
                raise schema.ConfigError(
                    f"this grid's earlier runs belong to sweeps {', '.join(sorted(found))}; "
                    "name the one to continue with sweep.id=<id>"
                )
            if found:
                messages.say(f"continuing sweep {next(iter(found))}")
                return next(iter(found))
        if marker.is_file():
            return marker.read_text().strip()
        return f"{marker.parent.name}-{secrets.token_hex(3)}"

    def _check_grid(self, sweep_id: str, keys: list[str]) -> None:
        """``sweep_id`` exists in the store and every config it ran is in this grid."""
        from src.config import schema

        runs = store.open_client(self.uri).search_runs(
            [self.experiment_id], filter_string=f"tags.sweep_id = '{sweep_id}'"
        )
        if not runs:
            raise schema.ConfigError(
                f"sweep.id={sweep_id}: no runs of that sweep in {self.uri} ({self.experiment})"
            )
        # Training runs carry their checkpoint folder, named by their key; the report run none.
        ran = {
            Path(run.data.tags["checkpoint"]).name for run in runs if "checkpoint" in run.data.tags
        }
        missing = sorted(ran - set(keys))
        if missing:
            raise schema.ConfigError(
                f"sweep {sweep_id} ran {len(missing)} config(s) this grid does not have (such as "
                f"{missing[0]}); give the upsamplers, seeds and overrides it was started with"
            )

    def _earlier_sweeps(self, config: DictConfig, keys: list[str]) -> set[str]:
        """The sweep ids of the runs this grid's checkpoints name."""
        from src.run.checkpoint import Checkpoint

        client = store.open_client(self.uri)
        found = set()
        folder = Path(config.paths.checkpoint_dir)
        for key in keys:
            state = Checkpoint(folder / key).read()
            if state is None:
                continue
            try:
                tags = client.get_run(state.run_id).data.tags
            except Exception:  # a run deleted from the store, or another store's: starts anew
                continue
            if "sweep_id" in tags:
                found.add(tags["sweep_id"])
        return found

    def _prepare(self, jobs: list[Any], sweep_dir: Path) -> list[int]:
        """Data cache, classifier and reference for each data version the jobs use, once: in
        joblib's worker processes when the jobs will run there (the other workers import
        TensorFlow meanwhile, so every job starts in a warm worker), else in this process.
        Returns the warmed workers' pids ([] without joblib)."""
        from src.run import shared_inputs

        versions: dict[Any, Any] = {}
        for settings in jobs:
            key = (settings.data.path, settings.data.method, settings.data.image_size)
            versions.setdefault((key, settings.paths.cache_dir), settings)
        threads = jobs[0].train.threads
        started, pids = time.perf_counter(), set()
        if launchers.is_joblib(self.launcher) and not launchers.in_process(self.launcher):
            log = str(sweep_dir / WORKERS_LOG)
            pids, built = launchers.warm_workers(
                self.launcher, list(versions.values()), threads, log
            )
        else:
            if launchers.in_process(self.launcher):  # the jobs' TensorFlow starts here, now
                resources.apply_threads(threads)
            built = [
                name for s in versions.values() for name in shared_inputs.build_missing_inputs(s)
            ]
        if built:
            names = ", ".join(sorted(set(built)))
            messages.say(
                f"prepared the shared inputs ({names}) in {time.perf_counter() - started:.0f} s"
            )
        return sorted(pids)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """One line per run, the report, and the exit status. Hydra would turn an exception
        here into a warning and exit 0, so a store that cannot be read or written any more (a
        full disk) ends the sweep in one line, non-zero."""
        from src.config.schema import one_line

        sweep_job.on_interrupt(None)
        signals.restore(getattr(self, "previous_sigterm", None))
        try:
            unfinished = self._summarise()
        except Exception as error:
            failed = self.progress.failed_jobs()
            sys.exit(
                f"error: sweep {self.sweep_id} cannot read or report its runs in {self.uri} "
                f"({one_line(error)}); {len(failed)} job(s) failed, their logs are "
                f"{self.progress.path.parent}/<job>/{sweep_job.JOB_LOG}"
            )
        if unfinished:
            sys.exit(f"error: {len(unfinished)} run(s) did not finish: {', '.join(unfinished)}")

    def _summarise(self) -> list[str]:
        """Print a line per run, the report's path and the results' link; return the names of
        the runs and jobs that did not finish."""
        from src.study.report import REPORT_TAG, build_report

        runs = store.open_client(self.uri).search_runs(
            [self.experiment_id],
            filter_string=f"tags.sweep_id = '{self.sweep_id}'",
            order_by=["attributes.start_time ASC"],
        )
        runs = [run for run in runs if REPORT_TAG not in run.data.tags]
        print(f"\nsweep {self.sweep_id}: {len(runs)} runs")
        for run in runs:
            print(_run_line(run))
        if self.report and runs:
            path = build_report(
                self.uri, self.experiment, self.sweep_id, self.reports_dir, self.margins
            )
            print(f"report: {path}")
        self._print_link()
        # a search trial that diverged is an outcome of its configuration, not a failed job
        unfinished = [
            run.info.run_name
            for run in runs
            if run.info.status != "FINISHED" and not tuning.diverged_trial(run)
        ]
        return unfinished + [n for n in self.progress.failed_jobs() if n not in unfinished]

    def _print_link(self) -> None:
        """Where to open the sweep's results."""
        link = store.experiment_link(self.uri, self.experiment_id, self.sweep_id)
        if link is None:
            print(f"open the results: mlflow ui --backend-store-uri {self.uri}")
        elif self.uri.startswith(store.SQLITE_PREFIX):
            print(f"open the results: {link} (serve it: mlflow ui --backend-store-uri {self.uri})")
        else:
            print(f"open the results: {link}")

    def end_interrupted(self) -> str:
        """After Ctrl-C or SIGTERM in the driver: end KILLED the runs this sweep's jobs opened and
        did not finish (workers the launcher killed could not), and say so in one line.

        Only for jobs on this machine (one at a time, or joblib's workers, which joblib has killed
        by now): submitit's and SLURM's jobs outlive their driver and end their runs themselves.
        """
        if not launchers.shares_processes(self.launcher):
            return (
                f"sweep {self.sweep_id} interrupted: its submitted jobs go on and log their runs; "
                f"`make report SWEEP={self.sweep_id}` reports them later"
            )
        client = store.open_client(self.uri)
        killed = []
        for run_id in self.progress.open_runs():
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status="KILLED")
                killed.append(run_id)
        return (
            f"sweep {self.sweep_id} interrupted: {len(killed)} running job(s) ended KILLED; "
            "the same command with resume=true continues them"
        )


def _run_line(run: Any) -> str:
    """A run of the sweep in one line: name, status, last losses, training seconds."""
    metrics = run.data.metrics
    losses = "  ".join(
        f"{key}={metrics[metric(key)]:.3f}"
        for key in ("d_loss", "g_loss")
        if metric(key) in metrics
    )
    seconds = metrics.get(metric("train_seconds"), float("nan"))
    return f"  {run.info.run_name:<16} {run.info.status:<9} {losses}  {seconds:6.1f}s"


def _claim(sweep_dir: Path) -> Any:
    """Hold ``<sweep dir>/.driver.lock`` while this process drives the sweep: a second sweep
    started in the same second would get the same folder (and job folders), and is refused."""
    from filelock import FileLock, Timeout

    from src.config import schema

    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise schema.ConfigError(
            f"cannot create the sweep folder {sweep_dir} ({error.strerror}); set hydra.sweep.dir"
        ) from None
    lock = FileLock(sweep_dir / ".driver.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise schema.ConfigError(
            f"another sweep is running in {sweep_dir} (started in the same second); start this "
            "one again, or give it its own hydra.sweep.dir"
        ) from None
    return lock


def _varying(every: list[list[str]], overrides: list[str]) -> list[str]:
    """The overrides of one job whose key takes more than one value across the sweep: what
    tells this job from the others."""
    values: dict[str, set[str]] = {}
    for job in every:
        for item in job:
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(value)
    return [item for item in overrides if len(values[item.partition("=")[0]]) > 1]


def _check_one_shape(jobs: list) -> None:
    """One image size and generator depth per sweep: the report compares runs by upsampler and
    seed, and FD at two sizes comes from two classifiers (no common scale)."""
    from src.config import schema

    shapes = sorted({(job.data.image_size, job.generator.steps) for job in jobs})
    if len(shapes) > 1:
        listed = ", ".join(f"{size}x{size} in {steps} step(s)" for size, steps in shapes)
        raise schema.ConfigError(
            f"this sweep mixes image sizes or generator depths ({listed}), which its report "
            "cannot compare (each size has its own classifier): run one sweep per setting"
        )
