"""Interrupts: SIGTERM is handled like Ctrl-C, so one code path ends a run or a sweep KILLED."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt."""


class Stopped(KeyboardInterrupt):
    """A run ended KILLED by an interrupt; the message is the one line the user sees."""

    def __init__(self, message: str, cause: KeyboardInterrupt):
        super().__init__(message)
        self.cause = cause


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def sigterm_as_interrupt() -> Any:
    """From now on SIGTERM raises :class:`Terminated`; returns the handler it replaced (None
    outside the main thread, where Python cannot install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def restore(previous: Any) -> None:
    """Put back the SIGTERM handler :func:`sigterm_as_interrupt` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (a killed job ends its run KILLED)."""
    previous = sigterm_as_interrupt()
    try:
        yield
    finally:
        restore(previous)


def exit_status(error: KeyboardInterrupt) -> int:
    """The shell's status for a process ended by this interrupt: 143 for SIGTERM, 130 for
    Ctrl-C (128 + the signal's number)."""
    cause = error.cause if isinstance(error, Stopped) else error
    return 128 + (signal.SIGTERM if isinstance(cause, Terminated) else signal.SIGINT)
