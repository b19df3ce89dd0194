"""End to end on real MNIST: a short run through Hydra into a temporary MLflow store.

Multiruns (one sweep id, the summary, the report) are tested in test_report.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import image_steps, only_run, reload_in_fresh_process
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

PER_EPOCH = [
    "loss/d_loss",
    "loss/g_loss",
    "discriminator/real_accuracy",
    "discriminator/fake_accuracy",
    "speed/epoch_seconds",
    "speed/images_per_second",
]
SECTIONS = {"loss", "discriminator", "quality", "classes", "artifacts", "speed", "compute"}
SIZE_TAGS = ["generator_params", "discriminator_params", "generator_flops", "train_images"]


def _only_run(uri: str) -> tuple[MlflowClient, object]:
    """A client on ``uri`` and the store's one run."""
    return MlflowClient(uri), only_run(uri)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real 2-epoch transpose run on 3,000 images, shared by the assertions below."""
    from helpers import CONF
    from hydra import compose, initialize_config_dir

    from src.train import train

    tmp = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "upsampler=transpose",
                "seed=3",
                "data.limit=3000",
                "train.epochs=2",
                "train.verbose=0",
                f"tracking.uri={uri}",
                f"paths.output_dir={tmp / 'out'}",
                f"paths.checkpoint_dir={tmp / 'checkpoints'}",
            ],
        )
    result = train(cfg)
    return uri, result, tmp


def test_run_is_named_tagged_and_finished(trained):
    uri, result, tmp = trained
    _, run = _only_run(uri)
    assert run.info.run_id == result["run_id"]
    assert run.info.run_name == "transpose-s3" and run.info.status == "FINISHED"
    assert run.data.tags["upsampler"] == "transpose" and run.data.tags["seed"] == "3"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", run.data.tags["git_commit"])
    assert "sweep_id" not in run.data.tags
    assert run.info.artifact_uri.startswith((tmp / "mlruns").as_uri())


def test_params_are_few_and_the_config_is_whole(trained):
    """Params: the variant, the seed, the threads (called without Hydra: no command line); the
    resolved config, every key, is the run's config.yaml."""
    import yaml

    uri, _, tmp = trained
    client, run = _only_run(uri)
    assert set(run.data.params) == {"upsampler", "seed", "train.threads"}
    assert run.data.params["upsampler"] == "transpose" and run.data.params["seed"] == "3"
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp))
    config = yaml.safe_load(Path(local).read_text())
    assert config["train"]["learning_rate"] == 0.0002 and config["data"]["limit"] == 3000


def test_metrics_are_sectioned_and_constants_are_tags(trained):
    uri, result, _ = trained
    client, run = _only_run(uri)
    for key in PER_EPOCH:
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
        assert all(np.isfinite(m.value) for m in history), key
    assert {key.split("/")[0] for key in run.data.metrics} == SECTIONS
    assert all(key.count("/") == 1 for key in run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "quality/fd")] == [0, 2]
    assert run.data.metrics["loss/d_loss"] == pytest.approx(result["d_loss"])
    assert 0 <= run.data.metrics["discriminator/real_accuracy"] <= 1
    tags = run.data.tags
    # discriminator: 3x3x1x64+64 + 3x3x64x64+64 + 576+1 = 38,145
    assert [int(tags[key]) for key in SIZE_TAGS] == [324_353, 38_145, 700_900, 3_000]
    assert 0 < float(tags["real.classifier_score"]) <= 10
    assert 0 < float(tags["real.nyquist_share"]) < 1


def test_dataset_source_and_description(trained):
    """The runs table's Dataset and Source columns and the run page's description."""
    import hashlib

    from src.config.schema import DataConfig
    from src.core.files import project_root
    from src.data.mnist import load_mnist

    uri, result, _ = trained
    _, run = _only_run(uri)
    (given,) = run.inputs.dataset_inputs
    data = load_mnist(DataConfig(limit=3000), Path(project_root()) / "outputs" / "cache")
    digest = hashlib.sha256(np.ascontiguousarray(data.x_train).tobytes()).hexdigest()
    assert given.dataset.name == "mnist10-area-first3000"
    assert given.dataset.digest == digest[:36]  # MLflow keeps at most 36 characters
    assert {(t.key, t.value) for t in given.tags} == {("mlflow.data.context", "training")}
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "src/train.py" and tags["mlflow.source.type"] == "LOCAL"
    assert tags.get("mlflow.source.git.commit", "unknown") == tags["git_commit"]
    note = tags["mlflow.note.content"]
    assert note.startswith("**transpose-s3**") and "seed 3, 2 epochs over 3,000 images" in note
    assert f"FD {result['fd']:.2f}" in note and "checkerboard" in note


def test_generator_is_an_mlflow_model_with_its_size(trained):
    import mlflow.keras

    from src.tracking.store import fluent_uri

    uri, _, tmp = trained
    client, run = _only_run(uri)
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == "generator" and model.source_run_id == run.info.run_id
    assert model.params == {"parameters": "324353", "flops_per_image": "700900"}
    with fluent_uri(uri):
        loaded = mlflow.keras.load_model(f"models:/{output.model_id}")
    import keras

    saved = keras.models.load_model(
        client.download_artifacts(run.info.run_id, "generator/generator.keras", str(tmp))
    )
    z = np.random.default_rng(1).standard_normal((8, 100)).astype(np.float32)
    np.testing.assert_allclose(loaded(z, training=False), saved(z, training=False), rtol=1e-6)


def test_sample_grids_per_epoch_from_step_0(trained):
    uri, _, tmp = trained
    client, run = _only_run(uri)
    assert image_steps(uri, run.info.run_id, "samples") == [0, 1, 2]
    from PIL import Image

    png = next(
        a.path
        for a in client.list_artifacts(run.info.run_id, "images")
        if "+step+2+" in a.path and a.path.endswith(".png")
    )
    local = client.download_artifacts(run.info.run_id, png, str(tmp))
    grid = np.asarray(Image.open(local))
    assert grid.shape[:2] == (4 * (4 * 11 + 1), 4 * (12 * 11 + 1))  # 4x12 digits + borders, x4
    assert grid.std() > 10  # not blank


def test_models_summary_and_config_are_artifacts(trained):
    import keras

    uri, _, tmp = trained
    client, run = _only_run(uri)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"generator", "discriminator", "model_summary.txt", "config.yaml"} <= top
    summary = client.download_artifacts(run.info.run_id, "model_summary.txt", str(tmp))
    text = Path(summary).read_text()
    assert "generator_transpose" in text and "discriminator" in text and "324,353" in text

    path = client.download_artifacts(run.info.run_id, "generator/generator.keras", str(tmp))
    generator = keras.models.load_model(path)
    images = generator.predict(np.random.default_rng(0).standard_normal((16, 100)), verbose=0)
    assert images.shape == (16, 10, 10, 1)
    assert images.min() >= -1 and images.max() <= 1
    disc = client.download_artifacts(run.info.run_id, "discriminator/discriminator.keras", str(tmp))
    assert keras.models.load_model(disc).predict(images, verbose=0).shape == (16, 1)
    # Both load, and compute the same, in a process that cannot import this project.
    for saved, inputs in ((path, np.zeros((4, 100), np.float32)), (disc, images[:4])):
        folder = Path(tmp) / Path(saved).stem
        folder.mkdir()
        outputs, modules = reload_in_fresh_process(Path(saved), inputs, folder)
        model = keras.models.load_model(saved)
        np.testing.assert_allclose(outputs, model(inputs, training=False), rtol=1e-6)
        assert modules == "keras"
