"""Generator and discriminator builders (Keras functional models)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import layers

from src.models.upsamplers import BLOCK_NAME, build_block


@keras.saving.register_keras_serializable(package="upsampler_gan")
class LeakyReLUFromOutput(layers.LeakyReLU):
    """LeakyReLU whose gradient reads its output instead of its input; same values, same
    gradients, same parameters.

    Keras' LeakyReLU differentiates with ``LeakyReluGrad(dy, x)``, which keeps the
    pre-activation ``x`` (a BiasAdd) alive for the backward pass. TensorFlow 2.21's grappler
    remapper then fuses that BiasAdd into ``_FusedConv2D`` anyway, fails the graph check
    ("remapper failed: ... fanout ... LeakyReluGrad exist for missing node ... BiasAdd", an
    error line at every run's start) and drops its whole pass. With a non-negative slope the
    output has the input's sign, so ``LeakyReluGrad(dy, y)`` is the same gradient, nothing else
    reads ``x``, and Conv2D + BiasAdd + LeakyReLU fuse into one kernel (docs/performance.md).
    """

    def call(self, inputs: Any) -> Any:
        """``leaky_relu(inputs)``, differentiated as ``LeakyReluGrad(dy, output)``."""
        alpha = float(self.negative_slope)

        @tf.custom_gradient
        def leaky_relu(x: Any) -> Any:
            y = tf.nn.leaky_relu(x, alpha)
            return y, lambda dy: tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=alpha)

        return leaky_relu(inputs)


def build_generator(gen_cfg: Any, up_cfg: Any, channels: int = 1) -> Any:
    """Dense -> LeakyReLU -> Reshape -> ``steps`` upsampling blocks -> tanh: z to a
    (s * 2^steps, s * 2^steps, channels) image.

    Each hidden step (all but the last) has ``step_channels`` feature maps and is followed by
    ``norm`` and a LeakyReLU; the last step maps to the image's channels under the tutorial's
    layer names. With the default config (one step) the weights are exactly the tutorial's
    (324,353 parameters for both tutorial variants); LeakyReLU and tanh add none.
    """
    side, maps = gen_cfg.base_size, gen_cfg.base_channels
    z = keras.Input((gen_cfg.latent_dim,), name="z")
    x = layers.Dense(maps * side * side, name="project")(z)
    x = layers.LeakyReLU(gen_cfg.leaky_slope, name="project_act")(x)
    x = layers.Reshape((side, side, maps), name="reshape")(x)
    for index, filters in enumerate(gen_cfg.step_channels):
        x = _hidden_step(x, filters, gen_cfg, up_cfg, name=f"{BLOCK_NAME}{index}")
    x = build_block(x, channels, up_cfg)
    image = layers.Activation("tanh", name="image")(x)
    return keras.Model(z, image, name=f"generator_{up_cfg.name}")


def _hidden_step(x: Any, filters: int, gen_cfg: Any, up_cfg: Any, name: str) -> Any:
    x = build_block(x, filters, up_cfg, name=name)
    if gen_cfg.norm == "batch":
        x = layers.BatchNormalization(name=f"{name}_norm")(x)
    # LeakyReLUFromOutput: the Conv2D + BiasAdd before it fuse (see the class); saved files
    # get Keras' own LeakyReLU back (with_keras_leaky_relu)
    return LeakyReLUFromOutput(gen_cfg.leaky_slope, name=f"{name}_act")(x)


def build_discriminator(disc_cfg: Any, image_size: int, channels: int = 1) -> Any:
    """Strided Conv2D + LeakyReLU per entry of ``filters``, then dropout and one logit."""
    image = keras.Input((image_size, image_size, channels), name="image")
    x = image
    for index, filters in enumerate(disc_cfg.filters):
        x = layers.Conv2D(
            filters,
            disc_cfg.kernel_size,
            strides=disc_cfg.strides,
            padding="same",
            name=f"conv{index}",
        )(x)
        x = LeakyReLUFromOutput(disc_cfg.leaky_slope, name=f"conv{index}_act")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(disc_cfg.dropout, name="dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(image, logit, name="discriminator")


def with_keras_leaky_relu(model: Any) -> Any:
    """A copy of ``model`` with Keras' own LeakyReLU wherever it has :class:`LeakyReLUFromOutput`,
    and the same weights: the same function, and a saved file that ``keras.models.load_model``
    reads without this module (only the gradient's graph differs, which a saved model does not
    keep)."""

    def clone(layer: Any) -> Any:
        if isinstance(layer, LeakyReLUFromOutput):
            return layers.LeakyReLU(layer.negative_slope, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
