"""The comparison report of a sweep: one row per upsampler over seeds, with 95% intervals.

``python -m src.report [SWEEP_ID]`` (``make report SWEEP=...``) reads a sweep's runs back from
MLflow with ``mlflow.search_runs`` and writes ``outputs/reports/<sweep_id>/report.md`` plus
figures, and logs them to a run named ``report-<sweep_id>``. The multirun callback in
``src/study/sweep.py`` calls :func:`build_report` when a sweep ends.

Per upsampler: means over seeds with Student-t 95% intervals. Between two upsamplers
(src/study/stats.py): the difference paired over seeds where both ran the same seeds, Welch's
otherwise, with t and percentile-bootstrap intervals, the probability of improvement, Holm's
adjustment over the pairs of a metric, and a verdict: better, or undecided with the seeds that
would decide it. With one seed no interval exists, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from src.config.schema import ConfigError, MarginConfig
from src.core.files import project_root
from src.evaluation.plots import Band, band_panels, pyplot, save, spectrum_figure
from src.study import budgets, search_report, stats
from src.tracking import store
from src.tracking.naming import TRIAL_TAG, is_checkerboard, metric, step_checkerboards

REPORT_TAG = "report"  # set on report runs, which share the sweep_id tag with training runs

# Final metrics in the table: (key, label, True when lower is better, format).
TABLE_METRICS: list[tuple[str, str, bool | None, str]] = [
    ("fd", "FD", True, "{:.3f}"),
    ("kid", "KID", True, "{:.4f}"),
    ("precision", "precision", False, "{:.3f}"),
    ("recall", "recall", False, "{:.3f}"),
    ("class_coverage", "classes", False, "{:.1f}"),
    ("checkerboard", "checkerboard", None, "{:+.3f}"),
    ("checkerboard_p4", "checkerboard p4", None, "{:+.3f}"),
    ("checkerboard_p8", "checkerboard p8", None, "{:+.3f}"),
    ("spectrum_error", "spectrum error", True, "{:.3f}"),
    ("images_per_second", "images/s", False, "{:,.0f}"),
    ("train_seconds", "train s", True, "{:.1f}"),
]
# Columns shown only when a run has them: a deeper generator's hidden step's checkerboard
OPTIONAL_COLUMNS = {"checkerboard_p4", "checkerboard_p8"}
# Pairwise comparisons; lower is better (checkerboard is compared by its distance from 0).
PAIR_METRICS = ["fd", "checkerboard"]
LEVEL = 0.05  # family-wise error of each metric's pairwise comparisons (Holm)
PAIR_INTRO = [
    "Paired: over the seeds both ran (same data order, latents and initial Dense weights), "
    "else Welch's unpaired t. Bootstrap: percentile, 10,000 resamples, fixed random state. "
    "P(first better): the share of (first, second) run pairs where the first scores lower "
    "(Mann-Whitney U / nm), with a bootstrap interval. Holm p: adjusted over the pairs of one "
    "metric. TOST p: two one-sided tests that the difference lies within report.margin "
    "(equivalent below 0.05). Seeds needed: noncentral-t power 0.8 at the observed spread.",
]


class ReportError(RuntimeError):
    """The sweep cannot be reported; the message says what to do."""


def load_runs(uri: str, experiment: str, sweep_id: str | None) -> tuple[str, Any]:
    """The sweep's training runs as a DataFrame (``mlflow.search_runs``), latest sweep if None."""
    import mlflow

    # search_runs (a DataFrame) has no client form; the caller's global URI comes back after.
    with store.fluent_uri(uri):
        if mlflow.get_experiment_by_name(experiment) is None:
            raise ReportError(
                f"experiment {experiment!r} not found in {uri}; run `make sweep` first"
            )
        runs = mlflow.search_runs(
            experiment_names=[experiment],
            filter_string="tags.sweep_id != ''"
            if sweep_id is None
            else f"tags.sweep_id = '{sweep_id}'",
            order_by=["attributes.start_time DESC"],
        )
    for tag in (REPORT_TAG, TRIAL_TAG):  # compared: the training runs, not a search's trials
        if not runs.empty and f"tags.{tag}" in runs:
            runs = runs[runs[f"tags.{tag}"].isna()]
    if runs.empty:
        which = f"sweep {sweep_id!r}" if sweep_id else "any sweep"
        raise ReportError(f"no runs of {which} in {uri} ({experiment}); run `make sweep` first")
    sweep_id = sweep_id or str(runs["tags.sweep_id"].iloc[0])
    runs = runs[runs["tags.sweep_id"] == sweep_id].sort_values(["tags.upsampler", "tags.seed"])
    return sweep_id, runs.reset_index(drop=True)


