"""Sweeps that survive their infrastructure, proven with real processes: a sweep driver killed
with SIGKILL and run again keeps its sweep id; a kill right after an epoch's logging and before
its checkpoint logs no step twice; a tracking server that restarts loses nothing and a longer
outage stops the run in one line; harness processes starting together on a fresh sqlite store
all work, and two sweeps into one store each report only their own runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import (
    ROOT,
    cli_env,
    image_steps,
    isolated,
    mlflow_server_command,
    only_run,
    run_cli,
    sqlite_uri,
    start_cli,
    training_runs,
    wait_for_checkpoint,
)
from mlflow.tracking import MlflowClient

from src.loadtest.servers import free_port, serving

pytestmark = [pytest.mark.slow, pytest.mark.infra]  # make test-infra

TINY = ["data.limit=512", "eval.samples=200", "eval.every_epochs=1"]


def _steps(uri: str, run_id: str) -> dict[str, list[int]]:
    """Every metric's logged steps (duplicates included) and the sample grids' steps."""
    client = MlflowClient(uri)
    found = {
        key: sorted(m.step for m in client.get_metric_history(run_id, key))
        for key in client.get_run(run_id).data.metrics
    }
    return {**found, "images/samples": image_steps(uri, run_id)}


def _twice(steps: dict[str, list[int]]) -> dict[str, list[int]]:
    return {
        key: [s for s, n in Counter(v).items() if n > 1]
        for key, v in steps.items()
        if len(set(v)) != len(v)
    }


# --- exactly once: a kill between an epoch's logging and its checkpoint ------------------------

# Runs the CLI with EpochCheckpoint made to SIGKILL its process at the end of epoch KILL_AT,
# after the epoch's metrics, sample grid and evaluation are logged and before its checkpoint.
KILL_AFTER_LOGGING = """
import os, runpy, signal, sys
from src.run import callbacks

at = int(os.environ["KILL_AT"])
save = callbacks.EpochCheckpoint.on_epoch_end

def kill_before_saving(self, epoch, logs=None):
    if epoch + 1 == at:
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, epoch, logs)

