"""The comparison report of a sweep: one row per upsampler over seeds, with 95% intervals.

``python -m src.report [SWEEP_ID]`` (``make report SWEEP=...``) reads a sweep's runs back from
MLflow with ``mlflow.search_runs`` and writes ``outputs/reports/<sweep_id>/report.md`` plus
figures, and logs them to a run named ``report-<sweep_id>``. The multirun callback in
``src/sweep.py`` calls :func:`build_report` when a sweep ends.

Intervals are Student-t intervals over seeds (mean +- t_{0.975, n-1} * s / sqrt(n)); differences
between two upsamplers use Welch's t-interval. With one seed no interval exists, and the report
says so.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from src import tracking
from src.names import metric
from src.schema import project_root

REPORT_TAG = "report"  # set on report runs, which share the sweep_id tag with training runs

# Final metrics in the table: (key, label, True when lower is better, format).
TABLE_METRICS: list[tuple[str, str, bool | None, str]] = [
    ("fd", "FD", True, "{:.3f}"),
    ("kid", "KID", True, "{:.4f}"),
    ("precision", "precision", False, "{:.3f}"),
    ("recall", "recall", False, "{:.3f}"),
    ("class_coverage", "classes", False, "{:.1f}"),
    ("checkerboard", "checkerboard", None, "{:+.3f}"),
    ("spectrum_error", "spectrum error", True, "{:.3f}"),
    ("images_per_second", "images/s", False, "{:,.0f}"),
    ("train_seconds", "train s", True, "{:.1f}"),
]
# Pairwise comparisons; lower is better (checkerboard is compared by its distance from 0).
PAIR_METRICS = ["fd", "checkerboard"]
CONFIDENCE = 0.95


class ReportError(RuntimeError):
    """The sweep cannot be reported; the message says what to do."""


@dataclass(frozen=True)
class Interval:
    """Mean of a sample with its 95% t-interval (``low``/``high`` are NaN with fewer than 2)."""

    mean: float
    low: float
    high: float
    n: int

    def show(self, fmt: str) -> str:
        """``mean [low, high]`` with ``fmt``, or ``mean (n=1)``, or ``-`` with no data."""
        if self.n == 0:
            return "-"
        if self.n < 2:
            return f"{fmt.format(self.mean)} (n=1)"
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def t_interval(values: Any) -> Interval:
    """Mean and Student-t 95% interval of ``values`` (NaNs dropped)."""
    from scipy import stats

    sample = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if sample.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(sample.mean())
    if sample.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, sample.size - 1) * stats.sem(sample)
    return Interval(mean, mean - half, mean + half, int(sample.size))


def welch_interval(a: Any, b: Any) -> Interval:
    """Difference of means ``mean(a) - mean(b)`` with Welch's 95% t-interval."""
    from scipy import stats

    a = np.asarray([v for v in a if np.isfinite(v)], dtype=np.float64)
    b = np.asarray([v for v in b if np.isfinite(v)], dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Interval(diff, math.nan, math.nan, 1)
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(CONFIDENCE)
    low, high = float(ci.low), float(ci.high)
    if not np.isfinite(low):  # both samples constant: the difference is exact
        low = high = diff
    return Interval(diff, low, high, int(min(a.size, b.size)))


def load_runs(uri: str, experiment: str, sweep_id: str | None) -> tuple[str, Any]:
    """The sweep's training runs as a DataFrame (``mlflow.search_runs``), latest sweep if None."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        raise ReportError(f"experiment {experiment!r} not found in {uri}; run `make sweep` first")
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="tags.sweep_id != ''"
        if sweep_id is None
        else f"tags.sweep_id = '{sweep_id}'",
        order_by=["attributes.start_time DESC"],
    )
    if not runs.empty and f"tags.{REPORT_TAG}" in runs:
        runs = runs[runs[f"tags.{REPORT_TAG}"].isna()]
    if runs.empty:
        which = f"sweep {sweep_id!r}" if sweep_id else "any sweep"
        raise ReportError(f"no runs of {which} in {uri} ({experiment}); run `make sweep` first")
    sweep_id = sweep_id or str(runs["tags.sweep_id"].iloc[0])
    runs = runs[runs["tags.sweep_id"] == sweep_id].sort_values(["tags.upsampler", "tags.seed"])
    return sweep_id, runs.reset_index(drop=True)


def _column(runs: Any, key: str) -> Any:
    """A metric's final values, NaN where a run lacks it."""
    column = f"metrics.{metric(key)}"
    return runs[column] if column in runs else np.full(len(runs), np.nan)


def _tag_number(runs: Any, key: str) -> Any:
    """A numeric tag's values, NaN where a run lacks it."""
    column = f"tags.{key}"
    if column not in runs:
        return np.full(len(runs), np.nan)
    return np.asarray([float(v) if isinstance(v, str) else np.nan for v in runs[column]])


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
                **{key: t_interval(_column(finished, key)) for key, *_ in TABLE_METRICS},
            }
        )
    return rows


