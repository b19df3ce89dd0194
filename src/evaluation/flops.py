"""FLOPs of a Keras model or step, counted by TensorFlow's graph profiler (not by hand)."""

from __future__ import annotations

from typing import Any


def profile_float_ops(graph: Any) -> int:
    """Sum of the registered FLOP statistic of every op in a TensorFlow graph.

    A multiply-add counts as 2, as ``tf.compat.v1.profiler`` counts it.
    """
    import tensorflow as tf

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the v1 profiler warns about its own deprecated internals
    try:
        profile = tf.compat.v1.profiler.profile(
            graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    finally:
        logger.setLevel(level)
    return int(profile.total_float_ops)


def count_flops(model: Any, batch_size: int = 1) -> int:
    """Floating-point operations of one inference call of ``model`` on ``batch_size`` inputs."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)
    graph = convert_variables_to_constants_v2(
        tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    ).graph
    return profile_float_ops(graph)


def train_flops_per_image(gan: Any, batch_size: int, image_size: int) -> float:
    """FLOPs of one training step of ``gan`` (both networks' forward and backward passes and
    both optimizer updates) divided by its batch, from the traced step; tracing runs nothing,
    so the GAN's weights and random state are untouched."""
    import tensorflow as tf

    shape = (batch_size, image_size, image_size, 1)
    traced = tf.function(gan.train_step).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    return profile_float_ops(traced.graph) / batch_size
