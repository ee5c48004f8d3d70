"""`benchmark.stats.bootstrap`: the result-object form of the summary table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.stats import bootstrap, compare, draw_counts, summarize
from benchmark.stats.resample import split_seed


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(5)
    rows = [dict(split=split, metric=metric, case_id=f"c{c}", image_id=i,
                 value=rng.normal(0.5, 0.2))
            for split in ("test", "shifted") for metric in ("iou", "dice")
            for c in range(12) for i in range(3)]
    return pd.DataFrame(rows)


def test_table_equals_summarize_plus_the_standard_error(scores):
    res = bootstrap(scores, by=["split", "metric"], n_boot=400, keep_replicates=True)
    plain = summarize(scores, by=["split", "metric"], n_boot=400)
    pd.testing.assert_frame_equal(res.table[plain.columns], plain)
    assert (res.n_boot, res.level, res.method, res.weighting, res.seed) == (
        400, 0.95, "bca", "case", 0)
    for split, reps in res.bootstrap_distribution.items():
        rows = res.table[res.table.split == split]
        assert reps.shape == (400, len(rows))
        assert np.allclose(rows.standard_error, reps.std(axis=0, ddof=1))


def test_replicates_are_the_case_means_under_the_splits_counts(scores):
    res = bootstrap(scores, by=["split", "metric"], n_boot=300, keep_replicates=True)
    sub = scores[(scores.split == "test") & (scores.metric == "dice")]
    case_means = sub.groupby("case_id").value.mean().sort_index().to_numpy()
    counts = draw_counts(12, 300, split_seed(0, "test"))
    expected = counts @ case_means / 12
    col = list(res.table[res.table.split == "test"].metric).index("dice")
    assert np.allclose(res.bootstrap_distribution["test"][:, col], expected)


def test_replicates_are_not_kept_unless_asked(scores):
    res = bootstrap(scores, by=["split", "metric"], n_boot=200)
    assert res.bootstrap_distribution is None
    assert res.to_frame() is not res.table and res.to_frame().equals(res.table)


def test_compare_returns_a_result_object_with_its_settings(scores):
    frame = scores.assign(model="m", reference="r").rename(columns={"metric": "method"})
    frame["metric"] = "iou"
    res = compare(frame, family="methods", n_boot=300, adjust="bh", seed=3)
    assert (res.family, res.n_boot, res.adjust, res.seed) == ("methods", 300, "bh", 3)
    assert set(res.table.adj_method) == {"bh"} and res.to_frame().equals(res.table)
    assert res.significant(1.1).equals(res.table)
    assert res.significant(0.0).empty
