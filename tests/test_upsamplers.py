"""Every upsampling variant: shape, hand-counted parameters and one real training step; and the
sub-pixel block's specifics: depth_to_space channel order, ICNR at initialisation, and reloading
a saved generator in a fresh process without custom objects.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import reload_in_fresh_process

from src.config.schema import DataConfig, to_settings
from src.data.mnist import load_mnist
from src.models.gan import GAN
from src.models.networks import build_discriminator, build_generator
from src.models.upsamplers import build_block, depth_to_space

LATENT, SIDE, MAPS, OUT = 100, 5, 128, 1  # conf/generator/default.yaml; one grey channel
DENSE = LATENT * (SIDE * SIDE * MAPS) + SIDE * SIDE * MAPS  # 100*3200 weights + 3200 biases
SUBPIXEL = 3 * 3 * MAPS * (4 * OUT) + 4 * OUT  # Conv2D 3x3 to 4 channels: one per sub-pixel

# (upsampler, extra overrides, trainable parameters of the block: kernel + bias)
CASES = [
    # UpSampling2D has no weights; then Conv2D 3x3 from 128 maps to 1 channel.
    pytest.param("nearest", [], 3 * 3 * MAPS * OUT + OUT, id="nearest"),
    # Conv2DTranspose 3x3 stride 2: kernel (3, 3, out, in) and one bias per output channel.
    pytest.param("transpose", [], 3 * 3 * OUT * MAPS + OUT, id="transpose"),
    # The bilinear resize has no weights either: the same conv as nearest.
    pytest.param("bilinear", [], 3 * 3 * MAPS * OUT + OUT, id="bilinear"),
    # Conv2DTranspose 4x4 stride 2.
    pytest.param("transpose4", [], 4 * 4 * OUT * MAPS + OUT, id="transpose4"),
    # Reshape / Permute / Reshape (depth_to_space) add no weights.
    pytest.param("subpixel", [], SUBPIXEL, id="subpixel-icnr"),
    # ICNR changes the initial values, not the count.
    pytest.param("subpixel", ["upsampler.icnr=false"], SUBPIXEL, id="subpixel-plain"),
]


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def _block_model(make_cfg, filters: int, *overrides: str) -> keras.Model:
    """The configured upsampling block alone, on the generator's (5, 5, 128) feature maps."""
    settings = to_settings(make_cfg(*overrides))
    features = keras.Input((SIDE, SIDE, MAPS))
    return keras.Model(features, build_block(features, filters, settings.upsampler))


def _nearest_of_blocks(image: np.ndarray) -> np.ndarray:
    """Each 2x2 block replaced by copies of its top-left pixel."""
    return np.repeat(np.repeat(image[::2, ::2], 2, axis=0), 2, axis=1)


@pytest.mark.parametrize(("upsampler", "overrides", "block_params"), CASES)
def test_generator_shape_and_hand_counted_params(make_cfg, upsampler, overrides, block_params):
    settings = to_settings(make_cfg(f"upsampler={upsampler}", *overrides))
    generator = build_generator(settings.generator, settings.upsampler)
    assert generator.output_shape == (None, 2 * SIDE, 2 * SIDE, OUT)
    assert DENSE == 323_200
    assert _trainable(generator) == DENSE + block_params
    counted = [layer.count_params() for layer in generator.layers if layer.count_params()]
    assert counted == [DENSE, block_params]


@pytest.mark.parametrize(("upsampler", "overrides", "block_params"), CASES)
def test_one_real_training_step_has_finite_losses(make_cfg, upsampler, overrides, block_params):
    settings = to_settings(make_cfg(f"upsampler={upsampler}", *overrides))
    images = load_mnist(DataConfig(limit=256), settings.paths.cache_dir).x_train[:64]
    keras.utils.set_random_seed(0)
    generator = build_generator(settings.generator, settings.upsampler)
    discriminator = build_discriminator(settings.discriminator, settings.data.image_size)
    gan = GAN(generator, discriminator, seed=0)
    adam = lambda: keras.optimizers.Adam(settings.train.learning_rate, settings.train.beta_1)  # noqa: E731
    gan.compile(d_optimizer=adam(), g_optimizer=adam(), jit_compile=False)
    block = generator.get_layer("upsample_conv")
    before = block.kernel.numpy().copy()

    logs = gan.train_on_batch(images, return_dict=True)

    assert np.isfinite(logs["d_loss"]) and np.isfinite(logs["g_loss"])
    assert not np.array_equal(block.kernel.numpy(), before)


def test_icnr_block_starts_without_checkerboard(make_cfg):
    keras.utils.set_random_seed(0)
    image = _block_model(make_cfg, OUT, "upsampler=subpixel")(np.ones((1, SIDE, SIDE, MAPS)))
    image = keras.ops.convert_to_numpy(image)[0, :, :, 0]
    assert image.shape == (2 * SIDE, 2 * SIDE)
    # All four sub-pixels of every 2x2 block are equal: a nearest resize of a 3x3 conv.
    np.testing.assert_allclose(image, _nearest_of_blocks(image), rtol=1e-6, atol=1e-7)
    # Away from the zero padding (input rows/cols 1..3 -> output 2..7) the output is constant.
    np.testing.assert_allclose(image[2:8, 2:8], image[4, 4], rtol=1e-6, atol=1e-7)
    # 'same' zero padding makes the border blocks differ: constant only in the interior.
    assert abs(image[0, 0] - image[4, 4]) > 1e-4


