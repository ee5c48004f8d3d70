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
from benchmark.threads import alternate, side_by_side

#: Upper bound on ``(n_boot + 1) * columns`` per chunk (doubles).
CHUNK_ELEMENTS = 2**22
#: Rows of pair differences formed and sorted at once (a few MB: they stay in cache).
SORT_ROWS = 32


@dataclass(frozen=True, eq=False)
class ColumnIntervals:
    """Estimates and intervals of ``K`` statistics (arrays of shape ``(K,)``).

    ``replicates`` has shape ``(n_boot, K)`` and ``standard_error`` ``(K,)`` when
    requested, else they are None.
    """

    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    method: np.ndarray
    standard_error: np.ndarray | None
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
    out = num.T @ weights_t
    if den.shape[1] > 1 and np.array_equal(den, np.broadcast_to(den[:, :1], den.shape)):
        # One denominator for every column (case weighting: each case counts 1): one
        # product instead of K, half the work of the whole bootstrap.
        bottom = den[:, :1].T @ weights_t
        zero = np.flatnonzero(bottom[0] == 0)
    else:
        bottom = den.T @ weights_t
        zero = None
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(out, bottom, out=out)
    if zero is None:
        out[bottom == 0] = np.nan
    elif zero.size:
        out[:, zero] = np.nan
    return out


