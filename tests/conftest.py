"""Shared fixtures: Hydra composition of the real configs and throwaway MLflow stores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src import schema

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
schema.register()


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A fresh sqlite MLflow store in a temporary folder (artifacts in mlruns/ beside it)."""
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture
def make_cfg(tmp_path: Path, store_uri: str) -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides, writing to temporary output and store."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[
                    f"paths.output_dir={tmp_path / 'run'}",
                    f"paths.checkpoint_dir={tmp_path / 'checkpoints'}",
                    f"paths.reports_dir={tmp_path / 'reports'}",
                    f"tracking.uri={store_uri}",
                    *overrides,
                ],
            )

    return make


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m src.train ARGS`` as a user would, capturing its output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd,
        env=env,
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


def start_cli(*args: str, log: Path, cwd: Path = ROOT, module: str = "src.train",
              group: bool = False) -> subprocess.Popen:  # fmt: skip
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
