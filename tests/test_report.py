"""The comparison report from a real (tiny) two-variant, two-seed multirun with one failed job."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import pytest
import scipy.stats
from helpers import run_cli
from PIL import Image

from src.study.report import (
    OPTIONAL_COLUMNS,
    TABLE_METRICS,
    build_report,
    compare_pairs,
    load_runs,
)
from src.study.stats import t_interval, welch_interval
from src.tracking.naming import metric

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
    from src.tracking.store import fluent_uri

    with fluent_uri(f"sqlite:///{tmp / 'mlflow.db'}"):
        runs = mlflow.search_runs(
            experiment_names=["upsamplers"], filter_string=f"tags.sweep_id = '{sweep_id}'"
        )
    return runs[runs["tags.report"].isna()] if "tags.report" in runs else runs


@pytest.mark.slow
def test_multirun_jobs_are_runs_of_one_sweep_with_a_summary(sweep):
    tmp, sweep_id, good, _ = sweep
    runs = _search(tmp, sweep_id)
    names = sorted(runs["tags.mlflow.runName"])
    assert names == ["nearest-s0", "nearest-s1", "transpose-s0", "transpose-s1", "transpose-s2"]
    assert set(runs["tags.sweep_id"]) == {sweep_id}
    assert f"sweep {sweep_id}: 4 runs" in good.stdout
    assert re.search(r"nearest-s0\s+FINISHED\s+d_loss=", good.stdout)
    link = re.search(
        r"^open the results: (\S+) \(serve it: mlflow ui --backend-store-uri "
        r"sqlite:///\S+\)$",
        good.stdout,
        re.MULTILINE,
    )
    assert link, good.stdout[-2000:]
    assert link.group(1).startswith("http://127.0.0.1:5000/#/experiments/")
    assert link.group(1).endswith(
        f"?workflowType=machine_learning&searchFilter=tags.sweep_id%20%3D%20%27{sweep_id}%27"
    )


@pytest.mark.slow
def test_failed_job_makes_the_sweep_fail_and_is_reported(sweep):
    tmp, sweep_id, _, bad = sweep
    assert bad.returncode != 0
    assert "did not finish: transpose-s2" in bad.stderr
    report = (tmp / "reports" / sweep_id / "report.md").read_text()
    assert "`transpose-s2`" in report and "FAILED" in report and "diverged" in report
    assert "`nearest-s2` missing" in report


@pytest.mark.slow
def test_table_rows_and_counts(sweep):
    tmp, sweep_id, _, _ = sweep
    rows = {
        row["upsampler"]: row
        for row in json.loads((tmp / "reports" / sweep_id / "table.json").read_text())
    }
    assert set(rows) == {"nearest", "transpose"}
    assert (rows["nearest"]["finished"], rows["nearest"]["failed"]) == (2, 0)
    assert (rows["transpose"]["finished"], rows["transpose"]["failed"]) == (2, 1)
    assert rows["nearest"]["generator_params"] == rows["transpose"]["generator_params"] == 324_353
    assert rows["nearest"]["generator_flops"] > rows["transpose"]["generator_flops"]


@pytest.mark.slow
def test_table_matches_a_direct_search_runs(sweep):
    tmp, sweep_id, _, _ = sweep
    runs = _search(tmp, sweep_id)
    rows = {
        row["upsampler"]: row
        for row in json.loads((tmp / "reports" / sweep_id / "table.json").read_text())
    }
    checked = 0
    measured = [key for key, *_ in TABLE_METRICS if key not in OPTIONAL_COLUMNS]
    for upsampler, row in rows.items():
        finished = runs[(runs["tags.upsampler"] == upsampler) & (runs["status"] == "FINISHED")]
        for key in OPTIONAL_COLUMNS:  # a one-step generator has no earlier step to measure
            assert row[key]["n"] == 0, key
        for key in measured:
            values = finished[f"metrics.{metric(key)}"].to_numpy(dtype=float)
            assert row[key]["n"] == 2, key
            assert row[key]["mean"] == pytest.approx(values.mean(), rel=1e-12), key
            # The t interval in closed form from the runs' own values: mean +- t * sd / sqrt(n).
            n = len(values)
            half = scipy.stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
            expected = (values.mean() - half, values.mean() + half)
            assert (row[key]["low"], row[key]["high"]) == pytest.approx(expected, abs=1e-9), key
            checked += 1
    assert checked == 2 * len(measured)


@pytest.mark.slow
def test_markdown_has_both_rows_pairs_and_figures(sweep):
    tmp, sweep_id, good, _ = sweep
    folder = tmp / "reports" / sweep_id
    text = (folder / "report.md").read_text()
    assert "| `nearest` | 2 | 0 | 324,353 |" in text
    assert "| `transpose` | 2 | 1 | 324,353 |" in text
    # Both finished seeds 0 and 1 (transpose-s2 failed): the differences are paired by seed.
    assert "| `nearest` - `transpose` | fd | paired |" in text
    assert "| `nearest` - `transpose` | \\|checkerboard\\| | paired |" in text
    assert "95%" in text and "Holm" in text and "P(first better)" in text
    for name in ("samples.png", "losses.png", "quality.png", "spectrum.png"):
        assert f"]({name})" in text
        image = np.asarray(Image.open(folder / name).convert("L"))
        assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 5, name
    assert f"report: {folder / 'report.md'}" in good.stdout


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_report_on_demand_for_an_unknown_sweep_is_a_clear_error(sweep, tmp_path):
    from src.study.report import ReportError

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


def _planted_store(tmp_path) -> str:
    """A real sqlite store with synthetic finished runs of one sweep: per seed, A's FD, B = A + 5
    (a clear loser), C = A (a tie), each plus a little noise; C has no checkerboard (as runs of
    an older harness would not)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'planted.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("upsamplers")
    rng = np.random.default_rng(11)
    base = 30 + rng.normal(0, 4, 6)  # the seed's share: large, shared by all three
    for name, shift in (("A", 0.0), ("B", 5.0), ("C", None)):
        for seed in range(6):
            tags = {"upsampler": name, "seed": str(seed), "sweep_id": "planted"}
            run = client.create_run(experiment, run_name=f"{name}-s{seed}", tags=tags)
            fd = base[seed] + (shift if shift is not None else 0.0) + rng.normal(0, 0.3)
            client.log_metric(run.info.run_id, "quality/fd", 300 + rng.normal(0, 4), step=0)
            client.log_metric(run.info.run_id, "quality/fd", fd, step=10)
            if shift is not None:
                client.log_metric(
                    run.info.run_id, "artifacts/checkerboard", 0.1 + shift / 50, step=10
                )
            client.set_terminated(run.info.run_id)
    return uri


