"""What a job of a multirun knows of its sweep, and what the sweep's driver tells the process it
shares with its jobs: the sweep's id, the job log's name, whether a sweep has started, and how
to end the sweep when Ctrl-C or SIGTERM reaches the process.

The driver (src/study/sweep.py) writes and registers these; a job (src/train.py) only reads
them, so a run never imports the sweep machinery (launchers, the report, statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

SWEEP_ID_FILE = "sweep_id.txt"  # in the sweep folder: the id every job tags its run with
JOB_LOG = "job.log"  # each job's full output (Keras, TensorFlow, tracebacks), in its job folder

_started = False  # whether Hydra got as far as starting a sweep (its config composed)
_on_interrupt: Callable[[], str] | None = None  # the driver's ending of an interrupted sweep


def job_sweep_id(hydra_cfg: Any) -> str | None:
    """The sweep id of a multirun job (written by the sweep's driver), ``None`` for a run."""
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    marker = Path(hydra_cfg.sweep.dir) / SWEEP_ID_FILE
    return marker.read_text().strip() if marker.is_file() else Path(hydra_cfg.sweep.dir).name


def mark_started() -> None:
    """Record that this process has started a sweep: errors from here on are the sweep's, not
    the command line's."""
    global _started
    _started = True


def started() -> bool:
    """Whether this process has started a sweep: Hydra composed its config without error."""
    return _started


def on_interrupt(ending: Callable[[], str] | None) -> None:
    """Register (or, with ``None``, forget) how the driver ends its sweep after an interrupt."""
    global _on_interrupt
    _on_interrupt = ending


def end_interrupted_sweep() -> str | None:
    """After Ctrl-C or SIGTERM: the driver's ending of its sweep, as one line; ``None`` when
    this process drives no sweep."""
    return _on_interrupt() if _on_interrupt is not None else None
