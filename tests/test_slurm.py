"""The ``slurm`` launcher preset against a real SLURM: a single-node cluster of this machine
(tests/slurm_cluster.py), started for this module and stopped after it, and the harness's own
command line, ``python -m src.train --multirun hydra/launcher=slurm ...``, as a user types it.

- a sweep as a job array, logging to a real ``mlflow server``: every run FINISHED, one sweep id,
  the report;
- a job that runs into its time limit: SLURM's USR2 before it, and the run ends FAILED with a
  failure_reason, its checkpoint kept;
- with ``max_num_timeout`` above 0 and ``resume=true`` the job is requeued and finishes in the
  same MLflow run, each epoch logged once;
- ``scancel`` of a running job: SIGTERM, the run ends KILLED.

Without SLURM's binaries (or as a user other than root) these tests are skipped with the command
that installs them; CI sets ``REQUIRE_SLURM=1``, where that fails them instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers import (
    isolated,
    report_runs,
    run_cli,
    start_cli,
    training_runs,
    wait_for_checkpoint,
)
from mlflow.tracking import MlflowClient
from slurm_cluster import SlurmCluster, missing

pytestmark = [pytest.mark.slow, pytest.mark.infra]  # make test-infra

# Each job one core (the node has this machine's 2) and little memory.
SLURM = [
    "--multirun",
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
]
TINY = ["data.limit=2048", "train.epochs=1", "eval.samples=500"]
# Long enough to be still training when a signal comes (about 2 s an epoch on one core); the
# evaluation only at epoch 0 and the last.
LONG = ["data.limit=10000", "train.epochs=40", "eval.samples=500", "eval.every_epochs=100"]


@pytest.fixture(scope="session")
def cluster():
    """A running single-node SLURM cluster (munged, slurmctld, slurmd) in a folder of its own;
    every job is cancelled and the daemons stopped afterwards."""
    why = missing()
    if why:
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail(f"REQUIRE_SLURM=1 but {why}")
        pytest.skip(f"no SLURM cluster can be started here: {why}")
    folder = Path(tempfile.mkdtemp(prefix="upsampler-slurm-"))  # munged: traversable by all
    started = SlurmCluster(folder)
    try:
        started.start()
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def slurm(cluster, monkeypatch):
    """The cluster, with ``SLURM_CONF`` set for the commands this test starts (and so, through
    sbatch, for the jobs)."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    return cluster


@pytest.fixture
def start_sweep(slurm):
    """``start_cli`` for sweeps a test starts in the background; one still running when the test
    ends (it failed) is killed, since without accounting it could wait for its jobs forever."""
    started = []

    def start(*args: str, log: Path) -> subprocess.Popen:
        started.append(start_cli(*args, log=log))
        return started[-1]

    yield start
    for driver in started:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)


def _logs(tmp: Path) -> str:
    """Every job's logs in one text: submitit's stdout and stderr (``.submitit/<job id>/``) and
    the job's ``job.log``, where the job's own output goes, submitit's messages from inside
    training included."""
    paths = sorted((tmp / "sweep" / ".submitit").glob("*/*_log.*"))
    paths += sorted((tmp / "sweep").glob("*/job.log"))
    return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')}" for path in paths)


