"""MLflow bookkeeping: where runs go, the experiment, run lifecycle and per-epoch logging.

Everything goes through an explicit ``MlflowClient`` (no global fluent state), so several runs,
stores or tests can share one process.
"""

from __future__ import annotations

import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

SQLITE_PREFIX = "sqlite:///"
REACH_TIMEOUT_SECONDS = 5.0
UI_ADDRESS = "http://127.0.0.1:5000"  # where `make ui` (and a bare `mlflow ui`) serve sqlite
DESCRIPTION_TAG = "mlflow.note.content"  # the run's description in mlflow ui (markdown)
DIGEST_LIMIT = 36  # MLflow's longest dataset digest (mlflow.utils.validation)
MAX_TAG_LENGTH = 8000  # MLflow's longest tag value (mlflow.utils.validation), descriptions too
# A lost race to insert a row, as the databases word it (lower case): sqlite's "UNIQUE constraint
# failed", PostgreSQL's "duplicate key value violates unique constraint", MySQL's "Duplicate entry"
RACED_INSERT = ("unique constraint", "duplicate entry", "duplicate key")


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


def ui_address(uri: str) -> str | None:
    """Where the UI of the store ``uri`` is served: the server itself, or `make ui`'s address
    for a sqlite store; None when this harness cannot know (another scheme)."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        return uri.rstrip("/")
    return UI_ADDRESS if uri.startswith(SQLITE_PREFIX) else None


def experiment_link(uri: str, experiment_id: str, sweep_id: str | None = None) -> str | None:
    """The experiment's runs in mlflow ui's training view, only ``sweep_id``'s when given.

    MLflow 3 opens an experiment in its GenAI view unless the link asks for the training one.
    """
    address = ui_address(uri)
    if address is None:
        return None
    link = f"{address}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if sweep_id:
        link += "&searchFilter=" + quote(f"tags.sweep_id = '{sweep_id}'", safe="")
    return link


def run_link(uri: str, experiment_id: str, run_id: str) -> str | None:
    """A run's charts (losses, quality, sample grid) in mlflow ui's training view."""
    address = ui_address(uri)
    if address is None:
        return None
    page = f"{address}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics"
    return f"{page}?workflowType=machine_learning"


@contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's module-level tracking URI set to ``uri`` for a call that reads it (model
    logging has no client form), and the previous one back afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


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

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags in one request."""
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), 100):  # as params: at most 100 per batch
            self.client.log_batch(self.run_id, tags=items[start : start + 100])

    def describe(self, markdown: str) -> None:
        """The run's description, as mlflow ui shows it on the run page."""
        self.set_tag(DESCRIPTION_TAG, markdown)

    def log_dataset(self, features: Any, name: str, digest: str, source: Path) -> None:
        """``features`` as the run's training dataset (the runs table's Dataset column)."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        with warnings.catch_warnings():  # MLflow registers file: sources twice and says so
            warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
            dataset = mlflow.data.from_numpy(
                features, source=Path(source).resolve().as_uri(), name=name,
                digest=digest[:DIGEST_LIMIT],
            )  # fmt: skip
        context = InputTag("mlflow.data.context", "training")
        given = [DatasetInput(dataset._to_mlflow_entity(), tags=[context])]
        try:
            self.client.log_inputs(self.run_id, datasets=given)
        except MlflowException as error:
            # Parallel jobs logging the same new dataset race on MLflow's insert of its row
            # (unique on experiment, name, digest); once it exists, linking works.
            if not any(words in str(error).lower() for words in RACED_INSERT):
                raise
            self.client.log_inputs(self.run_id, datasets=given)

    def log_keras_model(self, model: Any, name: str, example: Any, step: int,
                        params: Mapping[str, Any], requirements: list[str]) -> str:  # fmt: skip
        """``model`` as an MLflow logged model of this run (the Models column; loadable with
        ``mlflow.keras.load_model("models:/<id>")``); returns its id."""
        import mlflow.keras
        from mlflow.entities import LoggedModelOutput
        from mlflow.models import infer_signature

        run = self.client.get_run(self.run_id)
        logged = self.client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=self.run_id,
            params={key: str(value) for key, value in params.items()}, model_type=name,
        )  # fmt: skip
        self.client.log_outputs(self.run_id, models=[LoggedModelOutput(logged.model_id, step)])
        signature = infer_signature(example, model.predict_on_batch(example))
        with fluent_uri(self.client.tracking_uri):
            mlflow.keras.log_model(
                model, model_id=logged.model_id, signature=signature,
                pip_requirements=requirements,  # pinned here: inferring them loads the model again
            )  # fmt: skip
        return logged.model_id

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