def _column(runs: Any, key: str) -> Any:
    """A metric's final values, NaN where a run lacks it; runs of harness versions before the
    sectioned names (src/tracking/naming.py) logged it under its bare name."""
    values = np.full(len(runs), np.nan)
    for column in (f"metrics.{metric(key)}", f"metrics.{key}"):
        if column in runs:
            values = np.where(np.isnan(values), runs[column].to_numpy(dtype=np.float64), values)
    return values


def _tag_number(runs: Any, key: str) -> Any:
    """A numeric tag's values, NaN where a run lacks it (older runs: a metric of that name)."""
    column = f"tags.{key}"
    tags = runs[column] if column in runs else [None] * len(runs)
    values = np.asarray([float(v) if isinstance(v, str) else np.nan for v in tags])
    if f"metrics.{key}" in runs:
        values = np.where(np.isnan(values), runs[f"metrics.{key}"].to_numpy(np.float64), values)
    return values


def _metric_history(client: Any, run_id: str, key: str) -> list:
    """A metric's history under its sectioned name, or its bare one (older runs)."""
    return client.get_metric_history(run_id, metric(key)) or client.get_metric_history(run_id, key)


def pair_metrics(runs: Any) -> list[str]:
    """PAIR_METRICS, and the earlier steps' checkerboards when these runs have them (a column
    of the search can come from other sweeps' runs, empty in these)."""
    return PAIR_METRICS + _step_checkerboards(runs)


def _step_checkerboards(runs: Any) -> list[str]:
    measured = [column for column in runs.columns if runs[column].notna().any()]
    return step_checkerboards(measured)


def _margin(margins: dict[str, float | None] | None, key: str) -> float | None:
    """report.margin of ``key``; every checkerboard shares one (the same log-ratio scale)."""
    return (margins or {}).get("checkerboard" if is_checkerboard(key) else key)


def _what(key: str) -> str:
    """How a compared metric is named: checkerboards by their distance from 0."""
    return f"|{key}|" if is_checkerboard(key) else key


def summarize(runs: Any) -> list[dict[str, Any]]:
    """One row per upsampler: run counts, size, and each table metric's interval (finished)."""
    rows = []
    for upsampler, group in runs.groupby("tags.upsampler", sort=True):
        finished = group[group["status"] == "FINISHED"]
        rows.append(
            {
                "upsampler": upsampler,
                "finished": len(finished),
                "failed": int((group["status"] != "FINISHED").sum()),
                "generator_params": _first(_tag_number(group, "generator_params")),
                "generator_flops": _first(_tag_number(group, "generator_flops")),
                **{key: stats.t_interval(_column(finished, key)) for key, *_ in TABLE_METRICS},
                **{f"{key}_robust": _robust(_column(finished, key)) for key in PAIR_METRICS},
            }
        )
    return rows


def _robust(values: Any) -> dict[str, stats.Interval]:
    """The intervals that do not assume normality: the mean's and the IQM's bootstrap."""
    return {
        "mean_bootstrap": stats.bootstrap_interval(values),
        "iqm_bootstrap": stats.bootstrap_interval(values, stats.iqm),
    }


def _first(values: Any) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(finite[0]) if finite else math.nan


@dataclass(frozen=True)
class Comparison:
    """One pair of upsamplers on one metric: ``first - second`` and what it says."""

    first: str
    second: str
    key: str
    difference: stats.Difference
    improvement: stats.Interval  # P(a run of first scores lower than a run of second)
    p_holm: float
    p_equivalent: float  # TOST of |difference| < the metric's margin; NaN without a margin
    seeds: int  # finished seeds behind the smaller of the two
    verdict: str


