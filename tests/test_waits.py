"""Every wait has a limit (docs/troubleshooting.md): a sqlite store in a folder that cannot be
written is refused in one line before anything waits on it, for a run and for a sweep; the
fresh-store lock held by a live process times out naming its holder, and one left by a killed
process blocks nobody; a store whose disk fills up in the middle of a sweep ends the sweep
non-zero in one line, with each job's reason in its log."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, isolated, run_cli, training_runs

from src.tracking import store

# A folder no process can create a file in, root included: writing there fails with ENOENT.
UNWRITABLE = "sqlite:////proc/upsampler-gan/mlflow.db"
HOLD = (
    "import sys, time\n"
    "from filelock import FileLock\n"
    "lock = FileLock(sys.argv[1])\n"  # kept: a collected FileLock releases its lock
    "lock.acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


def _assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit non-zero with one ``error:`` line on stderr that holds ``words``, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert all(word in errors[0] for word in words), errors[0]


def test_a_run_against_a_store_in_an_unwritable_folder_ends_in_one_line(tmp_path):
    started = time.monotonic()
    result = run_cli(*isolated(tmp_path, UNWRITABLE), timeout=60)
    assert time.monotonic() - started < 15
    _assert_one_line(result, "/proc/upsampler-gan/mlflow.db", "tracking.uri=")


def test_a_sweep_against_a_store_in_an_unwritable_folder_ends_before_any_job(tmp_path):
    args = ["--multirun", "upsampler=nearest,transpose", "seed=0"]
    started = time.monotonic()
    result = run_cli(*args, *isolated(tmp_path, UNWRITABLE, "hydra.sweep.dir"), timeout=60)
    assert time.monotonic() - started < 15
    _assert_one_line(result, "/proc/upsampler-gan/mlflow.db", "tracking.uri=")
    assert not list((tmp_path / "sweep").glob("*/job.log"))  # no job started


def _hold(lock: Path) -> subprocess.Popen:
    """Another live process holding ``lock``, once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    return holder


def test_a_store_lock_held_by_a_live_process_times_out_naming_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = _hold(tmp_path / "mlflow.db.lock")
    try:
        started = time.monotonic()
        with pytest.raises(store.TrackingError) as raised:
            store.open_client(uri, lock_seconds=2)
        assert 2 <= time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    message = str(raised.value)
    assert f"{tmp_path / 'mlflow.db.lock'} is still held after 2 s by pid {holder.pid}" in message
    assert "tracking.lock_seconds" in message


def test_a_store_lock_left_by_a_killed_process_blocks_nobody(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = _hold(tmp_path / "mlflow.db.lock")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "mlflow.db.lock").exists()  # the file stays; its lock went with the process
    started = time.monotonic()
    experiment = store.ensure_experiment(uri, "upsamplers", None, lock_seconds=30)
    assert time.monotonic() - started < 10
    assert store.open_client(uri).get_experiment(experiment).name == "upsamplers"


@pytest.mark.slow
def test_a_run_waiting_on_a_held_store_lock_ends_in_one_line(tmp_path):
    """The same timeout through the command line: one line, the holder named, no traceback."""
    store_folder = tmp_path / "store"
    store_folder.mkdir()
    holder = _hold(store_folder / "mlflow.db.lock")
    try:
        uri = f"sqlite:///{store_folder / 'mlflow.db'}"
        result = run_cli(*isolated(tmp_path, uri), "tracking.lock_seconds=3", timeout=300)
    finally:
        holder.kill()
        holder.wait()
    _assert_one_line(result, "mlflow.db.lock is still held after 3 s", f"pid {holder.pid}")


# --- a disk that fills up during a sweep ----------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 64 MiB tmpfs of its own, unmounted afterwards (root only: CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "none", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> None:
    """Write zeros into ``folder`` until its file system is full."""
    with open(folder / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 2**20)
                out.flush()
        except OSError:
            pass


@pytest.mark.slow
@pytest.mark.infra
def test_a_store_whose_disk_fills_mid_sweep_ends_the_sweep_in_one_line(small_disk, tmp_path):
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    tiny = ["data.limit=2048", "train.epochs=20", "eval.samples=200", "eval.every_epochs=1"]
    args = ["--multirun", "upsampler=nearest,transpose", "seed=0", *tiny]
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "src.train", *args, *isolated(tmp_path, uri, "hydra.sweep.dir")],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    deadline = time.monotonic() + 300
    while not list((tmp_path / "ck").glob("*/state.json")):  # a run is training and logging
        assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read()
        time.sleep(0.2)
    _fill(small_disk)
    _, err = driver.communicate(timeout=300)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert driver.returncode == 1 and len(errors) == 1, err[-3000:]
    assert "database or disk is full" in errors[0] and "2 job(s) failed" in errors[0]
    job_logs = sorted((tmp_path / "sweep").glob("*/job.log"))
    assert len(job_logs) == 2
    assert all("database or disk is full" in path.read_text() for path in job_logs)


@pytest.mark.slow
@pytest.mark.infra
def test_a_sweep_job_over_the_launcher_timeout_ends_the_sweep_in_one_line(tmp_path):
    """joblib's per-job limit (hydra.launcher.timeout): the sweep stops its workers, ends the
    open runs KILLED (resume=true continues them) and says so in one line."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = ["data.limit=2048", "train.epochs=200", "eval.samples=200"]
    args = ["--multirun", "upsampler=nearest,transpose", "seed=0", "hydra.launcher.timeout=15"]
    result = run_cli(*args, *tiny, *isolated(tmp_path, uri, "hydra.sweep.dir"), timeout=300)
    _assert_one_line(result, "hydra.launcher.timeout", "2 running job(s) ended KILLED")
    assert {run.info.status for run in training_runs(uri)} == {"KILLED"}
