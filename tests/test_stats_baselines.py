"""Flags of explainers that do not beat the best null baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.stats import compare, summarize
from benchmark.stats.baselines import flag_baselines

BY = ["model", "split", "method", "reference", "metric"]
BASELINES = {"center_prior", "random"}


def scores_table(shift: dict[str, float], metric: str = "iou", n_cases: int = 40):
    """Case values ~ N(0.5 + shift[method], 0.05), two images per case, one model."""
    rng = np.random.default_rng(3)
    base = rng.normal(0.5, 0.1, n_cases)
    rows = []
    for method, d in shift.items():
        noise = rng.normal(0, 0.05, (n_cases, 2))
        for c in range(n_cases):
            for i in range(2):
                rows.append(dict(model="m", split="test", method=method, case_id=f"c{c:02d}",
                                 image_id=f"c{c:02d}-{i}", reference="consensus",
                                 metric=metric, value=base[c] + d + noise[c, i]))
    return pd.DataFrame(rows)


def flags(scores, lower=False):
    summary = summarize(scores, by=BY, n_boot=1000)
    comparisons = compare(scores, family="methods", n_boot=1000).table
    out = flag_baselines(summary, comparisons, BASELINES, lambda m: lower)
    return summary.assign(**out).set_index("method"), comparisons


def test_better_equal_and_worse_than_the_best_baseline():
    shift = {"random": -0.3, "center_prior": 0.0, "ig": 0.1, "saliency": 0.0,
             "occlusion": -0.1}
    table, _ = flags(scores_table(shift))
    assert table.loc["ig", "best_baseline"] == "center_prior"
    assert table.loc["ig", "beats_baseline"]
    assert not table.loc["saliency", "beats_baseline"]
    assert not table.loc["occlusion", "beats_baseline"]
    assert pd.isna(table.loc["random", "beats_baseline"])
    assert table.loc["random", "best_baseline"] is None


def test_flag_follows_the_pairs_interval_in_both_orientations():
    # "center_prior" sorts before "ig" and after "ablation": both orientations of a pair.
    shift = {"center_prior": 0.0, "random": -0.2, "ig": 0.02, "ablation": 0.02}
    table, comp = flags(scores_table(shift))
    for method in ("ig", "ablation"):
        row = comp[((comp.a == method) & (comp.b == "center_prior"))
                   | ((comp.b == method) & (comp.a == "center_prior"))].iloc[0]
        lo = row.ci_low if row.a == method else -row.ci_high
        assert bool(table.loc[method, "beats_baseline"]) == (lo > 0)


def test_lower_is_better_metrics_flip_the_direction():
    shift = {"random": 0.3, "center_prior": 0.0, "ig": -0.1, "saliency": 0.1}
    table, _ = flags(scores_table(shift, metric="peak_distance"), lower=True)
    assert table.loc["ig", "best_baseline"] == "center_prior"
    assert table.loc["ig", "beats_baseline"]
    assert not table.loc["saliency", "beats_baseline"]


def test_no_baseline_in_the_run_gives_missing_flags():
    table, _ = flags(scores_table({"ig": 0.1, "saliency": 0.0}))
    assert table["beats_baseline"].isna().all()
    assert table["best_baseline"].isna().all()


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="comparisons"):
        flag_baselines(pd.DataFrame(columns=[*BY, "estimate"]), pd.DataFrame({"a": [1]}),
                       BASELINES, lambda m: False)


def test_a_run_without_pairs_has_no_flags():
    scores = scores_table({"ig": 0.1})
    summary = summarize(scores, by=BY, n_boot=200)
    out = flag_baselines(summary, pd.DataFrame(), BASELINES, lambda m: False)
    assert out["beats_baseline"].isna().all() and len(out) == len(summary)
