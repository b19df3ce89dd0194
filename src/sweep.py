"""Hydra callback for multiruns: prepare the MLflow store first; summarise and report at the end."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from src import tracking

SWEEP_ID_FILE = "sweep_id.txt"
REPORT_TAG = "report"  # set on report runs, which share the sweep_id tag with training runs


def job_sweep_id(hydra_cfg: Any) -> str | None:
    """The sweep id of a multirun job (written by :class:`SweepCallback`), ``None`` for a run."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    marker = Path(hydra_cfg.sweep.dir) / SWEEP_ID_FILE
    return marker.read_text().strip() if marker.is_file() else Path(hydra_cfg.sweep.dir).name


class SweepCallback(Callback):
    """Before the jobs: name the sweep and create the store and experiment once (fresh sqlite
    stores race on schema creation under parallel jobs). After: one line per run, the
    comparison report, and a non-zero exit status when any run did not finish."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        marker = sweep_dir / SWEEP_ID_FILE
        if not marker.is_file():
            marker.write_text(f"{sweep_dir.name}-{secrets.token_hex(3)}\n")
        self.sweep_id = marker.read_text().strip()
        self.uri = tracking.resolve_uri(config.tracking.uri, config.paths.root)
        self.experiment = config.tracking.experiment
        try:
            self.experiment_id = tracking.ensure_experiment(
                self.uri, self.experiment, config.tracking.artifact_location
            )
        except tracking.TrackingError as error:
            sys.exit(f"error: {error}")
        self.reports_dir = Path(config.paths.reports_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        runs = MlflowClient(self.uri).search_runs(
            [self.experiment_id],
            filter_string=f"tags.sweep_id = '{self.sweep_id}'",
            order_by=["attributes.start_time ASC"],
        )
        runs = [run for run in runs if REPORT_TAG not in run.data.tags]
        print(f"\nsweep {self.sweep_id}: {len(runs)} runs")
        for run in runs:
            metrics = run.data.metrics
            losses = "  ".join(
                f"{key}={metrics[key]:.3f}" for key in ("d_loss", "g_loss") if key in metrics
            )
            seconds = metrics.get("train_seconds", float("nan"))
            print(f"  {run.info.run_name:<16} {run.info.status:<9} {losses}  {seconds:6.1f}s")
        if self.report and runs:
            from src.report import build_report

            path = build_report(self.uri, self.experiment, self.sweep_id, self.reports_dir)
            print(f"report: {path}")
        if self.uri.startswith(("http://", "https://")):
            print(f"open the results: {self.uri}")
        else:
            print(f"open the results: mlflow ui --backend-store-uri {self.uri}")
        unfinished = [run.info.run_name for run in runs if run.info.status != "FINISHED"]
        if unfinished:
            sys.exit(f"error: {len(unfinished)} run(s) did not finish: {', '.join(unfinished)}")