def _first(values: Any) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(finite[0]) if finite else math.nan


def compare_pairs(runs: Any) -> list[tuple[str, str, str, Interval, str]]:
    """For each pair of upsamplers and each pair metric: the difference and a plain sentence."""
    finished = runs[runs["status"] == "FINISHED"]
    names = sorted(finished["tags.upsampler"].unique())
    lines = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            for key in PAIR_METRICS:
                a = _column(finished[finished["tags.upsampler"] == first], key)
                b = _column(finished[finished["tags.upsampler"] == second], key)
                if key == "checkerboard":  # compare distance from real data's level
                    a, b = np.abs(a), np.abs(b)
                interval = welch_interval(a, b)
                lines.append((first, second, key, interval, _verdict(first, second, key, interval)))
    return lines


def _verdict(first: str, second: str, key: str, interval: Interval) -> str:
    what = "|checkerboard|" if key == "checkerboard" else key
    if interval.n == 0:
        return f"no finished runs to compare {what}."
    if interval.n < 2:
        return f"{what}: one seed per variant, so no interval; run more seeds to compare."
    if interval.low > 0:
        return f"{second} is better on {what} (lower by {interval.mean:.3g}, CI excludes 0)."
    if interval.high < 0:
        return f"{first} is better on {what} (lower by {-interval.mean:.3g}, CI excludes 0)."
    return f"the sweep cannot tell {first} and {second} apart on {what} at {interval.n} seeds."


def _history(client: Any, runs: Any, key: str) -> dict[str, list[np.ndarray]]:
    """Per upsampler, each finished run's metric history as (steps, values) arrays."""
    curves: dict[str, list[np.ndarray]] = {}
    for _, run in runs[runs["status"] == "FINISHED"].iterrows():
        history = client.get_metric_history(run["run_id"], metric(key))
        if history:
            points = np.asarray(sorted((m.step, m.value) for m in history), dtype=np.float64)
            curves.setdefault(run["tags.upsampler"], []).append(points)
    return curves


def _plot_over_epochs(client: Any, runs: Any, keys: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        for colour, (name, curves) in enumerate(sorted(_history(client, runs, key).items())):
            steps = sorted(set.intersection(*(set(c[:, 0]) for c in curves)))
            values = np.asarray([[dict(c.tolist())[s] for s in steps] for c in curves])
            mean = values.mean(axis=0)
            axis.plot(steps, mean, color=f"C{colour}", label=f"{name} (n={len(curves)})")
            if len(curves) > 1:
                axis.fill_between(
                    steps, values.min(axis=0), values.max(axis=0), color=f"C{colour}", alpha=0.2
                )
        axis.set_title(f"{metric(key)}: mean, band = min..max over seeds")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    import matplotlib.pyplot as plt
    from PIL import Image

    finished = runs[runs["status"] == "FINISHED"]
    per_variant = finished.groupby("tags.upsampler")["tags.seed"].apply(set)
    common = sorted(set.intersection(*per_variant), key=int) if len(per_variant) else []
    if not common:
        return None
    seed = common[0]
    chosen = finished[finished["tags.seed"] == seed]
    # One row per run: the grids are wide (tracking.sample_columns).
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 2.6 * len(chosen)), squeeze=False)
    for axis, (_, run) in zip(axes[:, 0], chosen.iterrows(), strict=True):
        image = _final_image(client, run["run_id"], "samples", scratch / run["run_id"])
        if image is not None:
            axis.imshow(np.asarray(Image.open(image)), cmap="gray")
        axis.set_title(f"{run['tags.upsampler']} (seed {seed}, final epoch)")
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return int(seed)


