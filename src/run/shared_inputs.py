"""What every run of one data version shares: the downscaled data, the digit classifier that
judges the samples, and the real data's reference statistics.

Each is cached under ``paths.cache_dir`` the first time it is built. A sweep builds them once
before its jobs start (``src.study.sweep.SweepCallback``), so parallel jobs only ever read them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from src.data.mnist import Mnist10, load_mnist

if TYPE_CHECKING:  # annotations only: importing them would load TensorFlow
    from src.config.schema import Config
    from src.evaluation.classifier import DigitClassifier
    from src.evaluation.metrics import RealReference


def full_data(settings: Config) -> Mnist10:
    """The whole training split for ``settings``, from the cache;
    ``data.limit`` is applied by the caller, so the classifier always sees every image."""
    return load_mnist(replace(settings.data, limit=None), settings.paths.cache_dir)


def training_images(data: Mnist10, settings: Config) -> np.ndarray:
    """The images a run trains on: the training split less the ``data.validation`` images held
    out at its end, then its first ``data.limit``."""
    kept = len(data.x_train) - settings.data.validation
    return data.x_train[:kept][: settings.data.limit]


def scored_images(data: Mnist10, settings: Config) -> np.ndarray:
    """The real images a run's samples are scored against: the ``data.validation`` images held
    out of training when there are any (what a search may look at), else the test split (what
    final numbers use, and nothing tunes on)."""
    held = settings.data.validation
    return data.x_train[len(data.x_train) - held :] if held else data.x_test


def eval_split(settings: Config) -> str:
    """The name of the split :func:`scored_images` returns, for the run's tags."""
    return (
        f"validation (last {settings.data.validation:,} training images)"
        if (settings.data.validation)
        else "test"
    )


def classifier_and_reference(
    data: Mnist10, settings: Config
) -> tuple[DigitClassifier, RealReference]:
    """The digit classifier for ``data`` and the reference statistics of the images the run
    is scored against (:func:`scored_images`), from the cache or built and cached now
    (TensorFlow is imported here)."""
    from src.evaluation.classifier import load_or_train
    from src.evaluation.metrics import RealReference

    classifier = load_or_train(data, settings.paths.cache_dir, settings.data.method)
    scored = scored_images(data, settings)
    reference = RealReference.load_or_compute(classifier, scored, settings.paths.cache_dir)
    return classifier, reference


def build_missing_inputs(settings: Config) -> list[str]:
    """Build (or find) everything :func:`full_data` and :func:`classifier_and_reference`
    return; the names of those that were not cached yet (``data``, ``classifier``,
    ``reference``)."""
    data = full_data(settings)
    classifier, reference = classifier_and_reference(data, settings)
    cached = {
        "data": data.from_cache,
        "classifier": classifier.from_cache,
        "reference": reference.from_cache,
    }
    return [name for name, hit in cached.items() if not hit]
