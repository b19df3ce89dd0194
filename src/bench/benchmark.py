"""``make bench`` (``python -m src.bench``): how fast the harness trains, measured side by side.

For every upsampler in ``conf/upsampler`` it times the harness's own training step (as the
config builds it: ``steps_per_execution``, in-graph batches from ``src.data.batches``) against a
reference written the plain way (the keras.io DCGAN pattern: ``train_step`` override, default
``compile``, ``fit`` on a NumPy array), interleaved in one process so machine noise hits both
alike, and reports the ratio; ``--variant OVERRIDE`` adds the harness re-configured by Hydra
overrides as a third column. It also counts training FLOPs per image from the traced train
step, measures a float32 matmul rate for model FLOP utilisation, the start-up time of
``python -m src.train`` to its first epoch, the full final evaluation (10k samples), the
per-epoch MLflow logging cost, and throughput against batch size. Figures go to
``outputs/bench/<timestamp>.json``. ``--scaling`` instead times real runs against epochs and
real sweeps against their number of runs (``outputs/bench/<timestamp>-scaling.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from src.bench.isolated_run import isolated_run_command
from src.bench.matmul import product_gflops
from src.bench.sweep_timing import UPSAMPLERS as SWEEP_UPSAMPLERS
from src.bench.sweep_timing import SweepSize, sweep_comparison
from src.config import schema
from src.core import files
from src.run.shared_inputs import full_data


@dataclass(frozen=True)
class Mode:
    """How much to measure: ``full`` for docs/performance.md's numbers, ``tiny`` for the test."""

    steps: int  # training steps per timed repeat
    repeats: int  # timed repeats per implementation
    warm_ups: int  # untimed src.train runs first (start-up, --scaling): warm caches and store
    batch_sizes: tuple[int, ...]
    eval_samples: int
    matmul_size: int
    scaling_images: int  # --scaling: training images per epoch of each real run
    scaling_epochs: tuple[int, ...]  # --scaling: epochs of the single runs
    scaling_runs: tuple[int, ...]  # --scaling: runs (seeds) of the sweeps
    sweep: SweepSize  # the whole-sweep figure's mini-sweep (src/bench/sweep_timing.py)


MODES = {
    "full": Mode(
        steps=48,
        repeats=7,
        warm_ups=1,
        batch_sizes=(32, 64, 128, 256, 512, 1024),
        eval_samples=10_000,
        matmul_size=2048,
        scaling_images=12_800,
        scaling_epochs=(1, 2, 4, 8),
        scaling_runs=(1, 2, 4),
        sweep=SweepSize(images=20_000, epochs=3, eval_samples=10_000, seeds=(0, 1)),
    ),
    # Every figure and code path, at the least work that still trains: the cost left is mostly
    # the TensorFlow import of each process (python -m src.train, the matmul workers).
    "tiny": Mode(
        steps=4,
        repeats=1,
        warm_ups=0,  # tiny figures are noise: the first timed run creates the store
        batch_sizes=(32, 128),
        eval_samples=100,
        matmul_size=256,
        scaling_images=256,
        scaling_epochs=(1, 2),
        scaling_runs=(1, 2),
        sweep=SweepSize(images=256, epochs=1, eval_samples=100, seeds=(0,)),
    ),
}


DEFAULT = "mnist10"  # the tutorial's setting: what make bench measured before depth was a factor


