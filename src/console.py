"""The terminal: a sweep job's few lines on it (its full log in its job folder), and the
interrupts that come from it.

Parallel jobs that all print Keras progress bars and TensorFlow's start-up lines to one
terminal garble it. Inside :func:`job_output` the process's file descriptors 1 and 2 go to the
job's log file, so everything (Python, Keras, TensorFlow's C++ logging, tracebacks) lands there,
and the job writes its own short lines to the terminal. Each is one ``write`` of less than
``PIPE_BUF`` bytes, which POSIX keeps whole when several processes write to one pipe or tty.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass
class Terminal:
    """Line-buffered streams to where stdout and stderr pointed before :func:`job_output`."""

    out: TextIO
    err: TextIO


@contextmanager
def job_output(log: Path) -> Iterator[Terminal]:
    """Within the block stdout and stderr append to ``log``; yields streams to what they were
    before (the terminal)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = Terminal(*(open(os.dup(fd), "w", buffering=1) for fd in saved))  # noqa: SIM115
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
        terminal.out.close()
        terminal.err.close()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same code ends the runs."""


def raise_terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler: stop what runs now by raising :class:`Terminated`."""
    raise Terminated(f"signal {signum}")


def interrupted_status(error: KeyboardInterrupt) -> int:
    """The shell's exit status for a process ended by this interrupt: 143 for SIGTERM, 130 for
    Ctrl-C (SIGINT)."""
    return 143 if isinstance(error, Terminated) else 130
