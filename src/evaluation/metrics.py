"""Quality and artifact metrics of generated images, in NumPy and SciPy only.

Feature-based metrics (``fd``, ``kid``, ``precision``, ``recall``) and class-based metrics
(``class_coverage``, ``class_kl``, ``classifier_score``, ``confidence``) use a digit classifier
(:class:`src.evaluation.classifier.DigitClassifier`, or anything with ``predict(images) ->
(features, probabilities)``); the spectral metrics (``checkerboard``, ``spectrum_error``) use the
pixels. Everything that depends only on the real images is computed once into a
:class:`RealReference` and cached, keyed by the classifier and the real images.

Images are (n, s, s) or (n, s, s, 1) arrays in [-1, 1] with s even.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.linalg
import scipy.special

from src.core.files import read_cache, write_atomically

KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
PR_K = 3
COVERAGE_MIN_SHARE = 0.01
REFERENCE_VERSION = 3  # bump when anything stored in a RealReference is computed differently
_ROWS_PER_CHUNK = 1024  # distance blocks of ~40 MB against 10k points
_TINY = 1e-12
# Multithreaded OpenBLAS spin-waits when the cores are shared (training jobs run in parallel on
# this 2-core machine): beside a running sweep a 10k evaluation took 1.2-4.6 s (erratic) with
# the default two threads, 1.3-1.9 s with one.
BLAS_THREADS = 1


def _blas_threads(threads: int | None) -> contextlib.AbstractContextManager:
    """Limit BLAS threads inside a ``with`` block (threadpoolctl comes with mlflow's
    scikit-learn); a no-op for ``None`` or without threadpoolctl."""
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


class FeatureModel(Protocol):
    """What the metrics need from a classifier."""

    key: str

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


# --- feature-space metrics -------------------------------------------------------------------


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of (n, d) features, in float64."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray
) -> float:
    """Fréchet distance between the Gaussians N(mean1, cov1) and N(mean2, cov2).

    FD = |mean1 - mean2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^1/2 cov2 cov1^1/2)^1/2)

    (Dowson & Landau 1982; on Inception features it is the FID of Heusel et al. 2017, here on
    the digit classifier's features.) The trace term equals tr((cov1 cov2)^1/2) but is computed
    from the eigenvalues of a symmetric positive semi-definite matrix, so it has no imaginary
    part; eigenvalues that round-off makes slightly negative are clipped to 0, and so is the
    result.
    """
    eigenvalues, vectors = scipy.linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T
    middle = root1 @ cov2 @ root1
    middle_eigenvalues = scipy.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(middle_eigenvalues, 0.0, None)).sum()
    difference = np.asarray(mean1, np.float64) - np.asarray(mean2, np.float64)
    value = difference @ difference + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_root
    return max(float(value), 0.0)


def fd(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two (n, d) feature sets; see
    :func:`frechet_distance`."""
    return frechet_distance(*gaussian_stats(real_features), *gaussian_stats(fake_features))


def kid(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    subset_size: int = KID_SUBSET_SIZE,
    subsets: int = KID_SUBSETS,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID of Binkowski et al. 2018, "Demystifying MMD GANs"): mean and std.

    The unbiased estimate of the squared maximum mean discrepancy with the cubic polynomial
    kernel k(x, y) = (x·y / d + 1)^3 on d-dimensional features,

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (m(m-1))
             - 2 Σ_{i,j} k(x_i, y_j) / m²,

    is computed on ``subsets`` pairs of random subsets of m = min(subset_size, n_real, n_fake)
    real (x) and generated (y) samples, each drawn without replacement by a generator seeded
    with ``seed``; the result is the mean over subsets and their standard deviation. Being
    unbiased, it can be slightly negative when the two distributions are equal. Kernel values
    are computed in float32 and summed in float64.
    """
    # float32 kernels with in-place cubing run ~4x faster than float64; the float64 sums keep
    # the result within ~1e-9 of an all-float64 computation (round-off averages out).
    real = np.asarray(real_features, np.float32)
    fake = np.asarray(fake_features, np.float32)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"kid needs at least 2 samples per set, got {len(real)} and {len(fake)}")
    scale = np.float32(1.0 / real.shape[1])
    rng = np.random.default_rng(seed)

    def kernel_sums(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        gram = a @ b.T
        gram *= scale
        gram += 1.0
        cubed = gram * gram
        cubed *= gram
        return float(cubed.sum(dtype=np.float64)), float(np.trace(cubed, dtype=np.float64))

    estimates = np.empty(subsets)
    for index in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        (xx, x_diagonal), (yy, y_diagonal) = kernel_sums(x, x), kernel_sums(y, y)
        within = (xx - x_diagonal + yy - y_diagonal) / (size * (size - 1))
        estimates[index] = within - 2.0 * kernel_sums(x, y)[0] / (size * size)
    return float(estimates.mean()), float(estimates.std())


def _squared_distance_blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, block) of the float32 squared-distance matrix between rows of a and b.

    One matrix product per block gives |a|² + |b|² - 2 a·b directly (the operands carry the
    norms as extra columns), and the blocks reuse one buffer: at 10k x 10k, allocating and
    combining full-size temporaries costs several times the product itself. The yielded block
    is overwritten by the next one.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ones = lambda x: np.ones((len(x), 1))  # noqa: E731
    left = np.hstack([a, (a * a).sum(axis=1, keepdims=True), ones(a)]).astype(np.float32)
    right = np.hstack([-2.0 * b, ones(b), (b * b).sum(axis=1, keepdims=True)])
    right = np.ascontiguousarray(right.T, np.float32)
    buffer = np.empty((min(_ROWS_PER_CHUNK, len(a)), len(b)), np.float32)
    for start in range(0, len(a), _ROWS_PER_CHUNK):
        rows = left[start : start + _ROWS_PER_CHUNK]
        block = buffer[: len(rows)]
        np.matmul(rows, right, out=block)
        yield start, block


def knn_radii(features: np.ndarray, k: int = PR_K) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set, (n,)."""
    if len(features) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(features)}")
    squared = np.empty(len(features))
    for start, block in _squared_distance_blocks(features, features):
        rows = np.arange(len(block))
        # Knocking out the k smallest entries (the point itself, then its k-1 nearest) and
        # taking the minimum is ~10x faster than np.partition on long rows, and counts ties.
        for _ in range(k):
            block[rows, block.argmin(axis=1)] = np.inf
        squared[start : start + len(block)] = block.min(axis=1)
    return np.sqrt(np.maximum(squared, 0.0))


