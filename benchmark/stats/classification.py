"""Classification performance with intervals: :func:`classification_table`."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from benchmark.stats._validation import (
    METHODS,
    check_choice,
    check_columns,
    check_level,
    check_n_boot,
    check_seed,
    check_unique_rows,
)
from benchmark.stats.auroc import weighted_auroc
from benchmark.stats.intervals import interval_from_replicates
from benchmark.stats.resample import draw_counts, split_seed

COLUMNS = ("model", "split", "case_id", "image_id", "label", "score")
TABLE_COLUMNS = (
    "model", "split", "level", "metric", "estimate", "ci_low", "ci_high", "ci_method",
    "n_cases", "n_images",
)
ONE_CLASS = "undefined (one class)"
NO_OBSERVATIONS = "undefined (no observations)"


@dataclass(frozen=True)
class _Input:
    frame: pd.DataFrame
    labels: np.ndarray
    scores: np.ndarray
    n_boot: int
    level: float
    method: str
    seed: int
    threshold: float


def _classification_table_iv(
    predictions: Any, n_boot: Any, level: Any, method: Any, seed: Any, threshold: Any
) -> _Input:
    """Input validation and standardisation for :func:`classification_table`."""
    frame = check_columns(predictions, "predictions", COLUMNS)
    try:
        labels = pd.to_numeric(frame["label"]).to_numpy(dtype=np.float64, na_value=np.nan)
        scores = pd.to_numeric(frame["score"]).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ValueError("`predictions` columns `label` and `score` must be numeric.") from err
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("`predictions['label']` must be 0 or 1 (or bool) for every image.")
    if not np.isfinite(scores).all():
        raise ValueError("`predictions['score']` must be finite for every image (no NaN/inf).")
    if frame[["model", "split", "case_id"]].isna().any().any():
        raise ValueError("`predictions` columns model, split and case_id must not be missing.")
    check_unique_rows(frame, "predictions", ["model", "split", "case_id", "image_id"])
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not math.isfinite(float(threshold))
    ):
        raise ValueError(f"`threshold` must be a finite number, e.g. 0.5; got {threshold!r}.")
    return _Input(
        frame=frame,
        labels=labels.astype(bool),
        scores=scores,
        n_boot=check_n_boot(n_boot),
        level=check_level(level),
        method=check_choice(method, "method", METHODS),
        seed=check_seed(seed),
        threshold=float(threshold),
    )


def _auroc_row(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    counts: np.ndarray,
    level: float,
    method: str,
) -> tuple[float, float, float, str]:
    """Estimate and case-bootstrap interval of the AUROC of one model on one split."""
    if labels.all() or not labels.any():
        return np.nan, np.nan, np.nan, ONE_CLASS
    n_cases = counts.shape[1]
    theta = weighted_auroc(scores, labels, groups, np.ones((1, n_cases)))
    reps = weighted_auroc(scores, labels, groups, counts)
    present = np.unique(groups)
    leave_one_out = 1.0 - np.eye(n_cases)[present]
    jack = weighted_auroc(scores, labels, groups, leave_one_out)
    if not np.isfinite(jack).all():
        jack[:] = np.nan  # leaving out some case empties a class: acceleration undefined
    low, high, used = interval_from_replicates(
        theta, reps[:, None], jack[:, None], level, method
    )
    return float(theta[0]), float(low[0]), float(high[0]), str(used[0])


def _wilson_row(successes: int, trials: int, level: float) -> tuple[float, float, float, str]:
    if trials == 0:
        return np.nan, np.nan, np.nan, NO_OBSERVATIONS
    low, high = proportion_confint(successes, trials, alpha=1 - level, method="wilson")
    return successes / trials, float(low), float(high), "wilson"


def classification_table(
    predictions: pd.DataFrame,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    method: str = "bca",
    seed: int = 0,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """AUROC, accuracy, sensitivity and specificity per model and split, with intervals.

    Parameters
    ----------
    predictions : DataFrame
        Columns ``model, split, case_id, image_id, label, score``: one row per image, label
        0/1, score the probability of the positive class.
    n_boot : int, default 10_000
        Bootstrap replicates for the AUROC intervals (>= 100).
    level : float, default 0.95
        Confidence level in (0, 1).
    method : {"bca", "percentile"}, default "bca"
        AUROC interval type (BCa falls back to percentile where undefined).
    seed : int, default 0
        Run seed; split ``s`` draws ``draw_counts(n_cases_s, n_boot, split_seed(seed, s))``
        over all case_ids of the split (sorted), shared by every model of the split, so
        AUROC differences between models are paired. Same derivation as
        :func:`~benchmark.stats.summarize`.
    threshold : float, default 0.5
        An observation is predicted positive when ``score >= threshold``.

    Returns
    -------
    DataFrame
        Columns ``model, split, level, metric, estimate, ci_low, ci_high, ci_method,
        n_cases, n_images``; for each (model, split), sorted, the rows ``level`` in
        ("image", "case") x ``metric`` in ("auroc", "accuracy", "sensitivity",
        "specificity"). ``n_cases`` and ``n_images`` count the cases and images entering
        the metric (for sensitivity, the positive ones; for specificity, the negative ones).

    Notes
    -----
    - ``level="image"``: each image is an observation; in the AUROC bootstrap an image
      carries its case's resample count. ``level="case"``: the case score is the mean of
      its image scores, the case label is 1 if any of its images is labelled 1 (the label
      itself when labels are constant within a case).
    - AUROC: Mann-Whitney ``U / (n_pos n_neg)`` (ties count 1/2) with a case-bootstrap
      interval, see :mod:`benchmark.stats.auroc`; BCa acceleration from the delete-one-case
      jackknife (undefined, hence percentile fallback, if leaving one case out empties a
      class). Replicates drawing no positive or no negative are left out. A split with one
      class gives NaN and ``ci_method = "undefined (one class)"``.
    - Accuracy, sensitivity, specificity: proportions with Wilson score intervals
      (``statsmodels.stats.proportion.proportion_confint(method="wilson")``, ``ci_method =
      "wilson"``). At the image level these treat images as independent and are too narrow
      when images of a case are correlated; the case-level rows do not have that problem.
      No observation (e.g. no positive) gives NaN and ``"undefined (no observations)"``.

    References
    ----------
    .. [1] E. B. Wilson, "Probable inference, the law of succession, and statistical
       inference", JASA 22:209-212, 1927.
    .. [2] B. Efron, "Better bootstrap confidence intervals", JASA 82:171-185, 1987.
    """
    iv = _classification_table_iv(predictions, n_boot, level, method, seed, threshold)
    frame = iv.frame
    rows: list[dict[str, Any]] = []
    case_col = frame["case_id"].to_numpy()
    split_col = frame["split"].to_numpy()
    for split in pd.unique(frame["split"]):
        in_split = split_col == split
        _, cases = pd.factorize(case_col[in_split], sort=True)
        counts = draw_counts(len(cases), iv.n_boot, split_seed(iv.seed, split)).astype(float)
        case_index = pd.Index(cases)
        sub = frame.loc[in_split]
        for model, idx in sorted(sub.groupby("model", sort=False).indices.items(),
                                 key=lambda kv: str(kv[0])):
            pos = np.flatnonzero(in_split)[idx]
            groups = case_index.get_indexer(case_col[pos])
            scores, labels = iv.scores[pos], iv.labels[pos]
            present = np.unique(groups)
            case_scores = (
                np.bincount(groups, weights=scores, minlength=len(cases))[present]
                / np.bincount(groups, minlength=len(cases))[present]
            )
            case_labels = np.bincount(groups, weights=labels, minlength=len(cases))[present] > 0
            n_imgs = np.bincount(groups, minlength=len(cases))[present]
            for level_name, s, y, g, per_obs_images in (
                ("image", scores, labels, groups, np.ones(len(scores), dtype=np.int64)),
                ("case", case_scores, case_labels, present, n_imgs),
            ):
                est, low, high, used = _auroc_row(s, y, g, counts, iv.level, iv.method)
                rows.append(_row(model, split, level_name, "auroc", est, low, high, used,
                                 g, per_obs_images, np.ones(len(s), dtype=bool)))
                predicted = s >= iv.threshold
                for metric, subset, success in (
                    ("accuracy", np.ones(len(s), dtype=bool), predicted == y),
                    ("sensitivity", y, predicted),
                    ("specificity", ~y, ~predicted),
                ):
                    stat = _wilson_row(int(success[subset].sum()), int(subset.sum()), iv.level)
                    rows.append(_row(model, split, level_name, metric, *stat, g,
                                     per_obs_images, subset))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    return table.sort_values(["model", "split"], kind="stable", key=_sort_key).reset_index(
        drop=True
    )


def _sort_key(col: pd.Series) -> pd.Series:
    return col.astype(str)


def _row(
    model: Any, split: Any, level: str, metric: str, estimate: float, low: float,
    high: float, used: str, groups: np.ndarray, images: np.ndarray, subset: np.ndarray,
) -> dict[str, Any]:
    return {
        "model": model, "split": split, "level": level, "metric": metric,
        "estimate": estimate, "ci_low": low, "ci_high": high, "ci_method": used,
        "n_cases": int(np.unique(groups[subset]).size),
        "n_images": int(images[subset].sum()),
    }
