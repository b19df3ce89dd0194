"""Local HTTP servers the harness's tools and tests start and stop: a free port, and a server
process (``mlflow server``, ``mlflow ui``, ``make server``) held up until it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_SECONDS = 90  # a loaded 2-core machine has taken over a minute to start mlflow server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(
    command: list[str], url: str, log: Path, timeout: float = START_SECONDS
) -> Iterator[subprocess.Popen]:
    """Run the HTTP server ``command`` (output to ``log``, in ``log``'s folder) until
    ``url/health`` answers, yield it, then stop it with its whole process group (uvicorn's
    workers too). RuntimeError if it exits or does not answer within ``timeout`` seconds."""
    import requests

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "w") as out:
        server = subprocess.Popen(
            command,
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{command[:2]} exited: {log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or too busy starting to answer
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {url}/health in {timeout:.0f} s")
            time.sleep(0.5)
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
