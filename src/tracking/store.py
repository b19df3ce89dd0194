"""MLflow bookkeeping: where runs go, the experiment, run lifecycle and per-epoch logging.

Everything goes through an explicit ``MlflowClient`` (no global fluent state), so several runs,
stores or tests can share one process.
"""

from __future__ import annotations

import os
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from src.core import locks
from src.core.files import write_problem

SQLITE_PREFIX = "sqlite:///"
REACH_TIMEOUT_SECONDS = 5.0  # a tracking server that does not answer /health in this is down
LOCK_SECONDS = (
    120.0  # the default wait for a fresh sqlite store's creation lock (tracking.lock_seconds)
)
UI_ADDRESS = "http://127.0.0.1:5000"  # where `make ui` (and a bare `mlflow ui`) serve sqlite
FAILURE_TAG = "failure_reason"  # why a FAILED run failed
DESCRIPTION_TAG = "mlflow.note.content"  # the run's description in mlflow ui (markdown)
DIGEST_LIMIT = 36  # MLflow's longest dataset digest (mlflow.utils.validation)
MAX_TAG_LENGTH = 8000  # MLflow's longest tag value (mlflow.utils.validation), descriptions too
# MLflow retries each HTTP request with exponential backoff (urllib3's Retry): at most this many
# retries (mlflow.environment_variables._MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT) and at most
# BACKOFF_CAP seconds between two of them (urllib3's Retry.DEFAULT_BACKOFF_MAX).
MAX_RETRIES = 10
BACKOFF_CAP = 120.0
LONGEST_OUTAGE = BACKOFF_CAP * (MAX_RETRIES - 1)  # every wait at the cap: 1080 s
# What a process that migrates a fresh sqlite store says when another process migrates it at
# the same moment (alembic, seen with MLflow 3.17): the other one wins and the store is fine.
MIGRATION_RACE = ("No such index", "duplicate column name", "already exists", "database is locked")
MIGRATION_ATTEMPTS = 5
# A lost race to insert a row, as the databases word it (lower case): sqlite's "UNIQUE constraint
# failed", PostgreSQL's "duplicate key value violates unique constraint", MySQL's "Duplicate entry"
RACED_INSERT = ("unique constraint", "duplicate entry", "duplicate key")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says what to do."""


class TrackingOutage(TrackingError):
    """The tracking server stayed unreachable for longer than ``tracking.outage_seconds``."""


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
    """Fail fast, with a one-line message, when the store cannot be used: a scheme MLflow has
    no store for, a sqlite folder that cannot be created, a server or database that does not
    answer. A fresh sqlite store is created here, once (:func:`open_client`)."""
    from mlflow.utils.uri import get_uri_scheme

    scheme = get_uri_scheme(uri)
    if scheme not in usable_schemes():
        raise TrackingError(
            f"tracking.uri={uri}: MLflow has no tracking store for '{scheme}:' URIs; use "
            "sqlite:///<file>, http(s)://<server> or a database URL (postgresql://, mysql://)"
        )
    if uri.startswith(SQLITE_PREFIX):
        _check_sqlite_location(uri)
    elif scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=REACH_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise TrackingError(
                f"tracking server {uri} is unreachable ({type(error).__name__}); "
                "start it (make server) or set tracking.uri"
            ) from error
    elif scheme not in ("", "file"):  # a database: connecting tells whether it can be used
        try:
            open_client(uri).search_experiments(max_results=1)
        except Exception as error:
            first = (str(error).splitlines() or [""])[0][:300]
            raise TrackingError(
                f"cannot open the tracking store {_without_password(uri)} "
                f"({type(error).__name__}: {first}); check tracking.uri"
            ) from None


def _check_sqlite_location(uri: str) -> None:
    """A sqlite store's folder can be made and written, and its database (if there is one)
    opened for writing: checked before anything waits on the store (its creation lock cannot
    be taken in a folder that refuses files, and would be waited for in vain)."""
    database = Path(uri[len(SQLITE_PREFIX) :])
    problem = write_problem(database.parent)
    if problem is None and database.exists():
        try:
            with open(database, "r+b"):
                pass
        except OSError as error:
            problem = error.strerror or type(error).__name__
    if problem is not None:
        raise TrackingError(
            f"cannot write the tracking store {database} ({problem}); make its folder writable "
            "or set tracking.uri=sqlite:///<a writable folder>/mlflow.db"
        )


def usable_schemes() -> set[str]:
    """The URI schemes MLflow has a tracking store for (its own registry's), databases by
    their engine (``postgresql+psycopg2`` is ``postgresql``)."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    return set(_tracking_store_registry._registry)


def _without_password(uri: str) -> str:
    parts = urlparse(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@")
    return uri


_opened: set[str] = set()  # sqlite stores this process has created or found ready


def open_client(uri: str, lock_seconds: float = LOCK_SECONDS) -> Any:
    """An ``MlflowClient`` for ``uri``. A sqlite store is created and migrated at the first
    use in this process under a file lock beside the database (``<db>.lock``), so harness
    processes that start together on a new store take turns, each waiting at most
    ``lock_seconds``; a process outside the harness migrating it at the same moment makes
    alembic fail in one of them, which is retried."""
    from mlflow.tracking import MlflowClient

    if not uri.startswith(SQLITE_PREFIX) or uri in _opened:
        return MlflowClient(tracking_uri=uri)
    database = Path(uri[len(SQLITE_PREFIX) :])
    try:
        with locks.held(Path(f"{database}.lock"), lock_seconds):
            client = _migrated_client(uri)
    except locks.LockTimeout as error:
        raise TrackingError(
            f"the store's creation lock {error}; wait for that process, or end it (a lock of a "
            "process that has ended is free), or raise tracking.lock_seconds"
        ) from None
    _opened.add(uri)
    return client


def _migrated_client(uri: str) -> Any:
    """A client of the sqlite store ``uri``, created and migrated now if it is new, through
    other processes' migration races."""
    from mlflow.tracking import MlflowClient

    def ready() -> Any:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates and migrates the store
        return client

    for attempt in range(MIGRATION_ATTEMPTS - 1):
        try:
            return ready()
        except Exception as error:
            if not _migration_race(error):
                raise
            time.sleep(0.5 * (attempt + 1))
    return ready()  # the last attempt: its error is the one to report


def _migration_race(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is alembic meeting another process's migration."""
    while error is not None:
        if any(text in str(error) for text in MIGRATION_RACE):
            return True
        error = error.__cause__ or error.__context__
    return False


def outage_schedule(seconds: float) -> tuple[int, float, float]:
    """MLflow's retry settings that keep a request trying through an outage of ``seconds``:
    ``(retries, backoff factor, seconds covered)``, the schedule whose cover (the time to its
    last retry) is the shortest at least ``seconds`` long, up to ``LONGEST_OUTAGE``. urllib3
    waits 0, 2f, 4f, ... seconds before the retries, each at most ``BACKOFF_CAP``; MLflow adds
    up to 1 s of jitter to each. MLflow's default (7 retries, f = 2) covers 244 s."""
    # Shortest cover first; of equal covers, the most retries: a server back sooner is noticed
    # sooner.
    schedules = [
        (_covered(retries, factor), -retries, float(factor))
        for retries in range(1, MAX_RETRIES + 1)
        for factor in range(1, int(BACKOFF_CAP) + 1)
    ]
    covered, retries, factor = min(
        (item for item in schedules if item[0] >= seconds), default=max(schedules)
    )
    return -retries, factor, float(covered)


def _covered(retries: int, factor: float) -> float:
    return sum(min(BACKOFF_CAP, factor * 2 ** (k - 1)) for k in range(2, retries + 1))


def limit_outages(seconds: float) -> float:
    """Make this process's MLflow requests retry through an outage of ``seconds`` and no
    longer (environment variables MLflow reads on each request); returns the seconds covered."""
    retries, factor, covered = outage_schedule(seconds)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(int(factor))
    return covered


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` is MLflow giving up on a server that does not answer (connection
    refused or reset, or a 5xx) after its retries."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, requests.ConnectionError):
        return True
    text = str(error)
    return (
        isinstance(error, MlflowException)
        and text.startswith("API request to")
        and ("Max retries exceeded" in text or "Connection" in text or "too many" in text)
    )


def ensure_experiment(
    uri: str, name: str, artifact_location: str | None, lock_seconds: float = LOCK_SECONDS
) -> str:
    """Create the store (sqlite schema included) and the experiment if needed; return its id.

    Call it once before a parallel sweep starts: fresh sqlite stores race on schema creation.
    ``lock_seconds`` bounds the wait for another process creating the store.
    """
    from mlflow.exceptions import MlflowException

    check_reachable(uri)
    client = open_client(uri, lock_seconds)
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
    """An open MLflow run and the client that writes to it.

    ``logged`` holds the (key, step) pairs of metrics and images the run already has when it is
    resumed: those are not logged again, so a run killed after logging an epoch and before
    checkpointing it, and resumed, has each step once (the first attempt's values).
    """

    client: Any
    run_id: str
    logged: set[tuple[str, int]] = field(default_factory=set)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log several metrics at one step in a single request (those not logged yet)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        fresh = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if (key, step) not in self.logged
        ]
        if fresh:
            self.client.log_batch(self.run_id, metrics=fresh)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (MLflow stores them as strings)."""
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_image(self, image: Any, key: str, step: int) -> None:
        """An image under ``key`` at ``step`` (the UI shows a step slider per key), unless the
        run has it already."""
        if (key, step) in self.logged:
            return
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
                features,
                source=Path(source).resolve().as_uri(),
                name=name,
                digest=digest[:DIGEST_LIMIT],
            )
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

    def log_keras_model(
        self,
        model: Any,
        name: str,
        example: Any,
        step: int,
        params: Mapping[str, Any],
        requirements: list[str],
    ) -> str:
        """``model`` as an MLflow logged model of this run (the Models column; loadable with
        ``mlflow.keras.load_model("models:/<id>")``); returns its id."""
        import mlflow.keras
        from mlflow.entities import LoggedModelOutput
        from mlflow.models import infer_signature

        run = self.client.get_run(self.run_id)
        logged = self.client.create_logged_model(
            run.info.experiment_id,
            name=name,
            source_run_id=self.run_id,
            params={key: str(value) for key, value in params.items()},
            model_type=name,
        )
        self.client.log_outputs(self.run_id, models=[LoggedModelOutput(logged.model_id, step)])
        signature = infer_signature(example, model.predict_on_batch(example))
        with fluent_uri(self.client.tracking_uri):
            mlflow.keras.log_model(
                model,
                model_id=logged.model_id,
                signature=signature,
                pip_requirements=requirements,  # pinned here: inferring them loads the model again
            )
        return logged.model_id

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)


def start_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, Any]) -> Run:
    """Open a new run in the experiment."""
    client = open_client(uri)
    run = client.create_run(
        experiment_id, run_name=name, tags={key: str(value) for key, value in tags.items()}
    )
    return Run(client, run.info.run_id)


def reopen_run(uri: str, run_id: str) -> Run:
    """Continue an existing run (a resume): it is RUNNING again until ended, and knows which
    metric and image steps it has already."""
    client = open_client(uri)
    client.update_run(run_id, status="RUNNING")
    if FAILURE_TAG in client.get_run(run_id).data.tags:  # a failure resume=true has got past
        client.delete_tag(run_id, FAILURE_TAG)
    return Run(client, run_id, logged_steps(client, run_id))


def logged_steps(client: Any, run_id: str) -> set[tuple[str, int]]:
    """Every (key, step) the run has logged: its metrics' histories and its step images
    (``images/<key>+step+<step>+...``, the file names of ``MlflowClient.log_image``)."""
    found = set()
    for key in client.get_run(run_id).data.metrics:
        found |= {(key, entry.step) for entry in client.get_metric_history(run_id, key)}
    for item in client.list_artifacts(run_id, "images"):
        name = item.path.rsplit("/", 1)[-1]
        parts = name.split("+")
        if len(parts) > 2 and parts[1] == "step" and parts[2].isdigit():
            found.add((parts[0].replace("~", "/"), int(parts[2])))
    return found
