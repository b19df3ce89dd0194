"""Helpers the test modules share (``from helpers import ...``): the checkout's paths, the
command line as a user runs it, MLflow stores in temporary folders and what they hold, and saved
models reloaded without this project."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
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


def report_runs(uri: str) -> list:
    """The report runs of the experiment (one per reported sweep)."""
    return [run for run in training_runs(uri, reports=True) if "report" in run.data.tags]


def runs_by_name(uri: str) -> dict:
    """Every run of the experiment, report runs too, by run name."""
    return {run.info.run_name: run for run in training_runs(uri, reports=True)}


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


def mlflow_server_command(
    port: int, backend: str, artifacts: Path, workers: int | None = None
) -> list[str]:
    """``mlflow server`` on 127.0.0.1:``port`` with the store ``backend`` and artifacts proxied
    to the folder ``artifacts`` (what `make server` runs), for ``servers.serving``;
    ``workers`` None: the server's default."""
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
    ]
    return command + (["--workers", str(workers)] if workers else [])


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m src.train ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env() -> dict[str, str]:
    """The environment :func:`run_cli` gives its process, for tests that start one themselves."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def default_sigint() -> None:
    """In the child before exec: Ctrl-C's default action, so Python raises KeyboardInterrupt on
    SIGINT even when the suite runs as a background job of a non-interactive shell (which starts
    its children with SIGINT ignored, and Python then leaves it ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(
    *args: str, log: Path, cwd: Path = ROOT, module: str = "src.train", group: bool = False
) -> subprocess.Popen:
    """Start ``python -m src.train ARGS`` (or another ``module``) in the background (to signal
    or kill it); its stdout and stderr go to the files ``<log>.out`` and ``<log>.err``, which
    cannot fill up as pipes do. With ``group`` it leads its own process group, which its
    workers join (``os.killpg`` ends them all)."""
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env=cli_env(),
            stdout=out,
            stderr=err,
            start_new_session=group,
            preexec_fn=default_sigint,
        )


def wait_for_checkpoint(
    folder: Path, process: subprocess.Popen, epoch: int, timeout: float = 300
) -> dict:
    """Poll ``<folder>/*/state.json`` until it records at least ``epoch`` completed epochs and
    return it (with its path under "path"); fail if ``process`` ends first or time runs out."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob("*/state.json"):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if state["epoch"] >= epoch:
                return {**state, "path": path}
        if process.poll() is not None:
            raise AssertionError(f"process ended (exit {process.returncode}) before epoch {epoch}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of epoch {epoch} in {folder} after {timeout}s")


RELOAD = textwrap.dedent(
    """
    import sys

    import keras
    import numpy as np

    model = keras.models.load_model(sys.argv[1])
    np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False)))
    assert not [name for name in sys.modules if name == "src" or name.startswith("src.")]
    print(",".join(sorted({type(layer).__module__.split(".")[0] for layer in model.layers})))
    """
)


def reload_in_fresh_process(model_path: Path, inputs, folder: Path) -> tuple:
    """Load a saved ``.keras`` file in a new Python process that cannot import this project and
    apply it to ``inputs``; returns (its outputs, the top-level modules its layers come from)."""
    import numpy as np

    np.save(folder / "inputs.npy", inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(model_path), "inputs.npy", "outputs.npy"],
        cwd=folder,  # not the checkout: `src` is not on the path by accident
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return np.load(folder / "outputs.npy"), result.stdout.strip().splitlines()[-1]
