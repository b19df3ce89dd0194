"""The logging load of many jobs (src/loadtest/tracking_load.py) on `make server` with
PostgreSQL and with sqlite, side by side in one session.

Starts a throw-away PostgreSQL cluster (src/loadtest/postgres.py) and two tracking servers with
``make server`` (same recipe, MLflow's default 4 workers each, ports of their own): one on the
cluster, one on a fresh sqlite file. Then, for each job count, it runs the load on one backend
and right after on the other, the order alternating from one round to the next, so both see the
same machine; at ``--train-at`` jobs, ``--train`` real training runs log alongside. Every summary
goes to ``experiments/bench/<time>-logging-load.json``, with sqlite/PostgreSQL ratios per count.

    python experiments/logging_load_compare.py                          # 8, 32, 64 jobs
    python experiments/logging_load_compare.py --jobs 8,32 --rounds 2   # each count twice

docs/scaling-out.md ("Many jobs on one server, measured") quotes its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from src.loadtest.postgres import throwaway_cluster  # noqa: E402
from src.loadtest.servers import free_port, serving  # noqa: E402
from src.loadtest.tracking_load import run_load  # noqa: E402 - after the path is set

LOGS = {"postgresql": "pg", "sqlite": "sqlite"}  # server log file names (sqlite-file: none)
# What the server logged during one load: sqlite's lock timeouts, and errors of any kind
PATTERNS = ("database is locked", "SQLAlchemy database error", "Traceback")


@contextmanager
def make_server(store: str, artifacts: Path, log: Path) -> Iterator[str]:
    """``make server`` on a free port with ``store``; yields its URL once /health answers, then
    stops its whole process group."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        "server",
        f"PORT={port}",
        f"MLFLOW_BACKEND_STORE_URI={store}",
        f"MLFLOW_ARTIFACTS_DESTINATION={artifacts}",
    ]
    with serving(command, url, log, timeout=120):
        yield url


def _ratio(a: dict, b: dict, key: str) -> float | None:
    """``a[key] / b[key]`` (``slowest_call`` by its seconds); None if either has none."""
    x, y = a.get(key), b.get(key)
    if isinstance(x, dict):
        x, y = x["seconds"], y["seconds"] if y else None
    return round(x / y, 2) if x and y else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="8,32,64", help="job counts, in order (8,32,64)")
    parser.add_argument("--rounds", type=int, default=1, help="times each count runs per backend")
    parser.add_argument("--train", type=int, default=2, help="real training runs alongside (2)")
    parser.add_argument("--train-at", type=int, default=32, help="at this job count (32)")
    parser.add_argument(
        "--backends",
        default="postgresql,sqlite",
        help="postgresql, sqlite (each behind make server), sqlite-file (the jobs "
        "write the file themselves, as a local sweep does)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "bench")
    args = parser.parse_args()
    counts = [int(n) for n in args.jobs.split(",")]
    order = args.backends.split(",")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="logging-load-compare-"))
    results: list[dict] = []
    with (
        throwaway_cluster() as cluster,
        make_server(cluster.dsn, tmp / "pg-artifacts", tmp / "pg-server.log") as pg_url,
        make_server(
            f"sqlite:///{tmp / 'sqlite' / 'mlflow.db'}",
            tmp / "sqlite-artifacts",
            tmp / "sqlite-server.log",
        ) as sqlite_url,
    ):
        uris = {
            "postgresql": pg_url,
            "sqlite": sqlite_url,
            "sqlite-file": f"sqlite:///{tmp / 'direct' / 'mlflow.db'}",
        }
        for round_ in range(args.rounds):
            for jobs in counts:
                for backend in order:
                    train = args.train if jobs == args.train_at else 0
                    print(
                        f"round {round_}: {jobs} jobs on {backend}, {train} trainings", flush=True
                    )
                    log = tmp / f"{LOGS.get(backend, 'none')}-server.log"
                    before = log.stat().st_size if log.is_file() else 0
                    summary = run_load(uris[backend], jobs, train=train, scratch=tmp / "load")
                    during = ""
                    if log.is_file():
                        with open(log, errors="replace") as server_log:
                            server_log.seek(before)
                            during = server_log.read()
                    summary |= {
                        "backend": backend,
                        "round": round_,
                        "server_log": {pattern: during.count(pattern) for pattern in PATTERNS},
                    }
                    shown = (
                        "calls_per_second",
                        "slowest_call",
                        "retries",
                        "http_errors",
                        "retried_connections",
                        "failed_calls",
                        "runs_finished",
                        "server_log",
                    )
                    brief = {key: summary.get(key) for key in shown}
                    print(f"  {brief}; {len(summary['problems'])} problems", flush=True)
                    results.append(summary)
                order.reverse()
        server_logs = {
            name: (tmp / f"{name}-server.log").read_text()[-20000:] for name in ("pg", "sqlite")
        }

    ratios = []  # every other backend against PostgreSQL, same count, same round
    for jobs in counts:
        for round_ in range(args.rounds):
            same = {r["backend"]: r for r in results if r["jobs"] == jobs and r["round"] == round_}
            pg = same.get("postgresql")
            for backend, other in same.items():
                if backend == "postgresql" or pg is None:
                    continue
                ratios.append(
                    {
                        "jobs": jobs,
                        "round": round_,
                        "backend": backend,
                        "calls_per_second_over_pg": _ratio(other, pg, "calls_per_second"),
                        "slowest_call_over_pg": _ratio(other, pg, "slowest_call"),
                    }
                )
    record = {
        "what": "python experiments/logging_load_compare.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "ratios": ratios,
        "results": results,
        "server_log_tails": server_logs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started:%Y-%m-%d_%H-%M-%S}-logging-load.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(ratios, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
