"""How much of the machine a sweep uses: parallel jobs, and TensorFlow threads per job.

The rule, measured on a 2-core machine (README, "Sweeps in parallel"): these models are too
small for TensorFlow's thread pools to keep two cores busy (one process on two threads trained
about 1.2x as fast as on one), so a sweep runs one job per core, each on one thread, as many
as memory allows. The numbers reach the configs through two resolvers: ``${sweep_workers:}``
(the joblib launcher's ``n_jobs``) and ``${job_threads:}`` (``train.threads``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

# Peak resident memory of one default training job, rounded up: 1.42 GB measured with
# /usr/bin/time -v on a full-data run (TensorFlow, the data, the classifier and a 10k evaluation).
JOB_MEMORY_GB = 2.0
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


class ThreadsError(RuntimeError):
    """TensorFlow's thread pools are fixed already; the message says what to do."""


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (``taskset``, SLURM's cgroup cpuset),
    further capped by a cgroup v2 CPU quota (a container's ``--cpus``) when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def available_memory_gb() -> float:
    """Memory available to new processes (``MemAvailable``), in GB; infinite when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    return math.inf


def sweep_workers(cores: int | None = None, memory_gb: float | None = None) -> int:
    """Jobs a sweep runs at once: one per usable core, as many as ``JOB_MEMORY_GB`` each fit."""
    cores = usable_cores() if cores is None else cores
    memory_gb = available_memory_gb() if memory_gb is None else memory_gb
    by_memory = memory_gb / JOB_MEMORY_GB
    return max(1, min(cores, int(by_memory) if math.isfinite(by_memory) else cores))


def threads_for_launcher(
    launcher: Any, multirun: bool, deterministic: bool = False, cores: int | None = None
) -> int:
    """TensorFlow threads for each job of a launcher config (0: TensorFlow's own choice).

    Deterministic runs get one thread wherever they run: TensorFlow's op determinism repeats
    a result only at the same thread count, so one count everywhere makes a run repeat in a
    parallel sweep, one at a time and on another machine alike. Otherwise a single run, or jobs
    one after another in one process (Hydra's basic launcher), get the whole machine; jobs run
    ``n_jobs`` at a time (joblib) share the cores out; jobs given ``cpus_per_task`` cores
    (submitit, SLURM) use that many.
    """
    if deterministic:
        return 1
    if not multirun or launcher is None:
        return 0
    cpus = launcher.get("cpus_per_task")
    if cpus:
        return int(cpus)
    if launcher.get("n_jobs") is None:
        return 0
    cores = usable_cores() if cores is None else cores
    return max(1, cores // joblib_workers(launcher.n_jobs, cores))


def joblib_workers(n_jobs: int, cores: int | None = None) -> int:
    """Worker processes joblib starts for ``n_jobs`` (-1: every core, -2: all but one, ...)."""
    n_jobs = int(n_jobs)
    if n_jobs > 0:
        return n_jobs
    return max(1, (usable_cores() if cores is None else cores) + 1 + n_jobs)


def job_threads(deterministic: bool = False) -> int:
    """``${job_threads:${.deterministic}}``: :func:`threads_for_launcher` for the running Hydra
    job (outside Hydra, e.g. a config composed in a test, as for a single run)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return threads_for_launcher(None, False, bool(deterministic))
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return threads_for_launcher(hydra_cfg.get("launcher"), multirun, bool(deterministic))


def apply_threads(threads: int) -> None:
    """Give TensorFlow ``threads`` intra-op and inter-op threads (0 leaves its defaults, every
    core), and cap BLAS (NumPy, SciPy) at the same count so evaluation does not oversubscribe.

    TensorFlow fixes its thread pools when it first runs an op; a later call with the same
    count (the next job in a reused worker process) is a no-op, a different one an error.
    """
    if threads <= 0:
        return
    import tensorflow as tf

    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current == threads or (current == 0 and threads == usable_cores()):
        return  # already so, or TensorFlow's default (every core) is that many
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        raise ThreadsError(
            f"train.threads={threads}: TensorFlow already runs in this process with "
            f"{current or 'its default'} threads; give every job of a sweep the same train.threads"
        ) from None
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")
    except ImportError:
        pass