def precision_recall(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    k: int = PR_K,
    real_radii: np.ndarray | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), with k-NN manifolds.

    Each set's manifold is the union of balls centred on its points with radius the distance
    to the point's k-th nearest neighbour in the same set. Precision is the share of generated
    samples inside the real manifold (fidelity); recall is the share of real samples inside the
    generated manifold (diversity). ``real_radii`` (from :func:`knn_radii`) may be passed
    precomputed. Distances are computed in float32.
    """
    radii = knn_radii(real_features, k) if real_radii is None else np.asarray(real_radii)
    real_r2 = (radii**2).astype(np.float32)[None, :]
    fake_r2 = (knn_radii(fake_features, k) ** 2).astype(np.float32)[:, None]
    fake_inside = np.zeros(len(fake_features), bool)
    real_inside = np.zeros(len(real_features), bool)
    for start, block in _squared_distance_blocks(fake_features, real_features):
        stop = start + len(block)
        fake_inside[start:stop] = (block <= real_r2).any(axis=1)
        real_inside |= (block <= fake_r2[start:stop]).any(axis=0)
    return float(fake_inside.mean()), float(real_inside.mean())


# --- class metrics ---------------------------------------------------------------------------


def class_histogram(probabilities: np.ndarray) -> np.ndarray:
    """Share of samples whose most probable class is c, for each class c: (classes,)."""
    probabilities = np.asarray(probabilities)
    counts = np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1])
    return counts / counts.sum()


def class_coverage(probabilities: np.ndarray, min_share: float = COVERAGE_MIN_SHARE) -> int:
    """Number of classes that are the argmax prediction of at least ``min_share`` of samples.

    10 for a generator that draws every digit, 1 under complete mode collapse. The 1% floor
    keeps a few stray misclassifications from counting as coverage.
    """
    return int((class_histogram(probabilities) >= min_share).sum())


def class_kl(probabilities: np.ndarray) -> float:
    """KL divergence of the predicted-class histogram h from the uniform distribution u:
    KL(h || u) = Σ_c h_c log(h_c C) with C classes; 0 when the classes are balanced, log C
    (2.30 for 10 digits) when every sample gets the same class."""
    histogram = class_histogram(probabilities)
    return float(scipy.special.rel_entr(histogram, 1.0 / len(histogram)).sum())


def classifier_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over the samples.

    The Inception Score of Salimans et al. 2016 with the digit classifier in place of
    Inception: high (up to the number of classes, 10) when each sample is confidently one digit
    and all digits are equally frequent.
    """
    probabilities = np.asarray(probabilities, np.float64)
    marginal = probabilities.mean(axis=0, keepdims=True)
    divergences = scipy.special.rel_entr(probabilities, marginal).sum(axis=1)
    return float(np.exp(divergences.mean()))


