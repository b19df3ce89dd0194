"""The expected best of k trials of src/study/expected_best.py against brute force over every
k-subset, its ends (k = N, k = 1), its monotonicity, its errors, and the curve and robustness
summaries on planted searches."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from src.study.expected_best import curve, expected_best, robustness

SCORES = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]


def _brute_force(scores: list[float], k: int, lower_is_better: bool) -> tuple[float, float]:
    """Mean and population std of the best over all C(N, k) subsets of k scores."""
    pick = min if lower_is_better else max
    bests = np.array([pick(subset) for subset in itertools.combinations(scores, k)])
    assert bests.size == math.comb(len(scores), k)
    return float(bests.mean()), float(bests.std())


@pytest.mark.parametrize("lower_is_better", [True, False])
@pytest.mark.parametrize("k", range(1, len(SCORES) + 1))
def test_matches_brute_force_over_all_subsets(k: int, lower_is_better: bool) -> None:
    """The closed form equals the mean and std of the best over every k-subset, both ways."""
    expected, spread = expected_best(SCORES, k, lower_is_better)
    want_mean, want_std = _brute_force(SCORES, k, lower_is_better)
    assert expected == pytest.approx(want_mean, rel=1e-12)
    assert spread == pytest.approx(want_std, rel=1e-12, abs=1e-12)


def test_ties_match_brute_force() -> None:
    """Repeated scores (ties in the sort) still give the brute-force mean and std."""
    scores = [2.0, 1.0, 2.0, 1.0, 5.0, 2.0, 7.0]
    for k in range(1, len(scores) + 1):
        for lower_is_better in (True, False):
            got = expected_best(scores, k, lower_is_better)
            assert got == pytest.approx(_brute_force(scores, k, lower_is_better), rel=1e-12)


def test_k_equal_n_is_the_best_observed_with_no_spread() -> None:
    """With every trial drawn, the expected best is exactly the best score and the spread 0."""
    assert expected_best(SCORES, len(SCORES)) == (min(SCORES), 0.0)
    assert expected_best(SCORES, len(SCORES), lower_is_better=False) == (max(SCORES), 0.0)


def test_k_one_is_the_mean_and_population_std() -> None:
    """One trial's expected score is the mean, its spread np.std (ddof=0), either direction."""
    for lower_is_better in (True, False):
        expected, spread = expected_best(SCORES, 1, lower_is_better)
        assert expected == pytest.approx(np.mean(SCORES), rel=1e-12)
        assert spread == pytest.approx(np.std(SCORES), rel=1e-12)


def test_never_gets_worse_as_the_budget_grows() -> None:
    """More trials never make the expected best worse, on 200 random scores, both directions."""
    scores = np.random.default_rng(3).lognormal(size=200)
    lower = [point["expected"] for point in curve(scores)]
    higher = [point["expected"] for point in curve(scores, lower_is_better=False)]
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(lower))
    assert all(b >= a * (1 - 1e-12) for a, b in itertools.pairwise(higher))
    assert lower[-1] == scores.min()
    assert higher[-1] == scores.max()


def test_large_search_stays_finite() -> None:
    """Past the float range of C(N, k) (N = 1200) the weights still sum to a finite answer."""
    scores = np.linspace(0.0, 1.0, 1200)
    expected, spread = expected_best(scores, 600)
    assert 0.0 <= expected <= 1.0 / 599
    assert math.isfinite(spread)


@pytest.mark.parametrize(
    ("scores", "k"),
    [
        (SCORES, 0),
        (SCORES, len(SCORES) + 1),
        ([1.0, math.nan, 2.0], 1),
        ([1.0, math.inf, 2.0], 1),
        ([], 1),
    ],
)
def test_bad_budget_or_scores_raise(scores: list[float], k: int) -> None:
    """k < 1, k > N, a NaN or infinite score, or no scores at all raise ValueError."""
    with pytest.raises(ValueError, match="expected_best"):
        expected_best(scores, k)


def test_curve_drops_diverged_trials() -> None:
    """The curve skips NaN/inf scores, has one point per finite score and matches the estimator."""
    scores = [*SCORES, math.nan, math.inf, -math.inf]
    points = curve(scores)
    assert [point["k"] for point in points] == list(range(1, len(SCORES) + 1))
    for point in points:
        assert (point["expected"], point["spread"]) == expected_best(SCORES, point["k"])
    assert curve([math.nan, math.inf]) == []


def test_robustness_on_a_planted_search() -> None:
    """Counts, quartiles and the within-10% share on scores chosen to give round answers."""
    # 9 finite scores at 2.0, 2.1, ..., 2.8 (quartiles land on the 3rd and 7th) and 2 diverged
    scores = [2.5, math.nan, 2.8, 2.0, 2.6, 2.2, math.inf, 2.4, 2.1, 2.7, 2.3]
    assert sorted(s for s in scores if math.isfinite(s)) == pytest.approx(np.arange(2.0, 2.85, 0.1))
    summary = robustness(scores)
    assert summary["finite"] == 9
    assert summary["diverged"] == 2
    assert summary["best"] == 2.0
    assert summary["worst"] == 2.8
    assert summary["median"] == pytest.approx(2.4)
    assert summary["q25"] == pytest.approx(2.2)
    assert summary["q75"] == pytest.approx(2.6)
    assert summary["iqr"] == pytest.approx(0.4)
    # 2.0, 2.1 and 2.2 (the boundary, 1.1 * best) are within 10%
    assert summary["within_10pct"] == pytest.approx(3 / 9)


def test_robustness_when_higher_is_better_and_for_a_negative_best() -> None:
    """The 10% band lies on the worse side of the best, whatever the direction or sign."""
    higher = robustness([10.0, 9.5, 9.0, 8.0, 5.0], lower_is_better=False)
    assert (higher["best"], higher["worst"]) == (10.0, 5.0)
    assert higher["within_10pct"] == pytest.approx(3 / 5)  # 10, 9.5 and 9 (>= 0.9 * 10)
    negative = robustness([-10.0, -9.5, -8.0, -3.0])  # lower is better: best -10, band up to -9
    assert negative["within_10pct"] == pytest.approx(2 / 4)


def test_robustness_with_every_trial_diverged() -> None:
    """All-diverged searches still count their trials; the statistics are NaN, not an error."""
    summary = robustness([math.nan, math.inf])
    assert (summary["finite"], summary["diverged"]) == (0, 2)
    assert math.isnan(summary["best"])
    assert math.isnan(summary["within_10pct"])
