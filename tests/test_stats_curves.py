"""Threshold-curve medians and their case-bootstrap bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.stats import draw_counts
from benchmark.stats.curves import curve_table, weighted_median
from benchmark.stats.resample import split_seed


def test_weighted_median_equals_numpy_on_the_repeated_sample():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        values = rng.integers(0, 5, n).astype(float)  # many ties
        counts = rng.integers(0, 4, (5, n))
        counts[:, 0] += 1  # every row draws something
        got = weighted_median(values, counts)
        expected = [np.median(np.repeat(values, c)) for c in counts]
        assert np.allclose(got, expected)
        # The same counts as columns of a wider matrix, gathered by ``columns``.
        wide = np.zeros((5, n + 3), counts.dtype)
        columns = rng.permutation(n + 3)[:n]
        wide[:, columns] = counts
        np.testing.assert_array_equal(weighted_median(values, wide, columns), got)


def test_weighted_median_counts_past_int16():
    # Row totals above 32,767 need int32 running sums (int16 ones would wrap).
    values = np.array([3.0, 1.0, 2.0])
    counts = np.array([[20_000, 10_000, 5_000], [1, 40_000, 1], [0, 0, 33_000]])
    expected = [np.median(np.repeat(values, c)) for c in counts]
    np.testing.assert_array_equal(weighted_median(values, counts), expected)
    assert expected == [3.0, 1.0, 2.0]


@pytest.fixture(scope="module")
def curves():
    rng = np.random.default_rng(1)
    rows = []
    for split in ("test", "shifted"):
        for c in range(15):
            for i in range(2):
                for tau in (0.25, 0.5):
                    v = rng.normal(tau, 0.1)
                    rows.append(dict(model="m", split=split, method="gc", reference="consensus",
                                     metric="iou", threshold=tau, case_id=f"c{c:02d}",
                                     image_id=f"c{c:02d}-{i}",
                                     value=np.nan if (c == 3 and i == 0) else v))
    return pd.DataFrame(rows)


def test_median_is_over_case_means_and_band_is_the_percentile_of_brute_force(curves):
    out = curve_table(curves, n_boot=500, seed=4)
    assert len(out) == 4
    sub = curves[(curves.split == "test") & (curves.threshold == 0.5)]
    means = sub.groupby("case_id").value.mean().sort_index()
    row = out[(out.split == "test") & (out.threshold == 0.5)].iloc[0]
    assert row["median"] == pytest.approx(np.median(means))
    counts = draw_counts(15, 500, split_seed(4, "test"))
    reps = [np.median(np.repeat(means.to_numpy(), c)) for c in counts]
    assert (row.ci_low, row.ci_high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    assert row.n_cases == 15


def test_deterministic_and_seed_dependent(curves):
    a = curve_table(curves, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a, curve_table(curves, n_boot=300, seed=1))
    assert not a.ci_low.equals(curve_table(curves, n_boot=300, seed=2).ci_low)
