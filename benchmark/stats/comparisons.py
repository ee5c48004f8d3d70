"""Pairwise comparisons: paired bootstrap difference, permutation p, multiplicity (STATISTICS.md).

:func:`compare` takes the tidy scores table :func:`~benchmark.stats.summarize` takes and
returns one row per pair of methods (within a model) or of models (within a method), per
split, reference and metric.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.stats._validation import (
    METHODS,
    WEIGHTINGS,
    check_choice,
    check_columns,
    check_int,
    check_level,
    check_n_boot,
    check_seed,
    check_unique_rows,
    check_values,
    group_rows,
)
from benchmark.stats.adjust import ADJUSTMENTS, adjust_pvalues
from benchmark.stats.aggregate import cell_case_sums, ratio_terms
from benchmark.stats.engine import ColumnIntervals, bootstrap_differences
from benchmark.stats.permutation import rank_biserial, sign_flip_pvalues, wilcoxon_pvalues
from benchmark.stats.resample import draw_counts, split_seed
from benchmark.threads import side_by_side

FAMILIES = ("methods", "models")
CELL = ["model", "split", "method", "reference", "metric"]
CONTRACT_COLUMNS = (
    "family", "split", "reference", "metric", "a", "b", "diff", "ci_low", "ci_high",
    "p", "p_adj", "adj_method",
)
EXTRA_COLUMNS = ("within", "p_wilcoxon", "effect_size", "n_cases", "ci_method")
#: family -> (column whose levels are compared, column held fixed).
_ARMS = {"methods": ("method", "model"), "models": ("model", "method")}


@dataclass(frozen=True)
class _CompareInput:
    scores: pd.DataFrame
    values: np.ndarray
    family: str
    n_boot: int
    level: float
    method: str
    weighting: str
    seed: int
    adjust: str
    n_flips: int
    #: Cell (group of ``CELL``) of each row and the table of cells, see ``group_rows``.
    cell: np.ndarray
    keys: pd.DataFrame


def _compare_iv(
    scores: Any, family: Any, n_boot: Any, level: Any, method: Any, weighting: Any,
    seed: Any, adjust: Any, n_flips: Any,
) -> _CompareInput:
    """Input validation and standardisation for :func:`compare`."""
    family = check_choice(family, "family", FAMILIES)
    adjust = check_choice(adjust, "adjust", tuple(ADJUSTMENTS))
    frame = check_columns(scores, "scores", [*CELL, "case_id", "image_id", "value"])
    values = check_values(frame, "scores")
    for col in [*CELL, "case_id"]:
        if frame[col].isna().any():
            raise ValueError(f"`scores['{col}']` must not contain missing values.")
    cell, keys = group_rows(frame, CELL)
    check_unique_rows(frame, "scores", [*CELL, "case_id", "image_id"],
                      groups=(CELL, cell, len(keys)))
    return _CompareInput(
        scores=frame, values=values, family=family, n_boot=check_n_boot(n_boot),
        level=check_level(level), method=check_choice(method, "method", METHODS),
        weighting=check_choice(weighting, "weighting", WEIGHTINGS), seed=check_seed(seed),
        adjust=adjust, n_flips=check_int(n_flips, "n_flips", 1), cell=cell, keys=keys,
    )


def paired_bootstrap(
    num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
    counts: np.ndarray, *, level: float, method: str, keep_replicates: bool = False,
) -> ColumnIntervals:
    """Bootstrap interval of ``P`` differences ``theta_a - theta_b`` on shared draws.

    Parameters
    ----------
    num_a, den_a, num_b, den_b : ndarray of float, shape (n_cases, P)
        Per-case ratio terms (:func:`~benchmark.stats.aggregate.ratio_terms`) of the two
        arms of each pair, already restricted to the paired cases (zero elsewhere).
    counts : ndarray of int, shape (n_boot, n_cases)
        One count matrix for all pairs (:func:`~benchmark.stats.draw_counts`).
    level : float
    method : {"bca", "percentile"}
    keep_replicates : bool, default False
        Also return the ``(n_boot, P)`` replicates of the differences.

    Returns
    -------
    ColumnIntervals
        ``estimate = theta_a(1) - theta_b(1)``; replicates ``theta_a(C_b) - theta_b(C_b)``
        (paired: both arms on the same row of ``counts``); BCa acceleration from the
        delete-one-case jackknife ``theta_a(1 - e_i) - theta_b(1 - e_i)``, percentile
        fallback where BCa is undefined. See
        :func:`~benchmark.stats.engine.bootstrap_differences`, which :func:`compare` calls
        with each arm once however many pairs it enters.
    """
    p = num_a.shape[1]
    return bootstrap_differences(
        np.hstack([num_a, num_b]), np.hstack([den_a, den_b]), np.arange(p),
        np.arange(p, 2 * p), counts, level=level, method=method,
        keep_replicates=keep_replicates,
    )


def _arm_columns(
    x: np.ndarray, valid: np.ndarray, ia: np.ndarray, ib: np.ndarray, paired: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-case arm terms of every pair, each distinct arm once.

    Parameters
    ----------
    x : ndarray, shape (n_cases, K)
        A per-case term of each cell, zero where the cell has no valid value.
    valid : ndarray of bool, shape (n_cases, K)
        Cases with a valid value in each cell.
    ia, ib : ndarray of int, shape (P,)
        The cells of each pair.
    paired : ndarray of bool, shape (n_cases, P)
        ``valid[:, ia] & valid[:, ib]``.

    Returns
    -------
    columns : ndarray, shape (n_cases, K + R)
        ``x``, then ``R`` columns ``where(paired[:, j], x[:, cell], 0)`` for the arms whose
        restriction to the pair's cases differs from the cell (a case valid in this arm but
        not in the other).
    col_a, col_b : ndarray of int, shape (P,)
        Column of ``columns`` holding ``where(paired[:, j], x[:, ia[j]], 0)`` (and ``ib``).
    """
    cols = []
    extra = [x]
    k = x.shape[1]
    for cells in (ia, ib):
        own = (valid[:, cells] == paired).all(axis=0)
        col = cells.copy()
        rest = np.flatnonzero(~own)
        col[rest] = k + np.arange(rest.size)
        k += rest.size
        extra.append(np.where(paired[:, rest], x[:, cells[rest]], 0.0))
        cols.append(col)
    return np.hstack(extra), cols[0], cols[1]