Training = dict[str, dict[int, list[Comparison]]]  # pair metric -> epoch -> comparisons
# axis -> (its budget, the comparisons at it) for each pair metric
Compute = dict[str, list[tuple[budgets.EqualBudget, list[Comparison]]]]


def compare_pairs(runs: Any, margins: dict[str, float | None] | None = None) -> list[Comparison]:
    """Every pair of upsamplers on each pair metric, from the runs' final values (lower is
    better; checkerboard by its distance from 0); ``margins``: report.margin."""
    finished = runs[runs["status"] == "FINISHED"]
    names = sorted(finished["tags.upsampler"].unique())
    found = []
    for key in pair_metrics(runs):
        values = {name: _by_seed(finished, name, key) for name in names}
        found += compare_family(key, values, _margin(margins, key))
    return found


def compare_family(
    key: str, values: dict[str, list[tuple[int, float]]], margin: float | None = None
) -> list[Comparison]:
    """Each pair of ``values`` (upsampler -> (seed, value)) on ``key``: paired over seeds where
    the seeds match, Holm's adjustment over the pairs, a probability of improvement, TOST
    against ``margin``, a verdict."""
    names = sorted(values)
    found = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = values[first], values[second]
            n = min(len(a), len(b))
            better = stats.improvement_interval([v for _, v in a], [v for _, v in b])
            same = stats.equivalent(a, b, margin) if margin and n >= 2 else math.nan
            diff = stats.difference(a, b)
            found.append(Comparison(first, second, key, diff, better, math.nan, same, n, ""))
    adjusted = stats.holm([c.difference.p_value for c in found])
    decided = []
    for c, p in zip(found, adjusted, strict=True):
        verdict = _verdict(c.first, c.second, key, c.difference, p, c.p_equivalent, c.seeds, margin)
        decided.append(replace(c, p_holm=p, verdict=verdict))
    return decided


def over_training(
    client: Any, runs: Any, margins: dict[str, float | None] | None = None
) -> Training:
    """The same comparisons at every evaluated epoch: per pair metric, epoch -> comparisons,
    from each finished run's metric history."""
    finished = runs[runs["status"] == "FINISHED"]
    found: Training = {}
    for key in pair_metrics(runs):
        by_step: dict[int, dict[str, list[tuple[int, float]]]] = {}
        for _, run in finished.iterrows():
            for point in _metric_history(client, run["run_id"], key):
                value = abs(point.value) if is_checkerboard(key) else point.value
                per_variant = by_step.setdefault(point.step, {})
                per_variant.setdefault(run["tags.upsampler"], []).append(
                    (int(run["tags.seed"]), value)
                )
        margin = _margin(margins, key)
        found[key] = {
            step: compare_family(key, values, margin)
            for step, values in sorted(by_step.items())
            if len(values) >= 2
        }
    return found


def at_equal_compute(
    client: Any, runs: Any, margins: dict[str, float | None] | None = None
) -> tuple[Compute, dict[str, list[budgets.Curve]]]:
    """The same comparisons at equal training FLOPs and at equal training seconds
    (src/study/budgets.py), and the FD curves they were read from."""
    finished = runs[runs["status"] == "FINISHED"]
    found = {key: budgets.curves(client, finished, key) for key in pair_metrics(runs)}
    compared: Compute = {}
    for axis in budgets.AXES:
        for key in found:
            budget = budgets.at_equal(found[key], axis)
            if budget is not None:
                pairs = compare_family(key, budget.values, _margin(margins, key))
                compared.setdefault(axis, []).append((budget, pairs))
    return compared, found["fd"]


def _compute_tables(compute: Compute) -> list[str]:
    """Per axis, its budget, what each upsampler spent there, and the comparisons at it."""
    if not compute:
        return []
    lines = [
        "",
        "## At equal compute (first minus second)",
        "",
        "The comparisons above, at the training FLOPs and at the training seconds that every "
        f"upsampler reached; a run counts at its last evaluation within {budgets.SLACK:.0%} "
        "of the budget. Seconds are training time only, on this sweep's machine and load.",
    ]
    for axis, entries in compute.items():
        budget = entries[0][0]
        lines += [
            "",
            f"### At equal {budgets.AXES[axis]}",
            "",
            f"Budget: {budgets.describe(budget)}.",
        ]
        lines += [f"- {note}" for note in budget.notes()]
        lines += ["", *_pair_rows([c for _, pairs in entries for c in pairs])]
    return lines


