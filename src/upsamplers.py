"""Upsampling blocks: the one place that knows how the generator variants differ.

Every factory has the same signature ``factory(x, filters, cfg) -> y``: it takes a Keras tensor
(batch, h, w, c) and returns (batch, 2h, 2w, filters), built from Keras' own layers so a saved
generator reloads with ``keras.models.load_model`` and no custom objects. ``cfg`` is the
``upsampler`` config group. Adding a variant is one YAML file in ``conf/upsampler/`` and, if no
factory here fits, one new factory registered in ``FACTORIES``.

Keras is imported inside the factories so that config validation can read ``FACTORIES``
without paying for TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def resize_conv(x: Any, filters: int, cfg: Any) -> Any:
    """Resize-convolution: UpSampling2D(2, interpolation) then Conv2D(k x k, same).

    The resize has no weights; the convolution runs at the output resolution.
    """
    from keras import layers

    x = layers.UpSampling2D(size=2, interpolation=cfg.interpolation, name="upsample")(x)
    return layers.Conv2D(filters, cfg.kernel_size, padding="same", name="upsample_conv")(x)


def transpose_conv(x: Any, filters: int, cfg: Any) -> Any:
    """Transposed convolution: Conv2DTranspose(k x k, strides 2, same).

    It runs at the input resolution; with k not divisible by 2 its kernel overlaps unevenly,
    the source of checkerboard artifacts (Odena et al. 2016).
    """
    from keras import layers

    return layers.Conv2DTranspose(
        filters, cfg.kernel_size, strides=2, padding="same", name="upsample_conv"
    )(x)


FACTORIES: dict[str, Callable[[Any, int, Any], Any]] = {
    "resize_conv": resize_conv,
    "transpose_conv": transpose_conv,
}


def build_block(x: Any, filters: int, cfg: Any) -> Any:
    """Apply the upsampling block named by ``cfg.factory`` to ``x``."""
    return FACTORIES[cfg.factory](x, filters, cfg)