def _pairs(keys: pd.DataFrame, family: str) -> tuple[np.ndarray, np.ndarray]:
    """Column indices ``(ia, ib)`` of every pair of cells of one split, in table order."""
    arm, within = _ARMS[family]
    ia: list[int] = []
    ib: list[int] = []
    for _, grp in keys.groupby(["reference", "metric", within], sort=True):
        ordered = grp.sort_values(arm)
        for x, y in itertools.combinations(ordered.index.to_numpy(), 2):
            ia.append(int(x))
            ib.append(int(y))
    return np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)


def _compare_split(iv: _CompareInput, cells: np.ndarray, rows: np.ndarray,
                   split: Any) -> pd.DataFrame:
    """All pairs of one split: one count matrix and one sign-flip matrix for all of them.

    ``cells``: the split's cells (rows of ``iv.keys``, ascending); ``rows``: its rows of
    ``iv.scores``.
    """
    arm, within = _ARMS[iv.family]
    keys = iv.keys.iloc[cells].reset_index(drop=True)
    local = np.searchsorted(cells, iv.cell[rows])
    case_codes, cases = pd.factorize(iv.scores["case_id"].to_numpy()[rows], sort=True)
    sums, n_valid, _ = cell_case_sums(iv.values[rows], local, len(keys), case_codes, len(cases))
    num, den = ratio_terms(sums, n_valid, iv.weighting)
    ia, ib = _pairs(keys, iv.family)
    valid = n_valid > 0
    paired = valid[:, ia] & valid[:, ib]
    counts = draw_counts(len(cases), iv.n_boot, split_seed(iv.seed, split))
    # Each cell's replicates are computed once and shared by all its pairs, unless a pair
    # drops some of its cases (missing in the other arm): then that arm gets its own column.
    num_pairs, col_a, col_b = _arm_columns(num, valid, ia, ib, paired)
    den_pairs = _arm_columns(den, valid, ia, ib, paired)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / n_valid
    d = np.where(paired, means[:, ia] - means[:, ib], 0.0)
    arms = _arm_columns(np.where(valid, means, 0.0), valid, ia, ib, paired)
    flip_seed = split_seed(iv.seed, f"{split}/sign-flips")
    with side_by_side() as worker:
        boot = worker.submit(bootstrap_differences, num_pairs, den_pairs, col_a, col_b,
                             counts, level=iv.level, method=iv.method, standard_error=False)
        p_flip = sign_flip_pvalues(d, paired, n_flips=iv.n_flips, seed=flip_seed, arms=arms)
        p_wilcoxon = wilcoxon_pvalues(d, paired)
        effect_size = rank_biserial(d, paired)
        out = boot.result()
    table = pd.DataFrame({
        "family": iv.family,
        "split": split,
        "reference": keys["reference"].to_numpy()[ia],
        "metric": keys["metric"].to_numpy()[ia],
        "a": keys[arm].to_numpy()[ia],
        "b": keys[arm].to_numpy()[ib],
        "diff": out.estimate,
        "ci_low": out.ci_low,
        "ci_high": out.ci_high,
        "p": p_flip,
        "within": keys[within].to_numpy()[ia],
        "p_wilcoxon": p_wilcoxon,
        "effect_size": effect_size,
        "n_cases": paired.sum(axis=0).astype(np.int64),
        "ci_method": out.method,
    })
    return table