def _by_seed(finished: Any, upsampler: str, key: str) -> list[tuple[int, float]]:
    """(seed, value) of each finished run of ``upsampler`` that has ``key``; checkerboard as
    its distance from real data's level (0)."""
    group = finished[finished["tags.upsampler"] == upsampler]
    values = np.asarray(_column(group, key), dtype=np.float64)
    if is_checkerboard(key):
        values = np.abs(values)
    seeds = [int(s) for s in group["tags.seed"]]
    return [(s, float(v)) for s, v in zip(seeds, values, strict=True) if np.isfinite(v)]


def _verdict(
    first: str,
    second: str,
    key: str,
    diff: stats.Difference,
    p: float,
    p_equivalent: float,
    n: int,
    margin: float | None,
) -> str:
    """better when the adjusted test rejects; equivalent when TOST shows the difference is
    inside ``margin``; otherwise undecided, with the seeds per upsampler that would decide a
    difference of the observed size at 80% power."""
    what = _what(key)
    if n == 0:
        return f"no {what} values for one of them (no finished run has the metric)."
    if n < 2:
        return f"one seed of one of them: no interval on {what}; run more seeds."
    if p < LEVEL and diff.t.excludes(0.0):
        winner, by = (second, diff.t.mean) if diff.t.mean > 0 else (first, -diff.t.mean)
        verdict = f"**{winner} is better** on {what} (lower by {by:.3g}; Holm p = {p:.2g})"
        if p_equivalent < LEVEL:  # real, and smaller than what report.margin calls a difference
            verdict += f", by less than the +-{margin:g} margin (TOST p = {p_equivalent:.2g})"
        return verdict + "."
    if p_equivalent < LEVEL:
        return (
            f"**equivalent** on {what}: the difference is within +-{margin:g} (TOST p = "
            f"{p_equivalent:.2g})."
        )
    needed = stats.seeds_needed(diff.t.mean, diff.spread, paired=diff.design == "paired")
    if needed is None:
        return f"undecided at {n} seeds: no difference in {what} was seen."
    more = f"more than {stats.MAX_SEEDS:,}" if needed > stats.MAX_SEEDS else f"about {needed}"
    return (
        f"undecided at {n} seeds; {more} seeds per upsampler would decide a difference of "
        f"this size ({diff.t.mean:+.3g}) at 80% power."
    )


def _history(client: Any, runs: Any, key: str) -> dict[str, list[np.ndarray]]:
    """Per upsampler, each finished run's metric history as (steps, values) arrays."""
    curves: dict[str, list[np.ndarray]] = {}
    for _, run in runs[runs["status"] == "FINISHED"].iterrows():
        history = _metric_history(client, run["run_id"], key)
        if history:
            points = np.asarray(sorted((m.step, m.value) for m in history), dtype=np.float64)
            curves.setdefault(run["tags.upsampler"], []).append(points)
    return curves


def _plot_over_epochs(client: Any, runs: Any, keys: list[str], path: Path) -> None:
    panels = {}
    for key in keys:
        bands = []
        for name, curves in sorted(_history(client, runs, key).items()):
            steps = sorted(set.intersection(*(set(c[:, 0]) for c in curves)))
            values = np.asarray([[dict(c.tolist())[s] for s in steps] for c in curves])
            low, high = (values.min(axis=0), values.max(axis=0)) if len(curves) > 1 else (None,) * 2
            bands.append(Band(f"{name} (n={len(curves)})", steps, values.mean(axis=0), low, high))
        panels[f"{metric(key)}: mean, band = min..max over seeds"] = bands
    band_panels(panels, path)


