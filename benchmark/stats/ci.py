"""Case-bootstrap confidence interval of one statistic: :func:`bootstrap_ci`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from benchmark.stats._validation import (
    METHODS,
    WEIGHTINGS,
    check_choice,
    check_labels,
    check_level,
    check_n_boot,
    check_seed,
)
from benchmark.stats.aggregate import cell_case_sums, ratio_terms
from benchmark.stats.engine import bootstrap_columns
from benchmark.stats.resample import draw_counts


class ConfidenceInterval(NamedTuple):
    """A confidence interval ``(low, high)``, as in :mod:`scipy.stats`."""

    low: float
    high: float


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Result of :func:`bootstrap_ci`.

    Attributes
    ----------
    estimate : float
        The statistic on the original sample.
    ci_low, ci_high : float
        Interval endpoints (NaN when the statistic is undefined).
    method : str
        The interval actually given: ``"bca"``, ``"percentile"``, ``"percentile (BCa
        undefined)"`` (BCa was asked for but is undefined, e.g. all replicates equal), or
        ``"undefined (no valid values)"`` (every value is NaN).
    standard_error : float
        Standard deviation (``ddof=1``) of the finite bootstrap replicates.
    bootstrap_distribution : ndarray of float64, shape (n_boot,)
        The replicates, read-only; NaN where a resample drew no case with a valid value.
    n_cases : int
        Cases with at least one non-NaN value (the cases the statistic uses).
    n_images : int
        Non-NaN values used.
    n_nan : int
        NaN values dropped.
    level : float
        Confidence level.
    """

    estimate: float
    ci_low: float
    ci_high: float
    method: str
    standard_error: float
    bootstrap_distribution: np.ndarray
    n_cases: int
    n_images: int
    n_nan: int
    level: float

    @property
    def confidence_interval(self) -> ConfidenceInterval:
        """``(low, high)`` as a named tuple."""
        return ConfidenceInterval(self.ci_low, self.ci_high)


@dataclass(frozen=True)
class _CiInput:
    values: np.ndarray
    case_codes: np.ndarray
    n_cases: int
    case_strata: np.ndarray | None
    n_boot: int
    level: float
    method: str
    weighting: str
    seed: int


def _bootstrap_ci_iv(
    values: Any,
    cases: Any,
    n_boot: Any,
    level: Any,
    method: Any,
    weighting: Any,
    seed: Any,
    strata: Any,
) -> _CiInput:
    """Input validation and standardisation for :func:`bootstrap_ci`."""
    try:
        vals = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError("`values` must be an array of numbers (NaN allowed).") from err
    if vals.ndim != 1 or vals.size == 0:
        raise ValueError(f"`values` must be a non-empty 1-D array; got shape {vals.shape}.")
    if np.isinf(vals).any():
        raise ValueError("`values` must be finite or NaN; it contains +-inf.")
    n = vals.size
    case_labels = check_labels(cases, "cases", n)
    case_codes, uniques = pd.factorize(case_labels, sort=True)
    n_cases = len(uniques)
    case_strata = None
    if strata is not None:
        s_codes, _ = pd.factorize(check_labels(strata, "strata", n), sort=True)
        lo = np.full(n_cases, np.iinfo(np.int64).max)
        hi = np.full(n_cases, -1)
        np.minimum.at(lo, case_codes, s_codes)
        np.maximum.at(hi, case_codes, s_codes)
        mixed = np.flatnonzero(lo != hi)
        if mixed.size:
            raise ValueError(
                f"`strata` must be constant within each case; case {uniques[mixed[0]]!r} "
                f"(and {mixed.size - 1} other(s)) has images in several strata."
            )
        case_strata = lo
    return _CiInput(
        values=vals,
        case_codes=case_codes.astype(np.int64),
        n_cases=n_cases,
        case_strata=case_strata,
        n_boot=check_n_boot(n_boot),
        level=check_level(level),
        method=check_choice(method, "method", METHODS),
        weighting=check_choice(weighting, "weighting", WEIGHTINGS),
        seed=check_seed(seed),
    )