def _logs_once_they_say(tmp: Path, text: str, timeout: float = 30) -> str:
    """The jobs' logs as soon as they contain ``text``: submitit writes a job's exception after
    the run has already ended in the store, so a test that reads at once can be too early."""
    deadline = time.monotonic() + timeout
    while text not in (logs := _logs(tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return logs


def _job_ids(tmp: Path) -> list[str]:
    """The SLURM ids of the sweep's jobs (``<array>_<task>``; a lone job is no array), from
    the folders where submitit keeps their logs."""
    folders = (tmp / "sweep" / ".submitit").glob("[0-9]*")
    return sorted(folder.name for folder in folders if list(folder.glob("*_log.out")))


def _job_id(cluster: SlurmCluster, timeout: float = 60) -> str:
    """The id (``<array>_<task>``) of the one job the controller lists as running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [line.split()[0] for line in cluster.jobs() if line.endswith("RUNNING")]
        if running:
            (job,) = running
            return job
        time.sleep(0.5)
    raise AssertionError(f"no running job after {timeout}s: {cluster.jobs()}")


def _job_field(cluster: SlurmCluster, job: str, field: str) -> str:
    """A ``Key=Value`` field of ``scontrol show job`` (it shows a job for 300 s after its end),
    once the job is no longer COMPLETING (its processes being cleaned up)."""
    deadline = time.monotonic() + 60
    while True:
        shown = cluster.run("scontrol", "show", "job", job).stdout
        if "JobState=COMPLETING" not in shown or time.monotonic() > deadline:
            return re.search(rf"\b{field}=(\S+)", shown).group(1)
        time.sleep(0.5)


def _finish(driver: subprocess.Popen, log: Path, timeout: float) -> tuple[int, str, str]:
    """Wait for a sweep started by ``start_cli``; (exit status, stdout, stderr)."""
    try:
        driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        err = Path(f"{log}.err").read_text()
        raise AssertionError(f"sweep still running after {timeout}s: {err[-3000:]}") from None
    return driver.returncode, Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()


def _ended(uri: str, timeout: float = 60):
    """The sweep's one training run, as soon as it is no longer RUNNING."""
    deadline = time.monotonic() + timeout
    while True:
        (run,) = training_runs(uri)
        if run.info.status != "RUNNING" or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _checkpoint(tmp: Path) -> tuple[dict, Path]:
    """The one run's checkpoint state and folder."""
    (state_file,) = (tmp / "ck").glob("*/state.json")
    return json.loads(state_file.read_text()), state_file.parent


# --- 1: a sweep through the scheduler, logging to a tracking server ---------------------------


def test_sweep_runs_as_a_slurm_array_and_logs_to_a_server(slurm, mlflow_server, tmp_path):
    uri, _ = mlflow_server
    result = run_cli(
        *SLURM,
        "upsampler=nearest,transpose",
        "seed=0",
        *TINY,
        *isolated(tmp_path, uri, "hydra.sweep.dir"),
    )
    assert result.returncode == 0, result.stderr[-3000:] + _logs(tmp_path)
    runs = training_runs(uri)
    assert sorted(run.info.run_name for run in runs) == ["nearest-s0", "transpose-s0"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    (sweep_id,) = {run.data.tags["sweep_id"] for run in runs}
    assert sweep_id == (tmp_path / "sweep" / "sweep_id.txt").read_text().strip()
    assert {run.data.params["train.threads"] for run in runs} == {"1"}  # cpus_per_task
    assert all(run.info.artifact_uri.startswith("mlflow-artifacts:/") for run in runs)
    assert f"sweep {sweep_id}: 2 runs" in result.stdout
    assert (tmp_path / "reports" / sweep_id / "report.md").is_file()
    assert [run.info.run_name for run in report_runs(uri)] == [f"report-{sweep_id}"]
    # Both jobs were tasks of one SLURM array, run by SLURM's daemons on this node.
    jobs = _job_ids(tmp_path)
    assert [job.partition("_")[2] for job in jobs] == ["0", "1"], jobs
    assert len({job.partition("_")[0] for job in jobs}) == 1, jobs
    logs = _logs(tmp_path)
    for job in jobs:
        assert f"Starting with JobEnvironment(job_id={job}, hostname={slurm.host}" in logs, logs
        assert _job_field(slurm, job, "JobState") == "COMPLETED"
    assert logs.count("Job completed successfully") >= 2, logs


# --- 2: the time limit ------------------------------------------------------------------------


def test_a_job_past_its_time_limit_ends_failed_and_keeps_its_checkpoint(
    slurm, start_sweep, tmp_path
):
    """timeout_min=1 and signal_delay_s=10: slurmctld checks limits every 30 s and sends USR2
    at the first check within signal_delay_s + 30 s of the limit, so 20-50 s into the job.
    submitit's handler raises in the training loop; with max_num_timeout=0 nothing requeues."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    log = tmp_path / "driver"
    driver = start_sweep(
        *SLURM,
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=10",
        *LONG,
        *isolated(tmp_path, uri, "hydra.sweep.dir"),
        log=log,
    )
    status, out, err = _finish(driver, log, timeout=240)
    logs = _logs(tmp_path)
    assert status == 1, err[-3000:] + logs
    assert "error: 1 run(s) did not finish: nearest-s0" in err
    assert "Caught signal SIGUSR2" in logs and "this job is timed-out" in logs, logs
    assert "Job not requeued because: timed-out too many times" in logs, logs
    (run,) = training_runs(uri)
    assert run.info.status == "FAILED"
    reason = run.data.tags["failure_reason"]
    assert reason.startswith("UncompletedJobError: Job not requeued because: timed-out"), reason
    # Stopped while training, well before its 40 epochs; the last epoch's checkpoint is kept.
    state, folder = _checkpoint(tmp_path)
    assert 1 <= state["epoch"] < 40 and not state["finished"], state
    assert state["run_id"] == run.info.run_id
    assert (folder / f"epoch-{state['epoch']:04d}.weights.h5").is_file()
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "loss/d_loss")
    assert len(history) >= state["epoch"]
    # The job itself ended: its handler's exception became the job's FAILED result.
    (job,) = _job_ids(tmp_path)
    assert _job_field(slurm, job, "JobState") == "COMPLETED"
    assert "sweep" in out and "FAILED" in out


# --- 3: requeued after a timeout, resumed in the same run ---------------------------------------


def test_a_requeued_job_resumes_its_run_and_finishes_it(slurm, start_sweep, tmp_path):
    """max_num_timeout=1 and resume=true. The timeout signal, USR2, is sent with ``scancel
    --signal=USR2`` (as submitit's own ``SlurmJob._interrupt(timeout=True)`` does) once an epoch
    is checkpointed: SLURM's own comes at a time only known to +-30 s (test above)."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    log = tmp_path / "driver"
    epochs = 6
    driver = start_sweep(
        *SLURM,
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.max_num_timeout=1",
        "resume=true",
        "data.limit=4096",
        f"train.epochs={epochs}",
        "eval.samples=500",
        "eval.every_epochs=100",
        *isolated(tmp_path, uri, "hydra.sweep.dir"),
        log=log,
    )
    job = _job_id(slurm)
    first = wait_for_checkpoint(tmp_path / "ck", driver, epoch=2)
    slurm.run("scancel", "--signal=USR2", job)
    # Until the requeued job runs again its run is KILLED, as after Ctrl-C: submitit requeues it
    # (scontrol requeue, which SIGTERMs the job) and exits.
    between = _ended(uri)
    assert between.info.status == "KILLED", _logs(tmp_path)
    assert "failure_reason" not in between.data.tags, between.data.tags
    status, _, err = _finish(driver, log, timeout=300)
    logs = _logs(tmp_path)
    assert status == 0, err[-3000:] + logs
    assert "Caught signal SIGUSR2" in logs and "DUE TO JOB REQUEUE" in logs, logs
    assert logs.count(f"Starting with JobEnvironment(job_id={job},") == 2, logs
    assert _job_field(slurm, job, "Restarts") == "1"
    (run,) = training_runs(uri)  # one run for the config, not one per attempt
    assert run.info.status == "FINISHED" and run.info.run_id == first["run_id"]
    assert "failure_reason" not in run.data.tags
    client = MlflowClient(uri)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/d_loss")]
    assert steps == list(range(1, epochs + 1)), steps  # every epoch once, in order
    fd = [m.step for m in client.get_metric_history(run.info.run_id, "quality/fd")]
    assert fd == [0, epochs], fd
    state, _ = _checkpoint(tmp_path)
    assert state.pop("seconds") > 0  # training seconds, carried over the requeue
    assert state == {"run_id": run.info.run_id, "epoch": epochs, "finished": True}
    job_logs = "\n".join(p.read_text() for p in (tmp_path / "sweep").glob("*/job.log"))
    assert f"resuming run {run.info.run_id} after epoch" in job_logs, job_logs


# --- 4: scancel ---------------------------------------------------------------------------------


def test_scancel_ends_the_run_killed(slurm, start_sweep, tmp_path):
    """scancel sends SIGTERM (then SIGKILL after KillWait, 30 s): src/core/signals.py turns it into
    an interrupt inside training and the run ends KILLED, its checkpoint kept. The job leaves no
    result, and without accounting storage submitit cannot learn that the job is CANCELLED:
    the driver waits until it is stopped (as a user would, Ctrl-C; here SIGTERM)."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    log = tmp_path / "driver"
    driver = start_sweep(
        *SLURM,
        "hydra.launcher.timeout_min=5",
        *LONG,
        *isolated(tmp_path, uri, "hydra.sweep.dir"),
        log=log,
    )
    job = _job_id(slurm)
    wait_for_checkpoint(tmp_path / "ck", driver, epoch=1)
    slurm.run("scancel", job)
    run = _ended(uri)
    assert run.info.status == "KILLED", _logs(tmp_path)
    assert _job_field(slurm, job, "JobState") == "CANCELLED"
    state, folder = _checkpoint(tmp_path)
    assert state["run_id"] == run.info.run_id and not state["finished"]
    assert (folder / f"epoch-{state['epoch']:04d}.weights.h5").is_file()
    # SLURM's SIGTERM became the clean stop (src/core/signals.py), which submitit logs as the
    # job's exception: "src.core.signals.Stopped: nearest-s0 KILLED after epoch N; ...".
    stopped = "Stopped: nearest-s0 KILLED after epoch"
    assert stopped in _logs_once_they_say(tmp_path, stopped)
    time.sleep(5)
    assert driver.poll() is None  # still waiting for a result that will not come
    driver.send_signal(signal.SIGTERM)
    status, _, err = _finish(driver, log, timeout=60)
    assert status == 128 + signal.SIGTERM, err
    assert "interrupted: its submitted jobs go on and log their runs" in err
