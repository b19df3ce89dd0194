"""The GAN as a keras.Model: ``fit`` drives it, so Keras callbacks and progress bars just work."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops


def _bce(labels: Any, logits: Any) -> Any:
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True))


def _share(flags: Any) -> Any:
    return ops.mean(ops.cast(flags, "float32"))


class GAN(keras.Model):
    """Generator and discriminator trained adversarially with the non-saturating loss.

    Each ``train_step`` takes one batch of real images, makes a discriminator step on real and
    generated images, then a generator step through the updated discriminator (Goodfellow et
    al. 2014, Alg. 1). Both steps score the same generated batch, as the PyTorch DCGAN example
    does: the generator's forward pass is recorded once and back-propagated in the generator
    step, which saves one generator forward pass per step (docs/performance.md).
    ``g_loss`` is therefore scored on the batch the discriminator has just learnt to reject, so
    it runs a little higher than with fresh latents.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = generator.input_shape[-1]
        # A stateful seed generator: latent draws are reproducible and advance across steps.
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("d_loss", "g_loss", "real_accuracy", "fake_accuracy")
        }
        self.built = True  # both networks are built functional models; lets save/load_weights run

    def compile(self, d_optimizer: keras.Optimizer, g_optimizer: keras.Optimizer, **kwargs):
        """Attach one optimizer per network; kwargs (jit_compile, ...) go to Keras."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    @property
    def metrics(self) -> list:
        """Trackers Keras resets at each epoch start."""
        return list(self.trackers.values())

    def _seed_states(self) -> list:
        """Seed-generator states (latent draws, Dropout masks): Keras' weight files omit them."""
        return [v for v in self.variables if v.path.endswith("seed_generator_state")]

    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)
        for i, state in enumerate(self._seed_states()):
            store[f"seed_state_{i}"] = keras.ops.convert_to_numpy(state)

    def load_own_variables(self, store: Any) -> None:
        for i, state in enumerate(self._seed_states()):
            state.assign(store[f"seed_state_{i}"])
        super().load_own_variables(
            {k: store[k] for k in store.keys() if not k.startswith("seed_state_")}  # noqa: SIM118 - an H5 group
        )

    def build_optimizers(self) -> None:
        """Create both optimizers' slot variables now (needed before restoring their state)."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    def _latents(self, batch_size: Any) -> Any:
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def train_step(self, data: Any) -> dict:
        """One discriminator step, then one generator step, on a batch of real images."""
        real = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as g_tape:
            fake = self.generator(self._latents(ops.shape(real)[0]), training=True)
            with g_tape.stop_recording():  # the discriminator step is no part of g_loss
                with tf.GradientTape() as tape:
                    real_logits = self.discriminator(real, training=True)
                    fake_logits = self.discriminator(fake, training=True)
                    d_loss = _bce(ops.ones_like(real_logits), real_logits) + _bce(
                        ops.zeros_like(fake_logits), fake_logits
                    )
                weights = self.discriminator.trainable_variables
                self.d_optimizer.apply_gradients(
                    zip(tape.gradient(d_loss, weights), weights, strict=True)
                )
            logits = self.discriminator(fake)  # the discriminator as just updated
            g_loss = _bce(ops.ones_like(logits), logits)  # non-saturating: maximise log D(G(z))
        weights = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(
            zip(g_tape.gradient(g_loss, weights), weights, strict=True)
        )

        self.trackers["d_loss"].update_state(d_loss)
        self.trackers["g_loss"].update_state(g_loss)
        self.trackers["real_accuracy"].update_state(_share(real_logits > 0))
        self.trackers["fake_accuracy"].update_state(_share(fake_logits < 0))
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def build_gan(settings: Any, steps_per_epoch: int) -> GAN:
    """Both networks from the config, wrapped and compiled as every harness run trains them.

    ``settings`` is a validated ``src.config.schema.Config``; Adam(d_learning_rate, beta_1) for
    the discriminator and Adam(g_learning_rate, beta_1) for the generator, XLA per
    ``train.jit_compile``, and ``train.steps_per_execution`` rounded down to a divisor of
    ``steps_per_epoch`` (see ``src.data.batches.execution_steps``).

    Seeded with ``settings.seed`` first: runs of two variants with the same seed start from the
    same Dense weights (built before the upsampling block) and draw the same latents, which is
    what lets the report pair them by seed.
    """
    from src.data.batches import execution_steps
    from src.models.networks import build_discriminator, build_generator

    keras.utils.set_random_seed(settings.seed)
    gan = GAN(
        build_generator(settings.generator, settings.upsampler),
        build_discriminator(settings.discriminator, settings.data.image_size),
        seed=settings.seed,
    )
    train = settings.train
    gan.compile(
        d_optimizer=keras.optimizers.Adam(train.d_learning_rate, train.beta_1),
        g_optimizer=keras.optimizers.Adam(train.g_learning_rate, train.beta_1),
        jit_compile=train.jit_compile,
        steps_per_execution=execution_steps(steps_per_epoch, train.steps_per_execution),
    )
    return gan
