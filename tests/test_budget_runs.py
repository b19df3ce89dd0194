"""Runs with a FLOPs or seconds budget (src/run/budget.py): they stop at the budget, part-way
through an epoch, record the compute axes at every round, and a run of four rounds, killed
after the first and resumed, ends exactly where a one-round run of the same budget does: the
same steps on the same batches, whatever the rounds and the interruption."""

from __future__ import annotations

import os
import signal

import pytest
from helpers import (
    isolated,
    metric_history,
    only_run,
    run_cli,
    sqlite_uri,
    start_cli,
    wait_for_checkpoint,
)

pytestmark = pytest.mark.slow

# One step per compiled call, so a round ends at the first step past its share: exact bounds.
SMALL = ["data.limit=4096", "eval.samples=500", "train.steps_per_execution=1"]
FLOPS = 1.2e11  # about 4 passes over the 4,096 images for `nearest` (7.06 MFLOP per image)
FLOPS_RUN = [*SMALL, "train.budget_unit=flops", f"train.budget={FLOPS}", "train.deterministic=true"]


def _axes(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """The run's images and FLOPs spent, as (step, value) per logged round."""
    return {axis: metric_history(uri, run_id, f"compute/{axis}") for axis in ("images", "flops")}


@pytest.fixture(scope="module")
def flops_runs(tmp_path_factory):
    """A: four rounds, killed after its first and resumed. B: the same budget in one round,
    uninterrupted. Both deterministic, so they must agree to the bit."""
    tmp = tmp_path_factory.mktemp("flops")
    one_round = [*FLOPS_RUN, "eval.fractions=1", *isolated(tmp / "B", sqlite_uri(tmp / "B"))]
    through = start_cli(*one_round, log=tmp / "B")
    victim_args = [*FLOPS_RUN, "eval.fractions=4", *isolated(tmp / "A", sqlite_uri(tmp / "A"))]
    victim = start_cli(*victim_args, log=tmp / "A")
    try:
        wait_for_checkpoint(tmp / "A" / "ck", victim, epoch=1)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        victim.kill()
    killed_state = only_run(sqlite_uri(tmp / "A")).info.status
    resumed = run_cli(*victim_args, "resume=true")
    assert through.wait(timeout=600) == 0, (tmp / "B.err").read_text()[-3000:]
    return tmp, killed_state, resumed


def test_a_flops_budget_stops_at_its_first_step_past_the_budget(flops_runs):
    """Four rounds at steps 0..4, each ending at the first step past its quarter of the
    budget; the total is within one step (128 images) of it, and FLOPs = images x the tag."""
    tmp, _, _ = flops_runs
    uri = sqlite_uri(tmp / "A")
    run = only_run(uri)
    assert run.info.status == "FINISHED" and run.data.tags["budget"] == "1.2e+11 flops"
    per_image = float(run.data.tags["train_flops_per_image"])
    axes = _axes(uri, run.info.run_id)
    assert [step for step, _ in axes["flops"]] == [0, 1, 2, 3, 4]
    for (step, flops), (_, images) in zip(axes["flops"], axes["images"], strict=True):
        assert flops == pytest.approx(images * per_image, rel=1e-6)  # the tag is rounded
        share = FLOPS * step / 4
        assert share <= flops < share + 128 * per_image or step == 0
    fd_steps = [step for step, _ in metric_history(uri, run.info.run_id, "quality/fd")]
    assert fd_steps == [0, 1, 2, 3, 4]  # an evaluation at each quarter
    assert axes["images"][-1][1] % 4096 != 0  # it ended part-way through an epoch


def test_a_resumed_flops_budget_run_ends_where_an_uninterrupted_one_does(flops_runs):
    """Four rounds killed after the first and resumed, against one round: the same run goes
    on to the same final images and FLOPs, and its generator's final FD is the one-round
    run's to the bit (the batch stream went on where each round stopped)."""
    tmp, killed_state, resumed = flops_runs
    assert killed_state == "RUNNING" and resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = only_run(sqlite_uri(tmp / "A")), only_run(sqlite_uri(tmp / "B"))
    assert a.info.status == "FINISHED" and "resuming run" in resumed.stderr
    for key in ("compute/images", "compute/flops", "quality/fd", "artifacts/checkerboard"):
        assert a.data.metrics[key] == b.data.metrics[key], key


def test_a_seconds_budget_stops_at_it_and_logs_training_seconds(tmp_path):
    """An 8-second budget in two rounds: training seconds end just past 4 and 8 (evaluation
    and logging not counted), FD at each round."""
    uri = sqlite_uri(tmp_path)
    args = [*SMALL, "train.budget_unit=seconds", "train.budget=8", "eval.fractions=2"]
    result = run_cli(*args, *isolated(tmp_path, uri))
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(uri)
    seconds = metric_history(uri, run.info.run_id, "compute/seconds")
    assert [step for step, _ in seconds] == [0, 1, 2]
    assert 4.0 <= seconds[1][1] < 5.0 and 8.0 <= seconds[2][1] < 9.0, seconds
    images = metric_history(uri, run.info.run_id, "compute/images")
    assert 0 < images[1][1] < images[2][1]
    assert [s for s, _ in metric_history(uri, run.info.run_id, "quality/fd")] == [0, 1, 2]
