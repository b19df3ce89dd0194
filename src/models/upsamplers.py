"""Upsampling blocks: the one place that knows how the generator variants differ.

Every factory has the same signature ``factory(x, filters, cfg, name) -> y``: it takes a Keras
tensor (batch, h, w, c) and returns (batch, 2h, 2w, filters), built from Keras' own layers so a
saved generator reloads with ``keras.models.load_model`` and no custom objects. ``cfg`` is the
``upsampler`` config group; ``name`` prefixes the block's layer names, so a generator can stack
the same block several times (the last step keeps the tutorial's ``upsample`` names). Adding a
variant is one YAML file in ``conf/upsampler/`` and, if no factory here fits, one new factory
registered in ``FACTORIES``.

Keras is imported inside the factories so that config validation can read ``FACTORIES``
without paying for TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BLOCK_NAME = "upsample"  # the layer names of the output step: the tutorial's own


def resize_conv(x: Any, filters: int, cfg: Any, name: str = BLOCK_NAME) -> Any:
    """Resize-convolution: UpSampling2D(2, interpolation) then Conv2D(k x k, same).

    The resize has no weights; the convolution runs at the output resolution.
    """
    from keras import layers

    x = layers.UpSampling2D(size=2, interpolation=cfg.interpolation, name=name)(x)
    return layers.Conv2D(filters, cfg.kernel_size, padding="same", name=f"{name}_conv")(x)


def transpose_conv(x: Any, filters: int, cfg: Any, name: str = BLOCK_NAME) -> Any:
    """Transposed convolution: Conv2DTranspose(k x k, strides 2, same).

    It runs at the input resolution; with k not divisible by 2 its kernel overlaps unevenly,
    the source of checkerboard artifacts (Odena et al. 2016).
    """
    from keras import layers

    return layers.Conv2DTranspose(
        filters, cfg.kernel_size, strides=2, padding="same", name=f"{name}_conv"
    )(x)


def depth_to_space(x: Any, block: int, name: str) -> Any:
    """``tf.nn.depth_to_space`` (NHWC, DCR order) from built-in Reshape and Permute layers.

    Input channel ``(i * block + j) * c + k`` at (h, w) becomes channel ``k`` of output pixel
    (h * block + i, w * block + j): channels split as (block, block, c), the row offset moves
    next to h and the column offset next to w. Needs a static (h, w, channels) shape.
    """
    from keras import layers

    height, width, depth = x.shape[1:]
    channels = depth // (block * block)
    x = layers.Reshape((height, width, block, block, channels), name=f"{name}_split")(x)
    x = layers.Permute((1, 3, 2, 4, 5), name=f"{name}_interleave")(x)
    return layers.Reshape((height * block, width * block, channels), name=f"{name}_merge")(x)


def subpixel_conv(x: Any, filters: int, cfg: Any, name: str = BLOCK_NAME) -> Any:
    """Sub-pixel convolution: Conv2D(k x k, same) to 4 x filters, then depth_to_space(2).

    The convolution runs at the input resolution and each 2x2 output block takes its four
    pixels from four channel groups (Shi et al. 2016, "Real-Time Single Image and Video
    Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network"). With
    ``cfg.icnr`` the kernel is initialised by ICNR (Aitken et al. 2017, "Checkerboard artifact
    free sub-pixel convolution"): the first ``filters`` output channels of the layer's own
    initial kernel are tiled over the four groups, so every block starts as four copies of one
    value (nearest-neighbour resize of a k x k convolution) and there is no checkerboard at
    initialisation. The kernel is assigned after the layer is built, so the saved model holds
    plain Conv2D weights and ``keras.utils.set_random_seed`` reproduces it.
    """
    from keras import layers, ops

    block = 2
    conv = layers.Conv2D(
        filters * block * block, cfg.kernel_size, padding="same", name=f"{name}_conv"
    )
    y = conv(x)
    if cfg.icnr:
        # DCR order: output channel (sub-pixel s, channel k) is s * filters + k, so tile (not
        # repeat) the per-channel kernel over the sub-pixels.
        conv.kernel.assign(ops.tile(conv.kernel[..., :filters], (1, 1, 1, block * block)))
    return depth_to_space(y, block, name=f"{name}_shuffle")


# What UpSampling2D's ``interpolation`` takes (Keras 3.15, TensorFlow backend:
# keras.src.backend.tensorflow.image.RESIZE_INTERPOLATIONS), here so the schema can check it
# without importing TensorFlow; tests/test_config.py keeps the two equal.
INTERPOLATIONS = ("bilinear", "nearest", "lanczos3", "lanczos5", "bicubic", "area")

FACTORIES: dict[str, Callable[..., Any]] = {
    "resize_conv": resize_conv,
    "transpose_conv": transpose_conv,
    "subpixel_conv": subpixel_conv,
}


def build_block(x: Any, filters: int, cfg: Any, name: str = BLOCK_NAME) -> Any:
    """Apply the upsampling block named by ``cfg.factory`` to ``x``, its layer names
    starting with ``name``."""
    return FACTORIES[cfg.factory](x, filters, cfg, name)