callbacks.EpochCheckpoint.on_epoch_end = kill_before_saving
sys.argv = ["src/train.py", *sys.argv[1:]]
runpy.run_module("src.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("kill_at", [1, 2])
def test_kill_after_logging_before_checkpoint_logs_no_step_twice(tmp_path, kill_at):
    uri = sqlite_uri(tmp_path / "store")
    args = [*TINY, "train.epochs=3", *isolated(tmp_path, uri)]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_LOGGING, *args],
        cwd=ROOT,
        env={**cli_env(), "KILL_AT": str(kill_at)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = only_run(uri)
    before = _steps(uri, run.info.run_id)
    assert max(before["loss/d_loss"]) == kill_at, before  # the epoch was logged, then the kill

    resumed = run_cli(*args, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run.info.run_id} after epoch {kill_at - 1}" in resumed.stderr
    run = only_run(uri)
    assert run.info.status == "FINISHED"
    steps = _steps(uri, run.info.run_id)
    assert not _twice(steps), _twice(steps)
    assert steps["loss/d_loss"] == [1, 2, 3]
    assert steps["quality/fd"] == [0, 1, 2, 3]
    assert steps["images/samples"] == [0, 1, 2, 3]


# --- a sweep killed with SIGKILL, run again ----------------------------------------------------

SWEEP = [
    "--multirun",
    "upsampler=nearest,transpose",
    "seed=0",
    *TINY,
    "train.epochs=3",
    "hydra.launcher.n_jobs=2",
]


def test_sweep_killed_and_run_again_keeps_its_id_and_one_run_per_config(tmp_path):
    uri = sqlite_uri(tmp_path / "store")
    args = [*SWEEP, *isolated(tmp_path, uri)]
    driver = start_cli(
        *args, f"hydra.sweep.dir={tmp_path / 'first'}", log=tmp_path / "first", group=True
    )
    try:
        wait_for_checkpoint(tmp_path / "ck", driver, epoch=1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers, no clean-up
        driver.wait(timeout=60)
    sweep_id = (tmp_path / "first" / "sweep_id.txt").read_text().strip()
    left = training_runs(uri)
    assert left and {run.info.status for run in left} <= {"RUNNING", "FINISHED"}

    again = run_cli(*args, "resume=true", f"hydra.sweep.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"continuing sweep {sweep_id}" in again.stderr
    runs = training_runs(uri)
    assert sorted(run.info.run_name for run in runs) == ["nearest-s0", "transpose-s0"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.tags["sweep_id"] for run in runs} == {sweep_id}
    assert {run.info.run_id for run in left} <= {run.info.run_id for run in runs}
    report = (tmp_path / "reports" / sweep_id / "report.md").read_text()
    assert "2 runs" in report, report[:500]

    # Naming the sweep: a grid it did not run is refused, and so is continuing without resume.
    other = run_cli(
        *[a for a in args if a != "seed=0"],
        "seed=1",
        "resume=true",
        f"sweep.id={sweep_id}",
        f"hydra.sweep.dir={tmp_path / 'other'}",
    )
    assert other.returncode != 0
    assert other.stderr.strip().splitlines()[-1].startswith(f"error: sweep {sweep_id} ran 2 ")
    plain = run_cli(*args, f"sweep.id={sweep_id}", f"hydra.sweep.dir={tmp_path / 'plain'}")
    assert plain.stderr.strip().splitlines()[-1] == (
        f"error: sweep.id={sweep_id} continues a sweep: add resume=true"
    )
    assert len(training_runs(uri)) == 2


# --- processes starting together on a fresh store ----------------------------------------------


def test_processes_starting_together_on_a_fresh_store_all_work(tmp_path):
    """Two sweeps of different grids, a single run and two `make ui` link lookups, all started
    at once on a store that does not exist yet: every one works, each sweep's report holds its
    own runs only."""
    uri = sqlite_uri(tmp_path / "store")
    common = [*TINY, "train.epochs=1", "hydra.launcher.n_jobs=1", *isolated(tmp_path, uri)]
    env = {**cli_env(), "MLFLOW_TRACKING_URI": uri}
    processes = {
        "sweep-a": start_cli(
            "--multirun",
            "upsampler=nearest",
            "seed=0,1",
            *common,
            f"hydra.sweep.dir={tmp_path / 'a'}",
            log=tmp_path / "a",
        ),
        "sweep-b": start_cli(
            "--multirun",
            "upsampler=transpose",
            "seed=0,1",
            *common,
            f"hydra.sweep.dir={tmp_path / 'b'}",
            log=tmp_path / "b",
        ),
        "run": start_cli(*common, "upsampler=bilinear", log=tmp_path / "run"),
    }
    for number in range(2):
        with open(tmp_path / f"links{number}.out", "w") as out:
            processes[f"links{number}"] = subprocess.Popen(
                [sys.executable, "-m", "src.links"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    codes = {name: process.wait(timeout=900) for name, process in processes.items()}
    logs = {name: (tmp_path / f"{name.replace('sweep-', '')}.err") for name in processes}
    assert codes == dict.fromkeys(processes, 0), {
        name: path.read_text()[-2000:] for name, path in logs.items() if path.exists()
    }
    runs = training_runs(uri)
    assert len(runs) == 5 and {run.info.status for run in runs} == {"FINISHED"}
    for folder, upsampler in (("a", "nearest"), ("b", "transpose")):
        sweep_id = (tmp_path / folder / "sweep_id.txt").read_text().strip()
        own = [run for run in runs if run.data.tags.get("sweep_id") == sweep_id]
        assert sorted(run.info.run_name for run in own) == [f"{upsampler}-s0", f"{upsampler}-s1"]
        report = (tmp_path / "reports" / sweep_id / "report.md").read_text()
        assert "2 runs" in report and upsampler in report
        assert ({"nearest", "transpose"} - {upsampler}).pop() not in report


# --- a tracking server that restarts, and one that stays away -----------------------------------


def _server(tmp: Path, port: int) -> list[str]:
    return mlflow_server_command(port, f"sqlite:///{tmp / 'server.db'}", tmp / "artifacts")


def test_server_restart_within_the_limit_loses_nothing_and_beyond_it_stops_the_run(tmp_path):
    """Two runs on one real server, stopped after their first epoch and started again 15 s
    later: the run allowed a 120 s outage carries on and finishes with every step once; the run
    allowed 6 s stops in one line with its checkpoint, and resume=true finishes it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = [*TINY, "data.limit=2048", "train.epochs=4", "train.threads=1"]
    runs = {
        "patient": ("seed=0", "tracking.outage_seconds=120"),
        "brief": ("seed=1", "tracking.outage_seconds=6"),
    }
    args = {
        name: [*common, *extra, *isolated(tmp_path / name, url)] for name, extra in runs.items()
    }
    with serving(_server(tmp_path, port), url, tmp_path / "server1.log"):
        processes = {name: start_cli(*args[name], log=tmp_path / name) for name in runs}
        at_stop = {
            name: wait_for_checkpoint(tmp_path / name / "ck", processes[name], epoch=1)
            for name in runs
        }
    stopped = time.monotonic()
    brief = processes["brief"].wait(timeout=300)  # gives up while the server is away
    waited = time.monotonic() - stopped
    time.sleep(max(0.0, 15 - waited))
    with serving(_server(tmp_path, port), url, tmp_path / "server2.log"):
        outage = time.monotonic() - stopped
        patient = processes["patient"].wait(timeout=600)
        resumed = run_cli(*args["brief"], "resume=true")
        finished = {run.info.run_name: run for run in training_runs(url)}
        steps = {name: _steps(url, run.info.run_id) for name, run in finished.items()}

    assert outage > 15
    assert patient == 0, (tmp_path / "patient.err").read_text()[-3000:]
    stderr = (tmp_path / "brief.err").read_text()
    assert brief == 1, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: nearest-s1: the tracking server {url} did not answer for 6 s")
    assert "resume=true continues it" in line and "Traceback" not in stderr
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {at_stop['brief']['run_id']}" in resumed.stderr
    assert sorted(finished) == ["nearest-s0", "nearest-s1"]
    assert {run.info.status for run in finished.values()} == {"FINISHED"}
    assert finished["nearest-s1"].info.run_id == at_stop["brief"]["run_id"]
    assert not [run for run in finished.values() if "failure_reason" in run.data.tags]
    for name in finished:
        assert not _twice(steps[name]), (name, _twice(steps[name]))
        assert steps[name]["loss/d_loss"] == [1, 2, 3, 4]
        assert steps[name]["images/samples"] == [0, 1, 2, 3, 4]
