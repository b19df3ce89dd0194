"""Beyond one machine, with the real engines: a sweep through submitit's launcher, runs logged to
a real ``mlflow server`` (proxied artifacts) and reported from it, and the SLURM preset rendered
into the sbatch script submitit would submit.

Every run writes to its own store, checkpoint folder, Hydra folder and reports under pytest's
tmp; only the data cache (outputs/cache) is shared with the project.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from helpers import CONF, EXPERIMENT, report_runs, run_cli, training_runs
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

TINY = ["data.limit=500", "train.epochs=1", "eval.samples=500"]


def _isolated(tmp: Path) -> list[str]:
    """Overrides that keep a sweep's Hydra folder, checkpoints and reports under ``tmp``."""
    return [
        f"hydra.sweep.dir={tmp / 'sweep'}",
        f"paths.checkpoint_dir={tmp / 'checkpoints'}",
        f"paths.reports_dir={tmp / 'reports'}",
    ]


def _two_job_sweep(launcher: str, uri: str, tmp_path: Path) -> tuple:
    """Run ``seed=0,1`` through ``launcher`` into ``uri``; check both runs FINISHED in one sweep.

    Returns (the CLI result, training runs, report runs, the sweep id).
    """
    result = run_cli(
        "--multirun",
        f"hydra/launcher={launcher}",
        "seed=0,1",
        *TINY,
        f"tracking.uri={uri}",
        *_isolated(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs, reports = training_runs(uri), report_runs(uri)
    assert sorted(run.info.run_name for run in runs) == ["nearest-s0", "nearest-s1"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    (sweep_id,) = {run.data.tags["sweep_id"] for run in runs}
    return result, runs, reports, sweep_id


# --- 1: a multirun through submitit -----------------------------------------------------------


def test_submitit_multirun_two_jobs_one_sweep(tmp_path):
    """Two jobs run by submitit's local executor, each in its own process, land as two FINISHED
    runs with the sweep id the callback wrote in the driver process."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    result, runs, reports, sweep_id = _two_job_sweep("local_submitit", uri, tmp_path)
    assert sweep_id == (tmp_path / "sweep" / "sweep_id.txt").read_text().strip()
    # Each job's TensorFlow threads follow the preset's cpus_per_task.
    preset = yaml.safe_load((CONF / "hydra" / "launcher" / "local_submitit.yaml").read_text())
    assert {run.data.params["train.threads"] for run in runs} == {str(preset["cpus_per_task"])}
    assert f"sweep {sweep_id}: 2 runs" in result.stdout
    assert [run.info.run_name for run in reports] == [f"report-{sweep_id}"]
    assert (tmp_path / "reports" / sweep_id / "report.md").is_file()
    # The jobs really went through submitit: one job folder each, with its log and result.
    logs = sorted((tmp_path / "sweep" / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2, logs
    for log in logs:
        assert (
            "submitit INFO" in log.read_text() and "Job completed successfully" in log.read_text()
        )
        assert list(log.parent.glob("*_result.pkl"))


# --- 2: a shared tracking server ---------------------------------------------------------------


def test_server_refuses_unknown_host_headers(mlflow_server):
    """MLflow 3's security middleware: API calls naming a host other than localhost or a private
    IP are refused unless it is in --allowed-hosts; /health is exempt."""
    url, _ = mlflow_server
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(api, timeout=10).status_code == 200
    foreign = {"Host": "login01.cluster.example:5000"}
    assert requests.get(api, headers=foreign, timeout=10).status_code == 403
    assert requests.get(f"{url}/health", headers=foreign, timeout=10).status_code == 200
    private = {"Host": "10.1.2.3:5000"}  # a cluster-internal address: allowed by default
    assert requests.get(api, headers=private, timeout=10).status_code == 200


def test_sweep_logs_to_a_tracking_server_and_reports_from_it(mlflow_server, tmp_path):
    """A two-job sweep (the local_parallel preset) logs through the server: runs, metrics,
    sample grids and models read back over HTTP; the report works unchanged on the server URI."""
    import keras
    from PIL import Image

    from src.study.report import build_report

    url, artifacts = mlflow_server
    _, runs, reports, sweep_id = _two_job_sweep("local_parallel", url, tmp_path)
    assert [run.info.run_name for run in reports] == [f"report-{sweep_id}"]

    client = MlflowClient(url)
    run = next(run for run in runs if run.info.run_name == "nearest-s0")
    run_id = run.info.run_id
    # Artifacts went through the server's proxy into its --artifacts-destination.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert list(artifacts.rglob(f"{run_id}/artifacts/generator/generator.keras"))
    for key in ("loss/d_loss", "loss/g_loss", "quality/fd", "quality/kid"):
        assert np.isfinite(run.data.metrics[key]), key
    assert int(run.data.tags["generator_params"]) > 0
    assert [m.step for m in client.get_metric_history(run_id, "loss/d_loss")] == [1]
    assert [m.step for m in client.get_metric_history(run_id, "quality/fd")] == [0, 1]

    pngs = sorted(
        a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")
    )
    assert [p for p in pngs if "samples+step+0+" in p] and [p for p in pngs if "+step+1+" in p]
    final = next(p for p in pngs if "samples+step+1+" in p)
    grid = np.asarray(Image.open(client.download_artifacts(run_id, final, str(tmp_path))))
    assert grid.shape[:2] == (4 * (4 * 11 + 1), 4 * (12 * 11 + 1)) and grid.std() > 10

    path = client.download_artifacts(run_id, "generator/generator.keras", str(tmp_path))
    generator = keras.models.load_model(path)
    images = generator.predict(np.random.default_rng(0).standard_normal((16, 100)), verbose=0)
    assert images.shape == (16, 10, 10, 1) and images.min() >= -1 and images.max() <= 1

    # The report, unchanged, on the server URI: the latest sweep is this one.
    report = build_report(url, EXPERIMENT, None, tmp_path / "again")
    assert report == tmp_path / "again" / sweep_id / "report.md"
    text = report.read_text()
    assert f"sweep `{sweep_id}`" in text and "`nearest`" in text
    table = json.loads((report.parent / "table.json").read_text())
    assert [(row["upsampler"], row["finished"]) for row in table] == [("nearest", 2)]
    assert (report.parent / "samples.png").is_file() and (report.parent / "losses.png").is_file()
    reports = report_runs(url)
    assert len(reports) == 2  # the sweep's own and this one, each with the report as artifacts
    for report_run in reports:
        names = {a.path for a in client.list_artifacts(report_run.info.run_id)}
        assert {"report.md", "table.json", "samples.png"} <= names, names


# --- 3: the SLURM preset, rendered without a cluster ---------------------------------------


def _never_called(cfg):  # the task function: a rendered sbatch script never runs it here
    raise AssertionError("no job may run in this test")


def _render_sbatch(tmp_path: Path, monkeypatch, jobs: int, *overrides: str) -> str:
    """The sbatch script the project's SLURM launcher writes for ``jobs`` jobs.

    The real Hydra launcher and submitit run up to ``sbatch``, where a stand-in that submits
    nothing and fails shadows any real one (tests/test_slurm.py submits to a real cluster); the
    script stays on disk. submitit's SlurmExecutor only starts where ``srun`` is on PATH (its
    cluster detection), so a stand-in that fails if ever run is put there too.
    """
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from submitit.core.utils import FailedJobError

    stub = tmp_path / "bin"
    stub.mkdir()
    ran = tmp_path / "srun-was-run"
    (stub / "srun").write_text(f"#!/bin/sh\ntouch {ran}\nexit 97\n")
    (stub / "sbatch").write_text(
        "#!/bin/sh\necho 'stand-in sbatch: nothing submitted' >&2\nexit 97\n"
    )
    for name in ("srun", "sbatch"):
        (stub / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ.get('PATH', '')}")
    sweep = tmp_path / "sweep"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={sweep}", *overrides],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    launcher.setup(hydra_context=None, task_function=_never_called, config=cfg)
    with pytest.raises(FailedJobError, match="stand-in sbatch: nothing submitted"):
        launcher.launch([[f"seed={seed}"] for seed in range(jobs)], initial_job_idx=0)
    assert not ran.exists()
    (script,) = (sweep / ".submitit").glob(".submission_file_*.sh")
    return script.read_text()


def test_slurm_preset_renders_its_sbatch_parameters(tmp_path, monkeypatch):
    preset = yaml.safe_load((CONF / "hydra" / "launcher" / "slurm.yaml").read_text())
    assert preset["defaults"] == ["submitit_slurm", "_self_"]
    jobs = preset["array_parallelism"] + 1  # more jobs than may run at once
    script = _render_sbatch(tmp_path, monkeypatch, jobs)
    lines = set(script.splitlines())
    assert {
        f"#SBATCH --time={preset['timeout_min']}",
        f"#SBATCH --cpus-per-task={preset['cpus_per_task']}",
        f"#SBATCH --mem={preset['mem_gb']}GB",
        f"#SBATCH --array=0-{jobs - 1}%{preset['array_parallelism']}",
        f"#SBATCH --signal=USR2@{preset['signal_delay_s']}",
        f"#SBATCH --nodes={preset['nodes']}",
        f"#SBATCH --ntasks-per-node={preset['tasks_per_node']}",
    } <= lines, script
    assert preset["partition"] is None and preset["account"] is None
    assert "--partition" not in script and "--account" not in script and "--gpus" not in script
    sweep = tmp_path / "sweep"
    assert f"#SBATCH --output={sweep}/.submitit/%A_%a/%A_%a_0_log.out" in lines
    assert f"{sys.executable} -u -m submitit.core._submit {sweep}/.submitit/%j" in script


def test_slurm_preset_knobs_reach_sbatch(tmp_path, monkeypatch):
    script = _render_sbatch(
        tmp_path,
        monkeypatch,
        3,
        "hydra.launcher.partition=short",
        "hydra.launcher.account=proj42",
        "hydra.launcher.timeout_min=20",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.array_parallelism=2",
        "hydra.launcher.setup=[module load python/3.11]",
        "+hydra.launcher.additional_parameters.constraint=skylake",
    )
    lines = script.splitlines()
    for line in [
        "#SBATCH --partition=short",
        "#SBATCH --account=proj42",
        "#SBATCH --time=20",
        "#SBATCH --mem=2GB",
        "#SBATCH --array=0-2%2",
        "#SBATCH --constraint=skylake",
        "module load python/3.11",
    ]:
        assert line in lines, (line, script)
    assert lines.index("module load python/3.11") < next(
        i for i, line in enumerate(lines) if line.startswith("srun ")
    )
