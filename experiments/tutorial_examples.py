"""The tutorial's worked examples in Keras 3; run ``python experiments/tutorial_examples.py``.

1. UpSampling2D doubles each row and column of a 2x2 input.
2. Conv2DTranspose(1, (1, 1), strides=(2, 2)) with weight 1 and bias 0 spreads the same input
   onto a 4x4 grid of zeros.
3. The two generators of the tutorial (UpSampling2D + Conv2D, and Conv2DTranspose) have the same
   324,353 parameters.

tests/test_tutorial.py asserts every number printed here.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from keras import layers

TUTORIAL_INPUT = np.asarray([[1, 2], [3, 4]], dtype=np.float32).reshape((1, 2, 2, 1))


def upsampling_example() -> np.ndarray:
    """UpSampling2D on [[1, 2], [3, 4]]: the 4x4 nearest-neighbour enlargement."""
    model = keras.Sequential([keras.Input((2, 2, 1)), layers.UpSampling2D()])
    return model.predict(TUTORIAL_INPUT, verbose=0).reshape((4, 4))


def transpose_example() -> np.ndarray:
    """Conv2DTranspose with a 1x1 kernel of weight 1, bias 0 and stride 2 on the same input."""
    model = keras.Sequential(
        [keras.Input((2, 2, 1)), layers.Conv2DTranspose(1, (1, 1), strides=(2, 2))]
    )
    model.set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros((1,), np.float32)])
    return model.predict(TUTORIAL_INPUT, verbose=0).reshape((4, 4))


def generator_a() -> keras.Model:
    """The tutorial's generator with UpSampling2D followed by Conv2D."""
    return keras.Sequential(
        [
            keras.Input((100,)),
            layers.Dense(128 * 5 * 5),
            layers.Reshape((5, 5, 128)),
            layers.UpSampling2D(),
            layers.Conv2D(1, (3, 3), padding="same"),
        ],
        name="generator_a",
    )


def generator_b() -> keras.Model:
    """The tutorial's generator with Conv2DTranspose."""
    return keras.Sequential(
        [
            keras.Input((100,)),
            layers.Dense(128 * 5 * 5),
            layers.Reshape((5, 5, 128)),
            layers.Conv2DTranspose(1, (3, 3), strides=(2, 2), padding="same"),
        ],
        name="generator_b",
    )


if __name__ == "__main__":
    np.set_printoptions(suppress=True)
    print("UpSampling2D on [[1, 2], [3, 4]]:\n", upsampling_example())
    print("Conv2DTranspose(1x1, stride 2, weight 1, bias 0):\n", transpose_example())
    for model in (generator_a(), generator_b()):
        model.summary()
