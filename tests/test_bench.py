"""The benchmark runs in tiny mode and writes well-formed JSON (speed is never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def run_bench(out, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """``python -m src.bench --out <out> args...`` in the project root, output captured."""
    command = [sys.executable, "-m", "src.bench", "--out", str(out), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_tiny_benchmark_writes_every_figure(tmp_path):
    args = ["--mode", "tiny", "nearest", "--variant", "train.jit_compile=true"]
    result = run_bench(tmp_path, *args, timeout=600)
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
    variant = row["variant"]
    assert variant["overrides"] == ["train.jit_compile=true"]
    assert 0 < variant["images_per_second"]["min"] <= variant["images_per_second"]["max"]
    assert variant["ratio_to_harness"] == pytest.approx(
        variant["images_per_second"]["median"] / row["harness_images_per_second"]["median"]
    )
    assert 5e6 < row["train_flops_per_image"] < 2e7  # D and G steps of the tutorial-sized GAN
    assert row["model_flop_utilisation"] > 0
    assert report["matmul_gflops"] > 0
    assert set(report["batch_scaling_images_per_second"]) == {"32", "128"}
    for key in ("final_evaluation_seconds", "startup_to_first_epoch_seconds",
                "mlflow_logging_seconds_per_epoch", "mlflow_logging_share_of_epoch"):  # fmt: skip
        assert report[key] > 0, key
    assert "nearest" in result.stdout and "ratio" in result.stdout


def test_tiny_scaling_writes_run_time_lines(tmp_path):
    result = run_bench(tmp_path, "--mode", "tiny", "--scaling", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("*-scaling.json")
    report = json.loads(path.read_text())
    assert report["mode"] == "tiny scaling" and report["images_per_epoch"] == 1024
    for key, xs in (("epochs", [1, 2]), ("runs_per_sweep", [1, 2])):
        line = report[key]
        assert line["x"] == xs and len(line["seconds"]) == len(xs)
        assert all(s > 0 for s in line["seconds"])
        # Two points lie on their own line: fixed + each * x reproduces both.
        for x, s in zip(line["x"], line["seconds"], strict=True):
            assert line["fixed_seconds"] + line["seconds_each"] * x == pytest.approx(s, rel=1e-6)
        assert line["max_relative_deviation"] == pytest.approx(0, abs=1e-6)
    assert "per epoch" in result.stdout and "per run" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nearest", "nosuch"], "unknown upsampler nosuch; choose from bilinear, nearest"),
        (["--variant", "train.nosuch=1"], "--variant train.nosuch=1: "),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, args, message):
    result = run_bench(tmp_path, *args, timeout=120)
    assert result.returncode == 2
    (line,) = [x for x in result.stderr.splitlines() if "error:" in x]
    assert message in line, result.stderr
    assert list(tmp_path.iterdir()) == []
