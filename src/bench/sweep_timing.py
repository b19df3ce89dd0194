"""``make bench``'s whole-sweep figure: what users wait for is a sweep, not one training step.

One mini-sweep (two upsamplers x the mode's seeds: two in ``make bench``, one in tiny mode) is
trained three ways on this machine, one after another in one benchmark run:

- (a) ``default``: ``python -m src.train --multirun`` as the harness runs it by default (jobs in
  parallel, threads from the cores: src/config/resources.py);
- (b) ``one_at_a_time``: the same command with ``hydra/launcher=basic`` and ``train.threads=0``
  (jobs one after another, TensorFlow's default threads: every sweep before parallel sweeps);
- (c) ``plain_loop``: the keras.io-style GAN (src/bench/plain_gan.py) trained on the same images for
  the same epochs, one run after another in this process.

Sweep wall time is the whole command (start-up, evaluations, saving, the report). Aggregate
training throughput is the training images of all runs over the wall-clock time during which
at least one run was inside a training epoch (the union of the epochs' intervals, from MLflow:
each epoch's ``epoch_seconds`` ends at its metrics' timestamp); for (c) the sum of its ``fit``
times. Aggregate model FLOP utilisation is that throughput times the training FLOPs per image,
over the matmul rate with every core busy: the larger of one process on every thread and one
single-threaded process per core at once, summed.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.bench.isolated_run import isolated_run_command
from src.bench.matmul import all_cores_gflops
from src.config import schema
from src.core import files

UPSAMPLERS = ("nearest", "transpose")
WAYS = {  # how each way runs the mini-sweep: extra overrides of the multirun
    "default": (),
    "one_at_a_time": ("hydra/launcher=basic", "train.threads=0"),
}


@dataclass(frozen=True)
class SweepSize:
    """The mini-sweep's runs: training images, epochs, samples per evaluation, seeds."""

    images: int
    epochs: int
    eval_samples: int
    seeds: tuple[int, ...]


def mini_sweep(size: SweepSize, base: tuple[str, ...] = ()) -> list[str]:
    """The mini-sweep's overrides: the grid, its size, evaluation at epoch 0 and the last only;
    ``base`` first (e.g. ``setting=mnist28``)."""
    return [
        "--multirun",
        *base,
        f"upsampler={','.join(UPSAMPLERS)}",
        f"seed={','.join(map(str, size.seeds))}",
        f"data.limit={size.images}",
        f"train.epochs={size.epochs}",
        f"eval.samples={size.eval_samples}",
        "eval.every_epochs=1000",
        "train.verbose=0",
    ]


def epoch_intervals(uri: str) -> list[dict[str, Any]]:
    """Every training epoch of every run in the store: upsampler, start, end (s), images."""
    from mlflow.tracking import MlflowClient

    from src.tracking.naming import metric

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("upsamplers")
    intervals = []
    for run in client.search_runs([experiment.experiment_id]):
        if "report" in run.data.tags:
            continue
        history = client.get_metric_history
        rates = {m.step: m.value for m in history(run.info.run_id, metric("images_per_second"))}
        for epoch in history(run.info.run_id, metric("epoch_seconds")):
            end = epoch.timestamp / 1000
            intervals.append(
                {
                    "upsampler": run.data.tags["upsampler"],
                    "start": end - epoch.value,
                    "end": end,
                    "images": rates[epoch.step] * epoch.value,
                }
            )
    return intervals


def union_seconds(intervals: list[dict[str, Any]]) -> float:
    """Length of the union of the intervals' [start, end]: time when any of them was running."""
    total, reach = 0.0, float("-inf")
    for item in sorted(intervals, key=lambda i: i["start"]):
        start = max(item["start"], reach)
        if item["end"] > start:
            total += item["end"] - start
        reach = max(reach, item["end"])
    return total


def aggregate(intervals: list[dict[str, Any]], flops: dict[str, float], ceiling: float) -> dict:
    """Images/s, GFLOP/s and model FLOP utilisation of the intervals taken together."""
    seconds = union_seconds(intervals)
    images = sum(item["images"] for item in intervals)
    gflop = sum(item["images"] * flops[item["upsampler"]] for item in intervals) / 1e9
    return {
        "training_seconds": seconds,
        "images": images,
        "images_per_second": images / seconds,
        "gflops": gflop / seconds,
        "model_flop_utilisation": gflop / seconds / ceiling,
    }


