"""Threshold curves: the median over cases of a metric at each threshold, with a
case-bootstrap interval (STATISTICS.md: the case is the unit).

Input is a tidy table of per-image values at each threshold; images are first averaged
per case, then the median over cases is taken at each threshold. Replicates reuse the
split's count matrix (:func:`~benchmark.stats.resample.draw_counts` with
:func:`~benchmark.stats.resample.split_seed`), so a curve's band is drawn on the same
cases as every other interval of the split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.stats._validation import (
    check_columns,
    check_level,
    check_n_boot,
    check_seed,
    check_values,
)
from benchmark.stats.resample import draw_counts, split_seed

CURVE_KEYS = ["model", "split", "method", "reference", "metric", "threshold"]
CURVE_COLUMNS = [*CURVE_KEYS, "median", "ci_low", "ci_high", "n_cases"]


def weighted_median(values: np.ndarray, counts: np.ndarray,
                    columns: np.ndarray | None = None) -> np.ndarray:
    """Median of the multiset that holds ``values[i]`` ``counts[b, i]`` times, per row.

    Parameters
    ----------
    values : ndarray, shape (n,)
        Finite values.
    counts : ndarray of int, shape (B, n), or (B, m) with ``columns``
        Multiplicities; each row's total must be >= 1.
    columns : ndarray of int, shape (n,), optional
        Column of ``counts`` holding each value's multiplicity (default ``arange(n)``).

    Returns
    -------
    ndarray, shape (B,)
        ``np.median(np.repeat(values, counts[b]))`` for each row ``b`` (the mean of the
        two middle elements when the row's total is even).
    """
    counts_t = _transposed(np.asarray(counts))
    cols = np.arange(len(values)) if columns is None else np.asarray(columns)
    return _median_columns(np.asarray(values), counts_t, cols)


def _transposed(counts: np.ndarray) -> np.ndarray:
    """``counts.T`` as a C-ordered int16 matrix (int32 above 32,767 draws per row)."""
    small = counts.size == 0 or int(counts.sum(axis=1).max()) <= np.iinfo(np.int16).max
    return np.ascontiguousarray(counts.T, dtype=np.int16 if small else np.int32)


def _median_columns(values: np.ndarray, counts_t: np.ndarray,
                    columns: np.ndarray) -> np.ndarray:
    """:func:`weighted_median` on transposed counts ``counts_t`` (m, B), a replicate per
    column (from :func:`_transposed`), so a caller with many value sets transposes once.

    Running sums go down the columns: each step adds one row of B counts, and the rank of
    the middle element is a count of the partial sums at or below it, again row by row.
    Across the rows instead, the steps run over ~30 elements at a time: about 3x slower
    (perf/RESULTS.md, section 2). The dtype of ``counts_t`` holds any partial sum, as a
    replicate's total is its number of draws.
    """
    order = np.argsort(values, kind="stable")
    v = values[order]
    cum = counts_t[columns[order]]  # a gathered copy: the running sum goes in place
    np.cumsum(cum, axis=0, out=cum)
    total = cum[-1]
    lo_rank = (total - 1) // 2  # 0-based ranks of the two middle elements
    hi_rank = total // 2
    lo = v[(cum <= lo_rank).sum(axis=0, dtype=np.int32)]
    hi = v[(cum <= hi_rank).sum(axis=0, dtype=np.int32)]
    return (lo + hi) / 2.0


def curve_table(
    curves: pd.DataFrame, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Median over cases of a metric at each threshold, with a percentile interval.

    Parameters
    ----------
    curves : DataFrame
        Tidy, columns ``model, split, method, reference, metric, threshold, case_id,
        image_id, value`` (NaN allowed: dropped before the per-case mean).
    n_boot : int, default 10_000
    level : float, default 0.95
    seed : int, default 0
        Run seed; split ``s`` draws ``draw_counts(n_cases_s, n_boot, split_seed(seed, s))``
        over the split's sorted case ids, as :func:`~benchmark.stats.summarize` does.

    Returns
    -------
    DataFrame
        One row per (model, split, method, reference, metric, threshold): ``median`` of
        the per-case means, ``ci_low``/``ci_high`` (percentile interval of the replicate
        medians; replicates that drew no case with a value are left out) and ``n_cases``.
    """
    frame = check_columns(curves, "curves", [*CURVE_KEYS, "case_id", "image_id", "value"])
    check_values(frame, "curves")
    n_boot, level, seed = check_n_boot(n_boot), check_level(level), check_seed(seed)
    if frame.empty:
        return pd.DataFrame({c: [] for c in CURVE_COLUMNS})
    case_means = (frame.dropna(subset=["value"])
                  .groupby([*CURVE_KEYS, "case_id"], sort=True, observed=True)["value"]
                  .mean().reset_index())
    alpha = (1 - level) / 2
    rows = []
    for split in sorted(frame["split"].unique()):
        cases = np.sort(frame.loc[frame["split"] == split, "case_id"].unique())
        counts_t = _transposed(draw_counts(len(cases), n_boot, split_seed(seed, split)))
        position = {c: i for i, c in enumerate(cases)}
        sub = case_means[case_means["split"] == split]
        for key, grp in sub.groupby(CURVE_KEYS, sort=True, observed=True):
            cols = np.array([position[c] for c in grp["case_id"]])
            values = grp["value"].to_numpy(dtype=np.float64)
            # Replicates that drew no case with a value have no median: left out.
            if len(cols) < len(cases):
                drawn = counts_t[cols].any(axis=0)
                reps = _median_columns(values, counts_t[:, drawn], cols)  # may be empty
            else:
                reps = _median_columns(values, counts_t, cols)
            low, high = (np.quantile(reps, [alpha, 1 - alpha]) if reps.size
                         else (np.nan, np.nan))
            rows.append([*key, float(np.median(values)), float(low), float(high),
                         len(values)])
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)
