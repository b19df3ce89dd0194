"""Per-epoch checkpoints that let an interrupted run continue in the same MLflow run.

A run's checkpoint folder is named by its run name and a hash of its resolved config (minus
paths and run-control keys), so the same command line with ``resume=true`` finds it even though
Hydra gives the new invocation a new output folder. Keras' ``BackupAndRestore`` is not used: it
knows neither the MLflow run id nor a "finished" marker, and it restores a GAN's two optimizers
only if they happen to be built first; here both are built before ``load_weights``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from src.core.files import write_atomically

# Keys that do not change what is trained: where things are written and how the run is driven.
# A search trial's number too: the same configuration, asked again in the same search (the
# same tune.parent_run) after an interruption, continues the same checkpoint; another search's
# trials and finals have another parent run, so they never take over this one's runs.
IGNORED_KEYS = ("paths", "resume", "sweep", "train.verbose", "tune.trial")
STATE_FILE = "state.json"


def run_key(name: str, config: dict[str, Any]) -> str:
    """``<run name>-<10 hex>``: the same config always maps to the same checkpoint folder."""
    config = json.loads(json.dumps(config))
    for dotted in IGNORED_KEYS:
        *parents, leaf = dotted.split(".")
        node = config
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:10]}"


@dataclass
class State:
    """What a checkpoint records besides the weights."""

    run_id: str
    epoch: int  # completed epochs (rounds of a FLOPs or seconds budget)
    finished: bool = False
    seconds: float = 0.0  # training seconds spent by then (src/run/budget.py)


class Checkpoint:
    """One run's checkpoint folder: ``epoch-NNNN.weights.h5`` plus ``state.json``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def weights(self, epoch: int) -> Path:
        """Weights after ``epoch`` epochs: both networks, both optimizers, the seed generators."""
        return self.folder / f"epoch-{epoch:04d}.weights.h5"  # Keras needs .weights.h5

    def read(self) -> State | None:
        """The recorded state, or None when there is no (readable) checkpoint."""
        try:
            return State(**json.loads((self.folder / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def clear(self) -> None:
        """Forget any earlier checkpoint (a fresh run)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def write_state(self, state: State) -> None:
        """Record ``state`` atomically."""
        text = json.dumps(asdict(state))
        write_atomically(self.folder / STATE_FILE, lambda partial: partial.write_text(text))

    def save(self, model: Any, state: State) -> None:
        """New weights, then the state that names them, then the old weights go: a kill at any
        point leaves a state whose weights file exists and matches it."""
        write_atomically(self.weights(state.epoch), model.save_weights)
        self.write_state(state)
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old != self.weights(state.epoch):
                old.unlink(missing_ok=True)