def bootstrap_ci(
    values: Any,
    cases: Any,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    method: str = "bca",
    weighting: str = "case",
    seed: int = 0,
    strata: Any = None,
) -> BootstrapResult:
    """Case (cluster) bootstrap confidence interval of a mean of image values.

    Parameters
    ----------
    values : array_like of float, shape (n_images,)
        One value per image; NaN marks a missing value and is dropped before aggregation.
    cases : array_like, shape (n_images,)
        Case (patient) label of each image; cases are the resampling unit.
    n_boot : int, default 10_000
        Number of bootstrap replicates, at least 100.
    level : float, default 0.95
        Confidence level, strictly between 0 and 1.
    method : {"bca", "percentile"}, default "bca"
        Interval type. BCa falls back to percentile where it is undefined, and says so in
        ``result.method``.
    weighting : {"case", "image"}, default "case"
        ``"case"``: the mean over cases of per-case means. ``"image"``: the pooled mean
        over images (a ratio estimator, still resampled by case).
    seed : int, default 0
        Seed of the count matrix, ``draw_counts(n_cases, n_boot, seed, strata)``; cases are
        numbered in sorted order of their labels.
    strata : array_like, shape (n_images,), optional
        Stratum of each image (e.g. its label), constant within a case; each replicate
        keeps the per-stratum case counts.

    Returns
    -------
    BootstrapResult

    Notes
    -----
    With per-case numerator ``x_i`` and denominator ``d_i``
    (:mod:`benchmark.stats.aggregate`) and case weights ``w``, the statistic is
    ``theta(w) = sum w_i x_i / sum w_i d_i``. The estimate is ``theta(1)``, the replicates
    ``theta(C_b)`` for the rows of the count matrix, and the BCa acceleration comes from the
    delete-one-case jackknife ``theta(1 - e_i)`` over the cases with a valid value.
    A case whose values are all NaN is dropped. A replicate that draws no valid case is
    NaN and is left out of the interval.

    References
    ----------
    .. [1] B. Efron, "Better bootstrap confidence intervals", JASA 82:171-185, 1987.
    .. [2] A. C. Davison and D. V. Hinkley, "Bootstrap Methods and their Application",
       Cambridge University Press, 1997, section 3.8 (resampling clustered data).

    Examples
    --------
    >>> import numpy as np
    >>> from benchmark.stats import bootstrap_ci
    >>> res = bootstrap_ci([0.2, 0.4, 0.9, np.nan, 0.5, 0.7], ["a", "a", "b", "b", "c", "c"],
    ...                    n_boot=1000, method="percentile")
    >>> round(res.estimate, 3), res.n_cases, res.n_images, res.n_nan
    (0.6, 3, 5, 1)
    >>> res.ci_low <= res.estimate <= res.ci_high
    True
    """
    iv = _bootstrap_ci_iv(values, cases, n_boot, level, method, weighting, seed, strata)
    zeros = np.zeros(iv.values.size, dtype=np.int64)
    sums, n_valid, n_nan = cell_case_sums(iv.values, zeros, 1, iv.case_codes, iv.n_cases)
    num, den = ratio_terms(sums, n_valid, iv.weighting)
    counts = draw_counts(iv.n_cases, iv.n_boot, iv.seed, iv.case_strata)
    out = bootstrap_columns(
        num, den, counts, level=iv.level, method=iv.method, keep_replicates=True
    )
    assert out.replicates is not None and out.standard_error is not None
    distribution = out.replicates[:, 0].copy()
    distribution.setflags(write=False)
    return BootstrapResult(
        estimate=float(out.estimate[0]),
        ci_low=float(out.ci_low[0]),
        ci_high=float(out.ci_high[0]),
        method=str(out.method[0]),
        standard_error=float(out.standard_error[0]),
        bootstrap_distribution=distribution,
        n_cases=int(np.count_nonzero(n_valid[:, 0])),
        n_images=int(n_valid.sum()),
        n_nan=int(n_nan.sum()),
        level=iv.level,
    )