def _adjust(table: pd.DataFrame, adjust: str) -> np.ndarray:
    """Adjusted p per family instance ``(family, split, reference, metric)``; NaN stays NaN."""
    p_adj = np.full(len(table), np.nan)
    instances = table.groupby(["family", "split", "reference", "metric"], sort=False)
    p = table["p"].to_numpy(np.float64)
    for idx in instances.indices.values():
        p_adj[idx] = adjust_pvalues(p[idx], adjust)
    return p_adj


@dataclass(frozen=True, eq=False)
class ComparisonTable:
    """Result of :func:`compare`: paired comparisons with the settings that made them.

    Attributes
    ----------
    table : DataFrame
        One row per pair (columns in :func:`compare`'s Returns).
    family, n_boot, level, method, weighting, seed, adjust, n_flips
        The settings used.
    """

    table: pd.DataFrame
    family: str
    n_boot: int
    level: float
    method: str
    weighting: str
    seed: int
    adjust: str
    n_flips: int

    def to_frame(self) -> pd.DataFrame:
        """The tidy table (a copy)."""
        return self.table.copy()

    def significant(self, alpha: float = 0.05) -> pd.DataFrame:
        """Rows whose adjusted p is below ``alpha``."""
        return self.table[self.table["p_adj"] < alpha]


