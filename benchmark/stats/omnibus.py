"""Many methods at once: Friedman test with cases as blocks and the Nemenyi critical
difference (STATISTICS.md, "Comparisons"), everything a critical-difference diagram needs.

References
----------
.. [1] Demšar, J. (2006). Statistical comparisons of classifiers over multiple data sets.
   JMLR 7, 1-30.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pandas as pd
from scipy import stats

OMNIBUS_COLUMNS = [
    "split", "reference", "metric", "within", "method", "mean_rank", "k", "n_cases",
    "statistic", "p", "cd", "alpha",
]


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: ``q_alpha * sqrt(k (k + 1) / (6 n))``.

    ``q_alpha`` is the studentized range quantile for ``k`` groups and infinite degrees
    of freedom divided by sqrt(2) (Demšar 2006, table 5: 2.343 for k = 3 at 0.05).
    """
    if k < 2 or n < 1:
        return float("nan")
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


def friedman(
    scores: pd.DataFrame, *, lower_is_better: Callable[[str], bool] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Friedman test over methods within each model, cases as blocks.

    Parameters
    ----------
    scores : DataFrame
        Tidy scores: model, split, method, case_id, image_id, reference, metric, value.
    lower_is_better : callable metric -> bool, optional
        Direction of each metric; rank 1 is the best method. Default: higher is better.
    alpha : float, default 0.05
        Level of the Nemenyi critical difference.

    Returns
    -------
    DataFrame with :data:`OMNIBUS_COLUMNS`, one row per (split, reference, metric, model
    (``within``), method): the method's mean rank over the complete cases (a case enters
    only when every method has a case mean), and the cell's Friedman statistic and p
    (``scipy.stats.friedmanchisquare``) and Nemenyi critical difference ``cd``.
    Cells with fewer than 3 methods or 2 complete cases get NaN statistic, p and cd.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be between 0 and 1, got {alpha!r}")
    lower = lower_is_better or (lambda _m: False)
    case_means = (
        scores.groupby(["split", "reference", "metric", "model", "method", "case_id"],
                       sort=True)["value"].mean().dropna()
    )
    rows = []
    for key, cell in case_means.groupby(
        level=["split", "reference", "metric", "model"], sort=True
    ):
        split, ref, metric, model = cast(tuple[Any, Any, Any, Any], key)
        table = cell.droplevel(["split", "reference", "metric", "model"]).unstack("method")
        table = table.dropna(axis=0, how="any")
        k, n = table.shape[1], table.shape[0]
        values = table.to_numpy()
        ranks = stats.rankdata(values if lower(str(metric)) else -values, axis=1)
        mean_rank = ranks.mean(axis=0) if n else np.full(k, np.nan)
        stat = p = cd = float("nan")
        if k >= 3 and n >= 2:
            res = stats.friedmanchisquare(*values.T)
            stat, p = float(res.statistic), float(res.pvalue)
            cd = nemenyi_cd(k, n, alpha)
        for method, r in zip(table.columns, mean_rank, strict=True):
            rows.append({"split": split, "reference": ref, "metric": metric, "within": model,
                         "method": method, "mean_rank": float(r), "k": k, "n_cases": n,
                         "statistic": stat, "p": p, "cd": cd, "alpha": alpha})
    return pd.DataFrame(rows, columns=OMNIBUS_COLUMNS)
