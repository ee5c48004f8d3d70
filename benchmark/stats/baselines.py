"""Does an explainer beat the null baselines? (STATISTICS.md, "Baselines").

A cell (model, split, method, reference, metric) beats the baselines when the paired
case-bootstrap interval of its difference from the best null baseline of the same model,
split, reference and metric lies entirely on the better side of zero. The best baseline
is the one with the best estimate in the metric's direction. The pairs come from the
``methods`` family of :func:`benchmark.stats.compare`, so the test is paired on the
split's shared draws.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pandas as pd

from benchmark.stats._validation import check_columns

KEY = ["model", "split", "reference", "metric"]


def flag_baselines(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    baselines: Collection[str],
    lower_is_better: Callable[[str], bool],
) -> pd.DataFrame:
    """Flag each explainer cell that does (not) beat the best null baseline.

    Parameters
    ----------
    summary : DataFrame
        :func:`~benchmark.stats.summarize` output with ``by = [model, split, method,
        reference, metric]``.
    comparisons : DataFrame
        :func:`~benchmark.stats.compare` output of ``family="methods"`` on the same scores
        (columns ``family, within, split, reference, metric, a, b, diff, ci_low,
        ci_high``); other families are ignored.
    baselines : collection of str
        Method names that are null baselines (e.g. ``random``, ``center_prior``,
        ``average_mask``).
    lower_is_better : callable, metric name -> bool
        The metric's direction.

    Returns
    -------
    DataFrame
        ``summary``'s rows in its order with two columns: ``best_baseline`` (str, or None
        where the cell is itself a baseline or there is no baseline with an estimate)
        and ``beats_baseline`` (pandas ``boolean``: True/False, ``<NA>`` for baselines and
        where the pair has no interval).
    """
    summary = check_columns(summary, "summary", [*KEY, "method", "estimate"])
    if len(comparisons) == 0:  # a run of one method has no pairs: nothing to flag
        comparisons = pd.DataFrame(columns=[
            "family", "within", "split", "reference", "metric", "a", "b", "ci_low", "ci_high"])
    comparisons = check_columns(
        comparisons, "comparisons",
        ["family", "within", "split", "reference", "metric", "a", "b", "ci_low", "ci_high"],
    )
    pairs = comparisons[comparisons["family"] == "methods"]
    ci: dict[tuple[object, ...], tuple[float, float]] = {
        (r.within, r.split, r.reference, r.metric, r.a, r.b): (float(lo), float(hi))
        for r, lo, hi in zip(pairs.itertuples(index=False), pairs["ci_low"], pairs["ci_high"],
                             strict=True)
    }
    best: dict[tuple[object, ...], str] = {}
    is_base = summary["method"].isin(list(baselines))
    for key, grp in summary[is_base].groupby(KEY, sort=False, observed=True, dropna=False):
        grp = grp[np.isfinite(grp["estimate"].to_numpy(dtype=float))]
        if len(grp):
            lower = lower_is_better(str(key[3]))
            pick = grp["estimate"].idxmin() if lower else grp["estimate"].idxmax()
            best[tuple(key)] = str(grp.at[pick, "method"])

    best_col: list[str | None] = []
    beats: list[bool | None] = []
    for r in summary.itertuples(index=False):
        key = (r.model, r.split, r.reference, r.metric)
        base = None if r.method in baselines else best.get(key)
        best_col.append(base)
        if base is None:
            beats.append(None)
            continue
        lo, hi = _oriented(ci, (r.model, r.split, r.reference, r.metric), str(r.method), base)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            beats.append(None)
        else:
            beats.append(bool(hi < 0) if lower_is_better(str(r.metric)) else bool(lo > 0))
    return pd.DataFrame(
        {"best_baseline": pd.Series(best_col, dtype=object),
         "beats_baseline": pd.array(beats, dtype="boolean")},
        index=summary.index,
    )


def _oriented(ci: dict[tuple[object, ...], tuple[float, float]], key: tuple[object, ...],
              method: str, base: str) -> tuple[float, float]:
    """Interval of ``estimate(method) - estimate(base)`` from a pair stored as (a, b)."""
    if (*key, method, base) in ci:
        return ci[(*key, method, base)]
    if (*key, base, method) in ci:
        lo, hi = ci[(*key, base, method)]
        return -hi, -lo
    return float("nan"), float("nan")