def test_planted_store_gets_the_right_verdict_for_each_pair(tmp_path):
    uri = _planted_store(tmp_path)
    _, runs = load_runs(uri, "upsamplers", "planted")
    verdicts = {(c.first, c.second, c.key): c for c in compare_pairs(runs)}
    clear = verdicts[("A", "B", "fd")]
    assert clear.difference.design == "paired"
    assert clear.difference.t.mean == pytest.approx(-5.0, abs=0.5)
    assert clear.verdict.startswith("**A is better** on fd") and clear.improvement.mean > 0.5
    tie = verdicts[("A", "C", "fd")]
    assert tie.verdict.startswith("undecided at 6 seeds;") and "80% power" in tie.verdict
    assert np.isnan(tie.p_equivalent)  # no margin declared: never "equivalent"
    with_margin = {(c.first, c.second, c.key): c for c in compare_pairs(runs, {"fd": 2.0})}
    assert with_margin[("A", "C", "fd")].verdict.startswith("**equivalent** on fd")
    assert with_margin[("A", "B", "fd")].verdict.startswith("**A is better**")  # not within 2
    assert "margin" not in with_margin[("A", "B", "fd")].verdict
    # A 5-point gap, decided, is also inside a margin of 10: both are said.
    wide = {(c.first, c.second, c.key): c for c in compare_pairs(runs, {"fd": 10.0})}
    assert wide[("A", "B", "fd")].verdict.startswith("**A is better** on fd")
    assert "by less than the +-10 margin" in wide[("A", "B", "fd")].verdict
    assert verdicts[("B", "C", "fd")].verdict.startswith("**C is better**")
    assert verdicts[("A", "B", "checkerboard")].verdict.startswith("**A is better**")
    missing = verdicts[("A", "C", "checkerboard")]
    assert missing.verdict.startswith("no |checkerboard| values for one of them")
    # Holm: three fd pairs in the family, so the smallest p is multiplied by 3.
    fd = sorted(c.difference.p_value for c in verdicts.values() if c.key == "fd")
    assert min(c.p_holm for c in verdicts.values() if c.key == "fd") == pytest.approx(3 * fd[0])


