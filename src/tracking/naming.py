"""What each run and number is called in MLflow: runs as ``<upsampler>-s<seed>``, metrics as
``<section>/<name>``, constants as tags.

mlflow ui groups a run's charts into sections by the prefix before ``/`` in a metric's name, so
the prefix says what a chart is about. Numbers that never change during a run (sizes, FLOPs,
the real data's own values) are tags: a chart of one bar tells a reader nothing.
Everything that logs or reads a metric goes through :func:`metric`; Python dicts inside the
harness (Keras' logs, :func:`src.evaluation.metrics.evaluate`, ``train``'s result) keep the
bare names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SECTIONS: dict[str, tuple[str, ...]] = {
    "loss": ("d_loss", "g_loss"),
    "discriminator": ("real_accuracy", "fake_accuracy"),
    "quality": ("fd", "kid", "kid_std", "precision", "recall"),
    "classes": ("class_coverage", "class_kl", "classifier_score", "confidence"),
    "artifacts": ("checkerboard", "spectrum_error"),
    "speed": ("epoch_seconds", "images_per_second", "train_seconds"),
    # training spent so far (src/run/budget.py): the axes runs are compared along
    "compute": ("images", "flops", "seconds"),
}
# What every epoch logs (src/run/callbacks.py); quality metrics only at evaluations.
EPOCH_NAMES = (*SECTIONS["loss"], *SECTIONS["discriminator"], "epoch_seconds", "images_per_second")
_SECTION_OF = {name: section for section, names in SECTIONS.items() for name in names}

# Tags of constants, set once per run.
SIZE_TAGS = (
    "generator_params",
    "discriminator_params",
    "generator_flops",
    "train_images",
    "train_flops_per_image",
)
TRIAL_TAG = "trial"  # a make tune trial's number, on its run
REAL_PREFIX = "real."  # the real data's own values (src.evaluation.metrics.RealReference.summary)


# A deeper generator's earlier steps' checkerboards: checkerboard_p4, _p8, ... (one per step)
_STEP_CHECKERBOARD = re.compile(r"checkerboard_p\d+")


def metric(name: str) -> str:
    """The MLflow name of a metric: ``fd`` -> ``quality/fd``. Unknown names are an error, so
    that no metric reaches MLflow outside a section."""
    if _STEP_CHECKERBOARD.fullmatch(name):
        return f"artifacts/{name}"
    return f"{_SECTION_OF[name]}/{name}"


def is_checkerboard(name: str) -> bool:
    """Checkerboard metrics are log ratios against real data: best at 0, so they are compared
    by their distance from it."""
    return name == "checkerboard" or _STEP_CHECKERBOARD.fullmatch(name) is not None


def step_checkerboards(names: Any) -> list[str]:
    """The earlier steps' checkerboard metrics among MLflow column or metric ``names``
    (``metrics.artifacts/checkerboard_p4`` or ``artifacts/checkerboard_p4``), bare, by period."""
    found = {name.rsplit("/", 1)[-1] for name in names}
    periods = sorted(
        int(n.removeprefix("checkerboard_p")) for n in found if _STEP_CHECKERBOARD.fullmatch(n)
    )
    return [f"checkerboard_p{period}" for period in periods]


def sectioned(values: Mapping[str, Any]) -> dict[str, Any]:
    """A dict of bare metric names with MLflow names instead."""
    return {metric(name): value for name, value in values.items()}


def real_tags(summary: Mapping[str, float]) -> dict[str, str]:
    """The real data's reference values as tags: ``real_fd``-style keys -> ``real.fd``."""
    return {
        REAL_PREFIX + key.removeprefix("real_"): f"{value:.6g}" for key, value in summary.items()
    }


def config_name(settings: Any) -> str:
    """``<upsampler>-s<seed>``: what a run trains, the start of its checkpoint's name."""
    return f"{settings.upsampler.name}-s{settings.seed}"


def run_name(settings: Any) -> str:
    """Run names encode the variant and the seed: ``<upsampler>-s<seed>``, and a search
    trial's number: ``<upsampler>-s<seed>-t<trial>``."""
    name = config_name(settings)
    return name if settings.tune.trial is None else f"{name}-t{settings.tune.trial}"
