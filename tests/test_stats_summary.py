"""summarize: one count matrix per split, cells equal bootstrap_ci, paired differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.stats import bootstrap_ci, compare, draw_counts, summarize
from benchmark.stats.resample import split_seed
from benchmark.store import write_table

BY = ["model", "split", "method", "metric"]


@pytest.fixture
def scores() -> pd.DataFrame:
    """2 splits x 2 models x 2 methods x 2 metrics over unbalanced cases, some NaNs."""
    rng = np.random.default_rng(0)
    rows = []
    for split, n_cases in (("test", 15), ("val", 9)):
        for c in range(n_cases):
            case = f"{split}-{c:02d}"
            for i in range(1 + c % 4):
                for model in ("clean", "shortcut"):
                    for method in ("gradcam", "ig"):
                        for metric in ("iou@otsu", "dice@0.5"):
                            rows.append({
                                "model": model, "split": split, "method": method,
                                "metric": metric, "case_id": case, "image_id": i,
                                "value": rng.beta(2, 3),
                            })
    frame = pd.DataFrame(rows)
    frame.loc[rng.random(len(frame)) < 0.05, "value"] = np.nan
    return frame


def cell(frame: pd.DataFrame, **keys: str) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for k, v in keys.items():
        mask &= (frame[k] == v).to_numpy()
    return frame[mask]


def test_output_has_one_row_per_cell_with_the_contract_columns(scores):
    table = summarize(scores, by=BY, n_boot=200)
    assert list(table.columns) == [*BY, "estimate", "ci_low", "ci_high", "ci_method",
                                   "n_cases", "n_images", "n_nan"]
    assert len(table) == 16
    assert table[BY].equals(table[BY].sort_values(BY).reset_index(drop=True))
    assert set(table.ci_method) <= {"bca", "percentile (BCa undefined)"}


@pytest.mark.parametrize("weighting", ["case", "image"])
@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_each_cell_equals_bootstrap_ci_on_that_cell_with_the_split_seed(scores, weighting, method):
    table = summarize(scores, by=BY, n_boot=500, seed=3, weighting=weighting, method=method)
    for row in table.itertuples():
        one = cell(scores, model=row.model, split=row.split, method=row.method,
                   metric=row.metric)
        ref = bootstrap_ci(one.value, one.case_id, n_boot=500, seed=split_seed(3, row.split),
                           weighting=weighting, method=method)
        np.testing.assert_allclose([row.estimate, row.ci_low, row.ci_high],
                                   [ref.estimate, ref.ci_low, ref.ci_high], rtol=1e-12)
        assert (row.ci_method, row.n_cases, row.n_images, row.n_nan) == (
            ref.method, ref.n_cases, ref.n_images, ref.n_nan)


def test_cells_of_a_split_share_draws_so_differences_are_paired():
    rng = np.random.default_rng(5)
    n = 25
    a = rng.normal(0.5, 0.2, n)
    b = a + rng.normal(0.05, 0.02, n)  # strongly correlated with a
    frame = pd.DataFrame({
        "split": "test", "metric": np.repeat(["a", "b", "b_minus_a"], n),
        "case_id": np.tile(np.arange(n), 3), "image_id": 0, "value": np.r_[a, b, b - a],
    })
    table = summarize(frame, by=["split", "metric"], n_boot=2000, seed=1, method="percentile")
    counts = draw_counts(n, 2000, split_seed(1, "test"))
    rep_a, rep_b = counts @ a / n, counts @ b / n
    diff = table.set_index("metric").loc["b_minus_a"]
    np.testing.assert_allclose([diff.ci_low, diff.ci_high],
                               np.quantile(rep_b - rep_a, [0.025, 0.975]), rtol=1e-10)
    # paired: far narrower than either cell's own interval
    width = table.set_index("metric").eval("ci_high - ci_low")
    assert width["b_minus_a"] < 0.25 * width["a"]


def test_splits_have_their_own_case_sets_and_seeds(scores):
    table = summarize(scores, by=BY, n_boot=200)
    assert set(table.loc[table.split == "val", "n_cases"]) <= set(range(1, 10))
    assert split_seed(0, "test") != split_seed(0, "val")


def test_same_input_and_seed_give_bit_identical_tables(scores):
    first = summarize(scores, by=BY, n_boot=300, seed=4)
    again = summarize(scores.copy(), by=BY, n_boot=300, seed=4)
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    other = summarize(scores, by=BY, n_boot=300, seed=5)
    assert not np.array_equal(first.ci_low, other.ci_low)


def test_same_scores_and_seed_give_bit_identical_parquet_files(scores, tmp_path):
    # STATISTICS.md, Determinism: same inputs, configuration and seed -> bit-identical
    # summary tables. Checked on the files the run writes, not only on the frames.
    frame = scores.assign(reference="mask")

    def written(name: str, table: pd.DataFrame) -> bytes:
        path = tmp_path / f"{name}.parquet"
        write_table(table, path)
        return path.read_bytes()

    def both(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (summarize(frame, by=BY, n_boot=300, seed=seed),
                compare(frame, family="methods", n_boot=300, n_flips=500, seed=seed).table)

    summary, pairs = both(7)
    summary_again, pairs_again = both(7)
    assert written("summary", summary) == written("summary_again", summary_again)
    assert written("compare", pairs) == written("compare_again", pairs_again)

    # A different seed draws other count matrices: same estimates, other intervals.
    summary_other, pairs_other = both(8)
    assert written("summary", summary) != written("summary_other", summary_other)
    assert written("compare", pairs) != written("compare_other", pairs_other)
    np.testing.assert_array_equal(summary.estimate, summary_other.estimate)
    np.testing.assert_array_equal(pairs["diff"], pairs_other["diff"])
    for first, other in ((summary, summary_other), (pairs, pairs_other)):
        assert not np.array_equal(first.ci_low, other.ci_low)
        assert not np.array_equal(first.ci_high, other.ci_high)


def test_row_order_does_not_matter_beyond_rounding(scores):
    first = summarize(scores, by=BY, n_boot=300)
    shuffled = summarize(scores.sample(frac=1.0, random_state=1), by=BY, n_boot=300)
    pd.testing.assert_frame_equal(first, shuffled, rtol=1e-12)


def test_all_nan_cell_and_partially_missing_cases():
    frame = pd.DataFrame({
        "split": "test", "metric": ["m"] * 4 + ["empty"] * 2 + ["partial"] * 2,
        "case_id": ["a", "b", "c", "d", "a", "b", "a", "c"], "image_id": 0,
        "value": [0.1, 0.2, 0.3, 0.4, np.nan, np.nan, 0.5, np.nan],
    })
    table = summarize(frame, by=["split", "metric"], n_boot=200).set_index("metric")
    assert table.loc["empty", "ci_method"] == "undefined (no valid values)"
    assert np.isnan(table.loc["empty", "estimate"]) and table.loc["empty", "n_nan"] == 2
    partial = table.loc["partial"]
    assert (partial.estimate, partial.n_cases, partial.n_images, partial.n_nan) == (0.5, 1, 1, 1)
    assert partial.ci_method == "percentile (BCa undefined)"  # one valid case: all replicates equal


def test_stratified_summary_matches_stratified_bootstrap_ci(scores):
    test = scores[scores.split == "test"]
    label = {c: int(c[-2:]) % 3 == 0 for c in test.case_id.unique()}
    table = summarize(test, by=BY, n_boot=300, seed=2, strata=label)
    row = table.iloc[0]
    one = cell(test, model=row.model, method=row.method, metric=row.metric)
    ref = bootstrap_ci(one.value, one.case_id, n_boot=300, seed=split_seed(2, "test"),
                       strata=one.case_id.map(label))
    np.testing.assert_allclose([row.ci_low, row.ci_high], [ref.ci_low, ref.ci_high], rtol=1e-12)


def test_missing_stratum_raises(scores):
    with pytest.raises(ValueError, match="`strata` has no stratum"):
        summarize(scores, by=BY, n_boot=100, strata={"test-00": 1})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f, ["model", "metric"]), '`by` must include "split"'),
        (lambda f: (f.drop(columns="image_id"), BY), "lacks the column"),
        (lambda f: (pd.concat([f, f.iloc[:1]]), BY), "duplicated row"),
        (lambda f: (f.assign(value=np.inf), BY), "finite or NaN"),
        (lambda f: (f, [*BY, "case_id"]), "`by` must name distinct grouping columns"),
    ],
)
def test_invalid_tables_raise(scores, change, message):
    frame, by = change(scores)
    with pytest.raises(ValueError, match=message):
        summarize(frame, by=by, n_boot=100)


def test_invalid_options_raise(scores):
    with pytest.raises(ValueError, match="`n_boot` must be an integer >= 100"):
        summarize(scores, by=BY, n_boot=10)
    with pytest.raises(ValueError, match="`weighting` must be one of"):
        summarize(scores, by=BY, weighting="pixel")


def test_duplicate_check_from_group_codes_flags_the_rows_duplicated_flags():
    from benchmark.stats._validation import check_unique_rows, group_rows

    frame = pd.DataFrame({"split": ["a", "a", "b", "a", None, None],
                          "case_id": [1, 1, 1, 2, 3, 3],
                          "image_id": [0, 0, 0, 0, np.nan, np.nan]})
    keys = ["split", "case_id", "image_id"]
    cell, table = group_rows(frame, ["split"])
    assert frame.duplicated(subset=keys).sum() == 2
    with pytest.raises(ValueError, match=r"has 2 duplicated row\(s\).*'case_id': 1"):
        check_unique_rows(frame, "scores", keys, groups=(["split"], cell, len(table)))
    unique = frame.drop_duplicates(subset=keys)
    cell, table = group_rows(unique, ["split"])
    check_unique_rows(unique, "scores", keys, groups=(["split"], cell, len(table)))
