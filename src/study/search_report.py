"""The report's section on a ``make tune`` search: per upsampler, its trials' validation FD,
how much FD varies over the search space, the expected best FD after k trials (k = 1..N) with
its spread, and the configuration the final runs used.

Trial runs carry a ``trial`` tag (src/run/training.py); the report compares only the final
runs as a sweep, and reads the trials here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from src.evaluation.plots import Band, band_panels
from src.study import expected_best
from src.tracking import store
from src.tracking.naming import metric

TRIAL_TAG = "trial"
# A trial's params that every trial of a search shares: the rest are what was searched.
SHARED_PARAMS = ("upsampler", "seed", "train.threads", "data.validation")


def load_trials(uri: str, sweep_id: str, experiment_id: str) -> list[Any]:
    """The search trials' runs of ``sweep_id`` (none for a sweep without a search)."""
    client = store.open_client(uri)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.sweep_id = '{sweep_id}'", max_results=5000
    )
    return [run for run in runs if TRIAL_TAG in run.data.tags]


def scores(trials: list[Any]) -> dict[str, list[tuple[int, float, dict[str, str]]]]:
    """Per upsampler, each trial's (number, final validation FD, searched params); a trial
    that did not finish scores NaN (it diverged or failed)."""
    found: dict[str, list[tuple[int, float, dict[str, str]]]] = {}
    for run in trials:
        fd = run.data.metrics.get(metric("fd"), math.nan)
        value = fd if run.info.status == "FINISHED" else math.nan
        params = {k: v for k, v in run.data.params.items() if k not in SHARED_PARAMS}
        entry = (int(run.data.tags[TRIAL_TAG]), float(value), params)
        found.setdefault(run.data.tags["upsampler"], []).append(entry)
    return {name: sorted(entries) for name, entries in sorted(found.items())}


def section(found: dict[str, list[tuple[int, float, dict[str, str]]]]) -> list[str]:
    """The Markdown section: robustness over the space and the expected-best curve."""
    if not found:
        return []
    lines = [
        "",
        "## Hyperparameter search (validation FD)",
        "",
        "Each upsampler searched with the same trials, scored by FD on the held-out training "
        "images (never the test split). Expected best after k trials: the mean and standard "
        "deviation of the lowest FD among k of these trials drawn without replacement (Dodge "
        "et al. 2021's unbiased estimator); diverged trials have no FD and are left out of it.",
        "",
        "| upsampler | trials | diverged | best | median | q25..q75 | within 10% of best |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entries in found.items():
        r = expected_best.robustness([fd for _, fd, _ in entries])
        lines.append(
            f"| `{name}` | {len(entries)} | {r['diverged']:.0f} | {r['best']:.2f} | "
            f"{r['median']:.2f} | {r['q25']:.2f}..{r['q75']:.2f} | {r['within_10pct']:.0%} |"
        )
    lines += ["", *_curve_table(found), "", *_best_configs(found)]
    return lines


def _curve_table(found: dict[str, list[tuple[int, float, dict[str, str]]]]) -> list[str]:
    curves = {name: expected_best.curve([fd for _, fd, _ in e]) for name, e in found.items()}
    longest = max((len(c) for c in curves.values()), default=0)
    lines = [
        "Expected best validation FD after k trials (mean +- sd):",
        "",
        "| k | " + " | ".join(f"`{name}`" for name in curves) + " |",
        "|" + "---|" * (len(curves) + 1),
    ]
    for k in range(1, longest + 1):
        cells = [
            f"{c[k - 1]['expected']:.2f} +- {c[k - 1]['spread']:.2f}" if k <= len(c) else "-"
            for c in curves.values()
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def _best_configs(found: dict[str, list[tuple[int, float, dict[str, str]]]]) -> list[str]:
    lines = ["Best trial of each search (the final runs' configuration):", ""]
    for name, entries in found.items():
        finite = [e for e in entries if np.isfinite(e[1])]
        if not finite:
            lines.append(f"- `{name}`: every trial diverged")
            continue
        number, fd, params = min(finite, key=lambda e: e[1])
        shown = " ".join(f"{key}={value}" for key, value in params.items())
        lines.append(f"- `{name}`: trial {number}, validation FD {fd:.2f}: `{shown}`")
    return lines


def plot_expected_best(
    found: dict[str, list[tuple[int, float, dict[str, str]]]], path: Path
) -> bool:
    """Expected best validation FD against trials k, one band (+- sd) per upsampler."""
    bands = []
    for name, entries in found.items():
        points = expected_best.curve([fd for _, fd, _ in entries])
        if not points:
            continue
        ks = [p["k"] for p in points]
        mean = np.asarray([p["expected"] for p in points])
        spread = np.asarray([p["spread"] for p in points])
        bands.append(Band(f"{name} (N={len(entries)})", ks, mean, mean - spread, mean + spread))
    if not bands:
        return False
    title = "Expected best validation FD after k trials, band = +- sd"
    band_panels({title: bands}, path, x="trials k")
    return True