def test_planted_store_report_shows_the_verdict_over_training(tmp_path):
    """Untrained (step 0) all three are alike; at step 10 A beats B: the report's tables say
    so epoch by epoch, and its figure of differences is drawn."""
    from mlflow.tracking import MlflowClient

    from src.study.report import over_training

    uri = _planted_store(tmp_path)
    _, runs = load_runs(uri, "upsamplers", "planted")
    training = over_training(MlflowClient(uri), runs)
    assert sorted(training["fd"]) == [0, 10]
    first = {(c.first, c.second): c for c in training["fd"][0]}
    last = {(c.first, c.second): c for c in training["fd"][10]}
    assert not first[("A", "B")].difference.t.excludes(0.0)
    assert last[("A", "B")].verdict.startswith("**A is better**")
    report = build_report(uri, "upsamplers", "planted", tmp_path / "reports")
    text = report.read_text()
    assert "## Over training" in text
    assert re.search(r"^\| 0 \| [^|]* undecided \|", text, re.MULTILINE), text
    assert re.search(r"^\| 10 \| [-+][\d.]+ \[[^]]+\] \*\*A\*\* \|", text, re.MULTILINE), text
    figure = np.asarray(Image.open(report.parent / "differences.png").convert("L"))
    assert figure.std() > 5


def test_runs_of_an_older_harness_are_read_under_their_bare_names(tmp_path):
    """Runs logged before the sectioned names (``fd``, not ``quality/fd``) still compare."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'old.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("upsamplers")
    for name, fd in (("old", [30.0, 31.0, 29.5]), ("new", [35.0, 36.5, 34.0])):
        for seed, value in enumerate(fd):
            tags = {"upsampler": name, "seed": str(seed), "sweep_id": "mixed"}
            run = client.create_run(experiment, run_name=f"{name}-s{seed}", tags=tags)
            key = "fd" if name == "old" else "quality/fd"
            client.log_metric(run.info.run_id, key, value, step=4)
            client.set_terminated(run.info.run_id)
    _, runs = load_runs(uri, "upsamplers", "mixed")
    (fd,) = [c for c in compare_pairs(runs) if c.key == "fd"]
    assert (fd.first, fd.second, fd.difference.design) == ("new", "old", "paired")
    assert fd.difference.t.mean == pytest.approx(np.mean([5.0, 5.5, 4.5]))


def test_reading_a_report_leaves_mlflow_s_global_uri_as_it_was(tmp_path):
    """A report read from one store must not leave MLflow's module-level URI pointing there:
    a later fluent call of the same process (a stopped server's URI) would retry for minutes."""
    import mlflow

    uri = _planted_store(tmp_path)
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    load_runs(uri, "upsamplers", "planted")
    after = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    assert after == before != uri
