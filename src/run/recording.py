"""What a training run records in MLflow besides its per-epoch metrics: its identity tags, its
params, its models, its dataset and the versions it ran on. ``src.run.training`` decides when;
``src.loadtest.tracking_load`` replays the same records at their real sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.config import schema
from src.tracking import naming, store

VERSIONED_PACKAGES = ("tensorflow", "keras", "mlflow", "hydra-core", "numpy")
# Config keys always logged as MLflow params, with ``upsampler`` (its name) and every key the
# command line sets: mlflow ui prints all of a run's params above its sample grid, so they are
# few (docs/mlflow-ui.md). The run's config.yaml holds the whole config.
LOGGED_PARAMS = ("seed", "train.threads")
# Keys that say where to read or record, not what is trained: never params, even when set.
NOT_PARAMS = ("paths", "tracking", "data.path", "resume", "sweep", "train.verbose", "tune")


def latents(seed: int, count: int, latent_dim: int) -> Any:
    """A fixed latent batch from its own seed (not the run's): identical for every run and
    variant, so sample grids and evaluations compare generators on the same z."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)


def installed(name: str) -> tuple[str, str] | None:
    """The distribution installed for ``name`` (``tensorflow`` may be ``tensorflow-cpu``) and
    its version; None when neither is installed."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in (name, f"{name}-cpu"):
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            continue
    return None


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, for the run's tags."""
    found = {name: installed(name) for name in VERSIONED_PACKAGES}
    return {f"version.{name}": dist[1] for name, dist in found.items() if dist}


def model_requirements() -> list[str]:
    """The pinned pip requirements of the logged generator: Keras and TensorFlow as installed."""
    found = [installed(name) for name in ("keras", "tensorflow")]
    return [f"{dist}=={version}" for dist, version in filter(None, found)]


def log_run_start(run: Any, cfg: Any, resolved: dict, generator: Any, disc: Any) -> None:
    """Params, summaries and the resolved config: logged once per run."""
    run.log_params(params(store.flatten(resolved)))
    run.log_text(summaries(generator, disc), "model_summary.txt")
    run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def params(flat: dict[str, Any]) -> dict[str, Any]:
    """The run's MLflow params: ``LOGGED_PARAMS`` and every key the command line set, as
    resolved (a config group as the option chosen, ``data=mnist10``)."""
    from hydra.core.hydra_config import HydraConfig

    chosen = {"upsampler": flat["upsampler.name"], **{key: flat[key] for key in LOGGED_PARAMS}}
    if HydraConfig.initialized():
        for override in HydraConfig.get().overrides.task:
            key, _, typed = override.partition("=")
            key = key.lstrip("+~")
            where = any(key == k or key.startswith(k + ".") for k in NOT_PARAMS)
            if key not in chosen and not where:
                chosen[key] = flat.get(key, typed)
    return chosen


def identity_tags(settings: schema.Config, data: Any, classifier: Any, folder: Path) -> dict:
    """What the run is and what it ran on: variant, seed, code, data, judge, versions; the
    source tags are the ones mlflow ui shows in its Source column."""
    import getpass

    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
        MLFLOW_USER,
    )

    commit, dirty = store.git_state(settings.paths.root)
    return {
        "upsampler": settings.upsampler.name,
        "seed": settings.seed,
        "git_commit": commit,
        "git_dirty": dirty,
        "data_sha256": data.source_sha256,
        "checkpoint": str(folder),
        "classifier_key": classifier.key,
        "classifier_accuracy": f"{classifier.accuracy:.4f}",
        "device": training_device(),
        "image_size": settings.data.image_size,  # with generator_steps: the setting's shape
        "generator_steps": settings.generator.steps,
        MLFLOW_SOURCE_NAME: "src/train.py",
        MLFLOW_SOURCE_TYPE: "LOCAL",
        MLFLOW_USER: getpass.getuser(),
        **({MLFLOW_GIT_COMMIT: commit} if commit != "unknown" else {}),
        **package_versions(),
    }


def training_device() -> str:
    """What the run trains on: ``GPU:0 (<name>)`` (and how many more) when TensorFlow sees a
    GPU, which it then places every op on; else ``CPU``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "unknown")
    more = f" and {len(gpus) - 1} more" if len(gpus) > 1 else ""
    return f"GPU:0 ({name}){more}"


def size_tags(generator: Any, discriminator: Any, images: int, train_flops: float) -> dict:
    """Parameter counts, the generator's FLOPs per image, the training images and the training
    FLOPs per image (``train_flops``, what the compute axis counts)."""
    from src.evaluation.flops import count_flops

    sizes = (generator.count_params(), discriminator.count_params(), count_flops(generator))
    return dict(zip(naming.SIZE_TAGS, (*sizes, images, round(train_flops)), strict=True))


def digest(images: Any) -> str:
    """SHA-256 of the training images as trained on (after downscaling and ``data.limit``)."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def log_generator_model(run: Any, generator: Any, settings: schema.Config) -> None:
    """The generator as an MLflow model, with its size attached."""
    from src.evaluation.flops import count_flops
    from src.models.networks import with_keras_leaky_relu
    from src.run.budget import budget_of

    example = latents(settings.tracking.sample_seed, 4, settings.generator.latent_dim)
    sizes = {"parameters": generator.count_params(), "flops_per_image": count_flops(generator)}
    run.log_keras_model(
        with_keras_leaky_relu(generator),
        "generator",
        example,
        budget_of(settings).rounds,
        sizes,
        model_requirements(),
    )


def summaries(*models: Any) -> str:
    """Keras' summaries of ``models``, one after another (the run's model_summary.txt)."""
    lines: list[str] = []
    for model in models:
        model.summary(print_fn=lambda line, **_: lines.append(line), line_length=100)
        lines.append("")
    return "\n".join(lines)


def save_models(run: Any, output_dir: Path, *models: Any) -> None:
    """The generator and discriminator as portable ``.keras`` files in the run's folder and
    as the run's artifacts."""
    from src.models.networks import with_keras_leaky_relu

    output_dir.mkdir(parents=True, exist_ok=True)  # Hydra made it; a direct train(cfg) may not
    for model, name in zip(models, ("generator", "discriminator"), strict=True):
        path = output_dir / f"{name}.keras"
        with_keras_leaky_relu(model).save(
            path
        )  # loadable by any Keras, without this project's code
        run.log_artifact(path, name)
