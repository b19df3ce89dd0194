"""A throw-away PostgreSQL cluster for a tracking server: a temporary folder, ``initdb``, a
server on 127.0.0.1 (a free port) with its unix socket in the same folder, one database.

PostgreSQL refuses to run as root, so as root the cluster is created and run as ``nobody``
(the folder is theirs); as anybody else, as that user. Stopping it removes the folder.
``python -m src.loadtest.postgres`` runs one in the foreground and prints its URL, for
``MLFLOW_BACKEND_STORE_URI=<url> make server`` (docs/scaling-out.md); Ctrl-C stops it.

The binaries are Debian's (``apt-get install postgresql``: ``/usr/lib/postgresql/<ver>/bin``),
or wherever ``PG_BIN`` or ``pg_config --bindir`` point, or on ``PATH``.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from src.loadtest.servers import free_port

DEBIAN_ROOT = Path("/usr/lib/postgresql")
TOOLS = ("initdb", "pg_ctl", "createdb")
DATABASE = "mlflow"
SUPERUSER = "mlflow"  # the cluster's superuser; trust authentication, 127.0.0.1 and socket only
UNPRIVILEGED = "nobody"  # who runs the cluster when we are root
START_SECONDS = 60


class PostgresError(RuntimeError):
    """The cluster could not be created or started; the message holds PostgreSQL's own words."""


@dataclass(frozen=True)
class Cluster:
    """A running throw-away cluster."""

    folder: Path  # holds data/, the server log and the unix socket
    port: int
    bin_dir: Path

    @property
    def dsn(self) -> str:
        """Its database as a libpq URL (``psql``, ``psycopg2.connect``)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def url(self) -> str:
        """Its database as a SQLAlchemy URL, for ``--backend-store-uri``: the driver named,
        because SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, and the driver the
        project installs (its ``server`` extra) is psycopg2."""
        return self.dsn.replace("postgresql://", "postgresql+psycopg2://", 1)

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.folder / "server.log"


def bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``createdb``; None when PostgreSQL is not
    installed. ``PG_BIN`` first, then ``pg_config --bindir``, the newest Debian version, PATH."""

    def complete(folder: Path) -> bool:
        return all((folder / tool).is_file() for tool in TOOLS)

    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    if DEBIAN_ROOT.is_dir():
        versions = [p for p in DEBIAN_ROOT.iterdir() if re.fullmatch(r"\d+", p.name)]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)
    return next((folder for folder in candidates if complete(folder)), None)


def _run(command: list[str], user: str | None, what: str) -> None:
    """Run a PostgreSQL tool (as ``user`` if given); PostgresError with its output if it fails."""
    result = subprocess.run(
        command, user=user, capture_output=True, text=True, cwd="/", timeout=START_SECONDS
    )
    if result.returncode != 0:
        raise PostgresError(
            f"{what} failed ({result.returncode}): {result.stderr or result.stdout}"
        )


@contextmanager
def throwaway_cluster(port: int | None = None, fsync: bool = True) -> Iterator[Cluster]:
    """Create and start a cluster with an empty database ``mlflow``; stop it and delete its
    folder on exit. ``fsync=False`` trades crash safety for speed (tests); the default keeps
    PostgreSQL's durable commits, as a real server has them."""
    tools = bin_dir()
    if tools is None:
        raise PostgresError("PostgreSQL is not installed: apt-get install -y postgresql")
    user = UNPRIVILEGED if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="pg-throwaway-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(folder, port or free_port(), tools)
    started = False
    try:
        _initdb(cluster, user)
        _start(cluster, user, fsync)
        started = True
        _createdb(cluster, user)
        yield cluster
    finally:
        if started:
            _stop(cluster, user)
        shutil.rmtree(folder, ignore_errors=True)


def _initdb(cluster: Cluster, user: str | None) -> None:
    """An empty cluster in ``<folder>/data`` whose superuser needs no password (127.0.0.1 and
    the folder's socket are all it listens on)."""
    data = cluster.folder / "data"
    command = [str(cluster.bin_dir / "initdb"), "--pgdata", str(data), "--username", SUPERUSER]
    command += ["--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync"]
    _run(command, user, "initdb")


def _start(cluster: Cluster, user: str | None, fsync: bool) -> None:
    """The server on 127.0.0.1 and its socket in the cluster's folder, waited for."""
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={cluster.port} "
        f"-c unix_socket_directories={cluster.folder} -c fsync={'on' if fsync else 'off'}"
    )
    command = [str(cluster.bin_dir / "pg_ctl"), "--pgdata", str(cluster.folder / "data")]
    command += ["--log", str(cluster.log), "--options", options, "--wait"]
    command += ["--timeout", str(START_SECONDS), "start"]
    _run(command, user, "pg_ctl start")


def _createdb(cluster: Cluster, user: str | None) -> None:
    """The database the tracking server's store lives in."""
    command = [
        str(cluster.bin_dir / "createdb"),
        "--host",
        "127.0.0.1",
        "--port",
        str(cluster.port),
    ]
    command += ["--username", SUPERUSER, DATABASE]
    _run(command, user, "createdb")


def _stop(cluster: Cluster, user: str | None) -> None:
    """A fast shutdown (clients disconnected, nothing left to recover), bounded in time."""
    command = [str(cluster.bin_dir / "pg_ctl"), "--pgdata", str(cluster.folder / "data")]
    command += ["--mode", "fast", "--wait", "stop"]
    subprocess.run(
        command,
        user=user,
        capture_output=True,
        cwd="/",
        timeout=START_SECONDS,
    )


def main() -> None:
    """Run a throw-away cluster until Ctrl-C or SIGTERM and print its URL."""
    parser = argparse.ArgumentParser(
        prog="python -m src.loadtest.postgres", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with throwaway_cluster(args.port) as cluster:
        print(f"PostgreSQL {cluster.bin_dir.parent.name} in {cluster.folder}: {cluster.url}")
        print(f"  MLFLOW_BACKEND_STORE_URI={cluster.url} make server   (Ctrl-C here stops it)")
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("stopping; its folder is removed")


if __name__ == "__main__":
    main()