def confidence(probabilities: np.ndarray) -> float:
    """Mean over samples of the largest class probability, max_y p(y|x)."""
    return float(np.asarray(probabilities).max(axis=1).mean())


def class_metrics(probabilities: np.ndarray) -> dict[str, float]:
    """``class_coverage``, ``class_kl``, ``classifier_score`` and ``confidence`` together."""
    return {
        "class_coverage": float(class_coverage(probabilities)),
        "class_kl": class_kl(probabilities),
        "classifier_score": classifier_score(probabilities),
        "confidence": confidence(probabilities),
    }


# --- spectral metrics ------------------------------------------------------------------------


def _as_square(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float64)
    side = images.shape[1]
    return images.reshape(len(images), side, side)


def mean_power(images: np.ndarray) -> np.ndarray:
    """Mean power spectrum |DFT|² (orthonormal 2-D DFT) over images, (s, s), DC at [0, 0]."""
    return (np.abs(np.fft.fft2(_as_square(images), norm="ortho")) ** 2).mean(axis=0)


def frequency_share(power: np.ndarray, frequency: int) -> float:
    """Share of a power spectrum's energy (DC excluded) in the patterns that repeat every
    s / ``frequency`` pixels along rows, columns or both.

    With P the (s, s) power spectrum and f = ``frequency``, the bins are (i, j) for i, j in
    {0, f, s - f}, but DC (0, 0): at f = s/2 (Nyquist) the three bins P[h, 0], P[0, h], P[h, h];
    below it the eight bins of f and its mirror s - f.
    """
    side = power.shape[0]
    rows = sorted({0, frequency, side - frequency})
    energy = power[np.ix_(rows, rows)].sum() - power[0, 0]
    return float(energy / max(power.sum() - power[0, 0], _TINY))


