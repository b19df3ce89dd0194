"""The report's section on a ``make tune`` search: per upsampler, its trials' validation FD,
how much FD varies over the search space, the expected best FD after k trials (k = 1..N) with
its spread, and the configuration the final runs used.

Trial runs carry a ``trial`` tag and name their search's run as parent (src/run/training.py);
the report compares only the final runs as a sweep, and reads the trials here, one search per
parent run (its label: the grid cell; its ``space.*`` params: the keys searched).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from src.evaluation.plots import Band, band_panels
from src.study import expected_best
from src.tracking import store
from src.tracking.naming import TRIAL_TAG, metric

SPACE_PREFIX = "space."  # the search run's params that name a searched key (src/study/tuning.py)
Trials = dict[str, list[tuple[int, float, dict[str, str]]]]


def load_trials(uri: str, sweep_id: str, experiment_id: str) -> Trials:
    """Per search (its grid cell, e.g. ``upsampler=nearest``), each trial's (number, final
    validation FD, searched params) in ``sweep_id``; a trial that did not finish scores NaN
    (it diverged or failed). Empty for a sweep without a search."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = store.open_client(uri)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.sweep_id = '{sweep_id}'", max_results=5000
    )
    parents: dict[str, Any] = {}
    found: Trials = {}
    for run in (run for run in runs if TRIAL_TAG in run.data.tags):
        parent_id = run.data.tags[MLFLOW_PARENT_RUN_ID]
        if parent_id not in parents:
            parents[parent_id] = client.get_run(parent_id).data
        parent = parents[parent_id]
        searched = [
            k.removeprefix(SPACE_PREFIX) for k in parent.params if k.startswith(SPACE_PREFIX)
        ]
        fd = run.data.metrics.get(metric("fd"), math.nan)
        value = fd if run.info.status == "FINISHED" else math.nan
        params = {key: run.data.params[key] for key in searched if key in run.data.params}
        entry = (int(run.data.tags[TRIAL_TAG]), float(value), params)
        found.setdefault(parent.tags.get("search", parent_id), []).append(entry)
    return {label: sorted(entries) for label, entries in sorted(found.items())}


def section(found: Trials) -> list[str]:
    """The Markdown section: robustness over the space and the expected-best curve."""
    if not found:
        return []
    lines = [
        "",
        "## Hyperparameter search (validation FD)",
        "",
        "Each search ran the same number of trials, scored by FD on the held-out training "
        "images (never the test split). Expected best after k trials: the mean and standard "
        "deviation of the lowest FD among k of these trials drawn without replacement (Dodge "
        "et al. 2021's unbiased estimator). A trial that diverged or failed has no FD: k counts "
        "the trials that have one, so a search that loses trials to divergence looks better "
        "at a given k than it is; the table says how many it lost.",
        "",
        "| search | trials | diverged or failed | best | median | q25..q75 | within 10% of best |",
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


def _curve_table(found: Trials) -> list[str]:
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


def _best_configs(found: Trials) -> list[str]:
    lines = ["Best trial of each search (the final runs' configuration, searched keys):", ""]
    for name, entries in found.items():
        finite = [e for e in entries if np.isfinite(e[1])]
        if not finite:
            lines.append(f"- `{name}`: every trial diverged")
            continue
        number, fd, params = min(finite, key=lambda e: e[1])
        shown = " ".join(f"{key}={value}" for key, value in params.items())
        lines.append(f"- `{name}`: trial {number}, validation FD {fd:.2f}: `{shown}`")
    return lines


def plot_expected_best(found: Trials, path: Path) -> bool:
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
    band_panels({title: bands}, path, x="trials k (that did not diverge)")
    return True
