"""Statistics for comparing upsamplers over a handful of seeds, in SciPy.

Intervals: Student-t, and the percentile bootstrap (``scipy.stats.bootstrap``, fixed random
state, 10,000 resamples), which does not assume normality. Differences: paired over seeds when
both variants ran the same seeds (same data order, latents and initial Dense weights: the pairing
removes the seed's share of the spread), Welch's otherwise. The probability of improvement is
the Mann-Whitney U statistic over all pairs of runs (Agarwal et al. 2021). Seeds needed for 80%
power come from the noncentral t distribution at the observed spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the same resamples every time the report is built
POWER = 0.8
MAX_SEEDS = 10_000  # beyond this, "seeds needed" is reported as more than it


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval (``low``/``high`` NaN when it cannot be computed)."""

    mean: float
    low: float
    high: float
    n: int

    def show(self, fmt: str) -> str:
        """``mean [low, high]`` with ``fmt``, or ``mean (n=1)``, or ``-`` with no data."""
        if self.n == 0:
            return "-"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{fmt.format(self.mean)} (n={self.n})"
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"

    def excludes(self, value: float) -> bool:
        """True when the whole interval lies on one side of ``value``."""
        return bool(self.low > value or self.high < value)


NAN = Interval(math.nan, math.nan, math.nan, 0)


def finite(values: Any) -> np.ndarray:
    """The finite values as a float64 array (a missing metric of a run is NaN)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def t_interval(values: Any) -> Interval:
    """Mean and Student-t 95% interval of ``values`` (NaNs dropped)."""
    from scipy import stats

    sample = finite(values)
    if sample.size == 0:
        return NAN
    mean = float(sample.mean())
    if sample.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    ci = stats.ttest_1samp(sample, 0.0).confidence_interval(CONFIDENCE)
    return Interval(mean, float(ci.low), float(ci.high), int(sample.size))


def iqm(values: Any, axis: int | None = None) -> Any:
    """Interquartile mean: the mean of the middle half (robust to one wild seed); along
    ``axis`` of an array of resamples, or of the finite values when ``axis`` is None."""
    from scipy import stats

    if axis is not None:
        return stats.trim_mean(values, 0.25, axis=axis)
    sample = finite(values)
    return float(stats.trim_mean(sample, 0.25)) if sample.size else math.nan


def bootstrap_interval(
    values: Any, statistic: Callable[..., Any] = np.mean, resamples: int = RESAMPLES
) -> Interval:
    """``statistic`` of ``values`` with its 95% percentile bootstrap interval; ``statistic``
    takes an ``axis`` argument as NumPy's reductions do."""
    from scipy import stats

    sample = finite(values)
    if sample.size == 0:
        return NAN
    estimate = float(statistic(sample, axis=0))
    if sample.size < 2 or np.ptp(sample) == 0:
        low = high = estimate if sample.size >= 2 else math.nan
        return Interval(estimate, low, high, int(sample.size))
    result = stats.bootstrap(
        (sample,),
        statistic,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(BOOTSTRAP_SEED),
    )
    ci = result.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), int(sample.size))


def welch_interval(a: Any, b: Any) -> Interval:
    """Difference of means ``mean(a) - mean(b)`` with Welch's 95% t-interval."""
    from scipy import stats

    a, b = finite(a), finite(b)
    if a.size == 0 or b.size == 0:
        return NAN
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Interval(diff, math.nan, math.nan, 1)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(CONFIDENCE)
    return Interval(diff, float(ci.low), float(ci.high), int(min(a.size, b.size)))


def probability_of_improvement(a: Any, b: Any) -> float:
    """P(a run of A scores lower than a run of B), ties counting half: U / (n m)."""
    from scipy import stats

    a, b = finite(a), finite(b)
    if a.size == 0 or b.size == 0:
        return math.nan
    # mannwhitneyu(b, a).statistic counts the pairs where b's value exceeds a's.
    return float(stats.mannwhitneyu(b, a).statistic / (a.size * b.size))


def improvement_interval(a: Any, b: Any, resamples: int = RESAMPLES) -> Interval:
    """:func:`probability_of_improvement` with a 95% percentile bootstrap interval (runs of A
    and of B resampled independently)."""
    from scipy import stats

    a, b = finite(a), finite(b)
    estimate = probability_of_improvement(a, b)
    if a.size < 2 or b.size < 2:
        return Interval(estimate, math.nan, math.nan, int(min(a.size, b.size)))

    def share(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        lower = (x[..., :, None] < y[..., None, :]).mean(axis=(-2, -1))
        ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
        return lower + ties / 2

    result = stats.bootstrap(
        (a, b),
        share,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(BOOTSTRAP_SEED),
        vectorized=True,
    )
    ci = result.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), int(min(a.size, b.size)))


