"""Coverage of the case bootstrap on clustered data with a known mean (STATISTICS.md).

Why the unit matters: the images of one case (patient) share the case's anatomy,
acquisition and label, so their scores are correlated. With intra-case correlation ``rho``
and ``m`` images per case, the variance of a mean over images is the variance under
independence times the design effect ``1 + (m - 1) rho``. A bootstrap that resamples
images treats them as independent and so measures the variance too small by that factor;
its intervals are ``sqrt(design effect)`` times too narrow and cover the truth far less
often than their nominal level. Resampling cases, keeping all images of a drawn case,
reproduces the correlation inside every replicate and gives (close to) nominal coverage.

The simulation runs through the count-matrix engine (:func:`benchmark.stats.summarize`).
Every simulated dataset is its own ``split``: each split gets its own count matrix, seeded
by ``split_seed(seed, split)`` (a sha256 of the run seed and the split name), so the
bootstrap draws of different datasets are independent and so are their hit indicators.
(Putting the datasets in cells of ONE split would make them share one count matrix,
correlating the hits and making the binomial error bars below wrong.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.stats import summarize
from benchmark.stats.resample import split_seed

SEED = 2024  # data and bootstrap seed, fixed once; not tuned to the outcome
N_DATASETS = 1000  # case bootstrap: binomial SD of the coverage at 0.95 is 0.0069
N_DATASETS_IMAGE = 200  # image bootstrap: the first 200 of the same datasets (see below)
N_CASES = 60
N_IMAGES = 10  # per case
ICC = 0.3  # intra-case correlation
TRUE_MEAN = 0.5
N_BOOT = 2000
BY = ["split", "metric"]


@pytest.fixture(scope="module")
def datasets() -> pd.DataFrame:
    """``N_DATASETS`` datasets of 60 cases x 10 images, one split each.

    value = TRUE_MEAN + case effect (variance ICC) + image noise (variance 1 - ICC), so the
    total variance is 1, the correlation of two images of one case is ICC and the mean of
    the per-case means (the default estimand) has expectation TRUE_MEAN.
    """
    rng = np.random.default_rng(SEED)
    case_effect = rng.normal(0.0, np.sqrt(ICC), (N_DATASETS, N_CASES, 1))
    noise = rng.normal(0.0, np.sqrt(1.0 - ICC), (N_DATASETS, N_CASES, N_IMAGES))
    per_dataset = N_CASES * N_IMAGES
    dataset = np.repeat(np.arange(N_DATASETS), per_dataset)
    return pd.DataFrame({
        "split": pd.Index([f"sim{d:04d}" for d in range(N_DATASETS)])[dataset],
        "metric": "score",
        "dataset": dataset,
        "case_id": np.tile(np.repeat(np.arange(N_CASES), N_IMAGES), N_DATASETS),
        "image_id": np.tile(np.arange(N_IMAGES), N_DATASETS * N_CASES),
        "value": (TRUE_MEAN + case_effect + noise).ravel(),
    })


def intervals(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    table = summarize(frame.drop(columns="dataset"), by=BY, n_boot=N_BOOT, method=method,
                      seed=SEED)
    assert len(table) == frame["split"].nunique()  # one interval per dataset
    return table


def covered(table: pd.DataFrame) -> np.ndarray:
    return ((table.ci_low <= TRUE_MEAN) & (table.ci_high >= TRUE_MEAN)).to_numpy()


def test_datasets_get_independent_draws(datasets):
    names = datasets["split"].unique()
    assert len({split_seed(SEED, s) for s in names}) == len(names) == N_DATASETS


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_case_bootstrap_covers_close_to_nominal(datasets, method):
    table = intervals(datasets, method)
    assert set(table.ci_method) == {method}
    assert (table.n_cases == N_CASES).all()
    coverage = covered(table).mean()
    # Acceptance: 93-97% over >= 400 datasets. With 1000 independent datasets the
    # Monte Carlo SD of the coverage is sqrt(0.95 * 0.05 / 1000) = 0.0069, so the band is
    # +-2.9 SD around nominal; with 60 cases the bootstrap's small-sample undercoverage is
    # a fraction of a percent.
    assert 0.93 <= coverage <= 0.97, f"{method}: coverage {coverage:.3f}"


def test_resampling_images_instead_of_cases_undercovers(datasets):
    # The same data, but every image labelled as its own case: the naive image bootstrap.
    # It costs 10x the case bootstrap per dataset (600 "cases" per count matrix), so it
    # runs on the first N_DATASETS_IMAGE datasets only.
    first = datasets[datasets.dataset < N_DATASETS_IMAGE]
    by_image = first.assign(case_id=first.case_id * N_IMAGES + first.image_id)
    table_image = intervals(by_image, "bca")
    table_case = intervals(first, "bca")
    assert (table_image.n_cases == N_CASES * N_IMAGES).all()
    np.testing.assert_allclose(table_image.estimate, table_case.estimate, rtol=1e-12)

    # Design effect 1 + (10 - 1) * 0.3 = 3.7: the image bootstrap sees variance 1/600
    # where the truth is 3.7/600, so its intervals are sqrt(3.7) = 1.92 times too narrow ...
    width_ratio = ((table_image.ci_high - table_image.ci_low).mean()
                   / (table_case.ci_high - table_case.ci_low).mean())
    assert 0.45 < width_ratio < 0.60, width_ratio  # expected 1 / 1.92 = 0.52

    # ... and cover with probability P(|Z| < 1.96 / 1.92) = P(|Z| < 1.02) ~ 0.69.
    # Over 200 datasets the SD of that coverage is sqrt(0.69 * 0.31 / 200) = 0.033, so
    # 0.80 is more than 3 SD above the expected value. The case bootstrap on the same 200
    # datasets covers about 0.95 (SD 0.015), so the gap of ~0.26 has a margin of > 0.15.
    coverage_image = covered(table_image).mean()
    coverage_case = covered(table_case).mean()
    assert coverage_image < 0.80, coverage_image
    assert coverage_case - coverage_image > 0.10, (coverage_case, coverage_image)
