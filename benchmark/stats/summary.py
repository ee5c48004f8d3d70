"""The summary table: a case-bootstrap interval for every cell of a tidy scores table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.stats._validation import (
    METHODS,
    WEIGHTINGS,
    check_choice,
    check_columns,
    check_level,
    check_n_boot,
    check_seed,
    check_unique_rows,
    check_values,
    group_rows,
)
from benchmark.stats.aggregate import cell_case_sums, ratio_terms
from benchmark.stats.engine import bootstrap_columns
from benchmark.stats.resample import draw_counts, split_seed

ID_COLUMNS = ("case_id", "image_id", "value")
RESULT_COLUMNS = ("estimate", "ci_low", "ci_high", "ci_method", "n_cases", "n_images", "n_nan")


@dataclass(frozen=True)
class _SummaryInput:
    scores: pd.DataFrame
    values: np.ndarray
    by: list[str]
    n_boot: int
    level: float
    method: str
    weighting: str
    seed: int
    strata: Any
    #: Cell (group of ``by``) of each row and the table of cells, see ``group_rows``.
    cell: np.ndarray
    keys: pd.DataFrame


def _summarize_iv(
    scores: Any,
    by: Any,
    n_boot: Any,
    level: Any,
    method: Any,
    weighting: Any,
    seed: Any,
    strata: Any,
) -> _SummaryInput:
    """Input validation and standardisation for :func:`summarize`."""
    by_list = [by] if isinstance(by, str) else list(by)
    if "split" not in by_list:
        raise ValueError(
            f'`by` must include "split" (each split has its own count matrix); got {by_list}.'
        )
    if len(set(by_list)) != len(by_list) or set(by_list) & set(ID_COLUMNS):
        raise ValueError(
            f"`by` must name distinct grouping columns other than {list(ID_COLUMNS)}; "
            f"got {by_list}."
        )
    frame = check_columns(scores, "scores", [*ID_COLUMNS, *by_list])
    values = check_values(frame, "scores")
    if frame["case_id"].isna().any():
        raise ValueError("`scores['case_id']` must not contain missing values.")
    cell, keys = group_rows(frame, by_list)
    check_unique_rows(frame, "scores", [*by_list, "case_id", "image_id"],
                      groups=(by_list, cell, len(keys)))
    if strata is not None and not isinstance(strata, (Mapping, pd.Series)):
        raise ValueError(
            "`strata` must be a mapping (dict or pandas Series) from case_id to stratum, "
            f"or None; got {type(strata).__name__}."
        )
    return _SummaryInput(
        scores=frame,
        values=values,
        by=by_list,
        n_boot=check_n_boot(n_boot),
        level=check_level(level),
        method=check_choice(method, "method", METHODS),
        weighting=check_choice(weighting, "weighting", WEIGHTINGS),
        seed=check_seed(seed),
        strata=strata,
        cell=cell,
        keys=keys,
    )


def _case_strata(strata: Any, cases: np.ndarray, split: Any) -> np.ndarray | None:
    if strata is None:
        return None
    labels, missing = [], []
    for case in cases:
        try:
            labels.append(strata[case])
        except KeyError:
            missing.append(case)
    if missing:
        raise ValueError(
            f"`strata` has no stratum for {len(missing)} case(s) of split {split!r}, "
            f"e.g. {missing[:3]}; give every case_id a stratum."
        )
    out = np.asarray(labels)
    if pd.isna(out).any():
        raise ValueError(f"`strata` maps case(s) of split {split!r} to a missing value.")
    return out


def summarize(
    scores: pd.DataFrame,
    *,
    by: list[str],
    n_boot: int = 10_000,
    level: float = 0.95,
    method: str = "bca",
    weighting: str = "case",
    seed: int = 0,
    strata: Mapping[Any, Any] | pd.Series | None = None,
) -> pd.DataFrame:
    """Estimate and case-bootstrap interval of every cell of a tidy scores table.

    Parameters
    ----------
    scores : DataFrame
        Tidy table with columns ``case_id``, ``image_id``, ``value`` (float, NaN allowed)
        and the grouping columns ``by``; one row per image and cell.
    by : list of str
        Grouping columns defining a cell, e.g. ``["model", "split", "method", "reference",
        "metric"]``; must include ``"split"``.
    n_boot : int, default 10_000
        Bootstrap replicates (>= 100).
    level : float, default 0.95
        Confidence level in (0, 1).
    method : {"bca", "percentile"}, default "bca"
        Interval type; BCa falls back to percentile where undefined (see ``ci_method``).
    weighting : {"case", "image"}, default "case"
        Mean of per-case means, or pooled image mean (see :func:`bootstrap_ci`).
    seed : int, default 0
        Run seed. Split ``s`` uses ``draw_counts(n_cases_s, n_boot, split_seed(seed, s),
        strata_s)`` with ``split_seed(seed, s)`` the first 8 bytes (little-endian) of
        ``sha256(f"{seed}:{s}")``, see :func:`benchmark.stats.resample.split_seed`.
    strata : mapping case_id -> stratum, optional
        Stratified resampling (e.g. by label): every replicate keeps the per-stratum case
        counts of the split.

    Returns
    -------
    DataFrame
        One row per cell, sorted by ``by``: the ``by`` columns, then ``estimate``,
        ``ci_low``, ``ci_high``, ``ci_method`` (``"bca"``, ``"percentile"``, ``"percentile
        (BCa undefined)"`` or ``"undefined (no valid values)"``), ``n_cases`` (cases with at
        least one non-NaN value), ``n_images`` (non-NaN values) and ``n_nan`` (NaN values).

    Notes
    -----
    All cells of one split share ONE count matrix over the split's case set (all case_ids
    of that split, in sorted order), so the replicates of the difference of two cells are
    the differences of their replicates: a paired bootstrap. A case absent from a cell, or
    whose values there are all NaN, has weight but no contribution in that cell. Per split
    the table is pivoted to ``(n_cases, n_cells)`` per-case sums and counts, and the
    replicates are one matrix product (chunked over cells, see
    :mod:`benchmark.stats.engine`). The same input and seed give bit-identical output.

    Examples
    --------
    >>> import pandas as pd
    >>> from benchmark.stats import summarize
    >>> scores = pd.DataFrame({"split": "test", "metric": ["iou"] * 4,
    ...                        "case_id": ["a", "a", "b", "c"], "image_id": [0, 1, 0, 0],
    ...                        "value": [0.2, 0.4, 0.6, 0.8]})
    >>> table = summarize(scores, by=["split", "metric"], n_boot=1000)
    >>> table[["metric", "estimate", "n_cases", "n_images"]].round(3).to_dict("records")
    [{'metric': 'iou', 'estimate': 0.567, 'n_cases': 3, 'n_images': 4}]
    """
    iv = _summarize_iv(scores, by, n_boot, level, method, weighting, seed, strata)
    table = _bootstrap_cells(iv, keep_replicates=False, standard_error=False)[0]
    return table[[*iv.by, *RESULT_COLUMNS]]


@dataclass(frozen=True, eq=False)
class BootstrapTable:
    """Result of :func:`bootstrap`: a table of statistics with their intervals.

    Attributes
    ----------
    table : DataFrame
        One row per cell: the ``by`` columns, ``estimate``, ``ci_low``, ``ci_high``,
        ``ci_method``, ``n_cases``, ``n_images``, ``n_nan``, ``standard_error`` (standard
        deviation, ``ddof=1``, of the finite replicates).
    bootstrap_distribution : dict split -> ndarray, shape (n_boot, n_cells_of_split), or None
        The replicates of each split's cells, columns in ``table`` row order of that split
        (with ``keep_replicates=True``); paired across cells of one split.
    n_boot, level, method, weighting, seed
        The settings used.
    """

    table: pd.DataFrame
    bootstrap_distribution: dict[Any, np.ndarray] | None
    n_boot: int
    level: float
    method: str
    weighting: str
    seed: int

    def to_frame(self) -> pd.DataFrame:
        """The tidy table (a copy)."""
        return self.table.copy()


def bootstrap(
    scores: pd.DataFrame,
    *,
    by: list[str],
    n_boot: int = 10_000,
    level: float = 0.95,
    method: str = "bca",
    weighting: str = "case",
    seed: int = 0,
    strata: Mapping[Any, Any] | pd.Series | None = None,
    keep_replicates: bool = False,
) -> BootstrapTable:
    """Case-bootstrap intervals of a table of statistics, as a result object.

    The same computation as :func:`summarize` (see there for every parameter), plus the
    standard error of each cell and, with ``keep_replicates=True``, the replicates
    (``8 * n_boot * n_cells`` bytes).

    Examples
    --------
    >>> import pandas as pd
    >>> from benchmark.stats import bootstrap
    >>> scores = pd.DataFrame({"split": "test", "metric": ["iou"] * 4,
    ...                        "case_id": ["a", "a", "b", "c"], "image_id": [0, 1, 0, 0],
    ...                        "value": [0.2, 0.4, 0.6, 0.8]})
    >>> res = bootstrap(scores, by=["split", "metric"], n_boot=1000, keep_replicates=True)
    >>> res.table["estimate"].round(3).tolist(), res.bootstrap_distribution["test"].shape
    ([0.567], (1000, 1))
    """
    iv = _summarize_iv(scores, by, n_boot, level, method, weighting, seed, strata)
    table, reps = _bootstrap_cells(iv, keep_replicates=keep_replicates, standard_error=True)
    return BootstrapTable(table, reps if keep_replicates else None, iv.n_boot, iv.level,
                          iv.method, iv.weighting, iv.seed)


def _bootstrap_cells(
    iv: _SummaryInput, *, keep_replicates: bool, standard_error: bool
) -> tuple[pd.DataFrame, dict[Any, np.ndarray]]:
    """The table of :func:`bootstrap`; ``standard_error=False`` leaves that column NaN."""
    frame = iv.scores
    if len(frame) == 0:
        empty = {c: frame[c].iloc[:0] for c in iv.by}
        return pd.DataFrame({**empty, **{c: [] for c in (*RESULT_COLUMNS, "standard_error")}}), {}

    cell, keys = iv.cell, iv.keys
    n_cells = len(keys)
    split_codes, split_names = pd.factorize(keys["split"], use_na_sentinel=False)
    row_split = split_codes[cell]
    case_ids = frame["case_id"].to_numpy()

    result = {name: np.full(n_cells, np.nan)
              for name in ("estimate", "ci_low", "ci_high", "standard_error")}
    replicates: dict[Any, np.ndarray] = {}
    ci_method = np.empty(n_cells, dtype=object)
    counts_out = {name: np.zeros(n_cells, dtype=np.int64) for name in RESULT_COLUMNS[4:]}
    local = np.empty(n_cells, dtype=np.int64)
    for s, split in enumerate(split_names):
        cells = np.flatnonzero(split_codes == s)
        rows = np.flatnonzero(row_split == s)
        local[cells] = np.arange(cells.size)
        case_codes, cases = pd.factorize(case_ids[rows], sort=True)
        sums, n_valid, n_nan = cell_case_sums(
            iv.values[rows], local[cell[rows]], cells.size, case_codes, len(cases)
        )
        num, den = ratio_terms(sums, n_valid, iv.weighting)
        counts = draw_counts(
            len(cases), iv.n_boot, split_seed(iv.seed, split),
            _case_strata(iv.strata, np.asarray(cases), split),
        )
        out = bootstrap_columns(num, den, counts, level=iv.level, method=iv.method,
                                keep_replicates=keep_replicates,
                                standard_error=standard_error)
        if out.replicates is not None:
            replicates[split] = out.replicates
        result["estimate"][cells] = out.estimate
        result["ci_low"][cells] = out.ci_low
        result["ci_high"][cells] = out.ci_high
        if out.standard_error is not None:
            result["standard_error"][cells] = out.standard_error
        ci_method[cells] = out.method
        counts_out["n_cases"][cells] = np.count_nonzero(n_valid, axis=0)
        counts_out["n_images"][cells] = n_valid.sum(axis=0).astype(np.int64)
        counts_out["n_nan"][cells] = n_nan.sum(axis=0).astype(np.int64)

    table = keys.copy()
    for name in ("estimate", "ci_low", "ci_high"):
        table[name] = result[name]
    table["ci_method"] = ci_method
    for name, col in counts_out.items():
        table[name] = col
    table["standard_error"] = result["standard_error"]
    return table, replicates
