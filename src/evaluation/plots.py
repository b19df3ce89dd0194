"""The figures the harness draws, each kind drawn by one function here: the power spectrum (a
run's, logged at its end, and a sweep's, in its report) and panels of lines over epochs with
bands (the report's metric and difference curves). matplotlib draws off-screen (Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: sweeps and CI have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrum_figure(
    frequency: Sequence[float],
    real: Sequence[float],
    generated: Mapping[str, Sequence[float]],
    title: str,
    size: tuple[float, float] = (5.5, 4),
) -> Any:
    """Radially averaged power against spatial frequency on a log scale: the real images'
    spectrum dashed, one line per entry of ``generated`` (label -> power); ``size`` in inches."""
    fig, axis = pyplot().subplots(figsize=size)
    axis.semilogy(frequency, real, "k--", label="real (test split)")
    for colour, (label, power) in enumerate(generated.items()):
        axis.semilogy(frequency, power, color=f"C{colour}", label=label)
    axis.set_xlabel("spatial frequency (cycles per pixel)")
    axis.set_ylabel("mean power")
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    fig.tight_layout()
    return fig


@dataclass
class Band:
    """A line over epochs (or compute) with a shaded band (``low`` to ``high``) around it."""

    label: str
    steps: Sequence[float]
    middle: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None


def band_panels(
    panels: Mapping[str, Sequence[Band]], path: Path, zero_line: bool = False, x: str = "epoch"
) -> None:
    """One panel per title side by side, each with its lines and bands, ``x`` (epochs unless
    said) on x, saved to ``path`` (a horizontal line at 0 where differences are drawn)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (title, bands) in zip(axes[0], panels.items(), strict=True):
        for colour, band in enumerate(bands):
            axis.plot(band.steps, band.middle, color=f"C{colour}", label=band.label)
            if band.low is not None and band.high is not None:
                axis.fill_between(band.steps, band.low, band.high, color=f"C{colour}", alpha=0.2)
        if zero_line:
            axis.axhline(0.0, color="k", linewidth=0.8)
        axis.set_title(title)
        axis.set_xlabel(x)
        axis.grid(alpha=0.3)
        axis.legend()
    save(fig, path)


def save(fig: Any, path: Path, dpi: float | str = 110) -> None:
    """Write ``fig`` to ``path`` (the report's figures at 110 dpi; ``"figure"``: matplotlib's
    own, as MLflow's ``log_figure`` saves a run's) and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
