"""The tutorial's worked examples (experiments/tutorial_examples.py) and our generators' sizes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from helpers import ROOT

from src.models.networks import build_generator

TUTORIAL_PARAMS = 323_200 + 1_153  # Dense(128*5*5) from 100-d, then the 3x3 conv to one channel


def _load_examples():
    path = ROOT / "experiments" / "tutorial_examples.py"
    spec = importlib.util.spec_from_file_location("tutorial_examples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


examples = _load_examples()


def test_upsampling2d_doubles_rows_and_columns():
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    np.testing.assert_array_equal(examples.upsampling_example(), expected)


def test_conv2d_transpose_1x1_stride_2_spreads_inputs_over_zeros():
    expected = [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(examples.transpose_example(), expected)


@pytest.mark.parametrize("build", [examples.generator_a, examples.generator_b])
def test_tutorial_generators_have_324353_params(build):
    model = build()
    assert model.output_shape == (None, 10, 10, 1)
    assert model.count_params() == 324_353
    assert [layer.count_params() for layer in model.layers if layer.count_params()] in (
        [323_200, 1_153],
    )


@pytest.mark.parametrize("upsampler", ["nearest", "transpose"])
def test_harness_generator_keeps_tutorial_param_count(make_cfg, upsampler):
    from src.config.schema import to_settings

    settings = to_settings(make_cfg(f"upsampler={upsampler}"))
    generator = build_generator(settings.generator, settings.upsampler)
    assert generator.output_shape == (None, 10, 10, 1)
    trainable = sum(int(np.prod(w.shape)) for w in generator.trainable_weights)
    assert trainable == TUTORIAL_PARAMS == 324_353
    assert generator.layers[-1].get_config()["activation"] == "tanh"
