"""Commands for benchmark and experiment runs that leave the project's own records alone."""

from __future__ import annotations

import sys
from pathlib import Path


def isolated_run_command(tmp: Path, *overrides: str, label: str = "bench") -> list[str]:
    """``python -m src.train overrides...`` whose MLflow store, checkpoints, reports and (for a
    ``--multirun``) sweep folder stay in ``tmp``, named by ``label``.

    Caches (data, classifier) stay shared: warming them is the point of a first run.
    """
    command = [
        sys.executable,
        "-m",
        "src.train",
        *overrides,
        f"tracking.uri=sqlite:///{tmp / f'{label}.db'}",
        f"paths.checkpoint_dir={tmp / 'ck' / label}",
        f"paths.reports_dir={tmp / 'reports'}",
    ]
    multirun = "--multirun" in overrides or "-m" in overrides
    if multirun and not any(item.startswith("hydra.sweep.dir=") for item in overrides):
        command.append(f"hydra.sweep.dir={tmp / label}")
    return command
