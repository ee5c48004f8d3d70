"""Friedman test and Nemenyi critical difference against scipy, brute force and Demšar's table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.stats import friedman, nemenyi_cd


def _scores(n_cases=12, methods=("a", "b", "c", "d"), seed=0, nan_case=None):
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_cases):
        base = rng.normal()
        for m_i, m in enumerate(methods):
            for img in range(3):
                v = base + 0.3 * m_i + rng.normal(0, 0.5)
                if nan_case == c and m == methods[0]:
                    v = np.nan
                rows.append({"model": "x", "split": "test", "method": m, "case_id": f"c{c:02d}",
                             "image_id": f"c{c:02d}-{img}", "reference": "consensus",
                             "metric": "iou@top15", "value": v})
    return pd.DataFrame(rows)


def _case_table(scores):
    return scores.groupby(["case_id", "method"])["value"].mean().unstack("method").dropna()


def test_statistic_and_p_equal_scipy_friedmanchisquare():
    scores = _scores()
    out = friedman(scores)
    table = _case_table(scores)
    ref = stats.friedmanchisquare(*table.to_numpy().T)
    assert out.statistic.iloc[0] == pytest.approx(ref.statistic, rel=1e-12)
    assert out.p.iloc[0] == pytest.approx(ref.pvalue, rel=1e-12)
    assert (out.n_cases == 12).all() and (out.k == 4).all()


def test_mean_ranks_rank_one_is_best_and_follow_the_direction():
    scores = _scores()
    table = _case_table(scores)
    higher = friedman(scores).set_index("method").mean_rank
    brute = {m: np.mean([1 + (row > row[m]).sum() + 0.5 * ((row == row[m]).sum() - 1)
                         for _, row in table.iterrows()]) for m in table.columns}
    for m, r in brute.items():
        assert higher[m] == pytest.approx(r)
    lower = friedman(scores, lower_is_better=lambda _m: True).set_index("method").mean_rank
    assert np.allclose(higher + lower, 4 + 1)  # ranks reverse: r + r' = k + 1
    assert higher.idxmin() == "d"  # method d has the highest values


def test_incomplete_cases_are_dropped():
    out = friedman(_scores(nan_case=3))
    assert (out.n_cases == 11).all()


@pytest.mark.parametrize(("k", "q"), [(2, 1.960), (3, 2.343), (5, 2.728), (8, 3.031)])
def test_nemenyi_cd_matches_demsar_table(k, q):
    n = 20
    assert nemenyi_cd(k, n) == pytest.approx(q * np.sqrt(k * (k + 1) / (6 * n)), abs=2e-3)


def test_two_methods_have_no_friedman_test():
    out = friedman(_scores(methods=("a", "b")))
    assert out.statistic.isna().all() and out.cd.isna().all()
    assert set(out.method) == {"a", "b"}