class Trainer:
    """One implementation ready to be timed: ``run()`` trains ``steps`` batches once."""

    def __init__(self, kind: str, settings: schema.Config, images: Any, steps: int):
        from src.bench.plain_gan import LastBatchTimer, plain_gan
        from src.data.batches import epoch_batches
        from src.models.gan import build_gan

        self.kind, self.steps = kind, steps
        self.last_batch = LastBatchTimer()
        batch = settings.train.batch_size
        self.images = images[: steps * batch]
        fit_args = {"epochs": 1, "verbose": 0, "callbacks": [self.last_batch]}
        if kind == "harness":
            self.model = build_gan(settings, steps)
            data = epoch_batches(self.images, batch, settings.seed, 0, 1)
            self.fit = lambda: self.model.fit(
                data, steps_per_epoch=steps, shuffle=False, **fit_args
            )
        else:
            self.model = plain_gan(settings)
            self.fit = lambda: self.model.fit(self.images, batch_size=batch, **fit_args)
        self.fit()  # warm-up: tracing and compilation are not throughput
        self.batch = batch

    def run(self) -> float:
        """Images per second of one timed pass, from calling ``fit`` to its last batch's end
        (see :class:`src.bench.plain_gan.LastBatchTimer` for why not to ``fit``'s return)."""
        started = time.perf_counter()
        self.fit()
        return self.steps * self.batch / (self.last_batch.ended - started)


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def train_flops_per_image(settings: schema.Config) -> float:
    """FLOPs of one harness training step divided by its batch, from the traced graph."""
    from src.evaluation.flops import train_flops_per_image as traced_flops
    from src.models.gan import build_gan

    gan = build_gan(settings, 1)
    gan.build_optimizers()
    return traced_flops(gan, settings.train.batch_size, settings.data.image_size)


