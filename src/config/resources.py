"""How much of the machine a sweep uses: parallel jobs, and TensorFlow threads per job.

The rule, measured on a 2-core machine (docs/sweeps.md): one process trains
these small models only about 1.3-1.4 times as fast on two threads as on one, so a sweep runs
one job per core, each on one thread, as many as memory holds. The numbers reach the configs
through two resolvers: ``${sweep_workers:}`` (the joblib launcher's ``n_jobs``) and
``${job_threads:...}`` (``train.threads``). Both depend only on the machine and the config, never
on its momentary load, so every process of a sweep computes the same numbers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

# Peak resident memory of one default training job, rounded up: 1.42 GB measured with
# /usr/bin/time -v on a full-data run (TensorFlow, the data, the classifier and a 10k evaluation).
JOB_MEMORY_GB = 2.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
NO_LIMIT = 2**60  # cgroup v1 writes "no memory limit" as a number near 2**63


class ThreadsError(RuntimeError):
    """TensorFlow's thread pools are fixed already; the message says what to do."""


def _cgroup_file(v2_name: str, v1_controller: str, v1_name: str) -> str | None:
    """The content of one of this process's cgroup files (v2's ``v2_name``, or v1's
    ``<v1_controller>/<v1_name>``), or None where there is no such file (no cgroups, no limit)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [CGROUP_ROOT / path.lstrip("/") / v2_name, CGROUP_ROOT / v2_name]
        elif v1_controller in controllers.split(","):
            base = CGROUP_ROOT / controllers
            candidates = [base / path.lstrip("/") / v1_name, base / v1_name]
        else:
            continue
        for candidate in candidates:  # the process's own cgroup; the root inside a container
            try:
                return candidate.read_text().strip()
            except OSError:
                continue
    return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (``taskset``, SLURM's cpuset), capped by
    a cgroup CPU quota (a container's ``--cpus``) when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    quota = _cgroup_file("cpu.max", "cpu", "cpu.cfs_quota_us")
    period = _cgroup_file("cpu.max", "cpu", "cpu.cfs_period_us")
    try:
        if quota and " " in quota:  # v2: "<quota> <period>" or "max <period>"
            quota, period = quota.split()[:2]
        if quota and period and quota not in ("max", "-1"):
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except ValueError:
        pass
    return cores


def memory_gb() -> float:
    """Memory this process's jobs may use, in GB: the machine's total (``MemTotal``), capped by
    a cgroup memory limit; infinite when unknown. Total, not free: a sweep plans once for the
    machine, and free memory changes while its own jobs start."""
    total = math.inf
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    limit = _cgroup_file("memory.max", "memory", "memory.limit_in_bytes")
    if limit and limit != "max":
        try:
            if int(limit) < NO_LIMIT:
                total = min(total, int(limit) / 1024**3)
        except ValueError:
            pass
    return total


def sweep_workers(cores: int | None = None, memory: float | None = None) -> int:
    """Jobs a sweep runs at once: one per usable core, as many as ``JOB_MEMORY_GB`` each fit."""
    cores = usable_cores() if cores is None else cores
    memory = memory_gb() if memory is None else memory
    by_memory = memory / JOB_MEMORY_GB
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
