"""The count-matrix bootstrap of many ratio statistics at once.

For per-case numerators and denominators ``num, den`` of shape ``(n_cases, K)``
(:mod:`benchmark.stats.aggregate`) and a count matrix ``C`` of shape ``(n_boot, n_cases)``
(:func:`benchmark.stats.draw_counts`), every statistic is a function of case weights
``W``: ``theta(W) = (W @ num) / (W @ den)``. The estimate is ``theta(ones)``, the
replicates ``theta(C)`` and the jackknife values ``theta(1 - I)``. Thousands of
statistics go through one matrix product; columns are processed in chunks so that memory
stays bounded (about ``3 * 2**22`` doubles, 100 MB, per chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.stats.aggregate import ratio_jackknife
from benchmark.stats.intervals import (
    BCA,
    interval_from_sorted,
    sort_rows,
    standard_error_sorted,
)

#: Upper bound on ``(n_boot + 1) * columns`` per chunk (doubles).
CHUNK_ELEMENTS = 2**22


@dataclass(frozen=True, eq=False)
class ColumnIntervals:
    """Estimates and intervals of ``K`` statistics (arrays of shape ``(K,)``).

    ``replicates`` has shape ``(n_boot, K)`` when requested, else is None.
    """

    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    method: np.ndarray
    standard_error: np.ndarray
    replicates: np.ndarray | None = None


def weighted_ratio(weights: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``theta(W) = (W @ num) / (W @ den)``; NaN where the denominator is 0.

    Parameters
    ----------
    weights : ndarray, shape (R, n_cases)
        Case weights, one row per evaluation (ones, counts, ``1 - I``).
    num, den : ndarray, shape (n_cases, K)

    Returns
    -------
    ndarray of float64, shape (R, K)
    """
    return _ratio_rows(np.ascontiguousarray(np.asarray(weights, dtype=np.float64).T),
                       num, den).T


def _ratio_rows(weights_t: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``theta`` laid out as ``(K, R)`` from transposed weights ``(n_cases, R)``."""
    top = num.T @ weights_t
    if den.shape[1] > 1 and np.array_equal(den, np.broadcast_to(den[:, :1], den.shape)):
        # One denominator for every column (case weighting: each case counts 1): one
        # product instead of K, half the work of the whole bootstrap.
        bottom = np.broadcast_to(den[:, :1].T @ weights_t, top.shape)
    else:
        bottom = den.T @ weights_t
    with np.errstate(divide="ignore", invalid="ignore"):
        out = top / bottom
    out[bottom == 0] = np.nan
    return out


def bootstrap_columns(
    num: np.ndarray,
    den: np.ndarray,
    counts: np.ndarray,
    *,
    level: float,
    method: str,
    keep_replicates: bool = False,
) -> ColumnIntervals:
    """Estimate, interval and standard error of ``K`` ratio statistics on shared draws.

    Parameters
    ----------
    num, den : ndarray of float, shape (n_cases, K)
        Per-case numerator and denominator (:func:`~benchmark.stats.aggregate.ratio_terms`).
    counts : ndarray of int, shape (n_boot, n_cases)
        Count matrix (:func:`~benchmark.stats.draw_counts`), shared by all columns, so the
        replicates of a difference of two columns are the differences of their replicates.
    level : float
        Confidence level in (0, 1).
    method : {"bca", "percentile"}
        BCa (falls back to percentile where undefined) or percentile.
    keep_replicates : bool, default False
        Also return the ``(n_boot, K)`` replicates (memory ``8 n_boot K`` bytes).

    Returns
    -------
    ColumnIntervals
        ``standard_error`` is the standard deviation (``ddof=1``) of the finite replicates;
        replicates where no valid case was drawn are NaN and are left out of the interval.
    """
    n_cases, k = num.shape
    n_boot = counts.shape[0]
    weights_t = np.empty((n_cases, n_boot + 1), dtype=np.float64)
    weights_t[:, 0] = 1.0
    weights_t[:, 1:] = counts.T
    step = max(1, CHUNK_ELEMENTS // (n_boot + 1))
    parts: dict[str, list[np.ndarray]] = {
        "estimate": [], "low": [], "high": [], "method": [], "se": [], "reps": []
    }
    for start in range(0, k, step):
        cols = slice(start, min(start + step, k))
        ratio = _ratio_rows(weights_t, num[:, cols], den[:, cols])
        theta = ratio[:, 0].copy()
        if keep_replicates:
            parts["reps"].append(ratio[:, 1:].T.copy())
        ordered, n_finite = sort_rows(ratio[:, 1:])
        jack = ratio_jackknife(num[:, cols], den[:, cols]) if method == BCA else None
        low, high, used = interval_from_sorted(theta, ordered, n_finite, jack, level, method)
        parts["estimate"].append(theta)
        parts["low"].append(low)
        parts["high"].append(high)
        parts["method"].append(used)
        parts["se"].append(standard_error_sorted(ordered, n_finite))

    def cat(name: str, dtype: type = np.float64) -> np.ndarray:
        return np.concatenate(parts[name]) if parts[name] else np.empty(0, dtype=dtype)

    replicates = None
    if keep_replicates:
        replicates = (
            np.concatenate(parts["reps"], axis=1) if parts["reps"] else np.empty((n_boot, 0))
        )
    return ColumnIntervals(
        estimate=cat("estimate"),
        ci_low=cat("low"),
        ci_high=cat("high"),
        method=cat("method", object),
        standard_error=cat("se"),
        replicates=replicates,
    )