def _final_image(client: Any, run_id: str, key: str, folder: Path) -> Path | None:
    pngs = [
        a.path
        for a in client.list_artifacts(run_id, "images")
        if a.path.endswith(".png") and Path(a.path).name.startswith(f"{key}+step+")
    ]
    if not pngs:
        return None
    last = max(pngs, key=lambda p: int(Path(p).name.split("+")[2]))
    return Path(client.download_artifacts(run_id, last, str(folder)))


def _plot_samples(client: Any, runs: Any, path: Path, scratch: Path) -> int | None:
    """Final sample grids side by side, one run per upsampler, all of one common seed."""
    from PIL import Image

    finished = runs[runs["status"] == "FINISHED"]
    per_variant = finished.groupby("tags.upsampler")["tags.seed"].apply(set)
    common = sorted(set.intersection(*per_variant), key=int) if len(per_variant) else []
    if not common:
        return None
    seed = common[0]
    chosen = finished[finished["tags.seed"] == seed]
    # One row per run: the grids are wide (tracking.sample_columns).
    fig, axes = pyplot().subplots(len(chosen), 1, figsize=(8, 2.6 * len(chosen)), squeeze=False)
    for axis, (_, run) in zip(axes[:, 0], chosen.iterrows(), strict=True):
        image = _final_image(client, run["run_id"], "samples", scratch / run["run_id"])
        if image is not None:
            axis.imshow(np.asarray(Image.open(image)), cmap="gray")
        axis.set_title(f"{run['tags.upsampler']} (seed {seed}, final epoch)")
        axis.axis("off")
    save(fig, path)
    return int(seed)


def _plot_spectra(client: Any, runs: Any, path: Path, scratch: Path) -> bool:
    """Azimuthally averaged power spectrum per upsampler (mean over seeds) against real data."""
    spectra: dict[str, list[np.ndarray]] = {}
    real = frequencies = None
    for _, run in runs[runs["status"] == "FINISHED"].iterrows():
        try:
            local = client.download_artifacts(run["run_id"], "spectrum.json", str(scratch))
        except Exception:  # a run without the artifact (failed early) is just left out
            continue
        data = json.loads(Path(local).read_text())
        frequencies, real = data["frequency"], data["real"]
        spectra.setdefault(run["tags.upsampler"], []).append(np.asarray(data["generated"]))
    if real is None:
        return False
    means = {name: np.mean(items, axis=0) for name, items in sorted(spectra.items())}
    title = "Azimuthally averaged power spectrum, final samples"
    save(spectrum_figure(frequencies, real, means, title, size=(6.5, 4.5)), path)
    return True


def render_markdown(
    sweep_id: str,
    runs: Any,
    rows: list,
    pairs: list,
    figures: dict,
    image_url: Callable[[str], str] = str,
    training: Training | None = None,
    compute: Compute | None = None,
    search: list[str] | None = None,
) -> str:
    """The report's Markdown: table, pairwise sentences, failed runs, figures (each linked as
    ``image_url(file name)``)."""
    seeds = sorted({int(s) for s in runs["tags.seed"]})
    lines = [
        f"# Upsampler comparison: sweep `{sweep_id}`",
        "",
        f"{len(runs)} runs, seeds {seeds}. Values are means over finished seeds with a 95% "
        "Student-t interval `[low, high]`.",
        "",
    ]
    if max((row["finished"] for row in rows), default=0) < 2:
        lines += ["**Intervals unavailable: fewer than 2 finished seeds per upsampler.**", ""]
    lines += _metric_table(rows) + _robust_table(rows) + _pair_table(pairs)
    lines += _compute_tables(compute or {}) + (search or [])
    lines += _training_tables(training or {}) + _unfinished(runs)
    lines += ["", "## Figures", ""]
    for title, name in figures.items():
        lines += [f"### {title}", "", f"![{title}]({image_url(name)})", ""]
    return "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    """A Markdown table row; a ``|`` inside a cell is escaped."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _metric_table(rows: list) -> list[str]:
    """Per upsampler: runs, size, cost and every metric's mean with its t interval."""
    header = ["upsampler", "finished", "failed", "G params", "G FLOPs/image"]
    shown = [m for m in TABLE_METRICS if m[0] not in OPTIONAL_COLUMNS or _measured(rows, m[0])]
    header += [label for _, label, _, _ in shown]
    lines = [_row(header), "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"`{row['upsampler']}`",
            str(row["finished"]),
            str(row["failed"]),
            _count(row["generator_params"]),
            _count(row["generator_flops"]),
        ]
        lines.append(_row(cells + [row[key].show(fmt) for key, _, _, fmt in shown]))
    lines += [
        "",
        "Lower is better for FD, KID, spectrum error and train seconds; higher for precision, "
        "recall, classes and images/s; checkerboard is best near 0 (real data).",
    ]
    return lines


