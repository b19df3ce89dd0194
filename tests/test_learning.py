"""The GAN learns: a short real training run makes samples that are much closer to real digits
than the untrained generator's and draw most of the ten digits, for both tutorial variants.

Nothing else in the suite looks at whether training improves the samples, so a generator
trained the wrong way (its loss target flipped), a swapped discriminator label, a dropped
update or a wrong sign in the discriminator's loss would pass every other test. Each of those
mutations of ``src.models.gan.GAN.train_step`` was made by hand once and made this test fail
(docs/testing.md lists the measured values)."""

from __future__ import annotations

import pytest
from helpers import CONF, metric_history, sqlite_uri

pytestmark = pytest.mark.slow

EPOCHS = 4
# 4 epochs of 8,192 images (256 steps of 32) move FD from about 200 to well under half of it.
OVERRIDES = [
    "seed=0",
    "data.limit=8192",
    f"train.epochs={EPOCHS}",
    "train.batch_size=32",
    f"eval.every_epochs={EPOCHS}",
    "eval.samples=2000",
    "train.verbose=0",
]
FD_SHARE = 0.5  # the final FD is at most this share of the untrained generator's
MIN_CLASSES = 8  # of the 10 digits, each the classifier's answer for at least 1% of samples


@pytest.mark.parametrize("upsampler", ["nearest", "transpose"])
def test_a_short_run_brings_fd_down_and_covers_most_digits(tmp_path, upsampler):
    from hydra import compose, initialize_config_dir

    from src.train import train

    uri = sqlite_uri(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"upsampler={upsampler}",
                *OVERRIDES,
                f"tracking.uri={uri}",
                f"paths.output_dir={tmp_path / 'out'}",
                f"paths.checkpoint_dir={tmp_path / 'ck'}",
            ],
        )
    result = train(cfg)
    fd = dict(metric_history(uri, result["run_id"], "quality/fd"))
    classes = dict(metric_history(uri, result["run_id"], "classes/class_coverage"))
    assert sorted(fd) == [0, EPOCHS]
    assert fd[EPOCHS] < FD_SHARE * fd[0], fd
    assert classes[EPOCHS] >= MIN_CLASSES, classes
