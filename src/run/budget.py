"""A run's training budget, and the compute it has spent: training images, training FLOPs and
training seconds, logged after every round so that runs compare at equal compute.

A budget in epochs trains ``train.epochs`` passes (one Keras epoch each, as always). A budget
in FLOPs or seconds is cut into ``eval.fractions`` equal shares; each share is one Keras epoch
(a "round") that ``src.run.callbacks.ComputeMeter`` ends as soon as the run's spending reaches
the share, part of the way through a pass over the data. A FLOPs budget fixes the work,
whatever the machine; a seconds budget fixes the wall time, so it trains less on a slower or
busier machine (docs/fair-comparison.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    """What a run trains for: ``rounds`` Keras epochs, each ending at ``share(k)`` of ``unit``
    (None: at the end of a pass over the data)."""

    unit: str  # epochs, flops or seconds (src.config.schema.BUDGET_UNITS)
    amount: float  # in ``unit``
    rounds: int

    def share(self, round_index: int) -> float | None:
        """The spending at which round ``round_index`` (0-based) ends; None for epochs."""
        if self.unit == "epochs":
            return None
        return self.amount * (round_index + 1) / self.rounds


def budget_of(settings: Any) -> Budget:
    """The budget of a validated ``src.config.schema.Config``."""
    train = settings.train
    if train.budget_unit == "epochs":
        return Budget("epochs", float(train.epochs), train.epochs)
    return Budget(train.budget_unit, float(train.budget), settings.eval.fractions)
