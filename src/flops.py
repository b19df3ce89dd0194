"""FLOPs of a Keras model, counted by TensorFlow's graph profiler (not estimated by hand)."""

from __future__ import annotations

from typing import Any


def count_flops(model: Any, batch_size: int = 1) -> int:
    """Floating-point operations of one inference call on ``batch_size`` inputs.

    The model is traced into a frozen TensorFlow graph and each op's registered FLOP
    statistic is summed (a multiply-add counts as 2), as ``tf.compat.v1.profiler`` does.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)
    graph = convert_variables_to_constants_v2(
        tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    ).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(profile.total_float_ops)