def test_plain_subpixel_block_starts_with_a_checkerboard(make_cfg):
    keras.utils.set_random_seed(0)
    model = _block_model(make_cfg, OUT, "upsampler=subpixel", "upsampler.icnr=false")
    image = keras.ops.convert_to_numpy(model(np.ones((1, SIDE, SIDE, MAPS))))[0, :, :, 0]
    interior = image[2:8, 2:8]
    # The sub-pixels of a block differ ...
    assert np.abs(image - _nearest_of_blocks(image)).max() > 1e-3
    assert np.ptp(interior) > 1e-3
    # ... and a constant input gives a pure period-2 pattern: the checkerboard.
    np.testing.assert_allclose(interior, np.tile(interior[:2, :2], (3, 3)), rtol=1e-6, atol=1e-7)


def test_icnr_kernel_is_the_layers_own_initial_kernel_tiled(make_cfg):
    kernels = {}
    for icnr in ("true", "false", "true"):
        keras.utils.set_random_seed(7)
        model = _block_model(make_cfg, 3, "upsampler=subpixel", f"upsampler.icnr={icnr}")
        kernel = model.get_layer("upsample_conv").kernel.numpy()
        if icnr in kernels:  # same seed, same kernel: reproducible
            np.testing.assert_array_equal(kernel, kernels[icnr])
        kernels[icnr] = kernel
    assert kernels["true"].shape == (3, 3, MAPS, 4 * 3)
    # Sub-pixel s of channel k is kernel channel s * 3 + k (DCR order): tiled, not repeated.
    np.testing.assert_array_equal(kernels["true"], np.tile(kernels["false"][..., :3], 4))


@pytest.mark.parametrize(("block", "channels"), [(2, 3), (3, 2)])
def test_reshape_permute_depth_to_space_matches_tensorflow(block, channels):
    features = keras.Input((4, 5, block * block * channels))
    model = keras.Model(features, depth_to_space(features, block, name="d2s"))
    data = np.random.default_rng(0).standard_normal((2, 4, 5, block * block * channels))
    data = data.astype(np.float32)
    expected = tf.nn.depth_to_space(data, block).numpy()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(data)), expected)


def test_subpixel_block_wiring_is_depth_to_space_of_its_conv(make_cfg):
    model = _block_model(make_cfg, 3, "upsampler=subpixel", "upsampler.icnr=false")
    probe = keras.Model(model.input, [model.get_layer("upsample_conv").output, model.output])
    data = np.random.default_rng(1).standard_normal((2, SIDE, SIDE, MAPS)).astype(np.float32)
    conv, image = (keras.ops.convert_to_numpy(t) for t in probe(data))
    assert image.shape == (2, 2 * SIDE, 2 * SIDE, 3)
    np.testing.assert_array_equal(image, tf.nn.depth_to_space(conv, 2).numpy())


def test_subpixel_generator_reloads_in_a_fresh_process_without_custom_objects(make_cfg, tmp_path):
    settings = to_settings(make_cfg("upsampler=subpixel"))
    keras.utils.set_random_seed(0)
    generator = build_generator(settings.generator, settings.upsampler)
    latents = np.random.default_rng(2).standard_normal((8, LATENT)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(generator(latents, training=False))
    generator.save(tmp_path / "generator.keras")
    outputs, modules = reload_in_fresh_process(tmp_path / "generator.keras", latents, tmp_path)
    assert modules == "keras"
    np.testing.assert_array_equal(outputs, expected)


def test_same_seed_runs_of_every_variant_share_dense_weights_latents_and_batches(make_cfg):
    """What the report's paired comparison rests on: with one seed, every upsampler's run starts
    from the same Dense weights, draws the same latents and sees the same batches (the batch
    order is a function of (seed, epoch) only); another seed changes all three."""
    from src.data.batches import epoch_batches
    from src.models.gan import build_gan

    images = np.arange(1000, dtype=np.float32).reshape(-1, 1)
    seen = {}
    for name, seed in [*((case.values[0], 3) for case in CASES), ("nearest", 4)]:
        gan = build_gan(to_settings(make_cfg(f"upsampler={name}", f"seed={seed}")), 4)
        dense = gan.generator.get_layer("project").get_weights()[0]
        latents = keras.ops.convert_to_numpy(gan._latents(8))
        batches = [b.numpy().ravel() for b in epoch_batches(images, 128, seed, 0, 2)]
        seen[(name, seed)] = (dense, latents, np.concatenate(batches))
    reference = seen[("nearest", 3)]
    for (name, seed), values in seen.items():
        for what, mine, theirs in zip(
            ("dense", "latents", "batches"), values, reference, strict=True
        ):
            if seed == 3:
                np.testing.assert_array_equal(mine, theirs, err_msg=f"{name}: {what}")
            else:
                assert not np.array_equal(mine, theirs), f"seed {seed}: {what}"
