"""Hydra composition of every config option, and the errors bad input gets."""

from __future__ import annotations

import pytest
from helpers import CONF, run_cli
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from src.config.schema import ConfigError, to_settings

UPSAMPLERS = sorted(path.stem for path in (CONF / "upsampler").glob("*.yaml"))


def test_group_lists_the_tutorial_variants():
    assert {"nearest", "transpose"} <= set(UPSAMPLERS)


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_every_upsampler_composes_validates_and_builds(make_cfg, upsampler):
    from src.models.networks import build_generator

    settings = to_settings(make_cfg(f"upsampler={upsampler}"))
    assert settings.upsampler.name == upsampler
    generator = build_generator(settings.generator, settings.upsampler)
    assert generator.output_shape == (None, 10, 10, 1)


def test_defaults_are_the_tutorial_setup(make_cfg):
    settings = to_settings(make_cfg())
    assert settings.upsampler.name == "nearest"
    assert (settings.generator.latent_dim, settings.generator.base_channels) == (100, 128)
    assert (settings.train.learning_rate, settings.train.beta_1) == (2e-4, 0.5)
    assert settings.data.method == "area" and settings.data.limit is None
    assert settings.tracking.experiment == "upsamplers"


def test_unknown_key_is_rejected(make_cfg):
    with pytest.raises(ConfigCompositionException) as caught:
        make_cfg("train.bogus=1")
    assert isinstance(caught.value.__cause__, ConfigKeyError | ConfigAttributeError)
    assert "Key 'bogus' not in 'TrainConfig'" in str(caught.value.__cause__)


@pytest.mark.parametrize(("override", "key"), [("+train.bogus=1", "train.bogus"), ("+x=1", "x")])
def test_appended_unknown_key_is_rejected(make_cfg, override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        to_settings(make_cfg(override))


def test_wrong_type_is_rejected(make_cfg):
    with pytest.raises(ConfigCompositionException) as caught:
        make_cfg("train.epochs=many")
    assert isinstance(caught.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.epochs=0", "train.epochs=0 must be >= 1"),
        ("train.batch_size=-3", "train.batch_size=-3 must be >= 1"),
        ("train.learning_rate=0", "train.learning_rate=0.0 must be in (0, 1)"),
        ("generator.latent_dim=0", "generator.latent_dim=0 must be >= 1"),
        ("data.limit=0", "data.limit=0 must be a positive number"),
        ("data.method=sinc", "data.method='sinc' is unknown"),
        ("generator.base_size=4", "data.image_size=10"),
        ("upsampler.interpolation=cubic", "upsampler.interpolation='cubic' is not one of"),
        ("upsampler.name=my/variant", "upsampler.name='my/variant' names runs and folders"),
        ("data.limit=100", "train.batch_size=128 is larger than the 100 training images"),
        ("tracking.outage_seconds=0", "tracking.outage_seconds=0.0 must be in (0, 1080]"),
        ("sweep.id=a b", "sweep.id='a b' is not a sweep id"),
        ("train.budget_unit=joules", "train.budget_unit='joules' is unknown"),
        ("train.budget_unit=seconds", "train.budget_unit=seconds needs a train.budget > 0"),
        ("train.budget=100", "train.budget=100.0 needs train.budget_unit=flops or seconds"),
        ("train.g_learning_rate=1.5", "train.g_learning_rate=1.5 must be in (0, 1)"),
        ("eval.fractions=0", "eval.fractions=0 must be >= 1"),
        ("data.validation=60000", "data.validation=60000 must be in [0, 50000)"),
        ("tune.trial=3", "tune.trial needs tune.parent_run"),
    ],
)
def test_out_of_range_values_are_rejected(make_cfg, override, fragment):
    with pytest.raises(ConfigError, match=None) as caught:
        to_settings(make_cfg(override))
    assert fragment in str(caught.value)


def test_cli_bogus_upsampler_lists_the_choices(tmp_path):
    result = run_cli("upsampler=bogus", f"paths.root={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'upsampler/bogus'" in result.stderr
    assert "nearest" in result.stderr and "transpose" in result.stderr


@pytest.mark.parametrize("override", ["train.epochs=-1", "train.batch_size=0"])
def test_cli_range_errors_are_one_line_and_write_nothing(tmp_path, override):
    store = tmp_path / "store" / "mlflow.db"
    result = run_cli(override, f"tracking.uri=sqlite:///{store}", f"paths.root={tmp_path}")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {override} must be >= 1"]
    assert "Epoch" not in result.stdout
    assert not store.exists()


def test_interpolations_the_schema_allows_are_the_ones_keras_takes():
    from keras.src.backend.tensorflow.image import RESIZE_INTERPOLATIONS

    from src.models.upsamplers import INTERPOLATIONS

    assert set(INTERPOLATIONS) == set(RESIZE_INTERPOLATIONS)


@pytest.mark.parametrize(
    ("seconds", "schedule"),
    [(244, (7, 2.0, 244.0)), (6, (3, 1.0, 6.0)), (60, (5, 2.0, 60.0)), (2000, (10, 120.0, 1080.0))],
)
def test_outage_limit_becomes_mlflows_retry_schedule(seconds, schedule):
    """MLflow's default (7 retries, factor 2) covers 244 s: 0+4+8+16+32+64+120 (capped)."""
    from src.tracking.store import outage_schedule

    assert outage_schedule(seconds) == schedule


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("+hydra.sweeper.space.beta={low:0.5,high:0.1}", "low=0.5 must be below high=0.1"),
        ("hydra.sweeper.sampler=grid", "hydra.sweeper.sampler='grid': use one of"),
        ('hydra.sweeper.search=["train.epochs=0"]', "a search trial's config"),
    ],
)
def test_a_bad_search_is_refused_in_one_line_before_any_trial(tmp_path, override, fragment):
    """make tune's sweeper checks its settings and a trial's config before the first trial;
    nothing is trained (no run reaches the store)."""
    store = tmp_path / "mlflow.db"
    result = run_cli(
        "--multirun",
        "hydra/sweeper=tune",
        "upsampler=nearest,transpose",
        override,
        f"tracking.uri=sqlite:///{store}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.checkpoint_dir={tmp_path / 'ck'}",
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
