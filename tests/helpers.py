"""Helpers the test modules share: MLflow stores in temporary folders and what they hold."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

EXPERIMENT = "upsamplers"


def sqlite_uri(folder: Path) -> str:
    """The sqlite store ``<folder>/mlflow.db``."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def isolated(tmp: Path, uri: str, run_dir: str = "hydra.run.dir") -> list[str]:
    """Overrides that keep a test's runs in the store ``uri`` and its checkpoints
    (``tmp/ck``), reports (``tmp/reports``) and Hydra folder (``tmp/run``, or ``tmp/sweep``
    when ``run_dir`` is ``hydra.sweep.dir``) under ``tmp``."""
    folder = "sweep" if run_dir == "hydra.sweep.dir" else "run"
    return [
        f"tracking.uri={uri}",
        f"paths.checkpoint_dir={tmp / 'ck'}",
        f"paths.reports_dir={tmp / 'reports'}",
        f"{run_dir}={tmp / folder}",
    ]


def training_runs(uri: str, reports: bool = False) -> list:
    """Training runs of the experiment (the sweep's report run only when ``reports``)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [run for run in runs if reports or "report" not in run.data.tags]


def only_run(uri: str):
    """The store's one training run (fails when there are more or none)."""
    found = training_runs(uri)
    assert len(found) == 1, [(run.info.run_name, run.info.status) for run in found]
    return found[0]


def runs_in_file(db: Path) -> list:
    """Every run of every experiment in the sqlite file ``db``; none when it does not exist
    (checked first: opening a client on a missing file would create it)."""
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    ids = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value of ``key``, duplicates included, by step."""
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def image_steps(uri: str, run_id: str, key: str = "samples") -> list[int]:
    """The steps of the run's logged images of ``key``, duplicates included."""
    artifacts = MlflowClient(uri).list_artifacts(run_id, "images")
    names = [a.path for a in artifacts if a.path.endswith(".png")]
    return sorted(int(re.search(rf"{key}\+step\+(\d+)\+", name).group(1)) for name in names)


def mlflow_server_command(port: int, backend: str, artifacts: Path,
                          workers: int | None = None) -> list[str]:  # fmt: skip
    """``mlflow server`` on 127.0.0.1:``port`` with the store ``backend`` and artifacts proxied
    to the folder ``artifacts`` (what `make server` runs), for conftest's ``serving``;
    ``workers`` None: the server's default."""
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
               "--port", str(port), "--backend-store-uri", backend,
               "--serve-artifacts", "--artifacts-destination", str(artifacts)]  # fmt: skip
    return command + (["--workers", str(workers)] if workers else [])