def bootstrap_columns(
    num: np.ndarray,
    den: np.ndarray,
    counts: np.ndarray,
    *,
    level: float,
    method: str,
    keep_replicates: bool = False,
    standard_error: bool = True,
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
    standard_error : bool, default True
        Compute the standard errors (one more pass over the replicates); ``False`` leaves
        ``ColumnIntervals.standard_error`` None.

    Returns
    -------
    ColumnIntervals
        ``standard_error`` is the standard deviation (``ddof=1``) of the finite replicates;
        replicates where no valid case was drawn are NaN and are left out of the interval.
    """
    n_cases, k = num.shape
    n_boot = counts.shape[0]
    weights_t = _weights_t(counts)

    def chunk(cols: slice) -> _Parts:
        ratio = _ratio_rows(weights_t, num[:, cols], den[:, cols])
        jack = ratio_jackknife(num[:, cols], den[:, cols]) if method == BCA else None
        part = _Parts()
        part.add(ratio, jack, level, method, keep_replicates, standard_error)
        return part

    # Chunks alternate between this thread and a worker (each one's values are what they
    # would be in a loop); an even number of them keeps both threads busy.
    chunks = _even_chunks(k, max(1, CHUNK_ELEMENTS // (n_boot + 1)))
    with side_by_side(len(chunks) > 1) as worker:
        done = alternate(worker, chunk, chunks)
    parts = _Parts()
    for part in done:
        parts.extend(part)
    return parts.result(n_boot, keep_replicates, standard_error)


def _even_chunks(k: int, step: int) -> list[slice]:
    """Slices of ``range(k)`` of at most ``step`` columns and about equal sizes, an even
    number of them where ``k`` allows (none for ``k = 0``)."""
    if k == 0:
        return []
    n = -(-k // step)
    n += n % 2 if n > 1 else 0
    size = -(-k // max(n, 1))
    return [slice(start, min(start + size, k)) for start in range(0, k, size)]


def bootstrap_differences(
    num: np.ndarray,
    den: np.ndarray,
    col_a: np.ndarray,
    col_b: np.ndarray,
    counts: np.ndarray,
    *,
    level: float,
    method: str,
    keep_replicates: bool = False,
    standard_error: bool = True,
) -> ColumnIntervals:
    """Estimate and interval of ``P`` differences ``theta_a - theta_b`` on shared draws.

    Parameters
    ----------
    num, den : ndarray of float, shape (n_cases, K)
        Per-case ratio terms of ``K`` statistics (the arms).
    col_a, col_b : ndarray of int, shape (P,)
        Pair ``j`` is ``theta_{col_a[j]} - theta_{col_b[j]}``; a column may enter many
        pairs.
    counts : ndarray of int, shape (n_boot, n_cases)
        One count matrix for all columns.
    level, method, keep_replicates, standard_error
        As in :func:`bootstrap_columns` (``keep_replicates``: the ``(n_boot, P)``
        replicates of the differences).

    Returns
    -------
    ColumnIntervals
        ``estimate = theta_a(1) - theta_b(1)``; replicates ``theta_a(C_b) - theta_b(C_b)``
        (paired: both arms on the same row of ``counts``); BCa acceleration from the
        jackknife differences ``theta_a(1 - e_i) - theta_b(1 - e_i)``, percentile
        fallback where BCa is undefined.

    Notes
    -----
    Each arm's replicates are computed once per chunk of pairs and the pairs are their
    row differences, so the matrix product has one column per distinct arm (``K``, e.g.
    10 methods x 100 metrics) rather than two per pair (``2 P``, 9,000 for the 4,500
    pairs of 10 methods). The values are those of the per-pair products up to the
    rounding of the product (BLAS sums a column in an order that depends on its position
    in the matrix: ~1e-16 relative).
    """
    n_boot = counts.shape[0]
    weights_t = _weights_t(counts)
    n_pairs = col_a.size
    step = max(1, CHUNK_ELEMENTS // (n_boot + 1))
    parts = _Parts()
    for start in range(0, n_pairs, step):
        stop = min(start + step, n_pairs)
        arms, inv = np.unique(np.concatenate([col_a[start:stop], col_b[start:stop]]),
                              return_inverse=True)
        ia, ib = inv[: stop - start], inv[stop - start :]
        ratio = _ratio_rows(weights_t, num[:, arms], den[:, arms])
        diff = np.empty((stop - start, n_boot + 1))
        n_finite = np.empty(stop - start, dtype=np.int64)
        reps = np.empty((n_boot, stop - start)) if keep_replicates else None
        # Differences and sorts a few rows at a time, while they are in cache.
        for first in range(0, stop - start, SORT_ROWS):
            rows = slice(first, first + SORT_ROWS)
            block = diff[rows]
            block[:] = ratio[ia[rows]]
            block -= ratio[ib[rows]]
            if reps is not None:
                reps[:, rows] = block[:, 1:].T
            n_finite[rows] = sort_rows(block[:, 1:])[1]
        del ratio
        jack = None
        if method == BCA:
            arm_jack = ratio_jackknife(num[:, arms], den[:, arms])
            jack = arm_jack[:, ia] - arm_jack[:, ib]
        parts.add_sorted(diff[:, 0].copy(), diff[:, 1:], n_finite, jack, level, method,
                         reps, standard_error)
    return parts.result(n_boot, keep_replicates, standard_error)


def _weights_t(counts: np.ndarray) -> np.ndarray:
    """Transposed weights ``(n_cases, 1 + n_boot)``: ones (the estimate), then the counts."""
    n_boot, n_cases = counts.shape
    weights_t = np.empty((n_cases, n_boot + 1), dtype=np.float64)
    weights_t[:, 0] = 1.0
    weights_t[:, 1:] = counts.T
    return weights_t


class _Parts:
    """Per-chunk results of a bootstrap over columns, concatenated at the end."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {
            "estimate": [], "low": [], "high": [], "method": [], "se": [], "reps": []
        }

    def add(self, ratio: np.ndarray, jack: np.ndarray | None, level: float, method: str,
            keep_replicates: bool, standard_error: bool) -> None:
        """Intervals of one chunk; ``ratio`` is ``(K, 1 + n_boot)``, the estimate first.

        Sorts the replicates in place (``ratio`` is consumed).
        """
        theta = ratio[:, 0].copy()
        reps = ratio[:, 1:].T.copy() if keep_replicates else None
        ordered, n_finite = sort_rows(ratio[:, 1:])
        self.add_sorted(theta, ordered, n_finite, jack, level, method, reps, standard_error)

    def extend(self, other: _Parts) -> None:
        """Append the chunks of ``other`` after this one's."""
        for name, values in other.parts.items():
            self.parts[name].extend(values)

    def add_sorted(self, theta: np.ndarray, ordered: np.ndarray, n_finite: np.ndarray,
                   jack: np.ndarray | None, level: float, method: str,
                   reps: np.ndarray | None, standard_error: bool) -> None:
        """:meth:`add` for replicates sorted by :func:`sort_rows`, ``reps`` unsorted."""
        if reps is not None:
            self.parts["reps"].append(reps)
        low, high, used = interval_from_sorted(theta, ordered, n_finite, jack, level, method)
        self.parts["estimate"].append(theta)
        self.parts["low"].append(low)
        self.parts["high"].append(high)
        self.parts["method"].append(used)
        if standard_error:
            self.parts["se"].append(standard_error_sorted(ordered, n_finite))

    def result(self, n_boot: int, keep_replicates: bool,
               standard_error: bool) -> ColumnIntervals:
        parts = self.parts

        def cat(name: str, dtype: type = np.float64) -> np.ndarray:
            return np.concatenate(parts[name]) if parts[name] else np.empty(0, dtype=dtype)

        replicates = None
        if keep_replicates:
            replicates = (
                np.concatenate(parts["reps"], axis=1) if parts["reps"]
                else np.empty((n_boot, 0))
            )
        return ColumnIntervals(
            estimate=cat("estimate"),
            ci_low=cat("low"),
            ci_high=cat("high"),
            method=cat("method", object),
            standard_error=cat("se") if standard_error else None,
            replicates=replicates,
        )
