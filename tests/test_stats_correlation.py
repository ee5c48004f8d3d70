"""spearman_table: Spearman's rho of probability and metric over cases, case bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import benchmark.stats.correlation as correlation
import benchmark.stats.summary as summary_module
from benchmark.stats import draw_counts, summarize
from benchmark.stats.correlation import spearman_table, weighted_spearman
from benchmark.stats.resample import split_seed

KEYS = ["model", "split", "method", "reference", "metric"]
JOIN = ["model", "split", "case_id", "image_id"]
N_CASES = {"test": 14, "val": 7}


@pytest.fixture
def predictions() -> pd.DataFrame:
    """Two models, two splits, 1-4 images per case. Probabilities are multiples of 1/16 and
    metric values multiples of 1/32, so per-case means are exact whatever the summation
    order, and ties among them (and among 0/1 pointing-game means) are real ties."""
    rng = np.random.default_rng(11)
    rows = []
    for split, n in N_CASES.items():
        for c in range(n):
            for i in range(1 + c % 4):
                for model in ("cnn", "vit"):
                    rows.append({"model": model, "split": split, "case_id": f"{split}{c:02d}",
                                 "image_id": i, "label": c % 2,
                                 "score": rng.integers(1, 16) / 16})
    return pd.DataFrame(rows)


@pytest.fixture
def scores(predictions: pd.DataFrame) -> pd.DataFrame:
    """Every image x two methods x (iou, pointing_game), 10% NaN; in (cnn, test, gradcam,
    iou) case test03 is all NaN, so it is in the split's case set but not in that cell."""
    rng = np.random.default_rng(12)
    frames = []
    for method in ("gradcam", "ig"):
        for metric in ("iou", "pointing_game"):
            f = predictions[JOIN].copy()
            f["method"], f["reference"], f["metric"] = method, "mask", metric
            if metric == "iou":
                f["value"] = rng.integers(0, 33, len(f)) / 32
            else:
                f["value"] = rng.integers(0, 2, len(f)).astype(float)
            f.loc[rng.random(len(f)) < 0.1, "value"] = np.nan
            frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    gone = ((out.model == "cnn") & (out.split == "test") & (out.method == "gradcam")
            & (out.metric == "iou") & (out.case_id == "test03"))
    out.loc[gone, "value"] = np.nan
    return out[["model", "split", "method", "case_id", "image_id", "reference", "metric",
                "value"]]


def case_means(scores: pd.DataFrame, predictions: pd.DataFrame, **cell: str) -> pd.DataFrame:
    """Per-case means of probability and value of one cell, NaN images dropped, by case_id."""
    mask = np.ones(len(scores), dtype=bool)
    for k, v in cell.items():
        mask &= (scores[k] == v).to_numpy()
    joined = scores[mask].merge(predictions, on=JOIN).dropna(subset=["value"])
    return joined.groupby("case_id")[["score", "value"]].mean().sort_index()


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        return float(scipy.stats.spearmanr(x, y).statistic)


