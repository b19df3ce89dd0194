"""The benchmark runs in tiny mode and writes well-formed JSON (speed is never asserted here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from src.bench.benchmark import linear_fit
from src.bench.sweep_timing import aggregate, union_seconds


def run_bench(out: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """``python -m src.bench --out <out> args...`` in the project root, output captured."""
    command = [sys.executable, "-m", "src.bench", "--out", str(out), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _outputs_but_caches() -> set:
    outputs = ROOT / "outputs"
    return {p for p in outputs.rglob("*") if not p.is_relative_to(outputs / "cache")}


@pytest.mark.slow
def test_tiny_benchmark_writes_every_figure(tmp_path):
    args = ["--mode", "tiny", "nearest", "--variant", "train.jit_compile=true"]
    result = run_bench(tmp_path, *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    report = json.loads(path.read_text())
    row = report["upsamplers"]["nearest"]
    # Present and positive: both loops trained. How they compare is never asserted.
    for key in ("harness_images_per_second", "reference_images_per_second"):
        assert set(row[key]) == {"median", "min", "max"}
        assert row[key]["min"] > 0
    variant = row["variant"]
    assert variant["overrides"] == ["train.jit_compile=true"]
    assert variant["images_per_second"]["min"] > 0
    assert 5e6 < row["train_flops_per_image"] < 2e7  # D and G steps of the tutorial-sized GAN
    assert row["model_flop_utilisation"] > 0
    assert report["matmul_gflops"] > 0
    assert set(report["batch_scaling_images_per_second"]) == {"32", "128"}
    for key in (
        "final_evaluation_seconds",
        "startup_to_first_epoch_seconds",
        "mlflow_logging_seconds_per_epoch",
        "mlflow_logging_share_of_epoch",
    ):
        assert report[key] > 0, key
    assert "nearest" in result.stdout and "ratio" in result.stdout
    _check_sweep_figure(report["sweep"])


@pytest.mark.slow
def test_tiny_benchmark_at_28x28_names_its_setting(tmp_path):
    result = run_bench(tmp_path, "--mode", "tiny", "--setting", "mnist28", "transpose", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("*-mnist28.json")
    report = json.loads(path.read_text())
    assert report["setting"] == "mnist28"
    assert "setting mnist28 (28x28, 2 upsampling step(s))" in result.stdout
    row = report["upsamplers"]["transpose"]
    # two steps at 7 -> 14 -> 28 and a discriminator on 28x28: about 5 times the 10x10 step
    assert 2e7 < row["train_flops_per_image"] < 1e8
    assert row["harness_images_per_second"]["min"] > 0
    assert row["reference_images_per_second"]["min"] > 0
    _check_sweep_figure(report["sweep"])


def test_an_unknown_setting_is_refused_before_any_work(tmp_path):
    result = run_bench(tmp_path, "--setting", "mnist64", timeout=120)
    assert result.returncode == 2
    assert "argument --setting: invalid choice: 'mnist64'" in result.stderr
    assert not list(tmp_path.iterdir())


def _check_sweep_figure(sweep: dict) -> None:
    """The tiny whole-sweep figure: 2 upsamplers x 1 seed of one 256-image epoch, three ways."""
    assert sweep["upsamplers"] == ["nearest", "transpose"] and sweep["seeds"] == [0]
    assert sweep["matmul_gflops_ceiling"] == max(
        sweep["matmul_gflops_one_process"], sweep["matmul_gflops_one_per_core"]
    )
    for way in ("default", "one_at_a_time"):
        row = sweep[way]
        # Every run trained 2 batches of 128: read back from each epoch's MLflow metrics.
        assert row["images"] == pytest.approx(2 * 256), way
        assert row["transpose"]["images"] == pytest.approx(256), way
        assert 0 < row["training_seconds"] < row["wall_seconds"], way  # start-up, evaluation
        # At most: run in parallel, nearest's one epoch may lie within transpose's.
        assert 0 < row["transpose"]["training_seconds"] <= row["training_seconds"], way
    assert sweep["plain_loop"]["images"] == 2 * 256  # both runs, one after another
    assert sweep["plain_loop"]["images_per_second"] > 0


@pytest.mark.slow
def test_tiny_scaling_writes_run_time_lines(tmp_path):
    before = _outputs_but_caches()
    result = run_bench(tmp_path, "--mode", "tiny", "--scaling", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("*-scaling.json")
    report = json.loads(path.read_text())
    assert report["mode"] == "tiny scaling" and report["images_per_epoch"] == 256
    for key, xs in (("epochs", [1, 2]), ("runs_per_sweep", [1, 2])):
        line = report[key]
        assert line["x"] == xs and len(line["seconds"]) == len(xs)
        assert all(s > 0 for s in line["seconds"])
        # The fit itself is tested below; timings are never asserted (tiny runs are all noise).
        assert all(math.isfinite(line[k]) for k in ("fixed_seconds", "seconds_each"))
        assert line["max_relative_deviation"] >= 0
    assert "per epoch" in result.stdout and "per run" in result.stdout
    # Runs, sweeps, reports and checkpoints went to a temporary folder (caches are shared).
    assert _outputs_but_caches() == before


@pytest.mark.slow  # each starts the benchmark's process (TensorFlow's import)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nearest", "nosuch"], "unknown upsampler nosuch; choose from bilinear, nearest"),
        (["--variant", "train.nosuch=1"], "--variant train.nosuch=1: "),
        (["--scaling", "nearest"], "--scaling times whole default runs"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, args, message):
    result = run_bench(tmp_path, *args, timeout=120)
    assert result.returncode == 2
    (line,) = [x for x in result.stderr.splitlines() if "error:" in x]
    assert message in line, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_linear_fit_gives_fixed_cost_cost_each_and_worst_miss():
    fit = linear_fit([1, 2, 4], [12.0, 14.5, 18.0])
    # Least squares through (1, 12), (2, 14.5), (4, 18): Sxy / Sxx = (55/6) / (14/3) = 55/28,
    # and the line passes through the means (7/3, 89/6).
    assert fit["seconds_each"] == pytest.approx(55 / 28)
    assert fit["fixed_seconds"] == pytest.approx(89 / 6 - 55 / 28 * 7 / 3)  # 10.25
    fitted = [fit["fixed_seconds"] + fit["seconds_each"] * x for x in (1, 2, 4)]
    misses = [abs(y - f) / f for y, f in zip([12.0, 14.5, 18.0], fitted, strict=True)]
    assert fit["max_relative_deviation"] == pytest.approx(max(misses))
    assert fit["max_relative_deviation"] > 0.01  # these three points are visibly off a line


def test_union_of_training_intervals_counts_overlaps_once():
    intervals = [
        {"upsampler": "nearest", "start": 0.0, "end": 4.0, "images": 100},
        {"upsampler": "nearest", "start": 1.0, "end": 3.0, "images": 100},  # inside the first
        {"upsampler": "transpose", "start": 3.5, "end": 6.0, "images": 200},  # overlaps it
        {"upsampler": "transpose", "start": 8.0, "end": 9.0, "images": 100},  # after a gap
    ]
    assert union_seconds(intervals) == pytest.approx(7.0)
    figures = aggregate(intervals, {"nearest": 1e7, "transpose": 2e7}, ceiling=10.0)
    assert figures["images_per_second"] == pytest.approx(500 / 7.0)
    # (200 images x 10 MFLOP + 300 images x 20 MFLOP) / 7 s = 8/7 GFLOP/s, of a 10 GFLOP/s ceiling
    assert figures["gflops"] == pytest.approx(8 / 7)
    assert figures["model_flop_utilisation"] == pytest.approx(8 / 70)
