"""The plain reference the benchmark measures the harness against: a GAN written the way the
keras.io DCGAN example writes it (``train_step`` override, default ``compile``, ``fit`` on a
NumPy array, the discriminator on the concatenated real and fake batch, a fresh generator pass
for the generator step), with this project's networks, and a timer for ``fit``.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import tensorflow as tf

from src.models.networks import build_discriminator, build_generator


class PlainGAN(keras.Model):
    """The keras.io DCGAN pattern, unchanged but for the networks it is given."""

    def __init__(self, discriminator: Any, generator: Any, latent_dim: int):
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer: Any, g_optimizer: Any, loss_fn: Any) -> None:
        """One optimizer per network and the loss, as keras.io's example takes them."""
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    def train_step(self, real_images: Any) -> dict:
        """A discriminator step on real and fake images together, then a generator step."""
        batch_size = tf.shape(real_images)[0]
        z = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        generated = self.generator(z)
        combined = tf.concat([generated, real_images], axis=0)
        labels = tf.concat([tf.zeros((batch_size, 1)), tf.ones((batch_size, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(
            zip(grads, self.discriminator.trainable_weights, strict=True)
        )
        z = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.ones((batch_size, 1)), self.discriminator(self.generator(z)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights, strict=True))
        return {"d_loss": d_loss, "g_loss": g_loss}


def plain_gan(settings: Any) -> PlainGAN:
    """A compiled :class:`PlainGAN` with the networks and Adam settings of ``settings``."""
    model = PlainGAN(
        build_discriminator(settings.discriminator, settings.data.image_size),
        build_generator(settings.generator, settings.upsampler),
        settings.generator.latent_dim,
    )
    lr, beta = settings.train.learning_rate, settings.train.beta_1
    model.compile(
        keras.optimizers.Adam(lr, beta),
        keras.optimizers.Adam(lr, beta),
        keras.losses.BinaryCrossentropy(from_logits=True),
    )
    return model


class LastBatchTimer(keras.callbacks.Callback):
    """Notes when ``fit``'s last batch ended, so a timing can stop there.

    What ``fit`` does after its last batch is left out of timings: Keras' NumPy input pipeline
    (the plain GAN's) autotunes, and closing it waits for the autotuner to wake, up to a second
    here, which would flatter the harness without being a training cost.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ended = 0.0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        """Note the time: the last call is the end of the timed work."""
        self.ended = time.perf_counter()
