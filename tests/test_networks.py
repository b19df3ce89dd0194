"""The networks around the upsampling block: the discriminator's LeakyReLU, which computes its
gradient from its output (TensorFlow's remapper then leaves it alone: no error lines,
docs/performance.md), is Keras' LeakyReLU in value and gradient."""

from __future__ import annotations

import numpy as np


def test_leaky_relu_from_output_has_keras_values_and_gradients():
    import keras
    import tensorflow as tf

    from src.models.networks import LeakyReLUFromOutput

    x = tf.constant(np.concatenate([np.random.default_rng(0).normal(size=999), [0.0]]), tf.float32)
    for slope in (0.2, 0.0, 3.0):
        ours, theirs = LeakyReLUFromOutput(slope), keras.layers.LeakyReLU(slope)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ours, y_theirs = ours(x), theirs(x)
            loss_ours, loss_theirs = tf.reduce_sum(y_ours * x), tf.reduce_sum(y_theirs * x)
        np.testing.assert_array_equal(y_ours.numpy(), y_theirs.numpy())
        np.testing.assert_array_equal(
            tape.gradient(loss_ours, x).numpy(), tape.gradient(loss_theirs, x).numpy()
        )
