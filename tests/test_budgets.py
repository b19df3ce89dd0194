"""The report at equal compute (src/study/budgets.py) on a real MLflow store with planted
curves: `slow` is better at every epoch but takes twice the seconds per epoch, at the same
FLOPs per image as `fast`. Equal epochs and equal FLOPs must pick `slow`; equal seconds must
pick `fast`, judged where `slow` stood when `fast` stopped, not extrapolated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from src.study.report import build_report
from src.tracking.naming import metric

SWEEP = "2026-12-07_00-00-00-planted"
EPOCHS = 10
IMAGES = 1000
FLOPS_PER_IMAGE = 5e6
SECONDS_PER_EPOCH = {"slow": 20.0, "fast": 10.0}
PENALTY = {"slow": 0.0, "fast": 6.0}  # FD added at every epoch: slow is better per epoch


def _fd(name: str, epoch: int, noise: float) -> float:
    return 300.0 * math.exp(-epoch / 3.0) + 30.0 + PENALTY[name] + noise


def _plant(uri: str) -> None:
    client = MlflowClient(uri)
    experiment = client.create_experiment("upsamplers")
    rng = np.random.default_rng(0)
    for name in ("fast", "slow"):
        for seed in range(5):
            run = client.create_run(
                experiment,
                run_name=f"{name}-s{seed}",
                tags={"sweep_id": SWEEP, "upsampler": name, "seed": str(seed)},
            )
            noise = rng.normal(0.0, 1.0)
            points = []
            for epoch in range(EPOCHS + 1):
                images = epoch * IMAGES
                values = {
                    "fd": _fd(name, epoch, noise),
                    "images": images,
                    "flops": images * FLOPS_PER_IMAGE,
                    "seconds": epoch * SECONDS_PER_EPOCH[name],
                }
                points += [Metric(metric(k), v, 0, epoch) for k, v in values.items()]
            client.log_batch(run.info.run_id, metrics=points)
            client.set_terminated(run.info.run_id, "FINISHED")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budgets")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    _plant(uri)
    path = build_report(uri, "upsamplers", SWEEP, tmp / "reports")
    return path.read_text(), path.parent


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n##", start + len(title))
    return text[start : end if end > 0 else None]


def test_equal_epochs_and_equal_flops_pick_the_better_per_epoch_arm(report):
    """At the end of the runs (equal epochs) and at equal FLOPs, `slow` wins by about 6 FD."""
    text, _ = report
    final = _section(text, "## Pairwise differences")
    assert "**slow is better** on fd" in final, final
    flops = _section(text, "### At equal training FLOPs")
    assert "**slow is better** on fd" in flops, flops
    assert "`fast` at 5e+10, `slow` at 5e+10" in flops, flops


def test_equal_seconds_picks_the_faster_arm_and_says_where_slow_stood(report):
    """At fast's 100 s, slow is judged at its epoch-5 evaluation (100 s): fast wins there."""
    text, folder = report
    seconds = _section(text, "### At equal training seconds")
    assert "Budget: training seconds 100 (`fast` at 100, `slow` at 100)" in seconds, seconds
    assert "**fast is better** on fd" in seconds, seconds
    assert "`slow` trained on to 200 training seconds" in seconds, seconds
    assert (folder / "fd_seconds.png").stat().st_size > 10_000
