"""Deeper generators (several x2 upsampling steps) and the image sizes they make: every block at
1, 2 and 3 steps, the tutorial's generators unchanged, the size check, the settings by name, and
the checkerboard measure at each step's frequency on planted images."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest
from helpers import run_cli

from src.config.schema import ConfigError, to_settings
from src.evaluation import metrics
from src.models.networks import build_generator
from src.tracking.naming import metric

UPSAMPLERS = ["nearest", "transpose", "transpose4", "bilinear", "subpixel"]
# (overrides, output side): 5 -> 10; 5 -> 10 -> 20; 7 -> 14 -> 28; 3 -> 6 -> 12 -> 24
DEPTHS = [
    pytest.param([], 10, id="1-step"),
    pytest.param(["setting=mnist20"], 20, id="2-steps-20"),
    pytest.param(["setting=mnist28"], 28, id="2-steps-28"),
    pytest.param(
        [
            "setting=mnist20",
            "generator.base_size=3",
            "generator.steps=3",
            "generator.step_channels=[64,32]",
            "data.image_size=24",
        ],
        24,
        id="3-steps-24",
    ),
]

# The tutorial's generators as built before depth was a factor (d2813f7), seed 0: the initial
# weights' SHA-256 (the same bytes for both: equal shapes, one random stream) and the outputs for
# z ~ N(0, 1) from numpy's generator of seed 0.
TUTORIAL_WEIGHTS = "194b50257f0c9b0df80053965c6f5dce8fba8d0d33d76b810c4dd84e9009c72e"
TUTORIAL_OUTPUTS = {
    "nearest": (
        ["z", "project", "project_act", "reshape", "upsample", "upsample_conv", "image"],
        -23.049144234857522,
        [[0.10659486055374146, -0.10004046559333801, -0.06950325518846512]],
    ),
    "transpose": (
        ["z", "project", "project_act", "reshape", "upsample_conv", "image"],
        -8.322815683000954,
        [[-0.153910830616951, 0.011076864786446095, 0.10731548815965652]],
    ),
}


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
@pytest.mark.parametrize(("overrides", "side"), DEPTHS)
def test_every_block_builds_at_each_depth(make_cfg, upsampler, overrides, side):
    settings = to_settings(make_cfg(f"upsampler={upsampler}", *overrides))
    generator = build_generator(settings.generator, settings.upsampler)
    assert generator.output_shape == (None, side, side, 1)
    steps = settings.generator.steps
    convs = [layer for layer in generator.layers if layer.name.endswith("_conv")]
    assert len(convs) == steps  # one block per step, the same block each time
    assert len({type(layer) for layer in convs}) == 1
    acts = [layer for layer in generator.layers if layer.name.endswith("_act")]
    assert len(acts) == steps  # project_act and one per hidden step
    images = np.asarray(generator(np.zeros((2, settings.generator.latent_dim), np.float32)))
    assert np.isfinite(images).all() and np.abs(images).max() <= 1.0


def test_batch_norm_follows_each_hidden_step_when_asked(make_cfg):
    settings = to_settings(make_cfg("setting=mnist28", "generator.norm=batch"))
    names = [layer.name for layer in build_generator(settings.generator, settings.upsampler).layers]
    assert names.index("upsample0_conv") < names.index("upsample0_norm")
    assert names.index("upsample0_norm") < names.index("upsample0_act") < names.index("upsample")


@pytest.mark.parametrize("upsampler", ["nearest", "transpose"])
def test_tutorial_generators_are_bit_for_bit_what_they_were(make_cfg, upsampler):
    settings = to_settings(make_cfg(f"upsampler={upsampler}"))
    keras.utils.set_random_seed(0)
    generator = build_generator(settings.generator, settings.upsampler)
    digest = hashlib.sha256()
    for weight in generator.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    z = np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32)
    images = np.asarray(generator(z))
    names, total, first_row = TUTORIAL_OUTPUTS[upsampler]
    assert generator.count_params() == 324_353
    assert [layer.name for layer in generator.layers] == names
    assert digest.hexdigest() == TUTORIAL_WEIGHTS
    np.testing.assert_allclose(images[0, :1, :3, 0], first_row, rtol=1e-5, atol=1e-7)
    assert images.sum(dtype=np.float64) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["generator.steps=2", "generator.step_channels=[64]"],
            "upsampled x2 generator.steps=2 times makes 20px images",
        ),
        (["generator.steps=2"], "generator.step_channels has 0 entries but"),
        (["setting=mnist28", "data=mnist10"], "makes 28px images, but data.image_size=10"),
        (["generator.base_size=4"], "makes 8px images, but data.image_size=10"),
        (["setting=mnist28", "generator.step_channels=[]"], "has 0 entries but"),
        (["generator.norm=layer"], "generator.norm='layer' is unknown"),
        (["generator.steps=0"], "generator.steps=0 must be >= 1"),
        (["generator.norm=batch"], "generator.norm=batch follows hidden steps"),
        (["data.image_size=56"], "data.image_size=56 must be in [2, 28]"),
    ],
)
def test_a_size_mismatch_is_refused(make_cfg, overrides, fragment):
    with pytest.raises(ConfigError) as caught:
        to_settings(make_cfg(*overrides))
    assert fragment in str(caught.value)


def test_cli_refuses_a_mismatch_in_one_line_before_tensorflow(tmp_path):
    store = tmp_path / "mlflow.db"
    overrides = ["setting=mnist28", "generator.steps=3", "generator.step_channels=[64,32]"]
    result = run_cli(*overrides, f"tracking.uri=sqlite:///{store}", f"paths.root={tmp_path}")
    assert result.returncode != 0
    # TensorFlow announces itself on stderr when imported (oneDNN, absl): nothing but the error
    assert result.stderr.strip().splitlines() == [
        "error: generator.base_size=7 upsampled x2 generator.steps=3 times makes 56px images, "
        "but data.image_size=28; pick a setting (setting=mnist10|mnist20|mnist28) or fix one"
    ]
    assert not store.exists()


def test_a_sweep_over_two_sizes_is_refused_before_any_job(tmp_path):
    """Its report could not compare them (two classifiers); nothing reaches the store."""
    store = tmp_path / "mlflow.db"
    result = run_cli(
        "--multirun",
        "setting=mnist10,mnist28",
        f"tracking.uri=sqlite:///{store}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.checkpoint_dir={tmp_path / 'ck'}",
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: this sweep mixes image sizes or generator depths (10x10 in 1 step(s), 28x28 in "
        "2 step(s)), which its report cannot compare (each size has its own classifier): run one "
        "sweep per setting"
    ], result.stderr[-2000:]
    assert not store.exists()


@pytest.mark.parametrize(
    ("setting", "side", "steps", "base"),
    [("mnist10", 10, 1, 5), ("mnist20", 20, 2, 5), ("mnist28", 28, 2, 7)],
)
def test_a_setting_is_one_word(make_cfg, setting, side, steps, base):
    settings = to_settings(make_cfg(f"setting={setting}"))
    assert settings.data.image_size == side and settings.generator.image_size == side
    assert (settings.generator.steps, settings.generator.base_size) == (steps, base)


def test_help_names_the_settings():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "setting: mnist10, mnist20, mnist28" in result.stdout


# --- the checkerboard at each step's frequency, on planted images ----------------------------


def _periodic(side: int, period: int, axis: str, wave=None) -> np.ndarray:
    """A pattern of ``period`` pixels along rows, columns or both: +1/-1 in blocks of period/2
    pixels (a square wave; for periods 2 and 4 it has no harmonics of its own), or ``wave``
    of the phase."""
    if wave is None:
        index = (np.arange(side) // (period // 2)) % 2 * 2 - 1.0
    else:
        index = wave(2 * np.pi * np.arange(side) / period)
    rows, cols = np.meshgrid(index, index, indexing="ij")
    return {"rows": rows, "cols": cols, "both": rows * cols}[axis]


def _smooth(side: int, count: int = 6) -> np.ndarray:
    """Gaussian blobs: energy at the lowest frequencies only."""
    grid = np.arange(side) - side / 2
    rng = np.random.default_rng(0)
    centres = rng.uniform(-side / 4, side / 4, (count, 2))
    return np.stack(
        [np.exp(-((grid[:, None] - y) ** 2 + (grid[None, :] - x) ** 2) / side) for y, x in centres]
    )


def test_earlier_steps_have_their_periods():
    assert metrics.earlier_step_periods(1) == []
    assert metrics.earlier_step_periods(2) == [4]
    assert metrics.earlier_step_periods(3) == [4, 8]
    assert metric("checkerboard_p4") == "artifacts/checkerboard_p4"


@pytest.mark.parametrize("axis", ["rows", "cols", "both"])
@pytest.mark.parametrize(("side", "period"), [(28, 2), (28, 4), (20, 4), (24, 8), (40, 8), (10, 2)])
def test_a_planted_period_is_caught_at_its_frequency(side, period, axis):
    # a cosine at the period's frequency: all its energy in the bins the share counts
    pattern = _periodic(side, period, axis, wave=lambda phase: np.cos(phase + 0.3))
    power = metrics.mean_power(pattern[None])
    assert metrics.frequency_share(power, side // period) == pytest.approx(1.0)
    for other in {2, 4, 8} - {period}:
        if side % other == 0:
            assert metrics.frequency_share(power, side // other) < 1e-9


def test_step_checkerboards_catch_each_steps_pattern_and_not_smooth_images():
    side = 28
    real = _smooth(side) + 0.01 * np.random.default_rng(1).standard_normal((6, side, side))
    real_spectrum = metrics.mean_power(real)
    real_share = metrics.frequency_share(real_spectrum, side // 2)

    def scores(images):
        nyquist = metrics.checkerboard(images, real_share)
        return nyquist, metrics.earlier_step_checkerboards(images, real_spectrum, 2)

    # shares are of all the energy, so a pattern at one frequency lowers the others' shares:
    # "not caught" is "not raised", not "unchanged"
    last_step = real + 0.3 * _periodic(side, 2, "both")  # the output step's uneven overlap
    nyquist, earlier = scores(last_step)
    assert nyquist > 2.0 and earlier["checkerboard_p4"] < 0.1

    first_step = real + 0.3 * _periodic(side, 4, "both")  # the hidden step's, stretched x2
    nyquist, earlier = scores(first_step)
    assert earlier["checkerboard_p4"] > 2.0 and nyquist < 0.1

    smooth = _smooth(side)[::-1]  # other blobs, no noise: less high-frequency energy than real
    nyquist, earlier = scores(smooth)
    assert nyquist < 0 and earlier["checkerboard_p4"] < 0
    assert list(earlier) == ["checkerboard_p4"]


def test_one_step_checkerboard_is_todays_nyquist_share():
    images = _smooth(10) + 0.2 * np.random.default_rng(2).standard_normal((6, 10, 10))
    power = metrics.mean_power(images)
    by_hand = (power[5, 0] + power[0, 5] + power[5, 5]) / (power.sum() - power[0, 0])
    assert metrics.nyquist_share(images) == pytest.approx(by_hand, rel=1e-12)
    assert metrics.earlier_step_checkerboards(images, power, 1) == {}
