"""The comparison report from a real (tiny) two-variant, two-seed multirun with one failed job."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from src.names import metric
from src.report import TABLE_METRICS, build_report, t_interval, welch_interval

pytestmark = pytest.mark.slow

TINY = ["data.limit=600", "train.epochs=2", "eval.samples=500"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 upsamplers x 2 seeds, then a job that diverges, all in one sweep folder (one sweep id)."""
    tmp = tmp_path_factory.mktemp("sweep")
    common = [
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"hydra.sweep.dir={tmp / 'multirun'}",
        f"paths.reports_dir={tmp / 'reports'}",
        *TINY,
    ]
    good = run_cli("--multirun", "upsampler=nearest,transpose", "seed=0,1", *common)
    assert good.returncode == 0, good.stderr[-3000:]
    bad = run_cli(
        "--multirun", "upsampler=transpose", "seed=2", "discriminator.leaky_slope=1e30", *common
    )
    sweep_id = (tmp / "multirun" / "sweep_id.txt").read_text().strip()
    return tmp, sweep_id, good, bad


def _search(tmp, sweep_id):
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["upsamplers"], filter_string=f"tags.sweep_id = '{sweep_id}'"
    )
    return runs[runs["tags.report"].isna()] if "tags.report" in runs else runs


def test_multirun_jobs_are_runs_of_one_sweep_with_a_summary(sweep):
    tmp, sweep_id, good, _ = sweep
    runs = _search(tmp, sweep_id)
    names = sorted(runs["tags.mlflow.runName"])
    assert names == ["nearest-s0", "nearest-s1", "transpose-s0", "transpose-s1", "transpose-s2"]
    assert set(runs["tags.sweep_id"]) == {sweep_id}
    assert f"sweep {sweep_id}: 4 runs" in good.stdout
    assert re.search(r"nearest-s0\s+FINISHED\s+d_loss=", good.stdout)
    link = re.search(r"^open the results: (\S+) \(serve it: mlflow ui --backend-store-uri "
                     r"sqlite:///\S+\)$", good.stdout, re.MULTILINE)  # fmt: skip
    assert link, good.stdout[-2000:]
    assert link.group(1).startswith("http://127.0.0.1:5000/#/experiments/")
    assert link.group(1).endswith(f"?workflowType=machine_learning&searchFilter=tags.sweep_id"
                                  f"%20%3D%20%27{sweep_id}%27")  # fmt: skip


def test_failed_job_makes_the_sweep_fail_and_is_reported(sweep):
    tmp, sweep_id, _, bad = sweep
    assert bad.returncode != 0
    assert "did not finish: transpose-s2" in bad.stderr
    report = (tmp / "reports" / sweep_id / "report.md").read_text()
    assert "`transpose-s2`" in report and "FAILED" in report and "diverged" in report
    assert "`nearest-s2` missing" in report


def test_table_rows_and_counts(sweep):
    tmp, sweep_id, _, _ = sweep
    rows = {row["upsampler"]: row for row in json.loads(
        (tmp / "reports" / sweep_id / "table.json").read_text())}  # fmt: skip
    assert set(rows) == {"nearest", "transpose"}
    assert (rows["nearest"]["finished"], rows["nearest"]["failed"]) == (2, 0)
    assert (rows["transpose"]["finished"], rows["transpose"]["failed"]) == (2, 1)
    assert rows["nearest"]["generator_params"] == rows["transpose"]["generator_params"] == 324_353
    assert rows["nearest"]["generator_flops"] > rows["transpose"]["generator_flops"]


def test_table_matches_a_direct_search_runs(sweep):
    tmp, sweep_id, _, _ = sweep
    runs = _search(tmp, sweep_id)
    rows = {row["upsampler"]: row for row in json.loads(
        (tmp / "reports" / sweep_id / "table.json").read_text())}  # fmt: skip
    checked = 0
    for upsampler, row in rows.items():
        finished = runs[(runs["tags.upsampler"] == upsampler) & (runs["status"] == "FINISHED")]
        for key, *_ in TABLE_METRICS:
            values = finished[f"metrics.{metric(key)}"].to_numpy(dtype=float)
            assert row[key]["n"] == 2, key
            assert row[key]["mean"] == pytest.approx(values.mean(), rel=1e-12), key
            low, high = row[key]["low"], row[key]["high"]
            assert low <= values.mean() <= high, key
            checked += 1
    assert checked == 2 * len(TABLE_METRICS)


def test_markdown_has_both_rows_pairs_and_figures(sweep):
    tmp, sweep_id, good, _ = sweep
    folder = tmp / "reports" / sweep_id
    text = (folder / "report.md").read_text()
    assert "| `nearest` | 2 | 0 | 324,353 |" in text
    assert "| `transpose` | 2 | 1 | 324,353 |" in text
    assert "`nearest` - `transpose`, fd:" in text and "checkerboard" in text
    assert "95%" in text and "Welch" in text
    for name in ("samples.png", "losses.png", "quality.png", "spectrum.png"):
        assert f"]({name})" in text
        image = np.asarray(Image.open(folder / name).convert("L"))
        assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 5, name
    assert f"report: {folder / 'report.md'}" in good.stdout


def test_report_run_holds_the_artifacts(sweep):
    tmp, sweep_id, _, _ = sweep
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("upsamplers")
    reports = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = 'report-{sweep_id}'"
    )
    assert reports and all(r.data.tags["sweep_id"] == sweep_id for r in reports)
    names = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert {"report.md", "table.json", "samples.png", "losses.png"} <= names


def test_one_seed_sweep_says_intervals_are_unavailable(sweep, tmp_path):
    tmp, _, _, _ = sweep
    result = run_cli(
        "--multirun",
        "upsampler=nearest",
        "seed=5",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"hydra.sweep.dir={tmp_path / 'one'}",
        f"paths.reports_dir={tmp_path / 'reports'}",
        *TINY,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (report,) = (tmp_path / "reports").glob("*/report.md")
    assert "Intervals unavailable" in report.read_text()


def test_report_on_demand_for_an_unknown_sweep_is_a_clear_error(sweep, tmp_path):
    from src.report import ReportError

    tmp, _, _, _ = sweep
    with pytest.raises(ReportError, match="no runs of sweep 'nope'"):
        build_report(f"sqlite:///{tmp / 'mlflow.db'}", "upsamplers", "nope", tmp_path)


def test_intervals_against_known_values():
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0
    assert interval.high - 2.0 == pytest.approx(4.302652729911275 / np.sqrt(3))  # t(0.975, 2)
    diff = welch_interval([1.0, 2.0, 3.0], [11.0, 12.0, 13.0])
    assert diff.mean == -10.0 and diff.low < -10.0 < diff.high < 0
    assert t_interval([4.0]).n == 1 and np.isnan(t_interval([4.0]).low)
