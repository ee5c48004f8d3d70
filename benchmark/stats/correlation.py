"""Confidence and agreement: Spearman's rho between the model's probability and each metric.

Per cell (model, split, method, reference, metric) the unit of inference is the case: the
per-case mean probability ``x_i`` is correlated with the per-case mean metric value ``y_i``
(STATISTICS.md, "Around the overlap numbers"), with a case-bootstrap percentile interval.

Spearman's rho as a function of case weights
--------------------------------------------
A case drawn ``c_i`` times counts ``c_i`` times: the replicate is Spearman's rho of the data
in which case ``i`` is repeated ``c_i`` times (``scipy.stats.spearmanr(np.repeat(x, c),
np.repeat(y, c))``), i.e. Pearson's r of the average ranks (midranks) with the counts as
weights. With ``N = sum_i c_i``, the distinct values of a variable in ascending order as
tie groups ``g`` of weight ``W_g``, ``cs_g`` the weight below group ``g`` and ``ce_g = cs_g +
W_g``, the midrank of group ``g`` is ``cs_g + (W_g + 1) / 2``, so the doubled, centred rank

    d_g = 2 midrank_g - (N + 1) = cs_g + ce_g - N

is an integer, and

    S_xy = sum_i c_i dx_i dy_i,    S_xx = sum_i c_i dx_i^2 = (N^3 - sum_g W_g^3) / 3,
    rho  = S_xy / sqrt(S_xx S_yy) = 3 S_xy / sqrt((N^3 - sum_g W_g^3) (N^3 - sum_h W_h^3)),

NaN where a variable is constant among the drawn cases (``S_xx = 0`` or ``S_yy = 0``).
Since ``sum_i c_i dx_i = 0``, ``S_xy = sum_i c_i dx_i (cs + ce)_y``: the ranks of ``y``
need no centring. Every sum is an integer, held exactly in the smallest sufficient integer
type (:func:`_dtypes`); only the final square root and quotient round. The result
therefore does not depend on summation order or chunking (bit-identical tables for a
seed) and agrees with scipy to the rounding of scipy's own floating-point arithmetic.

Layout and cost
---------------
Weights are laid out as ``(n_cases, columns)``: column 0 holds ones (the estimate), columns
``1..n_boot`` the split's bootstrap counts. The cumulative weights ``cs``, ``ce`` of a
variable are one row addition per case in the variable's sort order, on whole rows of
replicates, in column blocks small enough to stay in cache (:data:`CHUNK_ELEMENTS`). The
cost per cell is a few passes over its ``(n_cases, n_boot)`` weights. Cells with the same
cases share the weights; cells that also share ``x`` (the methods and metrics of one model
and split, unless NaN values drop different images) share the ranks of ``x``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.stats._validation import (
    check_columns,
    check_level,
    check_n_boot,
    check_seed,
    check_unique_rows,
    check_values,
)
from benchmark.stats.aggregate import cell_case_sums
from benchmark.stats.intervals import PERCENTILE, quantile_sorted, sort_rows
from benchmark.stats.resample import draw_counts, split_seed
from benchmark.stats.summary import _case_strata

KEYS = ("model", "split", "method", "reference", "metric")
SCORES_COLUMNS = (*KEYS, "case_id", "image_id", "value")
PREDICTIONS_COLUMNS = ("model", "split", "case_id", "image_id", "score")
JOIN = ["model", "split", "case_id", "image_id"]
TABLE_COLUMNS = (*KEYS, "rho", "ci_low", "ci_high", "ci_method", "n_cases")
#: Fewest cases with a value for which rho is reported.
MIN_CASES = 3
FEW_CASES = f"undefined (fewer than {MIN_CASES} cases)"
CONSTANT_PROBABILITY = "undefined (constant probability)"
CONSTANT_METRIC = "undefined (constant metric)"
NO_REPLICATES = "undefined (no valid replicates)"
#: Upper bound on the elements of one ``(n_cases, columns)`` block of the kernel: small
#: enough for the block's working arrays to stay in cache.
CHUNK_ELEMENTS = 2**17


@dataclass(frozen=True)
class _Input:
    frame: pd.DataFrame
    values: np.ndarray
    probability: np.ndarray
    n_boot: int
    level: float
    seed: int
    strata: Any


def _spearman_table_iv(
    scores: Any, predictions: Any, n_boot: Any, level: Any, seed: Any, strata: Any
) -> _Input:
    """Input validation and standardisation for :func:`spearman_table`."""
    frame = check_columns(scores, "scores", SCORES_COLUMNS)
    values = check_values(frame, "scores")
    if frame[["model", "split", "case_id"]].isna().any().any():
        raise ValueError("`scores` columns model, split and case_id must not be missing.")
    check_unique_rows(frame, "scores", [*KEYS, "case_id", "image_id"])
    preds = check_columns(predictions, "predictions", PREDICTIONS_COLUMNS)
    try:
        prob = pd.to_numeric(preds["score"]).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ValueError("`predictions['score']` must be numeric (a probability).") from err
    if not np.isfinite(prob).all():
        raise ValueError("`predictions['score']` must be finite for every image (no NaN/inf).")
    check_unique_rows(preds, "predictions", JOIN)
    if strata is not None and not isinstance(strata, (Mapping, pd.Series)):
        raise ValueError(
            "`strata` must be a mapping (dict or pandas Series) from case_id to stratum, "
            f"or None; got {type(strata).__name__}."
        )
    lookup = preds[JOIN].copy()
    lookup["_probability"] = prob
    try:
        joined = frame[JOIN].merge(lookup, on=JOIN, how="left", validate="many_to_one")
    except (ValueError, TypeError) as err:
        raise ValueError(
            "cannot join `scores` to `predictions` on model, split, case_id, image_id "
            f"(do the key columns have the same types?): {err}"
        ) from err
    probability = joined["_probability"].to_numpy(dtype=np.float64)
    unmatched = np.isnan(probability) & ~np.isnan(values)
    if unmatched.any():
        first = frame.loc[unmatched, JOIN].iloc[0].to_dict()
        raise ValueError(
            f"`predictions` has no probability for {int(unmatched.sum())} scored image(s), "
            f"e.g. {first}; predict every image that has a metric value."
        )
    return _Input(
        frame=frame,
        values=values,
        probability=probability,
        n_boot=check_n_boot(n_boot),
        level=check_level(level),
        seed=check_seed(seed),
        strata=strata,
    )


@dataclass(frozen=True, eq=False)
class _Ranking:
    """Sort order and tie groups of one variable over ``n`` cases.

    ``order`` is the stable ascending sort order. When there are ties, ``starts[j]`` and
    ``ends[j]`` delimit (end exclusive) the tie group of sorted position ``j``, and
    ``group_starts``, ``group_ends`` list the groups; all are None without ties.
    """

    order: np.ndarray
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    group_starts: np.ndarray | None = None
    group_ends: np.ndarray | None = None


def _ranking(values: np.ndarray) -> _Ranking:
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.ones(values.size, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    if new.all():
        return _Ranking(order)
    group_starts = np.flatnonzero(new)
    group_ends = np.append(group_starts[1:], values.size)
    group = np.cumsum(new) - 1
    return _Ranking(order, group_starts[group], group_ends[group], group_starts, group_ends)


def _dtypes(n: int, total: int) -> tuple[type, type]:
    """Storage and accumulator dtypes that hold every term of the kernel exactly.

    With weight totals ``N <= total`` per column, counts, cumulative sums and doubled
    ranks are at most ``2 N`` and ``w * (2 r - N - 1)`` at most ``N^2``; sums of products
    over ``n`` cases are at most ``2 n N^3``. The smallest integer types that hold these
    are used (int16 storage for ``N <= 181`` halves the memory traffic); float64 beyond
    int64 (then rounding, no longer exact).
    """
    bound = 2 * max(n, 1) * total**3
    if bound >= 2**62:
        return np.float64, np.float64
    storage = np.int16 if total**2 < 2**15 else np.int32 if total**2 < 2**31 else np.int64
    return storage, np.int32 if bound < 2**31 else np.int64


def _cumulate(weights: np.ndarray, order: np.ndarray, cum: np.ndarray) -> None:
    """``cum[j] = weights[order[:j]].sum(axis=0)`` for ``j = 0..n`` (one row add per case)."""
    cum[0] = 0
    for j, i in enumerate(order.tolist()):
        np.add(cum[j], weights[i], out=cum[j + 1])


def _doubled_ranks(cum: np.ndarray, ranking: _Ranking) -> np.ndarray:
    """``2 midrank - 1`` of each sorted position: the weight below its tie group plus the
    weight up to the end of its group, ``cs_g + ce_g``."""
    if ranking.starts is None:
        return cum[1:] + cum[:-1]
    return cum[ranking.ends] + cum[ranking.starts]


def _tie_cubes(cum: np.ndarray, ranking: _Ranking, untied: np.ndarray, acc: type) -> np.ndarray:
    """``sum_g W_g^3`` over the tie groups; ``untied`` (``sum_i w_i^3``) without ties."""
    if ranking.group_starts is None:
        return untied
    group_w = cum[ranking.group_ends] - cum[ranking.group_starts]
    return np.einsum("ij,ij,ij->j", group_w, group_w, group_w, dtype=acc)


def _rho_block(
    weights: np.ndarray,
    untied: np.ndarray,
    x_rank: _Ranking,
    y_ranks: list[_Ranking],
    positions: list[np.ndarray],
    acc: type,
) -> np.ndarray:
    """Rho of one ``x`` against several ``y`` for one block of weight columns, ``(K, R)``."""
    n, n_cols = weights.shape
    cum = np.empty((n + 1, n_cols), dtype=weights.dtype)
    x_weights = weights[x_rank.order]
    _cumulate(weights, x_rank.order, cum)
    total3 = cum[n].astype(untied.dtype) ** 3
    dx = _doubled_ranks(cum, x_rank)
    dx -= cum[n]
    wdx = x_weights * dx  # sorted by x; sum over cases is 0
    s_xx3 = total3 - _tie_cubes(cum, x_rank, untied, acc)
    out = np.empty((len(y_ranks), n_cols))
    for k, (y_rank, pos) in enumerate(zip(y_ranks, positions, strict=True)):
        _cumulate(weights, y_rank.order, cum)
        # sum_i w_i dx_i dy_i with dy = u - N: the N term drops since sum_i w_i dx_i = 0.
        s_xy = np.add.reduce(
            np.multiply(wdx[pos], _doubled_ranks(cum, y_rank), dtype=acc), axis=0
        )
        s_yy3 = total3 - _tie_cubes(cum, y_rank, untied, acc)
        denominator = s_xx3.astype(np.float64) * s_yy3
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = 3.0 * s_xy / np.sqrt(denominator)
        rho[denominator == 0] = np.nan
        out[k] = rho
    return out


@dataclass(frozen=True, eq=False)
class _Weights:
    """Case weights ``(n, R)`` in the kernel's dtype, with ``sum_i w_i^3`` per column."""

    weights: np.ndarray
    untied: np.ndarray
    acc: type


