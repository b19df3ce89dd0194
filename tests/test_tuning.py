"""``make tune``'s search (src/study/tuning.py) for real: two upsamplers x three trials on tiny
data, interrupted by Ctrl-C in its second round and run again. It must end with one parent run
per upsampler and its trials nested under it, scored on the validation split, the interrupted
trials asked again (their runs resumed, not duplicated), each best configuration trained on a
fresh seed on the test split, and the report's search section."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
from helpers import isolated, run_cli, sqlite_uri, start_cli, training_runs
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

pytestmark = pytest.mark.slow

UPSAMPLERS = ("nearest", "transpose")


def _args(tmp) -> list[str]:
    return [
        "--multirun",
        "hydra/sweeper=tune",
        "upsampler=nearest,transpose",
        "hydra.sweeper.trials=3",
        "hydra.sweeper.final_seeds=[100]",
        "data.limit=512",
        "train.epochs=3",
        "eval.samples=300",
        "hydra.launcher.n_jobs=2",
        *isolated(tmp, sqlite_uri(tmp), "hydra.sweep.dir"),
    ]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """The search interrupted once its second round is training, then the same command."""
    tmp = tmp_path_factory.mktemp("tune")
    driver = start_cli(*_args(tmp), log=tmp / "first", group=True)
    out = tmp / "first.out"
    try:
        deadline = time.monotonic() + 300
        while "-t1 " not in out.read_text() and "-t2 " not in out.read_text():
            assert driver.poll() is None, (tmp / "first.err").read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGINT)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    interrupted = {run.info.run_name: run.info.status for run in training_runs(sqlite_uri(tmp))}
    again = run_cli(*_args(tmp))
    return tmp, interrupted, again


def test_an_interrupted_search_continues_with_equal_budgets(search):
    """The first command left killed trials; the second asked them again and resumed their
    runs, so each upsampler ends with exactly three finished trial runs and three complete
    Optuna trials, the same configurations for both upsamplers."""
    tmp, interrupted, again = search
    assert "KILLED" in interrupted.values(), interrupted
    assert again.returncode == 0, again.stderr[-3000:]
    assert "was interrupted; asking it again" in again.stderr
    runs = training_runs(sqlite_uri(tmp))
    trials = [run for run in runs if "trial" in run.data.tags]
    configs = {}
    for name in UPSAMPLERS:
        mine = [run for run in trials if run.data.tags["upsampler"] == name]
        assert sorted(run.info.status for run in mine) == ["FINISHED"] * 3, mine
        configs[name] = sorted(run.data.params["train.d_learning_rate"] for run in mine)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp / "sweep" / "optuna.journal"))
        )
        study = optuna.load_study(study_name=f"upsampler={name}", storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 3
    assert configs["nearest"] == configs["transpose"]  # same sampler seed: same configurations


def test_trials_nest_under_one_search_run_and_score_on_the_validation_split(search):
    """One FINISHED parent run per upsampler; every trial run names it as parent, is scored
    on the held-out training images, and the parent records the best validation FD."""
    tmp, _, _ = search
    runs = training_runs(sqlite_uri(tmp))
    parents = {run.data.tags["upsampler"]: run for run in runs if "search_sweep" in run.data.tags}
    assert sorted(parents) == list(UPSAMPLERS)
    for name, parent in parents.items():
        assert parent.info.status == "FINISHED" and parent.data.params["trials"] == "3"
        children = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id]
        assert len(children) == 3 and all(r.data.tags["upsampler"] == name for r in children)
        assert {r.data.tags["eval_split"] for r in children} == {
            "validation (last 10,000 training images)"
        }
        best = min(r.data.metrics["quality/fd"] for r in children)
        assert parent.data.metrics["search/best_fd"] == pytest.approx(best)


def test_the_best_configs_train_on_fresh_seeds_and_are_reported(search):
    """Each upsampler's best trial configuration trains on seed 100, scored on the test split;
    the report compares those runs and shows the search."""
    tmp, _, _ = search
    runs = training_runs(sqlite_uri(tmp))
    finals = {
        r.info.run_name: r for r in runs if "trial" not in r.data.tags and "seed" in r.data.tags
    }
    assert sorted(finals) == ["nearest-s100", "transpose-s100"]
    for name in UPSAMPLERS:
        final = finals[f"{name}-s100"]
        assert final.data.tags["eval_split"] == "test" and final.info.status == "FINISHED"
        trials = [r for r in runs if r.data.tags.get("trial") and r.data.tags["upsampler"] == name]
        best = min(trials, key=lambda r: r.data.metrics["quality/fd"])
        assert (
            final.data.params["train.g_learning_rate"] == best.data.params["train.g_learning_rate"]
        )
    (report,) = (tmp / "reports").glob("*/report.md")
    text = report.read_text()
    assert "## Hyperparameter search (validation FD)" in text
    assert "| `upsampler=nearest` | 3 | 0 |" in text and "| 3 | " in text
    assert (report.parent / "expected_best.png").is_file()
