"""bootstrap_ci and its parts: agreement with scipy, jackknife, z0, weighting, NaN, strata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from scipy.special import ndtri

from benchmark.stats import (
    BootstrapResult,
    bca_interval,
    bootstrap_ci,
    draw_counts,
    percentile_interval,
)
from benchmark.stats.aggregate import cell_case_sums, ratio_jackknife, ratio_terms
from benchmark.stats.intervals import bias_correction, jackknife_acceleration


@pytest.fixture
def skewed() -> np.ndarray:
    """40 skewed values, one image per case."""
    return np.random.default_rng(3).lognormal(0.0, 1.0, size=40)


@pytest.fixture
def clustered() -> pd.DataFrame:
    """Unbalanced clusters with NaNs: case sizes 1..9, one all-NaN case."""
    rng = np.random.default_rng(11)
    rows = []
    for c in range(12):
        size = 1 + c % 9
        level = rng.normal(0.5, 0.2)
        for i in range(size):
            value = level + rng.normal(0, 0.1)
            rows.append({"case_id": f"c{c:02d}", "image_id": i, "value": value})
    frame = pd.DataFrame(rows)
    frame.loc[frame.case_id == "c03", "value"] = np.nan  # all-NaN case
    frame.loc[[5, 20], "value"] = np.nan
    return frame


def brute_force_mean(frame: pd.DataFrame, weighting: str) -> float:
    valid = frame.dropna(subset=["value"])
    if weighting == "case":
        return float(valid.groupby("case_id")["value"].mean().mean())
    return float(valid["value"].mean())


def mc_sd_of_quantile(replicates: np.ndarray, p: float) -> float:
    """Monte Carlo SD of the p-quantile of B replicates: half the spread of the quantiles at
    p -/+ one binomial SD of the empirical CDF, sqrt(p (1 - p) / B)."""
    d = np.sqrt(p * (1 - p) / replicates.size)
    lo, hi = np.quantile(replicates, [max(p - d, 0.0), min(p + d, 1.0)])
    return float(hi - lo) / 2


# --- agreement with scipy.stats.bootstrap ------------------------------------------------


def test_bca_interval_equals_scipy_given_scipys_replicates(skewed):
    res = scipy.stats.bootstrap(
        (skewed,), np.mean, n_resamples=5000, method="BCa", rng=np.random.default_rng(1)
    )
    jackknife = np.array([np.delete(skewed, i).mean() for i in range(skewed.size)])
    low, high, _, _ = bca_interval(skewed.mean(), res.bootstrap_distribution, jackknife, 0.95)
    np.testing.assert_allclose([low, high], res.confidence_interval, rtol=1e-12)


def test_bootstrap_ci_agrees_with_scipy_bca_within_monte_carlo_error(skewed):
    n_boot = 20_000
    ours = bootstrap_ci(skewed, np.arange(skewed.size), n_boot=n_boot, seed=7)
    ref = scipy.stats.bootstrap(
        (skewed,), np.mean, n_resamples=n_boot, method="BCa", rng=np.random.default_rng(8)
    )
    assert ours.method == "bca"
    assert ours.estimate == pytest.approx(skewed.mean(), rel=1e-12)
    # Both endpoints are quantiles of independent B-replicate samples at (nearly) the same
    # adjusted level; their difference has SD ~ sqrt(2) x the MC SD of one quantile. Allow
    # 5 SD (a false failure has probability < 1e-6 under the normal approximation).
    _, _, a, z0 = bca_interval(ours.estimate, ours.bootstrap_distribution,
                               [np.delete(skewed, i).mean() for i in range(40)], 0.95)
    for ours_end, ref_end, z in ((ours.ci_low, ref.confidence_interval.low, -1.96),
                                 (ours.ci_high, ref.confidence_interval.high, 1.96)):
        p = scipy.stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        sd = mc_sd_of_quantile(ours.bootstrap_distribution, p)
        assert abs(ours_end - ref_end) < 5 * np.sqrt(2) * sd
    assert ours.standard_error == pytest.approx(ref.standard_error, rel=0.05)


def test_jackknife_acceleration_equals_brute_force_leave_one_case_out(clustered):
    for weighting in ("case", "image"):
        valid_cases = sorted(clustered.dropna().case_id.unique())
        loo = np.array([
            brute_force_mean(clustered[clustered.case_id != c], weighting) for c in valid_cases
        ])
        d = loo.mean() - loo
        expected = (d**3).sum() / (6 * (d**2).sum() ** 1.5)

        codes, _ = pd.factorize(clustered.case_id, sort=True)
        sums, n_valid, _ = cell_case_sums(
            clustered.value.to_numpy(), np.zeros(len(clustered), int), 1, codes, codes.max() + 1
        )
        jack = ratio_jackknife(*ratio_terms(sums, n_valid, weighting))[:, 0]
        np.testing.assert_allclose(jack[np.isfinite(jack)], loo, rtol=1e-12)
        assert np.isnan(jack).sum() == 1  # the all-NaN case is not a jackknife case
        assert float(jackknife_acceleration(jack)) == pytest.approx(expected, rel=1e-10)


def test_acceleration_matches_scipy_scaling():
    rng = np.random.default_rng(0)
    jk = rng.normal(size=25)
    n = jk.size
    u = (n - 1) * (jk.mean() - jk)  # scipy's U_i with its 1/n^3 and 1/n^2 factors
    scipy_a = (u**3).sum() / n**3 / 6 / ((u**2).sum() / n**2) ** 1.5
    assert float(jackknife_acceleration(jk)) == pytest.approx(scipy_a, rel=1e-12)


def test_z0_counts_ties_as_one_half_and_ignores_nan():
    reps = np.array([1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, np.nan])
    # 2 below, 2 tied, 10 finite: (2 + 2/2) / 10 = 0.3
    assert float(bias_correction(3.0, reps)) == pytest.approx(ndtri(0.3), rel=1e-15)
    _, _, _, z0 = bca_interval(3.0, reps, np.arange(5.0), 0.9)
    assert float(z0) == pytest.approx(ndtri(0.3), rel=1e-15)


def test_z0_infinite_when_all_replicates_on_one_side_gives_no_bca():
    low, high, _, z0 = bca_interval(0.0, np.arange(1.0, 101.0), np.arange(5.0), 0.95)
    assert np.isinf(z0) and np.isnan(low) and np.isnan(high)


# --- percentile interval and fallback -------------------------------------------------


def test_percentile_interval_equals_numpy_quantiles():
    reps = np.random.default_rng(2).gamma(2.0, size=(1001, 3))
    reps[[4, 9], 1] = np.nan  # left out of column 1 only
    low, high = percentile_interval(reps, 0.9)
    alpha = (1 - 0.9) / 2  # as scipy: the float 0.9 gives alpha = 0.04999999999999999
    for k in range(3):
        col = reps[:, k][np.isfinite(reps[:, k])]
        assert low[k] == np.quantile(col, alpha)
        assert high[k] == np.quantile(col, 1 - alpha)


def test_percentile_interval_of_one_statistic_is_scalar():
    low, high = percentile_interval(np.arange(11.0), 0.5)
    assert low.shape == () and (float(low), float(high)) == (2.5, 7.5)


def test_bca_vectorised_over_columns_equals_one_column_at_a_time():
    rng = np.random.default_rng(4)
    reps, jack, theta = rng.normal(size=(500, 4)), rng.normal(size=(20, 4)), rng.normal(size=4)
    jack[3, 2] = np.nan
    together = bca_interval(theta, reps, jack, 0.9)
    for k in range(4):
        alone = bca_interval(theta[k], reps[:, k], jack[:, k][np.isfinite(jack[:, k])], 0.9)
        np.testing.assert_allclose([t[k] for t in together], alone, rtol=1e-13)


def test_all_values_equal_falls_back_to_percentile():
    res = bootstrap_ci(np.full(30, 0.25), np.repeat(np.arange(10), 3), n_boot=200)
    assert res.method == "percentile (BCa undefined)"
    assert res.confidence_interval == (0.25, 0.25)
    low, _, a, _ = bca_interval(0.25, np.full(200, 0.25), np.full(10, 0.25), 0.95)
    assert np.isnan(low) and np.isnan(a)


def test_percentile_method_is_reported_and_matches_quantiles(skewed):
    res = bootstrap_ci(skewed, np.arange(40), n_boot=1000, method="percentile", level=0.5)
    assert res.method == "percentile"
    assert res.ci_low == np.quantile(res.bootstrap_distribution, 0.25)
    assert res.ci_high == np.quantile(res.bootstrap_distribution, 0.75)


# --- estimands, NaN, strata -----------------------------------------------------------


def test_case_and_image_weighting_equal_closed_forms():
    values = [1.0, 2.0, 3.0, 4.0, 10.0, 5.0, 7.0]
    cases = ["a", "a", "a", "a", "b", "c", "c"]
    case = bootstrap_ci(values, cases, n_boot=200, weighting="case")
    image = bootstrap_ci(values, cases, n_boot=200, weighting="image")
    assert case.estimate == pytest.approx((2.5 + 10.0 + 6.0) / 3, rel=1e-14)
    assert image.estimate == pytest.approx(32.0 / 7, rel=1e-14)


def test_nan_images_dropped_and_all_nan_case_excluded(clustered):
    res = bootstrap_ci(clustered.value, clustered.case_id, n_boot=500)
    assert res.estimate == pytest.approx(brute_force_mean(clustered, "case"), rel=1e-13)
    assert res.n_cases == 11
    assert res.n_nan == int(clustered.value.isna().sum())
    assert res.n_images == int(clustered.value.notna().sum())
    image = bootstrap_ci(clustered.value, clustered.case_id, n_boot=500, weighting="image")
    assert image.estimate == pytest.approx(brute_force_mean(clustered, "image"), rel=1e-13)


def test_replicates_are_the_statistic_at_the_drawn_counts(clustered):
    """The contract summarize relies on: cases numbered in sorted label order, counts from
    draw_counts(n_cases, n_boot, seed)."""
    res = bootstrap_ci(clustered.value, clustered.case_id, n_boot=300, seed=42)
    means = clustered.groupby("case_id")["value"].mean()  # sorted case ids; NaN for c03
    counts = draw_counts(len(means), 300, 42)
    valid = means.notna().to_numpy()
    expected = counts @ means.fillna(0).to_numpy() / (counts @ valid)
    np.testing.assert_allclose(res.bootstrap_distribution, expected, rtol=1e-12)


def test_all_nan_values_give_an_undefined_result():
    res = bootstrap_ci([np.nan, np.nan], ["a", "b"], n_boot=100)
    assert np.isnan(res.estimate) and np.isnan(res.ci_low)
    assert res.method == "undefined (no valid values)" and res.n_cases == 0


def test_stratified_counts_keep_per_stratum_totals():
    strata = np.array(["pos"] * 7 + ["neg"] * 13)
    rng_order = np.random.default_rng(0).permutation(20)
    counts = draw_counts(20, 500, seed=3, strata=strata[rng_order])
    for label, size in (("pos", 7), ("neg", 13)):
        assert (counts[:, strata[rng_order] == label].sum(axis=1) == size).all()
    assert counts.shape == (500, 20) and counts.dtype == np.int64


def test_unstratified_counts_have_multinomial_moments():
    n, n_boot = 20, 50_000
    counts = draw_counts(n, n_boot, seed=1)
    assert (counts.sum(axis=1) == n).all()
    # Multinomial(n, 1/n): mean 1, variance (n-1)/n, covariance -1/n. Tolerances are
    # 5 standard errors of these moment estimates over 50,000 rows (and 20 columns).
    assert counts.mean(axis=0) == pytest.approx(np.ones(n), abs=5 * np.sqrt(0.95 / n_boot))
    assert counts.var(axis=0).mean() == pytest.approx((n - 1) / n, abs=0.01)
    assert np.cov(counts[:, 0], counts[:, 1])[0, 1] == pytest.approx(-1 / n, abs=0.025)
    assert np.array_equal(counts, draw_counts(n, n_boot, seed=1))


def test_bootstrap_ci_with_strata_uses_stratified_counts(clustered):
    case_label = {c: int(c[1:]) % 2 for c in clustered.case_id.unique()}
    strata = clustered.case_id.map(case_label)
    res = bootstrap_ci(clustered.value, clustered.case_id, n_boot=300, seed=5, strata=strata)
    means = clustered.groupby("case_id")["value"].mean()
    counts = draw_counts(len(means), 300, 5, strata=[case_label[c] for c in means.index])
    expected = counts @ means.fillna(0).to_numpy() / (counts @ means.notna().to_numpy())
    np.testing.assert_allclose(res.bootstrap_distribution, expected, rtol=1e-12)


def test_strata_must_be_constant_within_cases():
    with pytest.raises(ValueError, match="`strata` must be constant within each case"):
        bootstrap_ci([1.0, 2.0, 3.0], ["a", "a", "b"], n_boot=100, strata=[0, 1, 1])


# --- result object, determinism, validation -----------------------------------------


def test_result_is_frozen_with_scipy_like_interval(skewed):
    res = bootstrap_ci(skewed, np.arange(40), n_boot=200)
    assert isinstance(res, BootstrapResult)
    low, high = res.confidence_interval
    assert (low, high) == (res.ci_low, res.ci_high) == (res.confidence_interval.low,
                                                         res.confidence_interval.high)
    assert res.bootstrap_distribution.shape == (200,) and res.level == 0.95
    with pytest.raises(AttributeError):
        res.estimate = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.bootstrap_distribution[0] = 0.0


def test_same_seed_same_result_different_seed_different_draws(clustered):
    a = bootstrap_ci(clustered.value, clustered.case_id, n_boot=300, seed=9)
    b = bootstrap_ci(clustered.value, clustered.case_id, n_boot=300, seed=9)
    c = bootstrap_ci(clustered.value, clustered.case_id, n_boot=300, seed=10)
    assert np.array_equal(a.bootstrap_distribution, b.bootstrap_distribution)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert not np.array_equal(a.bootstrap_distribution, c.bootstrap_distribution)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_boot": 99}, "`n_boot` must be an integer >= 100"),
        ({"n_boot": 1000.0}, "`n_boot` must be an integer"),
        ({"level": 1.0}, "`level` must be between 0 and 1"),
        ({"level": 95}, "`level` must be between 0 and 1"),
        ({"method": "BCa"}, '`method` must be one of "bca", "percentile"'),
        ({"weighting": "pooled"}, '`weighting` must be one of "case", "image"'),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
        ({"strata": [0, 1]}, "`strata` must have the same length"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        bootstrap_ci([0.1, 0.2, 0.3], ["a", "b", "c"], **kwargs)


def test_invalid_data_raise():
    with pytest.raises(ValueError, match="`cases` must have the same length"):
        bootstrap_ci([0.1, 0.2], ["a"])
    with pytest.raises(ValueError, match="finite or NaN"):
        bootstrap_ci([0.1, np.inf], ["a", "b"])
    with pytest.raises(ValueError, match="missing labels"):
        bootstrap_ci([0.1, 0.2], ["a", None])


@pytest.mark.parametrize(
    "module",
    ["resample", "intervals", "ci", "summary", "auroc", "classification", "engine"],
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"benchmark.stats.{module}"))
    assert result.failed == 0


def test_sort_rows_sets_non_finite_to_nan_and_sorts_them_last():
    from benchmark.stats.intervals import sort_rows

    rows = np.random.default_rng(0).normal(size=(5, 50))
    rows[1, 3] = np.inf
    rows[2, [0, 9]] = -np.inf
    rows[3, 7] = np.nan
    expected = np.where(np.isfinite(rows), rows, np.nan)
    expected.sort(axis=1)
    ordered, n_finite = sort_rows(rows.copy())
    np.testing.assert_array_equal(ordered, expected)
    assert n_finite.tolist() == [50, 49, 48, 49, 50]


def test_z0_counts_ties_on_rows_with_non_finite_replicates():
    reps = np.array([[0.1, 0.2, 0.2, np.nan, 0.5, -np.inf]]).T
    # finite: 0.1, 0.2, 0.2, 0.5; below 0.2: 1, ties: 2 -> (1 + 1) / 4
    assert bias_correction(0.2, reps)[0] == pytest.approx(ndtri(0.5))
    assert bias_correction(np.nan, reps)[0] == -np.inf