def _prepare(weights_t: np.ndarray) -> _Weights:
    """Convert non-negative integer weights ``(n, R)`` for :func:`_rho_of_cells`."""
    n = weights_t.shape[0]
    total = int(weights_t.sum(axis=0).max()) if weights_t.size else 0
    storage, acc = _dtypes(n, total)
    weights: np.ndarray = np.ascontiguousarray(weights_t, dtype=storage)
    untied = np.einsum("ij,ij,ij->j", weights, weights, weights, dtype=acc)
    wide = np.int64 if acc is not np.float64 else np.float64
    return _Weights(weights, untied.astype(wide), acc)


def _rho_of_cells(prepared: _Weights, x: np.ndarray, ys: list[np.ndarray]) -> np.ndarray:
    """Spearman's rho of ``x`` against each of ``ys`` for every column of weights.

    Parameters
    ----------
    prepared : _Weights
        Non-negative integer case weights ``(n, R)``, one column per evaluation (ones,
        bootstrap counts), from :func:`_prepare`.
    x : ndarray of float, shape (n,)
    ys : list of K ndarrays of float, shape (n,)

    Returns
    -------
    ndarray of float64, shape (K, R)
        NaN where ``x`` or ``y`` is constant among the cases of positive weight.
    """
    weights, untied, acc = prepared.weights, prepared.untied, prepared.acc
    n, n_cols = weights.shape
    out = np.empty((len(ys), n_cols))
    if not ys or n_cols == 0:
        return out
    x_rank = _ranking(x)
    inverse = np.empty(n, dtype=np.int64)
    inverse[x_rank.order] = np.arange(n)
    y_ranks = [_ranking(y) for y in ys]
    positions = [inverse[r.order] for r in y_ranks]
    step = max(256, CHUNK_ELEMENTS // max(n, 1))
    for first in range(0, n_cols, step):
        cols = slice(first, first + step)
        out[:, cols] = _rho_block(
            np.ascontiguousarray(weights[:, cols]), untied[cols], x_rank, y_ranks, positions,
            acc,
        )
    return out


def weighted_spearman(x: Any, y: Any, weights: Any) -> np.ndarray:
    """Spearman's rho of ``x`` and ``y`` with integer frequency weights, per row of weights.

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        The two variables (finite), one entry per case.
    weights : array_like of int, shape (R, n) or (n,)
        Non-negative integer weights (e.g. bootstrap counts): row ``b`` repeats case ``i``
        ``weights[b, i]`` times.

    Returns
    -------
    rho : ndarray of float64, shape (R,) (or () for 1-D weights)
        ``scipy.stats.spearmanr(np.repeat(x, w_b), np.repeat(y, w_b))`` for each row
        ``w_b``: Pearson's r of average ranks (ties share their mean rank); NaN where
        ``x`` or ``y`` is constant among the cases of positive weight.

    Examples
    --------
    >>> import numpy as np
    >>> x, y = np.array([0.1, 0.4, 0.3, 0.9]), np.array([0.0, 1.0, 1.0, 1.0])
    >>> weighted_spearman(x, y, [[1, 1, 1, 1], [2, 0, 1, 1], [0, 2, 1, 1]]).round(4)
    array([0.7746, 0.9428,    nan])
    """
    x_arr = np.asarray(x, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if x_arr.ndim != 1 or x_arr.shape != y_arr.shape:
        raise ValueError(
            f"`x` and `y` must be 1-D of the same length; got {x_arr.shape} and {y_arr.shape}."
        )
    if not (np.isfinite(x_arr).all() and np.isfinite(y_arr).all()):
        raise ValueError("`x` and `y` must be finite (drop NaN cases first).")
    if w.ndim not in (1, 2) or w.shape[-1] != x_arr.size:
        raise ValueError(
            f"`weights` must have shape (R, {x_arr.size}) or ({x_arr.size},); got {w.shape}."
        )
    if (w < 0).any() or (w != np.round(w)).any():
        raise ValueError("`weights` must be non-negative integers (frequency weights).")
    rows = w.reshape(-1, x_arr.size)
    rho = _rho_of_cells(_prepare(rows.T.astype(np.int64)), x_arr, [y_arr])[0]
    return rho.reshape(w.shape[:-1])


def spearman_table(
    scores: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    strata: Mapping[Any, Any] | pd.Series | None = None,
) -> pd.DataFrame:
    """Spearman's rho between the model's probability and each metric, per cell, by case.

    Parameters
    ----------
    scores : DataFrame
        Tidy scores, columns ``model, split, method, case_id, image_id, reference, metric,
        value`` (float, NaN allowed); one row per image and cell.
    predictions : DataFrame
        Columns ``model, split, case_id, image_id, score`` (``score``: the probability of
        the positive class, finite; other columns such as ``label`` are ignored). Every
        scored image with a non-NaN value needs its prediction.
    n_boot : int, default 10_000
        Bootstrap replicates (>= 100).
    level : float, default 0.95
        Confidence level in (0, 1).
    seed : int, default 0
        Run seed. Split ``s`` uses ``draw_counts(n_cases_s, n_boot, split_seed(seed, s),
        strata_s)`` over all case_ids of split ``s`` in ``scores`` (sorted), exactly the
        count matrix :func:`~benchmark.stats.summarize` draws for the same scores table.
    strata : mapping case_id -> stratum, optional
        Stratified resampling, as in :func:`~benchmark.stats.summarize` (pass the same
        strata to get the same draws).

    Returns
    -------
    DataFrame
        One row per cell, sorted by ``model, split, method, reference, metric``: these
        columns, then ``rho`` (Spearman's rho over cases), ``ci_low``, ``ci_high``,
        ``ci_method`` (``"percentile"``, or ``"undefined (fewer than 3 cases)"``,
        ``"undefined (constant probability)"``, ``"undefined (constant metric)"``, or
        ``"undefined (no valid replicates)"`` with NaN interval) and ``n_cases`` (cases
        with at least one non-NaN value).

    Notes
    -----
    - Per cell, each score row is joined to its image's probability (on model, split,
      case_id, image_id), rows with a NaN value are dropped, and the probabilities and
      values are averaged per case: ``x_i``, ``y_i`` (cases, not images, are the unit of
      inference). ``rho`` is Spearman's rho of ``(x_i, y_i)`` over the ``n_cases`` cases
      (average ranks for ties, as ``scipy.stats.spearmanr``); NaN when ``n_cases < 3`` or
      either variable is constant.
    - Replicate ``b`` is rho of the data in which case ``i`` appears ``C[b, i]`` times
      (``scipy.stats.spearmanr(np.repeat(x, C[b]), np.repeat(y, C[b]))``), with ``C`` the
      split's count matrix restricted to the cell's cases; a case of the split absent from
      the cell has weight but no contribution. All cells of a split share ``C``, as in
      :func:`~benchmark.stats.summarize`. Replicates in which a variable is constant (or
      too few cases are drawn) are NaN and left out; the interval is the percentile
      interval (numpy's ``"linear"`` quantiles ``(1 - level) / 2`` and ``(1 + level) / 2``)
      of the finite replicates. Metrics with few distinct values (pointing game: 0/1)
      give many constant replicates when nearly all cases share one value; then the
      interval rests on the replicates that are not constant.
    - Computed in exact integer arithmetic up to the final quotient (module docstring):
      the same inputs and seed give bit-identical tables.

    Examples
    --------
    >>> import pandas as pd
    >>> from benchmark.stats.correlation import spearman_table
    >>> cases = ["a", "b", "c", "d", "e"]
    >>> predictions = pd.DataFrame({"model": "cnn", "split": "test", "case_id": cases,
    ...                             "image_id": 0, "score": [0.1, 0.3, 0.5, 0.7, 0.9]})
    >>> scores = predictions.drop(columns="score").assign(
    ...     method="gradcam", reference="mask", metric="iou",
    ...     value=[0.2, 0.1, 0.4, 0.5, 0.8])
    >>> table = spearman_table(scores, predictions, n_boot=1000)
    >>> table[["metric", "rho", "ci_method", "n_cases"]].to_dict("records")
    [{'metric': 'iou', 'rho': 0.9, 'ci_method': 'percentile', 'n_cases': 5}]
    """
    iv = _spearman_table_iv(scores, predictions, n_boot, level, seed, strata)
    frame = iv.frame
    if len(frame) == 0:
        empty = {c: frame[c].iloc[:0] for c in KEYS}
        return pd.DataFrame({**empty, **{c: [] for c in TABLE_COLUMNS[len(KEYS):]}})

    groups = frame.groupby(list(KEYS), sort=True, observed=True, dropna=False)
    cell = groups.ngroup().to_numpy(dtype=np.int64)
    keys = groups.size().index.to_frame(index=False)
    n_cells = len(keys)
    split_codes, split_names = pd.factorize(keys["split"], use_na_sentinel=False)
    row_split = split_codes[cell]
    case_ids = frame["case_id"].to_numpy()
    probability = np.where(np.isnan(iv.values), np.nan, iv.probability)

    rho = np.full(n_cells, np.nan)
    low = np.full(n_cells, np.nan)
    high = np.full(n_cells, np.nan)
    used = np.full(n_cells, FEW_CASES, dtype=object)
    n_cases = np.zeros(n_cells, dtype=np.int64)
    local = np.empty(n_cells, dtype=np.int64)
    for s, split in enumerate(split_names):
        cells = np.flatnonzero(split_codes == s)
        rows = np.flatnonzero(row_split == s)
        local[cells] = np.arange(cells.size)
        case_codes, cases = pd.factorize(case_ids[rows], sort=True)
        cell_rows = local[cell[rows]]
        value_sums, n_valid, _ = cell_case_sums(
            iv.values[rows], cell_rows, cells.size, case_codes, len(cases)
        )
        prob_sums, _, _ = cell_case_sums(
            probability[rows], cell_rows, cells.size, case_codes, len(cases)
        )
        counts = draw_counts(
            len(cases), iv.n_boot, split_seed(iv.seed, split),
            _case_strata(iv.strata, np.asarray(cases), split),
        )
        weights_t = np.empty((len(cases), iv.n_boot + 1), dtype=np.int64)
        weights_t[:, 0] = 1  # column 0: the estimate; columns 1..n_boot: the replicates
        weights_t[:, 1:] = counts.T
        # Cells with the same cases share the weights; with the same x, also the x ranks.
        by_cases: dict[bytes, dict[bytes, list[int]]] = {}
        means: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for j, c in enumerate(cells.tolist()):
            present = np.flatnonzero(n_valid[:, j])
            n_cases[c] = present.size
            if present.size < MIN_CASES:
                continue
            x = prob_sums[present, j] / n_valid[present, j]
            y = value_sums[present, j] / n_valid[present, j]
            if x.min() == x.max():
                used[c] = CONSTANT_PROBABILITY
            elif y.min() == y.max():
                used[c] = CONSTANT_METRIC
            else:
                means[c] = (present, x, y)
                by_x = by_cases.setdefault(present.tobytes(), {})
                by_x.setdefault(x.tobytes(), []).append(c)
        for by_x in by_cases.values():
            first = next(iter(by_x.values()))[0]
            prepared = _prepare(weights_t[means[first][0]])
            for members in by_x.values():
                x = means[members[0]][1]
                values = _rho_of_cells(prepared, x, [means[c][2] for c in members])
                _fill(members, values, iv.level, rho, low, high, used)

    table = keys.copy()
    table["rho"] = rho
    table["ci_low"] = low
    table["ci_high"] = high
    table["ci_method"] = used
    table["n_cases"] = n_cases
    return table


def _fill(
    members: list[int],
    values: np.ndarray,
    level: float,
    rho: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    used: np.ndarray,
) -> None:
    """Write estimates (column 0 of ``values``) and percentile intervals of the cells."""
    idx = np.asarray(members)
    rho[idx] = values[:, 0]
    ordered, n_finite = sort_rows(values[:, 1:])
    alpha = (1.0 - level) / 2.0
    low[idx] = quantile_sorted(ordered, n_finite, np.full(idx.size, alpha))
    high[idx] = quantile_sorted(ordered, n_finite, np.full(idx.size, 1.0 - alpha))
    used[idx] = np.where(n_finite > 0, PERCENTILE, NO_REPLICATES)