def nyquist_share(images: np.ndarray) -> float:
    """Share of the spectral energy (DC excluded) at the Nyquist frequencies.

    With P the power spectrum summed over images and h = s/2 for s x s images, the share is
    (P[h, 0] + P[0, h] + P[h, h]) / (Σ P - P[0, 0]): the energy of the patterns that alternate
    every pixel along rows, columns or both, the signature of checkerboard artifacts.
    """
    power = mean_power(images)
    return frequency_share(power, power.shape[0] // 2)


def checkerboard(images: np.ndarray, real_share: float) -> float:
    """log(nyquist_share(generated) / nyquist_share(real)); see :func:`nyquist_share`.

    0 when generated images carry as much Nyquist-frequency energy as real ones, positive
    (log of the excess factor) with checkerboard artifacts, negative for over-smooth images.
    Shares are floored at 1e-12 so that constant images give a finite (very negative) value.
    """
    return _log_ratio(nyquist_share(images), real_share)


def _log_ratio(fake_share: float, real_share: float) -> float:
    """log(fake / real) of two spectral shares, each floored at 1e-12."""
    return float(np.log(max(fake_share, _TINY) / max(real_share, _TINY)))


def earlier_step_periods(steps: int) -> list[int]:
    """The periods, in output pixels, of the checkerboards that the upsampling steps before the
    last one leave: 4, 8, ... (2^(k+1) for the step k places before the last).

    A step's uneven overlap alternates every pixel of its own output (period 2 there); each x2
    step after it stretches that pattern to twice the period. The last step's own period 2 is
    the Nyquist frequency, measured by :func:`checkerboard`.
    """
    return [2 ** (back + 1) for back in range(1, steps)]


def earlier_step_checkerboards(
    images: np.ndarray, real_spectrum: np.ndarray, steps: int
) -> dict[str, float]:
    """``checkerboard_p<period>`` for each period of :func:`earlier_step_periods`: log of the
    generated images' share of energy at that period over the real images' (as
    :func:`checkerboard` at the Nyquist frequency). Empty for a one-step generator, which
    skips the spectrum altogether."""
    periods = earlier_step_periods(steps)
    if not periods:
        return {}
    power = mean_power(images)
    side = power.shape[0]
    return {
        f"checkerboard_p{period}": _log_ratio(
            frequency_share(power, side // period), frequency_share(real_spectrum, side // period)
        )
        for period in periods
    }


def radial_spectrum(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum: (frequencies, power), each (round(h√2) + 1,).

    The mean power spectrum (see :func:`mean_power`) is averaged over the DFT bins whose
    distance from DC, sqrt(kx² + ky²) in integer frequency units, rounds to r = 0, 1, ...;
    ``frequencies`` are r / s in cycles per pixel (0 is DC; beyond 0.5 only diagonal bins
    remain, the last being the (h, h) checkerboard bin). For 10 x 10 images: 8 bins.
    """
    power = mean_power(images)
    side = power.shape[0]
    integer = np.fft.fftfreq(side, 1.0 / side)
    radius = np.rint(np.hypot(integer[:, None], integer[None, :])).astype(int).ravel()
    sums = np.bincount(radius, weights=power.ravel())
    counts = np.bincount(radius)
    return np.arange(len(sums)) / side, sums / np.maximum(counts, 1)


def spectrum_error(fake_power: np.ndarray, real_power: np.ndarray) -> float:
    """Mean absolute relative error of a radial power spectrum against the real one.

    mean_r |clip((P_gen(r) - P_real(r)) / P_real(r), -1, 1)| over the bins r > 0 of
    :func:`radial_spectrum` (DC, i.e. mean brightness, is excluded), after Schwarz et al. 2021,
    "On the Frequency Bias of Generative Models". 0 for a perfect spectrum, at most 1; the clip
    stops one bin with a huge excess from dominating.
    """
    fake_power, real_power = np.asarray(fake_power)[1:], np.asarray(real_power)[1:]
    relative = (fake_power - real_power) / np.maximum(real_power, _TINY)
    return float(np.abs(np.clip(relative, -1.0, 1.0)).mean())


# --- the real-data reference and the evaluation ----------------------------------------------


@dataclass
class RealReference:
    """Everything the metrics need from the real images, computed once and cached.

    ``summary`` holds the real images' own class metrics and Nyquist share (``real_*``), the
    values a perfect generator would reach, for logging beside the generated ones.
    """

    key: str
    classifier_key: str
    features: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    radii: np.ndarray
    nyquist_share: float
    frequencies: np.ndarray
    power: np.ndarray
    spectrum: np.ndarray
    summary: dict[str, float]
    from_cache: bool = False

    @staticmethod
    def key_for(classifier: FeatureModel, images: np.ndarray) -> str:
        """SHA-256 over the classifier's key, the real images' bytes and this module's version."""
        images = np.ascontiguousarray(images, np.float32)
        digest = hashlib.sha256(f"{REFERENCE_VERSION}|{PR_K}|{classifier.key}|".encode())
        digest.update(str(images.shape).encode())
        digest.update(images.tobytes())
        return digest.hexdigest()

    @classmethod
    def compute(cls, classifier: FeatureModel, images: np.ndarray) -> RealReference:
        """Compute the reference statistics of ``images`` (typically the test split)."""
        features, probabilities = classifier.predict(images)
        mean, cov = gaussian_stats(features)
        frequencies, power = radial_spectrum(images)
        spectrum = mean_power(images)
        share = frequency_share(spectrum, spectrum.shape[0] // 2)  # nyquist_share, one FFT fewer
        summary = {f"real_{name}": value for name, value in class_metrics(probabilities).items()}
        summary["real_nyquist_share"] = share
        with _blas_threads(BLAS_THREADS):
            radii = knn_radii(features)
        return cls(
            key=cls.key_for(classifier, images),
            classifier_key=classifier.key,
            features=features,
            mean=mean,
            cov=cov,
            radii=radii,
            nyquist_share=share,
            frequencies=frequencies,
            power=power,
            spectrum=spectrum,
            summary=summary,
        )

    @classmethod
    def load_or_compute(
        cls, classifier: FeatureModel, images: np.ndarray, cache_dir: str | Path
    ) -> RealReference:
        """The reference for ``images`` from ``cache_dir``, computed and cached on a miss."""
        key = cls.key_for(classifier, images)
        path = Path(cache_dir) / f"real-reference-{key[:16]}.npz"

        def read(path: Path) -> RealReference | None:
            with np.load(path, allow_pickle=False) as npz:
                return cls._from_arrays(npz) if str(npz["key"]) == key else None

        cached = read_cache(path, read, "reference cache", "recomputing")
        if cached is not None:
            return cached
        reference = cls.compute(classifier, images)
        write_atomically(path, lambda partial: np.savez(partial, **reference._to_arrays()))
        return reference

    def _to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            name: np.asarray(getattr(self, name))
            for name in ("key", "classifier_key", "features", "mean", "cov", "radii")
        }
        arrays |= {"nyquist_share": np.asarray(self.nyquist_share)}
        arrays |= {"frequencies": self.frequencies, "power": self.power}
        arrays |= {"spectrum": self.spectrum}
        arrays |= {f"summary_{name}": np.asarray(value) for name, value in self.summary.items()}
        return arrays

    @classmethod
    def _from_arrays(cls, npz: Any) -> RealReference:
        summary = {
            name.removeprefix("summary_"): float(npz[name])
            for name in npz.files
            if name.startswith("summary_")
        }
        return cls(
            key=str(npz["key"]),
            classifier_key=str(npz["classifier_key"]),
            features=npz["features"],
            mean=npz["mean"],
            cov=npz["cov"],
            radii=npz["radii"],
            nyquist_share=float(npz["nyquist_share"]),
            frequencies=npz["frequencies"],
            power=npz["power"],
            spectrum=npz["spectrum"],
            summary=summary,
            from_cache=True,
        )


def evaluate(
    images: np.ndarray,
    classifier: FeatureModel,
    reference: RealReference,
    seed: int = 0,
    blas_threads: int | None = BLAS_THREADS,
    steps: int = 1,
) -> dict[str, float]:
    """All metrics of generated ``images`` against ``reference``, as a flat dict of floats.

    Keys: ``fd``, ``kid``, ``kid_std``, ``precision``, ``recall``, ``class_coverage``,
    ``class_kl``, ``classifier_score``, ``confidence``, ``checkerboard``, ``spectrum_error``, and
    for a generator of ``steps`` > 1 upsampling steps ``checkerboard_p4``, ... (one per earlier
    step: :func:`earlier_step_checkerboards`).
    ``seed`` only picks the KID subsets. Needs more than ``PR_K`` images; pass as many as the
    reference holds (10,000 for the test split): k-NN radii shrink as a set grows, so
    precision and recall are only comparable between equal-sized sets, and FD is biased
    upwards for small samples. NumPy's BLAS runs with ``blas_threads`` threads (``None``: its
    default); see ``BLAS_THREADS``.
    """
    if reference.classifier_key != classifier.key:
        raise ValueError("the reference was computed with another classifier; recompute it")
    features, probabilities = classifier.predict(images)
    with _blas_threads(blas_threads):
        kid_mean, kid_std = kid(reference.features, features, seed=seed)
        real_features, radii = reference.features, reference.radii
        precision, recall = precision_recall(real_features, features, real_radii=radii)
    return {
        "fd": frechet_distance(reference.mean, reference.cov, *gaussian_stats(features)),
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        **class_metrics(probabilities),
        "checkerboard": checkerboard(images, reference.nyquist_share),
        "spectrum_error": spectrum_error(radial_spectrum(images)[1], reference.power),
        **earlier_step_checkerboards(images, reference.spectrum, steps),
    }


def spectra(images: np.ndarray, reference: RealReference) -> dict[str, list[float]]:
    """Radial power spectra of generated ``images`` and of the real reference, JSON-ready:
    ``frequency`` (cycles/pixel), ``real``, ``generated`` and the clipped ``relative_error``
    that :func:`spectrum_error` averages (over the bins after DC)."""
    _, power = radial_spectrum(images)
    relative = np.clip((power - reference.power) / np.maximum(reference.power, _TINY), -1, 1)
    return {
        "frequency": reference.frequencies.tolist(),
        "real": reference.power.tolist(),
        "generated": power.tolist(),
        "relative_error": relative.tolist(),
    }
