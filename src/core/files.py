"""Files the harness keeps: where the checkout is, writes no reader sees half done, and caches
that a damaged file cannot break.

Parallel sweep jobs share one cache folder: every cache (data, classifier, real-image
reference) and every checkpoint is written under a temporary name and renamed into place, which
POSIX makes atomic, and read through :func:`read_cache`, which treats a file it cannot read as
absent and says so once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from src.core import messages

T = TypeVar("T")


def write_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written (the system's words), or None when it can:
    found by making it and writing a file in it, which a read-only mount, a full disk or a
    folder such as ``/proc`` refuse even to root. The folder is left in place: others
    (parallel jobs, a sweep's workers) may be writing into it already."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def project_root() -> str:
    """Absolute path of the checkout (the folder holding ``src/``), whatever the working dir."""
    return str(Path(__file__).resolve().parents[2])


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(partial)``, then rename ``partial`` to ``path``. ``partial`` is a hidden name in
    the same folder that ends with ``path``'s own name, so writers that choose a format by the
    ending (``.npz``, ``.keras``, ``.weights.h5``) accept it and globs of ``path``'s pattern
    never see it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    write(partial)
    partial.replace(path)


def read_cache(path: Path, read: Callable[[Path], T | None], what: str, redo: str) -> T | None:
    """``read(path)``; None when the file is absent, when ``read`` returns None (a cache of
    another key) or when reading fails in any way, which a notice on stderr reports
    (``notice: <what> <path> is damaged (<error>); <redo>``): the caller rebuilds it."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except Exception as error:  # zip, HDF5, JSON, NumPy or Keras: any damage means rebuild
        messages.say(f"notice: {what} {path} is damaged ({error}); {redo}")
        return None