@dataclass(frozen=True)
class Difference:
    """``A - B`` over the runs of a pair of variants: how it was computed and what it says."""

    design: str  # "paired" (over the seeds both ran) or "Welch" (independent samples)
    t: Interval
    bootstrap: Interval
    p_value: float  # two-sided, of "no difference"
    spread: float  # sd of the paired differences, or the pooled sd of the two samples


def difference(a: Sequence[tuple[int, float]], b: Sequence[tuple[int, float]]) -> Difference:
    """``A - B`` from (seed, value) pairs: paired over the common seeds when every seed of each
    is also a seed of the other, Welch's t otherwise. Non-finite values are dropped."""
    from scipy import stats

    da = {seed: v for seed, v in a if np.isfinite(v)}
    db = {seed: v for seed, v in b if np.isfinite(v)}
    if da and set(da) == set(db) and len(da) >= 2:
        seeds = sorted(da)
        d = np.asarray([da[s] - db[s] for s in seeds])
        p = _p_value(stats.ttest_1samp(d, 0.0).pvalue)
        spread = float(np.std(d, ddof=1))
        return Difference("paired", t_interval(d), bootstrap_interval(d), p, spread)
    x, y = np.asarray(list(da.values())), np.asarray(list(db.values()))
    t = welch_interval(x, y)
    boot = _bootstrap_difference(x, y) if min(x.size, y.size) >= 2 else t
    p = stats.ttest_ind(x, y, equal_var=False).pvalue if min(x.size, y.size) >= 2 else math.nan
    pooled = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2) if t.n >= 2 else math.nan
    return Difference("Welch", t, boot, _p_value(p), pooled)


def _p_value(p: float) -> float:
    return 1.0 if not np.isfinite(p) else float(p)  # identical samples: no evidence of a difference


def _bootstrap_difference(x: np.ndarray, y: np.ndarray) -> Interval:
    from scipy import stats

    if np.ptp(np.concatenate([x, y])) == 0:
        return Interval(0.0, 0.0, 0.0, int(min(x.size, y.size)))
    result = stats.bootstrap(
        (x, y),
        lambda p, q, axis=-1: p.mean(axis=axis) - q.mean(axis=axis),
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(BOOTSTRAP_SEED),
    )
    ci = result.confidence_interval
    return Interval(
        float(x.mean() - y.mean()), float(ci.low), float(ci.high), int(min(x.size, y.size))
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (family-wise error at the level).

    SciPy has Benjamini-Hochberg (false discovery rate) but not Holm, and statsmodels is not a
    dependency for one loop.
    """
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


def equivalent(
    a: Sequence[tuple[int, float]], b: Sequence[tuple[int, float]], margin: float
) -> float:
    """TOST p-value that ``|mean(A) - mean(B)| < margin`` (paired when :func:`difference` would
    pair): below 0.05, the two are equivalent within the margin."""
    from scipy import stats

    found = difference(a, b)
    da = {s: v for s, v in a if np.isfinite(v)}
    db = {s: v for s, v in b if np.isfinite(v)}
    if found.design == "paired":
        d = np.asarray([da[s] - db[s] for s in sorted(da)])
        above = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
        below = stats.ttest_1samp(d, margin, alternative="less").pvalue
    else:
        x, y = np.asarray(list(da.values())), np.asarray(list(db.values()))
        if min(x.size, y.size) < 2:
            return 1.0
        above = stats.ttest_ind(x + margin, y, equal_var=False, alternative="greater").pvalue
        below = stats.ttest_ind(x - margin, y, equal_var=False, alternative="less").pvalue
    return _p_value(max(above, below))


def seeds_needed(
    effect: float, spread: float, paired: bool, alpha: float = 0.05, power: float = POWER
) -> int | None:
    """Seeds per variant for a two-sided t test at ``alpha`` to detect ``effect`` with
    ``power``, if the spread (sd of paired differences, or of each sample) is ``spread``: the
    smallest n whose noncentral-t power reaches ``power``. None when no effect or no spread is
    known; ``MAX_SEEDS + 1`` when even that many would not do."""
    from scipy import stats

    if not (np.isfinite(effect) and np.isfinite(spread)) or effect == 0:
        return None
    if spread == 0:
        return 2
    # The normal approximation needs fewer seeds than the t test: start the search there.
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    start = max(2, math.floor((z * spread / effect) ** 2 * (1 if paired else 2)))
    for n in range(start, MAX_SEEDS + 1):
        df = n - 1 if paired else 2 * n - 2
        scale = spread / math.sqrt(n) if paired else spread * math.sqrt(2 / n)
        shift = abs(effect) / scale
        critical = stats.t.ppf(1 - alpha / 2, df)
        reached = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
        if reached >= power:
            return n
    return MAX_SEEDS + 1
