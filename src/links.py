"""``python -m src.links [SWEEP_ID]``: the mlflow ui link of the project's experiment (training
view), filtered to one sweep when given; what ``make ui`` prints before it starts the UI."""

from __future__ import annotations

import argparse
import os

from src.core import messages
from src.core.files import project_root
from src.tracking import store


def open_line(uri: str, experiment: str, sweep_id: str | None = None) -> str:
    """What to open for ``experiment`` in the store ``uri``: its link, or a line saying why
    there is none yet."""
    found = store.open_client(uri).get_experiment_by_name(experiment)
    if found is None:
        return f"no experiment {experiment!r} in {uri} yet: run `make sweep` or `make train` first"
    link = store.experiment_link(uri, found.experiment_id, sweep_id)
    return f"open: {link or f'mlflow ui --backend-store-uri {uri}'}"


def main(argv: list[str] | None = None) -> None:
    """Print the link (reads the store; starts nothing)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_id", nargs="?", help="show only this sweep's runs")
    parser.add_argument("--experiment", default="upsamplers")
    args = parser.parse_args(argv)
    uri = store.resolve_uri(os.environ.get("MLFLOW_TRACKING_URI"), project_root())
    if uri.startswith(store.SQLITE_PREFIX) and not os.path.exists(uri[len(store.SQLITE_PREFIX) :]):
        messages.say(f"no runs yet ({uri} does not exist): run `make sweep` or `make train` first")
        return
    print(open_line(uri, args.experiment, args.sweep_id))


if __name__ == "__main__":
    main()
