"""Under the null the comparison p-values are uniform; comparisons are deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.stats import compare
from benchmark.stats.permutation import sign_flip_pvalues


def test_sign_flip_pvalues_are_uniform_under_the_null():
    # 500 simulated comparisons of two methods with identical (symmetric) case-level
    # differences: a valid test gives p ~ U(0, 1). 30 cases -> Monte Carlo branch.
    rng = np.random.default_rng(11)
    d = rng.normal(size=(30, 500)) * rng.gamma(2.0, size=(30, 1))
    p = sign_flip_pvalues(d, np.ones_like(d, dtype=bool), n_flips=2_000, seed=3)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    # and it is not vacuous: a shift of about 0.8 sd is detected most of the time
    p_shift = sign_flip_pvalues(d + 2.0, np.ones_like(d, dtype=bool), n_flips=2_000, seed=3)
    assert np.mean(p_shift < 0.05) > 0.8


def test_exact_sign_flip_pvalues_are_valid_under_the_null():
    # 8 cases -> exact enumeration: P(p <= alpha) <= alpha for every alpha (discrete test)
    rng = np.random.default_rng(5)
    d = rng.normal(size=(8, 2_000))
    p = sign_flip_pvalues(d, np.ones_like(d, dtype=bool), n_flips=10_000, seed=0)
    for alpha in (0.05, 0.1, 0.25, 0.5):
        assert np.mean(p <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / 2_000)


def _scores(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(20):
        for img in range(4):
            for method, shift in (("a", 0.0), ("b", 0.1), ("c", 0.0)):
                rows.append({"model": "m", "split": "test", "method": method,
                             "case_id": f"c{case}", "image_id": f"c{case}-{img}",
                             "reference": "consensus", "metric": "iou@top15",
                             "value": rng.normal(0.5 + shift, 0.1)})
    return pd.DataFrame(rows)


def test_comparisons_are_bit_identical_for_a_seed():
    scores = _scores(1)
    a = compare(scores, family="methods", n_boot=500, seed=7).table
    b = compare(scores.copy(), family="methods", n_boot=500, seed=7).table
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # row order changes only the float summation order
    c = compare(scores.sample(frac=1.0, random_state=0), family="methods", n_boot=500, seed=7).table
    pd.testing.assert_frame_equal(a.reset_index(drop=True), c.reset_index(drop=True),
                                  rtol=1e-12)
    assert len(a) == 3 and (a.adj_method == "holm").all()