def throughput(
    upsamplers: list[str],
    images: Any,
    mode: Mode,
    variant: tuple[str, ...] = (),
    base: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Harness and reference images/s per upsampler, interleaved repeats, and their ratio.

    With ``variant`` (Hydra overrides such as ``train.jit_compile=true``) the harness so
    configured is timed as a third implementation in the same rotation; ``base`` (such as
    ``setting=mnist28``) configures all of them.
    """
    results = {}
    for name in upsamplers:
        settings = schema.compose(*base, f"upsampler={name}")
        trainers = {
            "harness": Trainer("harness", settings, images, mode.steps),
            "plain": Trainer("plain", settings, images, mode.steps),
        }
        if variant:
            varied = schema.compose(*base, f"upsampler={name}", *variant)
            trainers["variant"] = Trainer("harness", varied, images, mode.steps)
        timings: dict[str, list[float]] = {label: [] for label in trainers}
        for _ in range(mode.repeats):
            for label, trainer in trainers.items():
                timings[label].append(trainer.run())
        ours, plain = summary(timings["harness"]), summary(timings["plain"])
        row = results[name] = {
            "harness_images_per_second": ours,
            "reference_images_per_second": plain,
            "ratio": ours["median"] / plain["median"],
            "train_flops_per_image": train_flops_per_image(settings),
        }
        line = (
            f"  {name:<11} harness {ours['median']:8,.0f} img/s   reference "
            f"{plain['median']:8,.0f} img/s   ratio {row['ratio']:.2f}"
        )
        if variant:
            varied_speed = summary(timings["variant"])
            row["variant"] = {
                "overrides": list(variant),
                "images_per_second": varied_speed,
                "ratio_to_harness": varied_speed["median"] / ours["median"],
            }
            line += f"   variant {varied_speed['median']:8,.0f} img/s"
        print(line)
    return results


def batch_scaling(images: Any, mode: Mode, base: tuple[str, ...] = ()) -> dict[str, float]:
    """Harness images/s against batch size (default upsampler)."""
    scaling = {}
    for batch in mode.batch_sizes:
        steps = max(mode.steps * 128 // batch, 4)
        settings = schema.compose(*base, f"train.batch_size={batch}")
        trainer = Trainer("harness", settings, images, steps)
        scaling[str(batch)] = statistics.median(trainer.run() for _ in range(mode.repeats))
    return scaling


def startup_seconds(tmp: Path, warm_ups: int, base: tuple[str, ...] = ()) -> float:
    """Wall time from launching ``python -m src.train`` to its first epoch starting.

    Run ``warm_ups`` times first so the data, classifier and reference caches and the MLflow
    store are warm.
    """
    # 2 epochs: Keras prints "Epoch 1/N" only when N > 1.
    args = isolated_run_command(
        tmp,
        *base,
        "data.limit=512",
        "train.epochs=2",
        "eval.samples=100",
        "train.verbose=2",
        f"hydra.run.dir={tmp / 'run'}",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each line as it is printed
    for _ in range(warm_ups):
        subprocess.run(args, cwd=files.project_root(), capture_output=True, check=True, env=env)
    started = time.perf_counter()
    with subprocess.Popen(
        args, cwd=files.project_root(), stdout=subprocess.PIPE, text=True, env=env
    ) as p:
        for line in p.stdout:
            if line.startswith("Epoch 1/"):
                elapsed = time.perf_counter() - started
                break
        else:
            raise RuntimeError("src.train ended without starting an epoch")
        p.wait()
    return elapsed


def evaluation_seconds(mode: Mode, base: tuple[str, ...] = ()) -> float:
    """Time of one full evaluation: generating ``eval_samples`` images, features, all metrics."""
    import numpy as np

    from src.evaluation.metrics import evaluate
    from src.models.networks import build_generator
    from src.run.shared_inputs import classifier_and_reference, full_data

    settings = schema.compose(*base)
    classifier, reference = classifier_and_reference(full_data(settings), settings)
    generator = build_generator(settings.generator, settings.upsampler)
    z = np.random.default_rng(0).standard_normal((mode.eval_samples, 100)).astype("float32")
    generator.predict(z[:10], verbose=0)
    started = time.perf_counter()
    samples = generator.predict(z, batch_size=2000, verbose=0)
    evaluate(samples, classifier, reference, steps=settings.generator.steps)
    return time.perf_counter() - started


def logging_seconds(tmp: Path, repeats: int = 5, image_size: int = 10) -> float:
    """Per-epoch MLflow cost: one epoch's metrics and its 64-sample grid of ``image_size``
    images, into a sqlite store."""
    import numpy as np

    from src.evaluation.sample_grid import sample_grid
    from src.tracking import store
    from src.tracking.naming import EPOCH_NAMES, sectioned

    uri = f"sqlite:///{tmp / 'log.db'}"
    run = store.start_run(uri, store.ensure_experiment(uri, "bench", None), "bench", {})
    grid = sample_grid(np.zeros((64, image_size, image_size, 1), np.float32), 4)
    metrics = sectioned(dict.fromkeys(EPOCH_NAMES, 1.0))
    started = time.perf_counter()
    for step in range(repeats):
        run.log_metrics(metrics, step=step)
        run.log_image(grid, key="samples", step=step)
    run.end("FINISHED")
    return (time.perf_counter() - started) / repeats


def linear_fit(xs: list[int], seconds: list[float]) -> dict[str, Any]:
    """Least-squares ``seconds = fixed + each * x``, and the largest relative miss of a point."""
    import numpy as np

    each, fixed = np.polyfit(xs, seconds, 1)
    fitted = each * np.asarray(xs) + fixed
    deviation = float(np.max(np.abs(np.asarray(seconds) - fitted) / fitted))
    return {
        "x": xs,
        "seconds": seconds,
        "fixed_seconds": float(fixed),
        "seconds_each": float(each),
        "max_relative_deviation": deviation,
    }


def run_scaling(tmp: Path, mode: Mode) -> dict[str, Any]:
    """Wall time of real ``python -m src.train`` runs against epochs, and of sweeps against runs.

    Each is a fresh process (after ``mode.warm_ups`` runs that warm the caches and the store),
    with ``mode.scaling_images`` training images per epoch and ``mode.eval_samples`` per
    evaluation; a least-squares line gives the fixed cost (start-up, classifier, final
    evaluation, saving) and the cost per epoch or per run, and the largest relative deviation
    from that line says how linear it is.
    """
    common = [
        f"data.limit={mode.scaling_images}",
        f"eval.samples={mode.eval_samples}",
        "train.verbose=0",
        "tracking.experiment=bench-scaling",
    ]

    def seconds(*args: str) -> float:
        started = time.perf_counter()
        command = isolated_run_command(tmp, *args, *common)
        done = subprocess.run(command, cwd=files.project_root(), capture_output=True, text=True)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"src.train {' '.join(args)} failed: {tail[0]}")
        return time.perf_counter() - started

    for _ in range(mode.warm_ups):  # data and classifier caches, the store's tables
        seconds("train.epochs=1", f"hydra.run.dir={tmp / 'warm'}")
    epochs = list(mode.scaling_epochs)
    by_epochs = [seconds(f"train.epochs={e}", f"hydra.run.dir={tmp / f'e{e}'}") for e in epochs]
    runs = list(mode.scaling_runs)
    by_runs = [
        seconds(
            "-m",
            "hydra/launcher=basic",  # time per run; the sweep figure times parallel sweeps
            "train.epochs=2",
            "seed=" + ",".join(map(str, range(n))),
            f"hydra.sweep.dir={tmp / f'r{n}'}",
        )
        for n in runs
    ]
    return {
        "images_per_epoch": mode.scaling_images,
        "epochs": linear_fit(epochs, by_epochs),
        "runs_per_sweep": linear_fit(runs, by_runs),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import keras
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def step_benchmark(
    mode_name: str, upsamplers: list[str], variant: tuple[str, ...] = (), setting: str = DEFAULT
) -> dict[str, Any]:
    """Throughput, FLOP utilisation, batch scaling, evaluation, start-up and logging figures,
    in the named ``setting`` (conf/setting: data size and generator depth)."""
    import keras

    mode = MODES[mode_name]
    base = (f"setting={setting}",)
    settings = schema.compose(*base)
    images = full_data(settings).x_train
    keras.utils.set_random_seed(0)
    print(
        f"upsampler-gan benchmark ({mode_name}), setting {setting} "
        f"({settings.data.image_size}x{settings.data.image_size}, {settings.generator.steps} "
        f"upsampling step(s)), batch {settings.train.batch_size}"
    )
    matmul = product_gflops(mode.matmul_size)
    results = throughput(upsamplers, images, mode, variant, base)
    for row in results.values():
        achieved = row["harness_images_per_second"]["median"] * row["train_flops_per_image"]
        row["model_flop_utilisation"] = achieved / (matmul * 1e9)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        report = {
            "mode": mode_name,
            "setting": setting,
            "machine": machine(),
            "batch_size": settings.train.batch_size,
            "matmul_gflops": matmul,
            "upsamplers": results,
            "batch_scaling_images_per_second": batch_scaling(images, mode, base),
            "final_evaluation_seconds": evaluation_seconds(mode, base),
            "eval_samples": mode.eval_samples,
            "startup_to_first_epoch_seconds": startup_seconds(tmp, mode.warm_ups, base),
            "mlflow_logging_seconds_per_epoch": logging_seconds(
                tmp, image_size=settings.data.image_size
            ),
            "sweep": sweep_figure(tmp, mode, matmul, results, base),
        }
    # The share is of an epoch of the default upsampler (or the first one measured).
    row = results.get(settings.upsampler.name) or next(iter(results.values()))
    epoch_seconds = len(images) / row["harness_images_per_second"]["median"]
    report["mlflow_logging_share_of_epoch"] = (
        report["mlflow_logging_seconds_per_epoch"] / epoch_seconds
    )
    _print_table(report)
    return report


def sweep_figure(
    tmp: Path,
    mode: Mode,
    matmul: float,
    results: dict[str, Any] | None = None,
    base: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The whole-sweep comparison (src/bench/sweep_timing.py), reusing FLOP counts already made."""
    results = results or {}
    flops = {
        name: results[name]["train_flops_per_image"]
        if name in results
        else train_flops_per_image(schema.compose(*base, f"upsampler={name}"))
        for name in SWEEP_UPSAMPLERS
    }
    print(f"whole sweeps ({_grid(len(SWEEP_UPSAMPLERS), len(mode.sweep.seeds))}):")
    return sweep_comparison(tmp, mode.sweep, flops, matmul, mode.matmul_size, base)


def sweep_benchmark(mode_name: str, setting: str = DEFAULT) -> dict[str, Any]:
    """``--sweep``: only the whole-sweep figure, with the one-process matmul rate it needs."""
    mode = MODES[mode_name]
    matmul = product_gflops(mode.matmul_size)
    base = (f"setting={setting}",)
    with tempfile.TemporaryDirectory() as scratch:
        report = {
            "mode": f"{mode_name} sweep",
            "setting": setting,
            "machine": machine(),
            "matmul_gflops": matmul,
            "sweep": sweep_figure(Path(scratch), mode, matmul, base=base),
        }
    _print_sweep(report["sweep"])
    return report


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark, print its table and write the JSON; returns the JSON's path."""
    args, known = _arguments(argv)
    started = time.perf_counter()
    try:
        if args.scaling:
            with tempfile.TemporaryDirectory() as scratch:
                scaling = run_scaling(Path(scratch), MODES[args.mode])
            report = {"mode": f"{args.mode} scaling", "machine": machine(), **scaling}
            _print_scaling(report)
        elif args.sweep:
            report = sweep_benchmark(args.mode, args.setting)
        else:
            upsamplers = args.upsamplers or known
            report = step_benchmark(args.mode, upsamplers, tuple(args.variant), args.setting)
    except (RuntimeError, subprocess.CalledProcessError) as error:  # a src.train run failed
        sys.exit(f"error: {error}; nothing was written")
    report["bench_seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-scaling" if args.scaling else "-sweep" if args.sweep else ""
    suffix += "" if args.setting == DEFAULT else f"-{args.setting}"
    path = out / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}{suffix}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"written to {path}")
    return path