def _plot_spectra(client: Any, runs: Any, path: Path, scratch: Path) -> bool:
    """Azimuthally averaged power spectrum per upsampler (mean over seeds) against real data."""
    import matplotlib.pyplot as plt

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
    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    axis.semilogy(frequencies, real, "k--", label="real (test split)")
    for colour, (name, items) in enumerate(sorted(spectra.items())):
        axis.semilogy(frequencies, np.mean(items, axis=0), color=f"C{colour}", label=name)
    axis.set_xlabel("spatial frequency (cycles per pixel)")
    axis.set_ylabel("mean power")
    axis.set_title("Azimuthally averaged power spectrum, final samples")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render_markdown(sweep_id: str, runs: Any, rows: list, pairs: list, figures: dict,
                    image_url: Callable[[str], str] = str) -> str:  # fmt: skip
    """The report's Markdown: table, pairwise sentences, failed runs, figures (each linked as
    ``image_url(file name)``)."""
    seeds = sorted({int(s) for s in runs["tags.seed"]})
    lines = [
        f"# Upsampler comparison: sweep `{sweep_id}`",
        "",
        f"{len(runs)} runs, seeds {seeds}. Values are means over finished seeds with a 95% "
        "Student-t interval `[low, high]`; pairwise differences use Welch's t-interval.",
        "",
    ]
    if max((row["finished"] for row in rows), default=0) < 2:
        lines += ["**Intervals unavailable: fewer than 2 finished seeds per upsampler.**", ""]
    header = ["upsampler", "finished", "failed", "G params", "G FLOPs/image"]
    header += [label for _, label, _, _ in TABLE_METRICS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"`{row['upsampler']}`",
            str(row["finished"]),
            str(row["failed"]),
            _count(row["generator_params"]),
            _count(row["generator_flops"]),
        ]
        cells += [row[key].show(fmt) for key, _, _, fmt in TABLE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Lower is better for FD, KID, spectrum error and train seconds; higher for precision, "
        "recall, classes and images/s; checkerboard is best near 0 (real data).",
    ]
    if pairs:
        lines += ["", "## Pairwise differences (first minus second)", ""]
        for first, second, key, interval, sentence in pairs:
            lines.append(f"- `{first}` - `{second}`, {key}: {interval.show('{:+.4g}')}. {sentence}")
    bad = runs[runs["status"] != "FINISHED"]
    lines += ["", "## Failed or unfinished runs", ""]
    if bad.empty:
        lines.append("None: every run of the sweep finished.")
    for _, run in bad.iterrows():
        reason = run.get("tags.failure_reason")
        reason = f": {reason}" if isinstance(reason, str) else ""
        lines.append(f"- `{run['tags.mlflow.runName']}` ({run['run_id']}) {run['status']}{reason}")
    missing = _missing(runs)
    for name in missing:
        lines.append(f"- `{name}` missing: no MLflow run (the job failed before training)")
    lines += ["", "## Figures", ""]
    for title, name in figures.items():
        lines += [f"### {title}", "", f"![{title}]({image_url(name)})", ""]
    return "\n".join(lines) + "\n"


