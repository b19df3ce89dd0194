"""Runs compared at equal compute: each run's quality at the same training FLOPs, or the same
training seconds, as its rivals (src/run/budget.py records both at every evaluation).

The budget of an axis is the least that every upsampler reached: the smallest, over the
upsamplers, of the median final spending of its runs. A run's value at that budget is its
last evaluation within ``SLACK`` of it, never a value drawn between or beyond evaluations: an
upsampler that trained on past the budget is judged where it stood at the budget, and one that
did not reach it is judged at its end, with the spending shown beside each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.evaluation.plots import Band, band_panels
from src.tracking.naming import is_checkerboard, metric

AXES = {"flops": "training FLOPs", "seconds": "training seconds"}
# Runs of one config spend seconds unevenly (a busy machine, a slow first call), and an
# evaluation lands on a budget only to within one compiled call: 5% counts as at the budget.
SLACK = 0.05


@dataclass(frozen=True)
class Curve:
    """One finished run's evaluations: its seed, and per evaluation the compute spent and the
    metric's value, in step order."""

    seed: int
    spent: dict[str, np.ndarray]  # axis -> spending at each evaluation
    values: np.ndarray


@dataclass(frozen=True)
class EqualBudget:
    """One axis' budget and each upsampler's (seed, value) at it."""

    axis: str
    amount: float
    values: dict[str, list[tuple[int, float]]]
    used: dict[str, float]  # upsampler -> median spending of the evaluations compared
    reached: dict[str, float]  # upsampler -> median final spending of its runs

    def notes(self) -> list[str]:
        """Where an upsampler went past the budget or fell short of it, said in words."""
        unit = AXES[self.axis]
        lines = []
        for name, reached in sorted(self.reached.items()):
            if reached > self.amount * (1 + SLACK):
                lines.append(
                    f"`{name}` trained on to {_amount(reached, self.axis)} {unit}; it is "
                    f"compared where it stood at {_amount(self.used[name], self.axis)}, "
                    "its last evaluation within the budget (nothing is extrapolated)."
                )
            elif reached < self.amount * (1 - SLACK):
                lines.append(
                    f"`{name}` stopped at {_amount(reached, self.axis)} {unit}, short of "
                    "the budget: it is compared at its end."
                )
        return lines


def curves(client: Any, finished: Any, key: str) -> dict[str, list[Curve]]:
    """Per upsampler, each finished run's evaluations of ``key`` with the compute spent at
    each (runs that recorded no compute, from before it was recorded, are left out)."""
    found: dict[str, list[Curve]] = {}
    for _, run in finished.iterrows():
        history = _by_step(client, run["run_id"], key)
        spent = {axis: _by_step(client, run["run_id"], axis) for axis in AXES}
        steps = sorted(set(history).intersection(*spent.values()))
        if not steps:
            continue
        values = np.asarray([history[s] for s in steps])
        if is_checkerboard(key):
            values = np.abs(values)  # compared by its distance from real data's level
        axes = {axis: np.asarray([points[s] for s in steps]) for axis, points in spent.items()}
        found.setdefault(run["tags.upsampler"], []).append(
            Curve(int(run["tags.seed"]), axes, values)
        )
    return found


def _by_step(client: Any, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, metric(key))}


def at_equal(found: dict[str, list[Curve]], axis: str) -> EqualBudget | None:
    """Each upsampler's values at the budget of ``axis`` that all of them reached; None with
    fewer than two upsamplers."""
    if len(found) < 2:
        return None
    reached = {
        name: float(np.median([c.spent[axis][-1] for c in runs])) for name, runs in found.items()
    }
    amount = min(reached.values())
    values: dict[str, list[tuple[int, float]]] = {}
    used: dict[str, float] = {}
    for name, runs in found.items():
        points = [_at(curve, axis, amount) for curve in runs]
        values[name] = [(curve.seed, value) for curve, (_, value) in zip(runs, points, strict=True)]
        used[name] = float(np.median([spent for spent, _ in points]))
    return EqualBudget(axis, amount, values, used, reached)


def _at(curve: Curve, axis: str, amount: float) -> tuple[float, float]:
    """(spending, value) of the curve's last evaluation within the budget (its first when even
    that one is over it: step 0, which has spent nothing)."""
    within = np.flatnonzero(curve.spent[axis] <= amount * (1 + SLACK))
    index = int(within[-1]) if len(within) else 0
    return float(curve.spent[axis][index]), float(curve.values[index])


def plot_over_seconds(found: dict[str, list[Curve]], key: str, path: Path) -> bool:
    """``key`` against training seconds, one band (min..max over seeds) per upsampler around
    its mean, each run's curve read on a common grid within the seconds all its runs reached."""
    bands = []
    for name, runs in sorted(found.items()):
        end = min(curve.spent["seconds"][-1] for curve in runs)
        grid = np.linspace(0.0, end, 50)
        values = np.asarray([np.interp(grid, c.spent["seconds"], c.values) for c in runs])
        low, high = (values.min(axis=0), values.max(axis=0)) if len(runs) > 1 else (None,) * 2
        bands.append(Band(f"{name} (n={len(runs)})", grid, values.mean(axis=0), low, high))
    if not bands:
        return False
    title = f"{metric(key)}: mean, band = min..max over seeds"
    band_panels({title: bands}, path, x="training seconds (evaluation excluded)")
    return True


def _amount(value: float, axis: str) -> str:
    return f"{value:.3g}" if axis == "flops" else f"{value:.0f}"


def describe(budget: EqualBudget) -> str:
    """The budget and each upsampler's spending at the evaluations compared, in one line."""
    used = ", ".join(
        f"`{name}` at {_amount(spent, budget.axis)}" for name, spent in sorted(budget.used.items())
    )
    return f"{AXES[budget.axis]} {_amount(budget.amount, budget.axis)} ({used})"
