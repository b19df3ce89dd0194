"""How many parallel jobs, with how many TensorFlow threads each, make a sweep fastest here?

Times one 4-job sweep (``upsampler=nearest seed=0,1,2,3``, 4 epochs of 30,000 images,
evaluation only at epoch 0 and the last, no report) under each plan below, every plan twice,
alternating, and prints the wall times as JSON. Each sweep writes to a scratch folder; the data
and classifier caches in outputs/cache are shared (warm them with one run first).

    python experiments/sweep_plans.py             # the 2-core plans
    python experiments/sweep_plans.py --one-core  # the same sweep pinned to one core (taskset)

docs/sweeps.md ("How the rule was chosen") quotes its output (experiments/bench/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from src.bench.isolated_run import isolated_run_command  # noqa: E402 - after the path is set

SWEEP = [
    "upsampler=nearest",
    "seed=0,1,2,3",
    "train.epochs=4",
    "data.limit=30000",
    "eval.every_epochs=100",
    "train.verbose=0",
    "hydra.callbacks.sweep.report=false",
]
PLANS = {  # label: extra overrides
    "one_at_a_time_default_threads": ["hydra/launcher=basic"],
    "default": [],
    "2_jobs_2_threads": ["hydra.launcher.n_jobs=2", "train.threads=2"],
    "4_jobs_1_thread": ["hydra.launcher.n_jobs=4", "train.threads=1"],
    "one_at_a_time_1_thread": ["hydra/launcher=basic", "train.threads=1"],
}
ONE_CORE_PLANS = {
    "default": [],
    "2_jobs_1_thread": ["hydra.launcher.n_jobs=2", "train.threads=1"],
    "one_at_a_time_default_threads": ["hydra/launcher=basic"],
}


def wall_seconds(tmp: Path, label: str, extra: list[str], prefix: list[str]) -> float:
    """Run the sweep under one plan; its wall time (raises if it fails)."""
    label = f"{label}-{time.monotonic_ns()}"  # a fresh store and sweep folder for each
    command = [*prefix, *isolated_run_command(tmp, "--multirun", *SWEEP, *extra, label=label)]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    """Time every plan twice, alternating, and print {plan: [seconds, seconds]}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one-core", action="store_true", help="pin the sweeps to core 0")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    plans, prefix = (ONE_CORE_PLANS, ["taskset", "-c", "0"]) if args.one_core else (PLANS, [])
    results: dict[str, list[float]] = {label: [] for label in plans}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for label, extra in plans.items():
                results[label].append(round(wall_seconds(Path(scratch), label, extra, prefix), 1))
                print(label, results[label][-1], file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