def brute_force_replicates(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman's rho of the resampled cases, one scipy call per replicate."""
    return np.array([spearman(np.repeat(x, c), np.repeat(y, c)) for c in counts])


CELL = {"model": "cnn", "split": "test", "method": "gradcam", "reference": "mask"}


def test_table_has_one_sorted_row_per_cell_with_the_contract_columns(scores, predictions):
    table = spearman_table(scores, predictions, n_boot=100)
    assert list(table.columns) == [*KEYS, "rho", "ci_low", "ci_high", "ci_method", "n_cases"]
    assert len(table) == 2 * 2 * 2 * 2
    assert table[KEYS].equals(table[KEYS].sort_values(KEYS).reset_index(drop=True))


@pytest.mark.parametrize("metric", ["iou", "pointing_game"])
def test_rho_is_spearmanr_of_case_means_with_nan_images_dropped(scores, predictions, metric):
    table = spearman_table(scores, predictions, n_boot=100).set_index(KEYS)
    for (model, split, method, reference, m), row in table.iterrows():
        if m != metric:
            continue
        means = case_means(scores, predictions, model=model, split=split, method=method,
                           reference=reference, metric=m)
        assert row.n_cases == len(means)
        assert row.rho == pytest.approx(spearman(means.score, means.value), abs=1e-12)
    assert table.loc[(*CELL.values(), "iou"), "n_cases"] == N_CASES["test"] - 1


def test_probability_means_use_only_the_images_with_a_value(scores, predictions):
    """Averaging the probability over all images of a case instead gives another rho here,
    so the previous test would notice that mistake."""
    rho = spearman_table(scores, predictions, n_boot=100).set_index(KEYS).loc[
        (*CELL.values(), "iou"), "rho"]
    means = case_means(scores, predictions, **CELL, metric="iou")
    all_images = predictions[(predictions.model == "cnn") & (predictions.split == "test")]
    naive = all_images.groupby("case_id").score.mean().loc[means.index]
    assert spearman(naive, means.value) != pytest.approx(rho, abs=1e-6)
    assert rho == pytest.approx(spearman(means.score, means.value), abs=1e-12)


@pytest.mark.parametrize("ties", ["none", "x", "y", "both"])
def test_weighted_replicates_equal_spearmanr_of_repeated_cases(ties):
    rng = np.random.default_rng(5)
    n = 17
    x = rng.integers(0, 5, n).astype(float) if ties in ("x", "both") else rng.random(n)
    y = rng.integers(0, 2, n).astype(float) if ties in ("y", "both") else rng.random(n)
    counts = draw_counts(n, 300, seed=9)
    expected = brute_force_replicates(x, y, counts)
    got = weighted_spearman(x, y, counts)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.isnan(got).sum() == np.isnan(expected).sum()
    assert weighted_spearman(x, y, np.ones(n, dtype=int)) == pytest.approx(
        spearman(x, y), abs=1e-12)


@pytest.mark.parametrize(("n_split", "n", "dtypes"), [
    (200, 10, (np.int32, np.int32)),
    (1500, 60, (np.int32, np.int64)),
])
def test_weighted_replicates_with_large_totals_equal_spearmanr(n_split, n, dtypes):
    """Weight totals above 181 no longer fit int16 storage; large sums need int64."""
    assert correlation._dtypes(n, n_split) == dtypes
    rng = np.random.default_rng(6)
    counts = draw_counts(n_split, 8, seed=1)[:, :n]
    x, y = rng.random(n), rng.integers(0, 4, n).astype(float)
    np.testing.assert_allclose(weighted_spearman(x, y, counts),
                               brute_force_replicates(x, y, counts), rtol=0, atol=1e-12)


def test_replicate_with_one_distinct_case_drawn_is_nan():
    x, y = np.array([0.1, 0.5, 0.9]), np.array([1.0, 0.0, 2.0])
    got = weighted_spearman(x, y, [[3, 0, 0], [0, 2, 1], [1, 1, 1]])
    assert np.isnan(got[0])
    assert got[1] == pytest.approx(1.0)
    assert got[2] == pytest.approx(0.5)


@pytest.mark.parametrize("metric", ["iou", "pointing_game"])
def test_interval_is_the_percentile_interval_of_brute_force_replicates(
    scores, predictions, metric
):
    """Counts drawn over ALL cases of the split (sorted), restricted to the cell's cases."""
    n_boot, level, seed = 400, 0.9, 4
    table = spearman_table(scores, predictions, n_boot=n_boot, level=level, seed=seed)
    row = table.set_index(KEYS).loc[(*CELL.values(), metric)]
    split_cases = np.sort(scores.loc[scores.split == "test", "case_id"].unique())
    counts = draw_counts(len(split_cases), n_boot, split_seed(seed, "test"))
    means = case_means(scores, predictions, **CELL, metric=metric)
    in_cell = np.searchsorted(split_cases, means.index.to_numpy())
    reps = brute_force_replicates(means.score.to_numpy(), means.value.to_numpy(),
                                  counts[:, in_cell])
    finite = reps[np.isfinite(reps)]
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    assert row.ci_method == "percentile"
    assert row.ci_low == pytest.approx(low, abs=1e-12)
    assert row.ci_high == pytest.approx(high, abs=1e-12)


def test_monotone_data_gives_rho_one_and_a_degenerate_interval():
    cases = [f"c{i}" for i in range(10)]
    prob = np.linspace(0.05, 0.95, 10)
    predictions = pd.DataFrame({"model": "m", "split": "test", "case_id": cases,
                                "image_id": 0, "score": prob})
    scores = predictions[JOIN].assign(method="gradcam", reference="mask", metric="iou",
                                      value=prob**2)
    down = scores.assign(metric="distance", value=1 - prob)
    table = spearman_table(pd.concat([scores, down]), predictions, n_boot=200)
    table = table.set_index("metric")
    assert table.loc["iou", ["rho", "ci_low", "ci_high"]].tolist() == pytest.approx([1, 1, 1])
    assert table.loc["distance", ["rho", "ci_low", "ci_high"]].tolist() == pytest.approx(
        [-1, -1, -1])


def test_undefined_cells_are_nan_and_say_why():
    cases = ["a", "b", "c", "d"]
    predictions = pd.DataFrame({"model": "m", "split": "test", "case_id": cases,
                                "image_id": 0, "score": [0.2, 0.4, 0.6, 0.8]})
    base = predictions[JOIN].assign(method="gradcam", reference="mask")
    scores = pd.concat([
        base.assign(metric="constant", value=0.5),
        base.assign(metric="two_cases", value=[0.1, 0.2, np.nan, np.nan]),
        base.assign(metric="fine", value=[0.1, 0.3, 0.2, 0.4]),
    ])
    table = spearman_table(scores, predictions, n_boot=100).set_index("metric")
    assert table.loc["constant", "ci_method"] == "undefined (constant metric)"
    assert table.loc["two_cases", "ci_method"] == "undefined (fewer than 3 cases)"
    assert table.loc["two_cases", "n_cases"] == 2
    for metric in ("constant", "two_cases"):
        assert table.loc[metric, ["rho", "ci_low", "ci_high"]].isna().all()
    assert table.loc["fine", "ci_method"] == "percentile"
    flat = predictions.assign(score=0.5)
    out = spearman_table(base.assign(metric="fine", value=[0.1, 0.3, 0.2, 0.4]), flat,
                         n_boot=100)
    assert out.ci_method.tolist() == ["undefined (constant probability)"]
    assert np.isnan(out.rho[0])


def test_same_seed_gives_identical_tables_whatever_the_chunking(scores, predictions,
                                                                 monkeypatch):
    first = spearman_table(scores, predictions, n_boot=300, seed=7)
    monkeypatch.setattr(correlation, "CHUNK_ELEMENTS", 1)  # one 256-column block at a time
    again = spearman_table(scores, predictions, n_boot=300, seed=7)
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    other = spearman_table(scores, predictions, n_boot=300, seed=8)
    assert not np.array_equal(first.ci_low, other.ci_low, equal_nan=True)
    pd.testing.assert_series_equal(first.rho, other.rho)


@pytest.mark.parametrize("stratified", [False, True])
def test_count_matrices_are_the_draws_of_summarize(scores, predictions, monkeypatch,
                                                   stratified):
    calls: dict[str, list[tuple]] = {"summary": [], "correlation": []}

    def recording(name):
        def draw(*args):
            n_cases, n_boot, seed, strata = args
            calls[name].append((n_cases, n_boot, seed,
                                None if strata is None else list(strata)))
            return draw_counts(*args)
        return draw

    monkeypatch.setattr(summary_module, "draw_counts", recording("summary"))
    monkeypatch.setattr(correlation, "draw_counts", recording("correlation"))
    strata = predictions.drop_duplicates("case_id").set_index("case_id")["label"] \
        if stratified else None
    summarize(scores, by=KEYS, n_boot=150, seed=3, strata=strata)
    spearman_table(scores, predictions, n_boot=150, seed=3, strata=strata)
    assert calls["correlation"] == calls["summary"]
    assert [c[:3] for c in calls["correlation"]] == [
        (N_CASES[s], 150, split_seed(3, s)) for s in ("test", "val")]


def test_extra_prediction_columns_and_rows_are_ignored(scores, predictions):
    table = spearman_table(scores, predictions, n_boot=100)
    extra = pd.concat([predictions, predictions.assign(split="train")]).drop(columns="label")
    pd.testing.assert_frame_equal(spearman_table(scores, extra, n_boot=100), table)


@pytest.mark.parametrize(("change", "message"), [
    (lambda s, p: (s.drop(columns="reference"), p), r"`scores` lacks the column\(s\) "
                                                    r"\['reference'\]"),
    (lambda s, p: (s, p.drop(columns="score")), r"`predictions` lacks the column\(s\) "
                                                r"\['score'\]"),
    (lambda s, p: (s, p.iloc[1:]), r"`predictions` has no probability for \d+ scored image"),
    (lambda s, p: (s, p.assign(score=np.nan)), r"`predictions\['score'\]` must be finite"),
    (lambda s, p: (s, pd.concat([p, p.iloc[:1]])), r"`predictions` has 1 duplicated row"),
    (lambda s, p: (s.assign(value="high"), p), r"`scores\['value'\]` must be numeric"),
    (lambda s, p: (s.assign(case_id=None), p), r"case_id must not be missing"),
    (lambda s, p: (s, p.assign(image_id=p.image_id.astype(str))),
     r"cannot join `scores` to `predictions`"),
])
def test_bad_inputs_raise_a_clear_error(scores, predictions, change, message):
    s, p = change(scores, predictions)
    with pytest.raises(ValueError, match=message):
        spearman_table(s, p, n_boot=100)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_boot": 10}, r"`n_boot` must be an integer >= 100"),
    ({"level": 95}, r"`level` must be between 0 and 1"),
    ({"seed": -1}, r"`seed` must be an integer >= 0"),
    ({"strata": [0, 1]}, r"`strata` must be a mapping"),
])
def test_bad_options_raise_a_clear_error(scores, predictions, kwargs, message):
    with pytest.raises(ValueError, match=message):
        spearman_table(scores, predictions, **kwargs)


def test_weighted_spearman_rejects_fractional_or_negative_weights():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0])
    for weights in ([1, 0.5, 1], [1, -1, 1], [[1, 1]]):
        with pytest.raises(ValueError, match="`weights` must"):
            weighted_spearman(x, y, weights)


def test_empty_scores_give_an_empty_table(scores, predictions):
    table = spearman_table(scores.iloc[:0], predictions, n_boot=100)
    assert list(table.columns) == [*KEYS, "rho", "ci_low", "ci_high", "ci_method", "n_cases"]
    assert len(table) == 0