def _measured(rows: list, key: str) -> bool:
    return any(math.isfinite(row[key].mean) for row in rows)


def _robust_table(rows: list) -> list[str]:
    """FD and checkerboard per upsampler: t mean, bootstrap mean and bootstrap IQM."""
    kinds = ("mean, t", "mean, bootstrap", "IQM, bootstrap")
    header = ["upsampler"] + [
        f"{label} {kind}" for label in ("FD", "checkerboard") for kind in kinds
    ]
    lines = [
        "",
        "Without assuming normality (percentile bootstrap, 10,000 resamples; IQM: the mean of "
        "the middle half of the seeds):",
        "",
        _row(header),
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [f"`{row['upsampler']}`"]
        for key, fmt in (("fd", "{:.3f}"), ("checkerboard", "{:+.3f}")):
            robust = row[f"{key}_robust"]
            cells += [
                row[key].show(fmt),
                robust["mean_bootstrap"].show(fmt),
                robust["iqm_bootstrap"].show(fmt),
            ]
        lines.append(_row(cells))
    return lines


def _pair_table(pairs: list) -> list[str]:
    """Every pair's difference, intervals, probability of improvement, tests and verdict."""
    if not pairs:
        return []
    lines = ["", "## Pairwise differences (first minus second)", "", *PAIR_INTRO, ""]
    return lines + _pair_rows(pairs)


def _pair_rows(pairs: list) -> list[str]:
    """The table of :func:`_pair_table`, one row per comparison."""
    header = [
        "pair",
        "metric",
        "design",
        "difference, t 95%",
        "bootstrap 95%",
        "P(first better)",
        "Holm p",
        "TOST p",
        "verdict",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair in pairs:
        diff = pair.difference
        cells = [
            f"`{pair.first}` - `{pair.second}`",
            _what(pair.key),
            diff.design,
            diff.t.show("{:+.4g}"),
            diff.bootstrap.show("{:+.4g}"),
            pair.improvement.show("{:.2f}"),
            f"{pair.p_holm:.2g}",
            "-" if math.isnan(pair.p_equivalent) else f"{pair.p_equivalent:.2g}",
            pair.verdict,
        ]
        lines.append(_row(cells))
    return lines


def _unfinished(runs: Any) -> list[str]:
    """The runs that failed or were stopped, with their reasons, and grid cells with no run."""
    lines = ["", "## Failed or unfinished runs", ""]
    bad = runs[runs["status"] != "FINISHED"]
    if bad.empty:
        lines.append("None: every run of the sweep finished.")
    for _, run in bad.iterrows():
        reason = run.get("tags.failure_reason")
        reason = f": {reason}" if isinstance(reason, str) else ""
        lines.append(f"- `{run['tags.mlflow.runName']}` ({run['run_id']}) {run['status']}{reason}")
    for name in _missing(runs):
        lines.append(f"- `{name}` missing: no MLflow run (the job failed before training)")
    return lines


def _pairs_over_training(by_step: dict[int, list[Comparison]]) -> dict[tuple[str, str], dict]:
    """(first, second) -> {epoch: comparison}: each pair's comparisons over the epochs it has
    (a pair is missing at an epoch where one of the two has no value)."""
    pairs: dict[tuple[str, str], dict[int, Comparison]] = {}
    for step, comparisons in by_step.items():
        for c in comparisons:
            if c.seeds > 0:
                pairs.setdefault((c.first, c.second), {})[step] = c
    return dict(sorted(pairs.items()))


def _training_tables(training: Training) -> list[str]:
    """Per pair metric, a table of the pairwise differences at each evaluated epoch: does the
    ranking hold over training, or appear only late?"""
    lines: list[str] = []
    for key, by_step in training.items():
        pairs = _pairs_over_training(by_step)
        if not pairs:
            continue
        what = _what(key).replace("|", "\\|")
        if not lines:
            lines += [
                "",
                "## Over training",
                "",
                "The same comparisons at each evaluated step: the epoch, or the round of a "
                "FLOPs or seconds budget (step 0: untrained); the difference with its t 95% "
                "interval, and the winner where Holm's adjusted test decides.",
                "",
            ]
        header = [f"`{first}` - `{second}`" for first, second in pairs]
        lines += [
            f"{what}:",
            "",
            "| step | " + " | ".join(header) + " |",
            "|" + "---|" * (len(pairs) + 1),
        ]
        for step in by_step:
            cells = [_training_cell(steps.get(step)) for steps in pairs.values()]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _training_cell(c: Comparison | None) -> str:
    if c is None:
        return "-"
    shown = c.difference.t.show("{:+.3g}")
    if c.p_holm < LEVEL and c.difference.t.excludes(0.0):
        return f"{shown} **{c.second if c.difference.t.mean > 0 else c.first}**"
    return f"{shown} undecided"


def _plot_differences(training: Training, path: Path) -> bool:
    """Each pair's difference over epochs, with its t 95% interval as a band."""
    curves = {key: _pairs_over_training(by_step) for key, by_step in training.items()}
    panels = {}
    for key, pairs in curves.items():
        if not pairs:
            continue
        what = _what(key) if is_checkerboard(key) else metric(key)
        panels[f"{what}: first - second, band = t 95% interval"] = [
            Band(f"{first} - {second}", list(by_step), *_t_columns(by_step))
            for (first, second), by_step in pairs.items()
        ]
    if not panels:
        return False
    band_panels(panels, path, zero_line=True)
    return True


def _t_columns(by_step: dict) -> tuple[list[float], list[float], list[float]]:
    """The t intervals of a pair's comparisons over epochs: means, lows and highs."""
    t = [c.difference.t for c in by_step.values()]
    return [i.mean for i in t], [i.low for i in t], [i.high for i in t]


def _count(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{int(value):,}"


def _missing(runs: Any) -> list[str]:
    """Variant/seed pairs of the sweep's grid that have no run at all."""
    have = set(zip(runs["tags.upsampler"], runs["tags.seed"], strict=True))
    grid = {(u, s) for u in runs["tags.upsampler"].unique() for s in runs["tags.seed"].unique()}
    return sorted(f"{u}-s{s}" for u, s in grid - have)


def build_report(
    uri: str,
    experiment: str,
    sweep_id: str | None,
    out_root: Path,
    margins: dict[str, float | None] | None = None,
) -> Path:
    """Write the report of ``sweep_id`` (latest if None) and log it as ``report-<sweep_id>``;
    ``margins`` (report.margin) default to the schema's."""
    with warnings.catch_warnings():
        # scipy's t tests warn when a sample's values are (nearly) all equal, e.g. every run
        # covering the 10 classes; the result (a zero-width interval) is right regardless.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return _build_report(uri, experiment, sweep_id, out_root, margins)


def _build_report(
    uri: str,
    experiment: str,
    sweep_id: str | None,
    out_root: Path,
    margins: dict[str, float | None] | None,
) -> Path:
    sweep_id, runs = load_runs(uri, experiment, sweep_id)
    client = store.open_client(uri)
    folder = out_root / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        seed = _plot_samples(client, runs, folder / "samples.png", Path(scratch))
        if seed is not None:
            figures[f"Final samples, same latents, seed {seed}"] = "samples.png"
        _plot_over_epochs(client, runs, ["d_loss", "g_loss"], folder / "losses.png")
        figures["Losses over epochs"] = "losses.png"
        if np.isfinite(_column(runs, "fd")).any():
            shown = ["fd", "checkerboard", *_step_checkerboards(runs)]
            _plot_over_epochs(client, runs, shown, folder / "quality.png")
            figures["FD and checkerboard over epochs"] = "quality.png"
        if _plot_spectra(client, runs, folder / "spectrum.png", Path(scratch)):
            figures["Power spectra"] = "spectrum.png"
    margins = margins if margins is not None else asdict(MarginConfig())
    training = over_training(client, runs, margins)
    if _plot_differences(training, folder / "differences.png"):
        figures["Pairwise differences over epochs"] = "differences.png"
    compute, fd_curves = at_equal_compute(client, runs, margins)
    if budgets.plot_over_seconds(fd_curves, "fd", folder / "fd_seconds.png"):
        figures["FD against training seconds"] = "fd_seconds.png"
    experiment_id = runs["experiment_id"].iloc[0]
    trials = search_report.load_trials(uri, sweep_id, experiment_id)
    if search_report.plot_expected_best(trials, folder / "expected_best.png"):
        figures["Expected best validation FD against search trials"] = "expected_best.png"
    search = search_report.section(trials)
    rows = summarize(runs)
    pairs = compare_pairs(runs, margins)
    markdown = render_markdown(
        sweep_id, runs, rows, pairs, figures, training=training, compute=compute, search=search
    )
    (folder / "report.md").write_text(markdown)
    (folder / "table.json").write_text(json.dumps(_table_json(rows), indent=2))
    run = store.start_run(
        uri, experiment_id, f"report-{sweep_id}", {"sweep_id": sweep_id, REPORT_TAG: "true"}
    )
    run.log_artifact(folder)
    served = render_markdown(
        sweep_id, runs, rows, pairs, figures, _artifact_url(run.run_id), training, compute, search
    )
    run.describe(_fit_tag(served, "the whole report is the artifact report.md"))
    run.end("FINISHED")
    return folder / "report.md"


def _artifact_url(run_id: str) -> Callable[[str], str]:
    """Links to the run's artifacts relative to mlflow ui's page, which serves them at
    ``get-artifact`` (so a description's images show in the UI)."""
    return lambda name: f"get-artifact?path={quote(name)}&run_uuid={run_id}"


def _fit_tag(markdown: str, note: str) -> str:
    """``markdown`` cut to MLflow's longest tag value, ending with ``note`` when cut."""
    if len(markdown) <= store.MAX_TAG_LENGTH:
        return markdown
    tail = f"\n\n... ({note})\n"
    return markdown[: store.MAX_TAG_LENGTH - len(tail)] + tail


def _table_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def plain(value: Any) -> Any:
        if isinstance(value, stats.Interval):
            return {"mean": value.mean, "low": value.low, "high": value.high, "n": value.n}
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return [{key: plain(value) for key, value in row.items()} for row in rows]


def main(argv: list[str] | None = None) -> None:
    """``python -m src.report [SWEEP_ID] [--uri URI] [--experiment NAME] [--margin fd=2 ...]``."""
    import os

    parser = argparse.ArgumentParser(
        prog="python -m src.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_id", nargs="?", help="sweep to report (default: the latest)")
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--experiment", default="upsamplers")
    parser.add_argument("--out", default=str(Path(project_root()) / "outputs" / "reports"))
    parser.add_argument(
        "--margin",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="equivalence margin as report.margin: fd=2.0, or fd=none",
    )
    args = parser.parse_args(argv)
    uri = store.resolve_uri(args.uri, project_root())
    try:
        margins = _margins(args.margin)
        store.check_reachable(uri)
        path = build_report(uri, args.experiment, args.sweep_id, Path(args.out), margins)
    except (ReportError, store.TrackingError, ConfigError) as error:
        sys.exit(f"error: {error}")
    print(path.read_text())
    print(f"report written to {path}")


def _margins(given: list[str]) -> dict[str, float | None]:
    """report.margin with ``METRIC=VALUE`` items applied, checked by the schema."""
    margins = asdict(MarginConfig())
    for item in given:
        key, _, value = item.partition("=")
        if key not in margins:
            raise ConfigError(f"--margin {item}: no such metric; one of {', '.join(margins)}")
        try:
            margins[key] = None if value.lower() in ("none", "null") else float(value)
        except ValueError:
            raise ConfigError(f"--margin {item}: {value!r} is not a number or none") from None
    MarginConfig(**margins)  # the schema's range checks
    return margins