def _arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The command line, checked before any work (argparse's one-line errors, exit 2), and
    the upsamplers there are (one per file in conf/upsampler)."""
    parser = argparse.ArgumentParser(
        prog="python -m src.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    setting_files = (Path(files.project_root()) / "conf" / "setting").glob("*.yaml")
    settings = sorted(path.stem for path in setting_files)
    parser.add_argument(
        "--setting",
        choices=settings,
        default=DEFAULT,
        help="data size and generator depth (conf/setting), as setting=NAME in src.train",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead: wall time of real runs against epochs and of sweeps against runs",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead: only the whole-sweep figure (parallel, one at a time, plain loop)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="also time the harness with this override, e.g. "
        "train.jit_compile=true; repeat it for several overrides, which together "
        "form one extra column",
    )
    parser.add_argument("--out", default=str(Path(files.project_root()) / "outputs" / "bench"))
    parser.add_argument("upsamplers", nargs="*", help="default: every file in conf/upsampler")
    args = parser.parse_intermixed_args(argv)
    if args.scaling and args.sweep:
        parser.error("--scaling and --sweep are separate benchmarks; give one of them")
    if args.scaling and args.setting != DEFAULT:
        parser.error("--scaling times the default setting's runs; it takes no --setting")
    if (args.scaling or args.sweep) and (args.variant or args.upsamplers):
        flag = "--scaling" if args.scaling else "--sweep"
        parser.error(f"{flag} times whole default runs; it takes no upsamplers or --variant")
    folder = Path(files.project_root()) / "conf" / "upsampler"
    known = sorted(path.stem for path in folder.glob("*.yaml"))
    unknown = sorted(set(args.upsamplers) - set(known))
    if unknown:
        parser.error(f"unknown upsampler {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.variant:
        try:
            schema.compose(f"setting={args.setting}", *args.variant)
        except Exception as error:  # Hydra's own message names the bad override
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            parser.error(f"--variant {' '.join(args.variant)}: {reason}")
    return args, known


def _print_scaling(report: dict[str, Any]) -> None:
    print(f"run time, {report['images_per_epoch']:,} images per epoch")
    for key, unit in (("epochs", "epoch"), ("runs_per_sweep", "run")):
        fit = report[key]
        pairs = ", ".join(f"{x}: {y:.1f} s" for x, y in zip(fit["x"], fit["seconds"], strict=True))
        print(
            f"  {key}: {pairs}; {fit['fixed_seconds']:.1f} s + {fit['seconds_each']:.1f} s per "
            f"{unit}, off the line by at most {fit['max_relative_deviation']:.1%}"
        )


def _print_table(report: dict[str, Any]) -> None:
    print(f"\nmatmul: {report['matmul_gflops']:.0f} GFLOP/s")
    print(
        f"{'upsampler':<11} {'harness img/s':>14} {'reference':>10} {'ratio':>6} "
        f"{'MFLOP/img':>10} {'MFU':>6}"
    )
    for name, row in report["upsamplers"].items():
        print(
            f"{name:<11} {row['harness_images_per_second']['median']:>14,.0f} "
            f"{row['reference_images_per_second']['median']:>10,.0f} {row['ratio']:>6.2f} "
            f"{row['train_flops_per_image'] / 1e6:>10.2f} "
            f"{row['model_flop_utilisation']:>6.1%}"
        )
        if "variant" in row:
            variant = row["variant"]
            print(
                f"{'':<11} with {' '.join(variant['overrides'])}: "
                f"{variant['images_per_second']['median']:,.0f} img/s "
                f"({variant['ratio_to_harness']:.2f} x the harness)"
            )
    scaling = ", ".join(
        f"{b}: {v:,.0f}" for b, v in report["batch_scaling_images_per_second"].items()
    )
    print(f"batch size -> img/s: {scaling}")
    print(
        f"final evaluation ({report['eval_samples']} samples): "
        f"{report['final_evaluation_seconds']:.2f} s"
    )
    print(f"start-up to first epoch: {report['startup_to_first_epoch_seconds']:.1f} s")
    print(
        f"MLflow per epoch: {report['mlflow_logging_seconds_per_epoch'] * 1000:.0f} ms "
        f"({report['mlflow_logging_share_of_epoch']:.2%} of an epoch)"
    )
    _print_sweep(report["sweep"])


def _print_sweep(sweep: dict[str, Any]) -> None:
    print(
        f"\nwhole sweep, {_grid(len(sweep['upsamplers']), len(sweep['seeds']))}, "
        f"{sweep['epochs']} epochs of {sweep['images_per_run']:,} images; matmul ceiling "
        f"{sweep['matmul_gflops_ceiling']:.0f} GFLOP/s (one process "
        f"{sweep['matmul_gflops_one_process']:.0f}, one per core "
        f"{sweep['matmul_gflops_one_per_core']:.0f})"
    )
    print(f"{'way':<14} {'wall s':>7} {'img/s':>8} {'MFU':>6} {'transpose MFU':>14}")
    for way in ("default", "one_at_a_time", "plain_loop"):
        row = sweep[way]
        print(
            f"{way:<14} {row['wall_seconds']:>7.1f} {row['images_per_second']:>8,.0f} "
            f"{row['model_flop_utilisation']:>6.1%} "
            f"{row['transpose']['model_flop_utilisation']:>14.1%}"
        )
    print(
        f"wall time default / one at a time: "
        f"{sweep['wall_ratio_default_to_one_at_a_time']:.2f}; throughput default / plain "
        f"loop: {sweep['throughput_ratio_default_to_plain_loop']:.2f}"
    )


def _grid(upsamplers: int, seeds: int) -> str:
    """``2 upsamplers x 1 seed``: the mini-sweep's grid in words."""
    return f"{upsamplers} upsamplers x {seeds} seed{'s' if seeds > 1 else ''}"
