"""The benchmark runs in tiny mode and writes well-formed JSON (speed is never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_tiny_benchmark_writes_every_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "src.bench", "--mode", "tiny", "--out", str(tmp_path), "nearest"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    report = json.loads(path.read_text())
    row = report["upsamplers"]["nearest"]
    for key in ("harness_images_per_second", "reference_images_per_second"):
        assert set(row[key]) == {"median", "min", "max"}
        assert 0 < row[key]["min"] <= row[key]["median"] <= row[key]["max"]
    assert row["ratio"] == pytest.approx(
        row["harness_images_per_second"]["median"] / row["reference_images_per_second"]["median"]
    )
    assert 5e6 < row["train_flops_per_image"] < 2e7  # D and G steps of the tutorial-sized GAN
    assert row["model_flop_utilisation"] > 0
    assert report["matmul_gflops"] > 0
    assert set(report["batch_scaling_images_per_second"]) == {"32", "128"}
    for key in ("final_evaluation_seconds", "startup_to_first_epoch_seconds",
                "mlflow_logging_seconds_per_epoch", "mlflow_logging_share_of_epoch"):  # fmt: skip
        assert report[key] > 0, key
    assert "nearest" in result.stdout and "ratio" in result.stdout
