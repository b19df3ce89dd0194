"""What a sweep needs to know about its Hydra launcher: whether its jobs share this process,
how many run at once, and how to warm joblib's worker processes before the jobs start.

Hydra's basic launcher runs the jobs one after another in the driver; the joblib launcher
(``local_parallel``) in a pool of worker processes that joblib keeps between ``Parallel`` calls
made with the same settings; submitit and SLURM each job in a process of its own.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.config import resources
from src.run import job_output

WARM_UP_SECONDS = 1800  # longest wait for joblib's workers to import TensorFlow and build inputs
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def is_joblib(launcher: Any) -> bool:
    """Whether the launcher is Hydra's joblib launcher."""
    return "hydra_joblib_launcher" in str(launcher.get("_target_", ""))


def workers(launcher: Any) -> int | None:
    """Jobs the launcher runs at once on this machine; None when a scheduler decides."""
    if launcher.get("_target_") == BASIC_LAUNCHER:
        return 1
    if is_joblib(launcher):
        return resources.joblib_workers(launcher.n_jobs)
    return None


def in_process(launcher: Any) -> bool:
    """Whether the jobs run in this process, one after another (joblib runs ``n_jobs=1``
    sequentially in the caller)."""
    return workers(launcher) == 1


def shares_processes(launcher: Any) -> bool:
    """Whether several jobs run in one process (and so share its TensorFlow threads)."""
    return in_process(launcher) or is_joblib(launcher)


def describe(launcher: Any) -> str:
    """How the launcher runs the jobs, in words, for the sweep's first line."""
    count = workers(launcher)
    if count is None:
        return "as the launcher schedules them"
    return "one at a time" if count == 1 else f"{count} at a time"


def warm_worker(settings: Any | None, threads: int, log: str) -> tuple[int, list[str]]:
    """In a joblib worker, before the jobs: give TensorFlow the jobs' threads, import what a
    job imports, and build one data version's shared inputs when ``settings`` is given.
    TensorFlow's start-up lines go to ``log``; notices (a classifier being trained) to the
    terminal. Returns the worker's pid and the inputs it built."""
    from src.run import shared_inputs

    with job_output.redirected(Path(log)) as terminal:
        resources.apply_threads(threads)
        import keras  # noqa: F401 - importing is the work here: seconds a job then saves
        import mlflow  # noqa: F401

        if settings is None:
            return os.getpid(), []
        with contextlib.redirect_stderr(terminal.err):
            return os.getpid(), shared_inputs.build_missing_inputs(settings)


def warm_workers(launcher: Any, versions: list[Any], threads: int, log: str) -> tuple[set, list]:
    """Run :func:`warm_worker` once per worker of the pool the joblib launcher will use: one
    task per data version in ``versions`` (settings), the other workers only warm up.

    joblib reuses its loky executor for a later ``Parallel`` with the same settings, so calling
    it with exactly the launcher's arguments (as hydra-joblib-launcher builds them, with its own
    helper) makes the sweep's jobs run in these warm workers. Returns the workers' pids and the
    names of the inputs they built.
    """
    # The plugin's private helper, so that the arguments match its own call exactly.
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed

    joblib_cfg = OmegaConf.to_container(launcher, resolve=True)
    joblib_cfg.pop("_target_", None)
    joblib_cfg["backend"] = "loky"  # as the launcher sets it
    process_joblib_cfg(joblib_cfg)
    tasks = [*versions, *[None] * max(0, (workers(launcher) or 1) - len(versions))]
    # The launcher's timeout is per job; warming up (TensorFlow's import, a classifier trained
    # on a fresh machine) has its own bound. The executor is reused all the same: joblib keys
    # it by its workers, not by how long a result is waited for.
    joblib_cfg["timeout"] = WARM_UP_SECONDS
    try:
        results = Parallel(**joblib_cfg)(delayed(warm_worker)(i, threads, log) for i in tasks)
    except multiprocessing.TimeoutError:
        raise RuntimeError(
            f"the sweep's workers were not ready after {WARM_UP_SECONDS} s (importing TensorFlow, "
            f"building the shared inputs); their output is in {log}"
        ) from None
    return {pid for pid, _ in results}, [name for _, built in results for name in built]
