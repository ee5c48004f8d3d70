"""Coverage of the case bootstrap on clustered data with a known mean (STATISTICS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.stats import bootstrap_ci

N_REP = 200
N_CASES = 40
N_IMAGES = 20  # per case
ICC = 0.3


def clustered_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images of one case share a case effect: intra-case correlation ICC, true mean 0."""
    case_effect = rng.normal(0, np.sqrt(ICC), N_CASES)
    values = np.repeat(case_effect, N_IMAGES) + rng.normal(0, np.sqrt(1 - ICC),
                                                           N_CASES * N_IMAGES)
    return values, np.repeat(np.arange(N_CASES), N_IMAGES)


def coverage(unit: str, method: str, n_rep: int = N_REP, n_boot: int = 1000) -> float:
    rng = np.random.default_rng(2024)
    hits = 0
    for rep in range(n_rep):
        values, cases = clustered_sample(rng)
        labels = cases if unit == "case" else np.arange(values.size)
        res = bootstrap_ci(values, labels, n_boot=n_boot, seed=rep, method=method)
        hits += res.ci_low <= 0.0 <= res.ci_high
    return hits / n_rep


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_case_bootstrap_covers_close_to_nominal(method):
    # Binomial(200, 0.95) has SD 0.0154; allow 3 SD below nominal plus 0.01 for the known
    # small-sample undercoverage of bootstrap intervals with 40 clusters.
    assert 0.95 - 3 * 0.0154 - 0.01 <= coverage("case", method) <= 1.0


def test_resampling_images_instead_of_cases_undercovers():
    # Design effect 1 + (20 - 1) * 0.3 = 6.7: image-level intervals are sqrt(6.7) = 2.6
    # times too narrow, expected coverage P(|Z| < 1.96 / 2.6) ~ 0.55 (STATISTICS.md: ~58%).
    # 100 repetitions: SD 0.05, so 0.75 is 4 SD above the expected coverage.
    assert coverage("image", "percentile", n_rep=100, n_boot=500) < 0.75
