"""The cluster path on the database docs/scaling-out.md recommends: a throw-away PostgreSQL cluster
(src/loadtest/postgres.py), a real ``mlflow server`` on it, and 16 replayed jobs
(src/loadtest/tracking_load.py) plus one real training run logging through it at the same time.
Every run is read back over HTTP: FINISHED, every step of every metric, every sample grid, every
artifact; and the rows are in PostgreSQL itself. Everything is stopped and removed afterwards.

Skipped when PostgreSQL is not installed (``apt-get install -y postgresql``), unless
``REQUIRE_POSTGRES=1`` (set by .ci/postgres-install.sh), which makes that a failure.
"""

from __future__ import annotations

import json
import os

import pytest
from helpers import mlflow_server_command

from src.loadtest.postgres import bin_dir, throwaway_cluster
from src.loadtest.servers import free_port, serving
from src.loadtest.tracking_load import EPOCH_METRICS, QUALITY_METRICS, eval_steps, run_load

pytestmark = [pytest.mark.slow, pytest.mark.infra]  # make test-infra

JOBS = 16
TRAIN = ("train.epochs=2", "data.limit=512", "eval.samples=500")


@pytest.fixture(scope="module")
def postgres():
    """A running throw-away cluster (fsync off: nothing here needs to survive a crash)."""
    if bin_dir() is None:
        message = "PostgreSQL is not installed: apt-get install -y postgresql"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{message} (REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    with throwaway_cluster(fsync=False) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """``mlflow server`` on the cluster, artifacts proxied to a folder; yields its URL."""
    tmp = tmp_path_factory.mktemp("pg-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = mlflow_server_command(port, postgres.url, tmp / "artifacts", workers=2)
    with serving(command, url, tmp / "server.log"):
        yield url


def test_many_jobs_and_a_training_run_lose_nothing_on_postgres(postgres, server, tmp_path):
    """16 jobs replaying a default run's logging and a real run, at once: nothing lost."""
    import psycopg2

    summary = run_load(server, JOBS, train=1, train_overrides=TRAIN, scratch=tmp_path)
    print(json.dumps({key: item for key, item in summary.items() if key != "problems"}))
    assert summary["problems"] == [], summary["problems"][:20]
    assert summary["runs_finished"] == JOBS
    assert summary["failed_calls"] == 0
    (training,) = summary["training"]
    assert training["exit"] == 0 and training["problems"] == []

    # The runs are rows of PostgreSQL, not of some other store the server fell back to.
    epochs = summary["epochs"]
    with psycopg2.connect(postgres.dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM runs GROUP BY status")
        assert dict(cursor.fetchall()) == {"FINISHED": JOBS + 1}
        cursor.execute(
            "SELECT count(*) FROM metrics JOIN runs USING (run_uuid) WHERE name LIKE 'replay-%%'"
        )
        evaluated = len(eval_steps(epochs, summary["every"]))
        per_run = len(EPOCH_METRICS) * epochs + len(QUALITY_METRICS) * evaluated + 1
        assert cursor.fetchone()[0] == JOBS * per_run
