"""Training batches: the whole (downscaled) training set stays one in-memory tensor, and each epoch
draws a permutation of indices from (seed, epoch) alone.

Keras' own array adapter shuffles with stateful randomness, so an epoch's order depends on how
many epochs ran before in the same process; here a run resumed at epoch k sees exactly the
batches an uninterrupted run sees from epoch k on (needed for bitwise-identical resumes), and
the gather runs inside tf.data with no per-batch Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped; it differs every epoch)."""
    return max(count // batch_size, 1)


def execution_steps(steps: int, wanted: int) -> int:
    """The largest divisor of ``steps`` not above ``wanted``.

    Keras runs exactly ``steps_per_execution`` batches per compiled call, so an epoch whose
    length it does not divide would eat into the next epoch's batches and shift every later
    epoch (breaking resumes); a divisor keeps epoch boundaries exact without dropping data.
    """
    return max(d for d in range(1, min(wanted, steps) + 1) if steps % d == 0)


def epoch_batches(
    images: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int
) -> Any:
    """A tf.data.Dataset of batches for epochs ``first_epoch .. epochs-1`` (0-based)."""
    import tensorflow as tf

    count = len(images)
    batch_size = min(batch_size, count)
    pool = tf.constant(images)

    def permutation(epoch: Any) -> Any:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)

    # No tf.data autotuning: its thread sleeps for a period that keeps doubling while the
    # iterator lives, and closing the iterator waits for it to wake (6.5 s lost at the end of a
    # 4-epoch fit, here).
    # A gather of one batch takes microseconds, so a fixed small prefetch keeps the step fed.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(permutation)
        .map(lambda index: tf.gather(pool, index))
        .prefetch(2)
        .with_options(options)
    )


# Epochs of an endless stream: far more than any budget reaches, and free, as the range is lazy.
ENDLESS_EPOCHS = 1 << 40


def batches_from(images: np.ndarray, batch_size: int, seed: int, step: int) -> Any:
    """An endless stream of the batches :func:`epoch_batches` yields, from batch ``step`` on
    (counted from the first batch of epoch 0): a budgeted run that ends part-way through an
    epoch continues, or resumes, exactly where it stopped."""
    steps = steps_per_epoch(len(images), batch_size)
    epoch, within = divmod(step, steps)
    return epoch_batches(images, batch_size, seed, epoch, ENDLESS_EPOCHS).skip(within)
