"""MLflow bookkeeping: where runs go, the experiment, run lifecycle and per-epoch logging.

Everything goes through an explicit ``MlflowClient`` (no global fluent state), so several runs,
stores or tests can share one process.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

SQLITE_PREFIX = "sqlite:///"
REACH_TIMEOUT_SECONDS = 5.0


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says what to do."""


def resolve_uri(uri: str | None, root: str | Path) -> str:
    """The tracking URI: ``uri`` when given, else the sqlite database ``<root>/mlflow.db``."""
    return uri or f"{SQLITE_PREFIX}{Path(root).resolve() / 'mlflow.db'}"


def default_artifact_location(uri: str, artifact_location: str | None) -> str | None:
    """Artifacts beside a sqlite database in ``mlruns/``; a server picks its own otherwise."""
    if artifact_location:
        return artifact_location
    if uri.startswith(SQLITE_PREFIX):
        return (Path(uri[len(SQLITE_PREFIX) :]).parent / "mlruns").resolve().as_uri()
    return None


def check_reachable(uri: str) -> None:
    """Fail fast, with a one-line message, when the store cannot be written or reached."""
    scheme = urlparse(uri).scheme
    if uri.startswith(SQLITE_PREFIX):
        folder = Path(uri[len(SQLITE_PREFIX) :]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingError(f"cannot create {folder} for {uri}: {error}") from error
    elif scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise TrackingError(
                f"tracking server {uri} is unreachable ({type(error).__name__}); "
                "start it (make server) or set tracking.uri"
            ) from error


def ensure_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    """Create the store (sqlite schema included) and the experiment if needed; return its id.

    Call it once before a parallel sweep starts: fresh sqlite stores race on schema creation.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {name!r} is deleted in {uri}; restore it in the UI or pick "
                "another tracking.experiment"
            )
        return experiment.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=default_artifact_location(uri, artifact_location)
        )
    except MlflowException:  # another job created it in between
        return client.get_experiment_by_name(name).experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping to dot keys: {"train": {"epochs": 3}} -> {"train.epochs": 3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def git_state(root: str | Path) -> tuple[str, bool]:
    """The checkout's commit and whether tracked files differ from it ("unknown" outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


@dataclass
class Run:
    """An open MLflow run and the client that writes to it."""

    client: Any
    run_id: str

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log several metrics at one step in a single request."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()],
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (MLflow stores them as strings)."""
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_image(self, image: Any, key: str, step: int) -> None:
        """An image under ``key`` at ``step`` (the UI shows a step slider per key)."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a local file or folder."""
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file."""
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tag(self, key: str, value: str) -> None:
        """Set one tag."""
        self.client.set_tag(self.run_id, key, value)

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)


def start_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, Any]) -> Run:
    """Open a new run in the experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(
        experiment_id, run_name=name, tags={key: str(value) for key, value in tags.items()}
    )
    return Run(client, run.info.run_id)


def reopen_run(uri: str, run_id: str) -> Run:
    """Continue an existing run (a resume): it is RUNNING again until ended."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.update_run(run_id, status="RUNNING")
    return Run(client, run_id)
