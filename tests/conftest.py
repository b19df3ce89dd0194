"""Shared fixtures: Hydra composition of the real configs and throwaway MLflow stores (plain
helpers are in helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import CONF, mlflow_server_command
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.config import schema

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


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A real ``mlflow server`` on a free 127.0.0.1 port (sqlite store, artifacts proxied to a
    local folder), shared by a module's tests; yields (url, artifact folder) and stops it (its
    whole process group) afterwards."""
    from src.loadtest.servers import free_port, serving

    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts = folder / "artifacts"
    command = mlflow_server_command(port, f"sqlite:///{folder / 'server.db'}", artifacts, workers=1)
    with serving(command, url, folder / "server.log"):
        yield url, artifacts