def compare(
    scores: pd.DataFrame,
    *,
    family: str,
    n_boot: int = 10_000,
    level: float = 0.95,
    method: str = "bca",
    weighting: str = "case",
    seed: int = 0,
    adjust: str = "holm",
    n_flips: int = 10_000,
) -> ComparisonTable:
    """Paired comparisons of methods (within a model) or models (within a method).

    Parameters
    ----------
    scores : DataFrame
        Tidy table with columns ``model, split, method, case_id, image_id, reference,
        metric, value`` (NaN allowed), one row per image and cell.
    family : {"methods", "models"}
        ``"methods"``: all pairs of methods within each (model, split, reference, metric);
        ``"models"``: all pairs of models within each (method, split, reference, metric).
    n_boot : int, default 10_000
        Bootstrap replicates (>= 100).
    level : float, default 0.95
        Confidence level in (0, 1).
    method : {"bca", "percentile"}, default "bca"
        Interval of the difference; BCa falls back to percentile where undefined.
    weighting : {"case", "image"}, default "case"
        Estimand of each arm: mean of per-case means, or pooled image mean.
    seed : int, default 0
        Run seed. Split ``s`` draws ``draw_counts(n_cases_s, n_boot, split_seed(seed, s))``
        over all case_ids of the split, exactly as :func:`~benchmark.stats.summarize`, and
        the Monte Carlo sign flips from ``split_seed(seed, f"{s}/sign-flips")``.
    adjust : {"holm", "bh"}, default "holm"
        Multiplicity adjustment per family instance (family, split, reference, metric):
        ``multipletests(p, method="holm")`` or ``method="fdr_bh"``.
    n_flips : int, default 10_000
        Monte Carlo sign vectors of the permutation test (exact when ``2**n <= n_flips``).

    Returns
    -------
    ComparisonTable
        ``.table`` (also ``.to_frame()``) has one row per pair, columns ``family, split,
        reference, metric, a, b, diff, ci_low, ci_high, p, p_adj, adj_method`` then
        ``within`` (the model for ``"methods"``, the method for ``"models"``),
        ``p_wilcoxon``, ``effect_size``, ``n_cases``, ``ci_method``. ``a < b`` in sort
        order; ``diff = estimate(a) - estimate(b)``.

    Notes
    -----
    Pairing: a case enters a pair only if it has a non-NaN value in both arms; both
    estimates, the interval and the tests use those ``n_cases`` cases only (so ``diff``
    equals the difference of :func:`summarize`'s estimates when no case is missing from
    either arm). Interval: replicates ``theta_a(C_b) - theta_b(C_b)`` on the split's one
    count matrix (a paired bootstrap), BCa with the delete-one-case jackknife. ``p``: the
    two-sided sign-flip test of the case-level differences ``d_i`` of case means
    (statistic ``|mean d|``), see :func:`benchmark.stats.permutation.sign_flip_pvalues`;
    ``p_wilcoxon``: ``scipy.stats.wilcoxon(d, zero_method="zsplit")``; ``effect_size``:
    matched-pairs rank-biserial correlation (Kerby 2014). ``p_adj`` is NaN where ``p`` is.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = [dict(model="m", split="test", method=meth, case_id=c, image_id=0,
    ...              reference="mask", metric="iou", value=v + (0.1 if meth == "ig" else 0))
    ...         for c, v in enumerate([0.2, 0.5, 0.4, 0.7]) for meth in ("gradcam", "ig")]
    >>> t = compare(pd.DataFrame(rows), family="methods", n_boot=200).table
    >>> t[["a", "b", "diff", "p", "effect_size", "n_cases"]].round(3).to_dict("records")
    [{'a': 'gradcam', 'b': 'ig', 'diff': -0.1, 'p': 0.125, 'effect_size': -1.0, 'n_cases': 4}]
    """
    iv = _compare_iv(scores, family, n_boot, level, method, weighting, seed, adjust, n_flips)
    parts = []
    split_codes, split_names = pd.factorize(iv.keys["split"], sort=True)
    row_split = split_codes[iv.cell]
    for s, split in enumerate(split_names):
        cells = np.flatnonzero(split_codes == s)
        rows = np.flatnonzero(row_split == s)
        parts.append(_compare_split(iv, cells, rows, split))
    if parts:
        table = pd.concat(parts, ignore_index=True)
    else:
        table = pd.DataFrame({c: [] for c in (*CONTRACT_COLUMNS[:10], *EXTRA_COLUMNS)})
    table.insert(10, "p_adj", _adjust(table, iv.adjust))
    table.insert(11, "adj_method", iv.adjust)
    return ComparisonTable(table, iv.family, iv.n_boot, iv.level, iv.method, iv.weighting,
                           iv.seed, iv.adjust, iv.n_flips)
