"""A sweep's progress, shared by its processes through ``progress.jsonl`` in the sweep folder.

The sweep's driver writes the first line (job count, jobs at once, start time); each job
appends a line when its MLflow run is open and one when it ends, under an exclusive lock, so
jobs in other processes (joblib workers, submitit) each get their own count. The driver reads
the file back to find the runs its jobs left open when it is interrupted, and the jobs that
ended without a run. ``flock`` is advisory and, on some network filesystems, not enforced: the
counts are then approximate, nothing else depends on them.
"""

from __future__ import annotations

import fcntl
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.jsonl"


class Progress:
    """The progress file of the sweep in ``sweep_dir``."""

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / PROGRESS_FILE

    def start(self, total: int, workers: int, warm_pids: list[int] | None = None) -> None:
        """Begin a sweep of ``total`` jobs, ``workers`` at a time (a re-used folder restarts);
        ``warm_pids`` are the worker processes prepared for its jobs, if any."""
        header = {
            "total": total,
            "workers": workers,
            "started": time.time(),
            "warm_pids": warm_pids or [],
        }
        self.path.write_text(json.dumps(header) + "\n")

    def opened(self, job: int, name: str, run_id: str) -> None:
        """Record that job number ``job`` (run ``name``) has its MLflow run ``run_id`` open,
        new or resumed."""
        record = {"event": "opened", "job": job, "name": name, "run_id": run_id}
        self._append({**record, "pid": os.getpid()})

    def finish(self, job: int, name: str, status: str) -> str:
        """Record that job number ``job`` (run ``name``) ended with ``status``; returns
        ``[done/total, about N left]`` for its line, or "" when the sweep has no progress file."""
        records = self._append({"event": "finished", "job": job, "name": name, "status": status})
        if not records:
            return ""
        header, events = records[0], records[1:]
        done = sum(event["event"] == "finished" for event in events)
        if done >= header["total"]:
            return f"[{done}/{header['total']}]"
        return f"[{done}/{header['total']}, about {_duration(time_left(header, events))} left]"

    def open_runs(self) -> list[str]:
        """Run ids that jobs of this sweep opened and have not finished."""
        events = self.records()[1:]
        done = {event["job"] for event in events if event["event"] == "finished"}
        return [
            event["run_id"]
            for event in events
            if event["event"] == "opened" and event["job"] not in done
        ]

    def failed_jobs(self) -> list[str]:
        """Names of the jobs that ended neither FINISHED nor SKIPPED."""
        return [
            event["name"]
            for event in self.records()[1:]
            if event["event"] == "finished" and event["status"] not in ("FINISHED", "SKIPPED")
        ]

    def records(self) -> list[dict[str, Any]]:
        """Every line of the file, the header first; [] without a (valid) file."""
        try:
            records = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        except (OSError, ValueError):
            return []
        return records if records and "total" in records[0] else []

    def _append(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Append ``record`` and return every line, read under the same lock."""
        if not self.path.is_file():
            return []
        record["time"] = time.time()
        try:
            with open(self.path, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                handle.seek(0)
                records = [json.loads(line) for line in handle if line.strip()]
        except (OSError, ValueError):
            return []
        return records if records and "total" in records[0] else []


def time_left(header: dict[str, Any], events: list[dict[str, Any]]) -> float:
    """Seconds until the sweep ends, estimated from the jobs so far: each running job needs the
    mean job's time minus its age, each queued job the mean job's time, and ``workers`` of them
    run at once. Before a job has both opened and finished, elapsed time per finished job."""
    now = time.time()
    opened = {event["job"]: event["time"] for event in events if event["event"] == "opened"}
    finished = {event["job"]: event["time"] for event in events if event["event"] == "finished"}
    durations = [finished[job] - opened[job] for job in finished if job in opened]
    done, total = len(finished), header["total"]
    if not durations:
        return (now - header["started"]) / max(done, 1) * (total - done)
    mean = statistics.mean(durations)
    running = [now - started for job, started in opened.items() if job not in finished]
    queued = max(0, total - done - len(running))
    work = sum(max(mean - age, 0.0) for age in running) + queued * mean
    return work / max(1, header["workers"])


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
