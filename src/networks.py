"""Generator and discriminator builders (Keras functional models)."""

from __future__ import annotations

from typing import Any

from src.upsamplers import build_block


def build_generator(gen_cfg: Any, up_cfg: Any, channels: int = 1) -> Any:
    """Dense -> LeakyReLU -> Reshape -> upsampling block -> tanh: z to a (2s, 2s, channels) image.

    With the default config the weights are exactly the tutorial's (324,353 parameters for
    both tutorial variants); LeakyReLU and tanh add none.
    """
    import keras
    from keras import layers

    side, maps = gen_cfg.base_size, gen_cfg.base_channels
    z = keras.Input((gen_cfg.latent_dim,), name="z")
    x = layers.Dense(maps * side * side, name="project")(z)
    x = layers.LeakyReLU(gen_cfg.leaky_slope, name="project_act")(x)
    x = layers.Reshape((side, side, maps), name="reshape")(x)
    x = build_block(x, channels, up_cfg)
    image = layers.Activation("tanh", name="image")(x)
    return keras.Model(z, image, name=f"generator_{up_cfg.name}")


def build_discriminator(disc_cfg: Any, image_size: int, channels: int = 1) -> Any:
    """Strided Conv2D + LeakyReLU per entry of ``filters``, then dropout and one logit."""
    import keras
    from keras import layers

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
        x = layers.LeakyReLU(disc_cfg.leaky_slope, name=f"conv{index}_act")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(disc_cfg.dropout, name="dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(image, logit, name="discriminator")
