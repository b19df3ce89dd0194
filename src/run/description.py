"""The one-paragraph descriptions mlflow ui shows on a run's page (tag ``mlflow.note.content``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from src.config.schema import Config


def dataset_name(settings: Config, images: int, total: int) -> str:
    """The training data's name in MLflow: ``mnist10-area``, ``-first512`` when limited."""
    name = f"mnist{settings.data.image_size}-{settings.data.method}"
    return name if images == total else f"{name}-first{images}"


def run_description(
    settings: Config,
    name: str,
    sweep_id: str | None,
    dataset: str,
    images: int,
    final: Mapping[str, Any] | None = None,
) -> str:
    """What the run is (its upsampler and settings, seed, data, sweep) and, once it has
    finished, its final FD and checkerboard."""
    from src.run.budget import budget_of

    budget = budget_of(settings)
    trained = (
        f"{budget.amount:g} {budget.unit}"
        if budget.unit == "epochs"
        else (f"a budget of {budget.amount:g} training {budget.unit}")
    )
    options = {k: v for k, v in asdict(settings.upsampler).items() if k != "name"}
    settings_text = ", ".join(f"{key} {value}" for key, value in options.items())
    text = (
        f"**{name}**: a GAN whose generator upsamples with `{settings.upsampler.name}` "
        f"({settings_text}), seed {settings.seed}, {trained} over "
        f"{images:,} images of `{dataset}`."
    )
    if sweep_id:
        text += f" Part of sweep `{sweep_id}`; its comparison is the run `report-{sweep_id}`."
    if final and "fd" in final:
        text += (
            f" Final (step {budget.rounds}): FD {final['fd']:.2f}, checkerboard "
            f"{final['checkerboard']:+.3f}; trained in {final['seconds']:.0f} s."
        )
    return text