def summarise(
    intervals: list[dict[str, Any]], wall: float, flops: dict[str, float], ceiling: float
) -> dict[str, Any]:
    """One way's wall time and aggregates, overall and for its ``transpose`` runs alone."""
    transpose = [item for item in intervals if item["upsampler"] == "transpose"]
    return {
        "wall_seconds": wall,
        **aggregate(intervals, flops, ceiling),
        "transpose": aggregate(transpose, flops, ceiling),
    }


def plain_loop(size: SweepSize, base: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """(c): the keras.io-style GAN trained for the mini-sweep's runs one after another, each
    timed from ``fit`` to its last batch; returned as one back-to-back interval per run."""
    import keras

    from src.bench.plain_gan import LastBatchTimer, plain_gan
    from src.run.shared_inputs import full_data

    images = full_data(schema.compose(*base)).x_train[: size.images]
    intervals, clock = [], 0.0
    for upsampler in UPSAMPLERS:
        for seed in size.seeds:
            settings = schema.compose(*base, f"upsampler={upsampler}", f"seed={seed}")
            keras.utils.set_random_seed(seed)
            model, timer = plain_gan(settings), LastBatchTimer()
            batch = settings.train.batch_size
            started = time.perf_counter()
            model.fit(images, batch_size=batch, epochs=size.epochs, verbose=0, callbacks=[timer])
            seconds = timer.ended - started
            trained = size.epochs * (len(images) // batch) * batch
            interval = {"upsampler": upsampler, "start": clock, "end": clock + seconds}
            intervals.append({**interval, "images": trained})
            clock += seconds
    return intervals


def sweep_comparison(
    tmp: Path,
    size: SweepSize,
    flops: dict[str, float],
    matmul_one: float,
    matmul_size: int,
    base: tuple[str, ...] = (),
) -> dict[str, Any]:
    """(a), (b) and (c) on one mini-sweep, with their wall times, aggregates and ratios.

    ``flops`` is the harness's training FLOPs per image by upsampler; ``matmul_one`` the matmul
    rate of one process on every thread (GFLOP/s), measured by the caller; ``base``: overrides
    of every run (``setting=mnist28``).
    """
    matmul_parallel = all_cores_gflops(matmul_size)
    ceiling = max(matmul_one, matmul_parallel)
    ways: dict[str, Any] = {}
    for label, extra in WAYS.items():
        started = time.perf_counter()
        command = isolated_run_command(tmp, *mini_sweep(size, base), *extra, label=label)
        done = subprocess.run(command, cwd=files.project_root(), capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"the {label} mini-sweep failed: {tail[0]}")
        intervals = epoch_intervals(f"sqlite:///{tmp / f'{label}.db'}")
        ways[label] = summarise(intervals, wall, flops, ceiling)
        print(f"  {label}: {wall:.1f} s, {ways[label]['images_per_second']:,.0f} img/s")
    plain = plain_loop(size, base)
    ways["plain_loop"] = summarise(plain, plain[-1]["end"], flops, ceiling)
    default, basic, loop = ways["default"], ways["one_at_a_time"], ways["plain_loop"]
    return {
        "upsamplers": list(UPSAMPLERS),
        "seeds": list(size.seeds),
        "images_per_run": size.images,
        "epochs": size.epochs,
        "eval_samples": size.eval_samples,
        "matmul_gflops_one_process": matmul_one,
        "matmul_gflops_one_per_core": matmul_parallel,
        "matmul_gflops_ceiling": ceiling,
        **ways,
        "wall_ratio_default_to_one_at_a_time": default["wall_seconds"] / basic["wall_seconds"],
        "throughput_ratio_default_to_plain_loop": default["images_per_second"]
        / loop["images_per_second"],
        "throughput_ratio_default_to_one_at_a_time": default["images_per_second"]
        / basic["images_per_second"],
    }
