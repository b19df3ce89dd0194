"""File locks that wait a bounded time and, when the time runs out, say which process holds
them.

The locks are filelock's, which on Linux are ``flock`` locks: the kernel releases one when its
process ends, however it ends, so a lock file left by a killed process never blocks the next.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROC_LOCKS = Path("/proc/locks")  # Linux's table of held locks: kind, pid, device:inode


class LockTimeout(RuntimeError):
    """A lock was still held by another process when the wait ran out."""


def holder(path: Path) -> str | None:
    """The process holding the ``flock`` on ``path`` (``pid N: its command line``), from
    Linux's ``/proc/locks``; None where that cannot be known (another system, no holder)."""
    try:
        inode = os.stat(path).st_ino
        table = PROC_LOCKS.read_text().splitlines()
    except OSError:
        return None
    for line in table:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 10668 fe:00:2147026 0 EOF"; a waiter's line has "->"
        if len(fields) >= 6 and fields[1] == "FLOCK" and "->" not in fields:
            pid, where = fields[4], fields[5]
            if where.rsplit(":", 1)[-1] == str(inode):
                return f"pid {pid}: {_command(pid)}"
    return None


def _command(pid: str) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "a process that has ended"
    return " ".join(raw.decode(errors="replace").split("\0")).strip()[:200] or "unknown"


@contextmanager
def held(path: Path, seconds: float) -> Iterator[None]:
    """Hold the lock file ``path``, waiting at most ``seconds`` for it; raise
    :class:`LockTimeout` naming the file and its holder when it stays taken."""
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=seconds)
    try:
        lock.acquire()
    except Timeout:
        who = holder(path) or "another process"
        raise LockTimeout(f"{path} is still held after {seconds:.0f} s by {who}") from None
    try:
        yield
    finally:
        lock.release()
