"""classification_table and the case-weighted AUROC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.proportion import proportion_confint

from benchmark.stats import classification_table, draw_counts
from benchmark.stats.auroc import weighted_auroc


def brute_force_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture
def predictions() -> pd.DataFrame:
    """Two models on a test split (18 cases, 1-5 images each, tied scores) and a one-class
    split."""
    rng = np.random.default_rng(1)
    rows = []
    for c in range(18):
        label = c % 3 == 0
        for i in range(1 + c % 5):
            for model, signal in (("clean", 1.5), ("shortcut", 0.5)):
                score = 1 / (1 + np.exp(-(signal * (2 * label - 1) + rng.normal())))
                rows.append({"model": model, "split": "test", "case_id": f"c{c:02d}",
                             "image_id": i, "label": int(label), "score": round(score, 1)})
    for c in range(4):
        rows.append({"model": "clean", "split": "reversed", "case_id": f"r{c}",
                     "image_id": 0, "label": 1, "score": 0.3 + 0.1 * c})
    return pd.DataFrame(rows)


def test_weighted_auroc_at_unit_weights_is_mann_whitney(predictions):
    one = predictions[(predictions.model == "clean") & (predictions.split == "test")]
    s, y = one.score.to_numpy(), one.label.to_numpy(bool)
    groups, _ = pd.factorize(one.case_id, sort=True)
    auc = weighted_auroc(s, y, groups, np.ones((1, groups.max() + 1)))[0]
    u = scipy.stats.mannwhitneyu(s[y], s[~y]).statistic
    assert auc == u / (y.sum() * (~y).sum())
    assert auc == pytest.approx(brute_force_auroc(s, y), rel=1e-14)


def test_weighted_auroc_at_counts_equals_auroc_of_the_resampled_data(predictions):
    one = predictions[(predictions.model == "shortcut") & (predictions.split == "test")]
    s, y = one.score.to_numpy(), one.label.to_numpy(bool)
    groups, _ = pd.factorize(one.case_id, sort=True)
    counts = draw_counts(18, 5, seed=2)
    reps = weighted_auroc(s, y, groups, counts)
    for b in range(5):
        take = np.repeat(np.arange(len(s)), counts[b, groups])  # each image count-many times
        expected = brute_force_auroc(s[take], y[take]) if y[take].any() and not y[take].all() \
            else np.nan
        np.testing.assert_allclose(reps[b], expected, rtol=1e-13)


def test_weighted_auroc_without_one_class_is_nan():
    w = np.array([[1.0, 0.0], [0.0, 2.0]])
    out = weighted_auroc(np.array([0.2, 0.7]), np.array([True, False]), np.array([0, 1]), w)
    assert np.isnan(out).all()


def test_table_columns_and_rows(predictions):
    table = classification_table(predictions, n_boot=300)
    assert list(table.columns) == ["model", "split", "level", "metric", "estimate", "ci_low",
                                   "ci_high", "ci_method", "n_cases", "n_images"]
    assert len(table) == 3 * 2 * 4  # (clean, reversed), (clean, test), (shortcut, test)
    assert table.groupby(["model", "split"]).size().eq(8).all()


def test_image_and_case_level_auroc_estimates(predictions):
    table = classification_table(predictions, n_boot=300).set_index(
        ["model", "split", "level", "metric"])
    one = predictions[(predictions.model == "clean") & (predictions.split == "test")]
    image = table.loc[("clean", "test", "image", "auroc")]
    assert image.estimate == pytest.approx(
        brute_force_auroc(one.score.to_numpy(), one.label.to_numpy(bool)), rel=1e-14)
    assert image.ci_method == "bca" and image.ci_low <= image.estimate <= image.ci_high
    assert (image.n_cases, image.n_images) == (18, len(one))
    per_case = one.groupby("case_id").agg(score=("score", "mean"), label=("label", "max"))
    case = table.loc[("clean", "test", "case", "auroc")]
    assert case.estimate == pytest.approx(
        brute_force_auroc(per_case.score.to_numpy(), per_case.label.to_numpy(bool)), rel=1e-14)
    assert (case.n_cases, case.n_images) == (18, len(one))


def test_auroc_interval_is_a_case_bootstrap(predictions):
    """The interval comes from the split's count matrix: percentile endpoints equal the
    quantiles of the weighted AUROC at those counts."""
    from benchmark.stats.resample import split_seed

    table = classification_table(predictions, n_boot=400, method="percentile", seed=6)
    row = table[(table.model == "shortcut") & (table.level == "image")
                & (table.metric == "auroc")].iloc[0]
    one = predictions[predictions.model == "shortcut"]
    groups, _ = pd.factorize(one.case_id, sort=True)
    reps = weighted_auroc(one.score.to_numpy(), one.label.to_numpy(bool), groups,
                          draw_counts(18, 400, split_seed(6, "test")))
    reps = reps[np.isfinite(reps)]
    np.testing.assert_allclose([row.ci_low, row.ci_high],
                               np.quantile(reps, [0.025, 0.975]), rtol=1e-12)


def test_threshold_metrics_use_wilson_intervals(predictions):
    table = classification_table(predictions, n_boot=200, level=0.9, threshold=0.6)
    one = predictions[(predictions.model == "shortcut") & (predictions.split == "test")]
    pred, y = one.score.to_numpy() >= 0.6, one.label.to_numpy(bool)
    expected = {
        "accuracy": ((pred == y).sum(), len(y)),
        "sensitivity": ((pred & y).sum(), y.sum()),
        "specificity": ((~pred & ~y).sum(), (~y).sum()),
    }
    rows = table[(table.model == "shortcut") & (table.level == "image")].set_index("metric")
    for metric, (k, n) in expected.items():
        low, high = proportion_confint(k, n, alpha=0.1, method="wilson")
        row = rows.loc[metric]
        assert row.ci_method == "wilson" and row.n_images == n
        np.testing.assert_allclose([row.estimate, row.ci_low, row.ci_high], [k / n, low, high],
                                   rtol=1e-15)


def test_one_class_split_is_reported_not_raised(predictions):
    table = classification_table(predictions, n_boot=200)
    rows = table[table.split == "reversed"].set_index(["level", "metric"])
    for level in ("image", "case"):
        assert np.isnan(rows.loc[(level, "auroc"), "estimate"])
        assert rows.loc[(level, "auroc"), "ci_method"] == "undefined (one class)"
        assert rows.loc[(level, "specificity"), "ci_method"] == "undefined (no observations)"
        assert rows.loc[(level, "sensitivity"), "ci_method"] == "wilson"


def test_models_of_a_split_share_the_draws(predictions):
    """Two identical models get identical intervals (same count matrix), seed by seed."""
    twin = predictions[predictions.model == "clean"].assign(model="twin")
    table = classification_table(pd.concat([predictions, twin]), n_boot=300)
    a = table[table.model == "clean"].drop(columns="model").reset_index(drop=True)
    b = table[table.model == "twin"].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_classification_table_is_deterministic(predictions):
    pd.testing.assert_frame_equal(classification_table(predictions, n_boot=200, seed=3),
                                  classification_table(predictions, n_boot=200, seed=3),
                                  check_exact=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(label=2), "must be 0 or 1"),
        (lambda f: f.assign(score=np.nan), "must be finite"),
        (lambda f: f.drop(columns="label"), "lacks the column"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "duplicated row"),
    ],
)
def test_invalid_predictions_raise(predictions, change, message):
    with pytest.raises(ValueError, match=message):
        classification_table(change(predictions), n_boot=100)


def test_invalid_threshold_raises(predictions):
    with pytest.raises(ValueError, match="`threshold` must be a finite number"):
        classification_table(predictions, n_boot=100, threshold=np.nan)