def _count(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{int(value):,}"


def _missing(runs: Any) -> list[str]:
    """Variant/seed pairs of the sweep's grid that have no run at all."""
    have = set(zip(runs["tags.upsampler"], runs["tags.seed"], strict=True))
    grid = {(u, s) for u in runs["tags.upsampler"].unique() for s in runs["tags.seed"].unique()}
    return sorted(f"{u}-s{s}" for u, s in grid - have)


def build_report(uri: str, experiment: str, sweep_id: str | None, out_root: Path) -> Path:
    """Write the report of ``sweep_id`` (latest if None) and log it as ``report-<sweep_id>``."""
    import matplotlib

    matplotlib.use("Agg")
    from mlflow.tracking import MlflowClient

    sweep_id, runs = load_runs(uri, experiment, sweep_id)
    client = MlflowClient(uri)
    folder = out_root / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        seed = _plot_samples(client, runs, folder / "samples.png", Path(scratch))
        if seed is not None:
            figures[f"Final samples, same latents, seed {seed}"] = "samples.png"
        _plot_over_epochs(client, runs, ["d_loss", "g_loss"], folder / "losses.png")
        figures["Losses over epochs"] = "losses.png"
        if f"metrics.{metric('fd')}" in runs:
            _plot_over_epochs(client, runs, ["fd", "checkerboard"], folder / "quality.png")
            figures["FD and checkerboard over epochs"] = "quality.png"
        if _plot_spectra(client, runs, folder / "spectrum.png", Path(scratch)):
            figures["Power spectra"] = "spectrum.png"
    rows = summarize(runs)
    pairs = compare_pairs(runs)
    markdown = render_markdown(sweep_id, runs, rows, pairs, figures)
    (folder / "report.md").write_text(markdown)
    (folder / "table.json").write_text(json.dumps(_table_json(rows), indent=2))
    experiment_id = runs["experiment_id"].iloc[0]
    run = tracking.start_run(
        uri, experiment_id, f"report-{sweep_id}", {"sweep_id": sweep_id, REPORT_TAG: "true"}
    )
    run.log_artifact(folder)
    served = render_markdown(sweep_id, runs, rows, pairs, figures, _artifact_url(run.run_id))
    run.describe(_fit_tag(served, "the whole report is the artifact report.md"))
    run.end("FINISHED")
    return folder / "report.md"


def _artifact_url(run_id: str) -> Callable[[str], str]:
    """Links to the run's artifacts relative to mlflow ui's page, which serves them at
    ``get-artifact`` (so a description's images show in the UI)."""
    return lambda name: f"get-artifact?path={quote(name)}&run_uuid={run_id}"


def _fit_tag(markdown: str, note: str) -> str:
    """``markdown`` cut to MLflow's longest tag value, ending with ``note`` when cut."""
    if len(markdown) <= tracking.MAX_TAG_LENGTH:
        return markdown
    tail = f"\n\n... ({note})\n"
    return markdown[: tracking.MAX_TAG_LENGTH - len(tail)] + tail


def _table_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def plain(value: Any) -> Any:
        if isinstance(value, Interval):
            return {"mean": value.mean, "low": value.low, "high": value.high, "n": value.n}
        return value

    return [{key: plain(value) for key, value in row.items()} for row in rows]


def main(argv: list[str] | None = None) -> None:
    """``python -m src.report [SWEEP_ID] [--uri URI] [--experiment NAME]``."""
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_id", nargs="?", help="sweep to report (default: the latest)")
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--experiment", default="upsamplers")
    parser.add_argument("--out", default=str(Path(project_root()) / "outputs" / "reports"))
    args = parser.parse_args(argv)
    uri = tracking.resolve_uri(args.uri, project_root())
    try:
        tracking.check_reachable(uri)
        path = build_report(uri, args.experiment, args.sweep_id, Path(args.out))
    except (ReportError, tracking.TrackingError) as error:
        sys.exit(f"error: {error}")
    print(path.read_text())
    print(f"report written to {path}")


if __name__ == "__main__":
    main()
