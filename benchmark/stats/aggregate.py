"""From image values to per-case sums: the inputs of the ratio-estimator bootstrap.

Both estimands of STATISTICS.md are ratios of case-weighted sums. For case weights ``w``
(one per case) and a statistic with per-case numerator ``x_i`` and denominator ``d_i``:

    theta(w) = sum_i w_i x_i / sum_i w_i d_i

- ``weighting="case"`` (default): ``x_i = mean of case i's non-NaN values`` and ``d_i = 1``
  for a case with at least one non-NaN value (``0`` otherwise), so ``theta(ones)`` is the
  mean over valid cases of the per-case means;
- ``weighting="image"``: ``x_i = sum of case i's non-NaN values`` and ``d_i = their count``,
  so ``theta(ones)`` is the pooled image mean (a ratio estimator, resampled by case).

NaN values are dropped before aggregation; a case whose values are all NaN has
``d_i = 0`` and drops out of that statistic.
"""

from __future__ import annotations

import numpy as np


def cell_case_sums(
    values: np.ndarray,
    cell_codes: np.ndarray,
    n_cells: int,
    case_codes: np.ndarray,
    n_cases: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum non-NaN values per (case, cell) and count valid and NaN images.

    Parameters
    ----------
    values : ndarray of float, shape (n_images,)
        Image values; NaN marks a missing value.
    cell_codes : ndarray of int, shape (n_images,)
        Statistic (cell, column) of each value, in ``[0, n_cells)``.
    n_cells : int
        Number of cells ``K``.
    case_codes : ndarray of int, shape (n_images,)
        Case of each value, in ``[0, n_cases)``.
    n_cases : int
        Number of cases ``n``.

    Returns
    -------
    sums : ndarray of float64, shape (n_cases, n_cells)
        Sum of the non-NaN values of each case in each cell (0 where there are none).
    n_valid : ndarray of float64, shape (n_cases, n_cells)
        Number of non-NaN values.
    n_nan : ndarray of float64, shape (n_cases, n_cells)
        Number of NaN values.

    Notes
    -----
    One :func:`numpy.bincount` per output over the flat index ``cell * n_cases + case``:
    the values of a case are added in input order, so the same rows give bit-identical
    sums whether they are aggregated alone or among other cells.
    """
    flat = cell_codes.astype(np.int64) * n_cases + case_codes.astype(np.int64)
    size = n_cells * n_cases
    nan = np.isnan(values)
    sums = np.bincount(flat, weights=np.where(nan, 0.0, values), minlength=size)
    n_valid = np.bincount(flat, weights=(~nan).astype(np.float64), minlength=size)
    n_nan = np.bincount(flat, weights=nan.astype(np.float64), minlength=size)

    def as_matrix(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.reshape(n_cells, n_cases).T)

    return as_matrix(sums), as_matrix(n_valid), as_matrix(n_nan)


def ratio_terms(
    sums: np.ndarray, n_valid: np.ndarray, weighting: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case numerator and denominator of the ratio estimator.

    Parameters
    ----------
    sums, n_valid : ndarray of float, shape (n_cases, K)
        From :func:`cell_case_sums`.
    weighting : {"case", "image"}
        ``"case"``: ``num = sums / n_valid`` (the case mean; 0 for a case without valid
        values) and ``den = 1[n_valid > 0]``. ``"image"``: ``num = sums``, ``den = n_valid``.

    Returns
    -------
    num, den : ndarray of float64, shape (n_cases, K)
        ``theta(w) = (w @ num) / (w @ den)``.
    """
    if weighting == "image":
        return np.asarray(sums, dtype=np.float64), np.asarray(n_valid, dtype=np.float64)
    valid = n_valid > 0
    num = np.divide(sums, n_valid, out=np.zeros_like(sums, dtype=np.float64), where=valid)
    return num, valid.astype(np.float64)


def ratio_jackknife(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Delete-one-case jackknife values of the ratio estimator.

    Parameters
    ----------
    num, den : ndarray of float, shape (n_cases, K)
        Per-case numerator and denominator (:func:`ratio_terms`).

    Returns
    -------
    jackknife : ndarray of float64, shape (n_cases, K)
        ``theta(1 - e_i) = (sum(num) - num_i) / (sum(den) - den_i)``: the statistic with case
        ``i`` left out (weights ``1 - I``, computed as total minus row). NaN where case ``i``
        does not enter the statistic (``den_i = 0``: no valid values) and where leaving it
        out leaves no valid case; :func:`~benchmark.stats.intervals.jackknife_acceleration`
        skips NaN entries.
    """
    total_num = num.sum(axis=0)
    total_den = den.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        jack = (total_num - num) / (total_den - den)
    jack[den == 0] = np.nan
    return jack
