"""Expected best score of a random hyperparameter search at a given budget, in NumPy.

The best of the N trials a random search happened to run says little on its own: it grows with
N, so two upsamplers searched with different budgets cannot be compared by it, and one lucky
trial can carry it. The expected best of k trials, for every budget k = 1..N, answers "what
would I get if I could afford k trials?" and puts both upsamplers on the same footing (Dodge et
al. 2019, "Show Your Work", expected validation performance). Their first estimator drew the k
trials with replacement, which is biased; this module uses the unbiased without-replacement form
of Dodge, Gururangan, Card, Schwartz and Smith (2021, "Expected Validation Performance and
Estimation of a Random Variable's Maximum", Findings of EMNLP): with the scores sorted so the
best is last, v_(1), ..., v_(N), the best of a random k-subset is v_(i) with probability
C(i-1, k-1) / C(N, k). The spread (standard deviation of the best of k) says how much luck that
budget still needs.

A diverged trial (NaN or infinite loss) has no score, and treating it as the worst score would
make the expected best infinite at small budgets, so ``expected_best`` accepts finite scores only,
and ``curve`` and ``robustness`` drop the non-finite ones and ``robustness`` counts them, for the
caller to report beside the curve.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

WITHIN = 0.1  # "within 10% of the best" in robustness()


def _best_last(scores: Sequence[float] | np.ndarray, lower_is_better: bool) -> np.ndarray:
    """The scores as floats, sorted so that the best is last."""
    values = np.sort(np.asarray(scores, dtype=float).ravel())
    return values[::-1] if lower_is_better else values


def _finite(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """The finite scores, flattened, as floats."""
    values = np.asarray(scores, dtype=float).ravel()
    return values[np.isfinite(values)]


def _weights(n: int, k: int) -> np.ndarray:
    """P(the i-th of n sorted scores is the best of a random k-subset), i = 1..n."""
    # Exact integers, then one correctly rounded division each: C(n, k) overflows a float near
    # n = 1030, and products of float binomials would lose digits long before that.
    total = math.comb(n, k)
    return np.array([math.comb(i - 1, k - 1) / total for i in range(1, n + 1)])


def expected_best(
    scores: Sequence[float] | np.ndarray, k: int, lower_is_better: bool = True
) -> tuple[float, float]:
    """Expected best score among ``k`` of the ``scores`` drawn without replacement, and its spread.

    The unbiased estimator of Dodge et al. (2021): the mean of the best (the minimum when
    ``lower_is_better``, else the maximum) over all C(N, k) subsets of k of the N scores, and the
    standard deviation of that best over the same subsets. ``k = N`` gives the best observed score
    with spread 0; ``k = 1`` gives the mean and the population standard deviation (ddof=0).

    Raises ValueError when there are no scores, when any score is NaN or infinite (pass the finite
    ones: a diverged trial has no score), or when ``k`` is not in 1..N.
    """
    values = np.asarray(scores, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("expected_best: no finite scores")
    if not np.all(np.isfinite(values)):
        raise ValueError("expected_best: non-finite score; pass only the finite ones")
    k = operator.index(k)  # a float budget such as 2.5 is a caller's mistake, not a rounding
    n = values.size
    if not 1 <= k <= n:
        raise ValueError(f"expected_best: k must be in 1..{n} (the number of scores), got {k}")
    weights = _weights(n, k)
    ordered = _best_last(values, lower_is_better)
    mean = float(weights @ ordered)
    # Centred second moment rather than E[x^2] - E[x]^2, which cancels to noise (or a negative
    # number under the root) when the spread is small against the scores.
    spread = math.sqrt(float(weights @ (ordered - mean) ** 2))
    return mean, spread


def curve(
    scores: Sequence[float] | np.ndarray, lower_is_better: bool = True
) -> list[dict[str, float]]:
    """The expected best and its spread at every budget: ``{"k", "expected", "spread"}`` per k.

    k runs over 1..N, N the number of finite scores. Non-finite scores are dropped: a diverged
    trial has no score, and the caller reports how many diverged (``robustness`` counts them).
    With no finite score the curve is empty.
    """
    values = _finite(scores)
    points = []
    for k in range(1, values.size + 1):
        expected, spread = expected_best(values, k, lower_is_better)
        points.append({"k": k, "expected": expected, "spread": spread})
    return points


def robustness(
    scores: Sequence[float] | np.ndarray, lower_is_better: bool = True
) -> dict[str, float]:
    """How much the score varies over the search space, for a search's ``scores``.

    Keys: ``finite`` and ``diverged`` (counts of finite and non-finite scores); ``best``,
    ``median``, ``worst`` (over the finite scores); ``q25``, ``q75`` and ``iqr = q75 - q25`` (the
    25th and 75th percentiles by value, NumPy's linear interpolation, whichever direction is
    better); ``within_10pct``, the share of finite trials whose score is within 10% of the best,
    that is within 0.1 * |best| of it, boundary included: ``score <= best + 0.1 * |best|`` when
    lower is better (``score <= 1.1 * best`` for a positive best), ``score >= best - 0.1 * |best|``
    otherwise; with a best of 0 only scores equal to it count. With no finite score the statistics
    are NaN and the counts still hold.
    """
    raw = np.asarray(scores, dtype=float).ravel()
    values = _finite(raw)
    counts = {"finite": int(values.size), "diverged": int(raw.size - values.size)}
    if values.size == 0:
        keys = ("best", "median", "q25", "q75", "iqr", "worst", "within_10pct")
        return counts | dict.fromkeys(keys, math.nan)
    best = float(values.min() if lower_is_better else values.max())
    worst = float(values.max() if lower_is_better else values.min())
    # Against |best| so that the band lies on the worse side of the best whatever its sign.
    margin = WITHIN * abs(best)
    near = values <= best + margin if lower_is_better else values >= best - margin
    q25, median, q75 = (float(q) for q in np.percentile(values, [25, 50, 75]))
    return counts | {
        "best": best,
        "median": median,
        "q25": q25,
        "q75": q75,
        "iqr": q75 - q25,
        "worst": worst,
        "within_10pct": float(np.mean(near)),
    }
