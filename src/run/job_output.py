"""A sweep job on the terminal: its full output in its job folder, a few lines on the terminal.

Parallel jobs that all print Keras progress bars and TensorFlow's start-up lines to one
terminal garble it. Inside :func:`redirected` the process's file descriptors 1 and 2 go to the
job's log file, so everything (Python, Keras, TensorFlow's C++ logging, tracebacks) lands there,
and the job writes its own short lines to the terminal: one per epoch and one when it ends. Each
is a single ``write`` of less than ``PIPE_BUF`` bytes, which POSIX keeps whole when several
processes write to one pipe; terminals do the same in practice.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

NAME_WIDTH = 14  # run names such as "transpose4-s12" line up
MAX_ERROR = 300  # characters of an error message on a job's end line (the log has all of it)


@dataclass
class Terminal:
    """Line-buffered streams to where stdout and stderr pointed before :func:`redirected`."""

    out: TextIO
    err: TextIO


@contextmanager
def redirected(log: Path) -> Iterator[Terminal]:
    """Within the block stdout and stderr append to ``log``; yields streams to what they were
    before (the terminal). Everything is put back however the block ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with ExitStack() as undo:
        saved = []
        for fd in (1, 2):
            saved.append(os.dup(fd))
            undo.callback(os.close, saved[-1])
        target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        undo.callback(os.close, target)
        terminal = Terminal(*(open(os.dup(fd), "w", buffering=1) for fd in saved))  # noqa: SIM115
        undo.callback(terminal.err.close)
        undo.callback(terminal.out.close)
        undo.callback(_put_back, saved)
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield terminal


def _put_back(saved: list[int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)


def quality(metrics: Mapping[str, float]) -> str:
    """The quality figures a job's lines show, where present: ``fd 41.1  checkerboard +0.07``."""
    parts = []
    if "fd" in metrics:
        parts.append(f"fd {metrics['fd']:.1f}")
    if "checkerboard" in metrics:
        parts.append(f"checkerboard {metrics['checkerboard']:+.2f}")
    return "  ".join(parts)


def epoch_line(
    name: str,
    epoch: int,
    epochs: int,
    logs: Mapping[str, Any],
    evaluated: Mapping[str, float],
    seconds: float,
) -> str:
    """One epoch of one job: losses, FD when the epoch was evaluated, the epoch's time."""
    parts = [f"{name:<{NAME_WIDTH}} epoch {epoch:>3}/{epochs}"]
    parts += [f"{key} {float(logs[key]):.3f}" for key in ("d_loss", "g_loss") if key in logs]
    if "fd" in evaluated:
        parts.append(f"fd {evaluated['fd']:.1f}")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts) + "\n"


def job_line(result: Mapping[str, Any], counter: str, log: Path) -> str:
    """How a job ended: FINISHED with its time and quality, SKIPPED, or FAILED with the first
    line of its error and where its log is; then the sweep's counter."""
    status = result["status"]
    if status == "FINISHED":
        text = f"FINISHED in {result['seconds']:.0f} s  {quality(result)}".rstrip()
    elif status == "SKIPPED":
        text = f"SKIPPED: already finished (run {result['run_id']})"
    else:
        error = (str(result.get("error", "")).splitlines() or ["no message"])[0][:MAX_ERROR]
        text = f"{status}: {error} (log: {log})"
    return f"{result['name']:<{NAME_WIDTH}} {text}  {counter}".rstrip() + "\n"
