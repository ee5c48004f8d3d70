"""The human benchmark: each annotator scored against the consensus of the others.

An explainer cannot be expected to agree with the experts better than the experts agree
with each other (STATISTICS.md, "Around the overlap numbers"). Annotator ``a``'s binary
mask takes the place of a saliency map and is scored, with the run's metrics, against the
reference built from the other annotators only (``consensus`` of the others, their
``union``, ``intersection``, or their mean as ``graded``). The per-image values go through
the same case bootstrap as the explainers, and their band is drawn beside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmark.data.dataset import Dataset, combine_masks
from benchmark.metrics.compute import compute_by_spacing
from benchmark.store import SHARD_SIZE

#: Pseudo-annotator whose value per image is the mean over annotators (the pooled band).
POOLED = "all"
HUMAN_COLUMNS = ["annotator", "split", "case_id", "image_id", "reference", "metric", "value"]
#: A binary map thresholded anywhere in (0, 1) is the mask itself; ``@tuned`` thresholds
#: are chosen for saliency maps and do not apply to an annotator's mask.
HUMAN_TUNED_THRESHOLD = "0.5"


def _human_metric(name: str) -> str:
    return f"{name.split('@', 1)[0]}@{HUMAN_TUNED_THRESHOLD}" if name.endswith("@tuned") else name


def human_scores(
    ds: Dataset,
    rows: np.ndarray,
    references: Sequence[str],
    binary_metrics: Sequence[str],
    graded_metrics: Sequence[str],
    *,
    sign: str = "positive",
    seed: int = 0,
    roi: bool = False,
) -> pd.DataFrame:
    """Score every annotator's mask against the others' reference.

    Parameters
    ----------
    ds : Dataset
        With ``A >= 2`` annotators (else the result is empty).
    rows : ndarray of int, shape (k,)
        Positions in ``ds`` of the images to score (the positive images of the evaluated
        splits, the images the explainers are scored on).
    references : sequence of str
        Reference names of the run. ``annotator:<id>`` compares every other annotator
        with that one; the others are built from the remaining ``A - 1`` annotators.
    binary_metrics, graded_metrics : sequence of str
        Metric names for binary references and for ``graded``; ``name@tuned`` is scored
        as ``name@0.5``.
    sign, seed, roi
        As for the explainers' scores (:func:`benchmark.metrics.compute`).

    Returns
    -------
    DataFrame
        Tidy, columns ``annotator, split, case_id, image_id, reference, metric, value``:
        one row per annotator, image, reference and metric, plus ``annotator == "all"``
        rows holding the mean over annotators of each image's values (NaN-aware).
    """
    annotators = list(ds.annotators)
    if len(annotators) < 2 or len(rows) == 0:
        return pd.DataFrame({c: [] for c in HUMAN_COLUMNS})
    # (reference, annotator index) -> metric -> values, block by block: the masks stream
    # through the kernels SHARD_SIZE images at a time, never the whole split at once.
    cells: dict[tuple[str, int], dict[str, list[np.ndarray]]] = {}
    for start in range(0, len(rows), SHARD_SIZE):
        block = rows[start:start + SHARD_SIZE]
        masks = ds.masks[block]
        region = ds.roi(block) if roi else None
        groups = ds.spacing_groups(block)
        for ref in references:
            metrics = list(graded_metrics if ref == "graded" else binary_metrics)
            resolved = {m: _human_metric(m) for m in metrics}
            for i, a in enumerate(annotators):
                if not metrics or ref == f"annotator:{a}":
                    continue
                others = [j for j in range(len(annotators)) if j != i]
                target = combine_masks(masks[:, others], ref, [annotators[j] for j in others])
                values = compute_by_spacing(
                    groups, masks[:, i].astype(np.float32), target,
                    list(dict.fromkeys(resolved.values())), sign=sign, seed=seed,
                    roi=region, stream_length=len(rows),
                )
                cell = cells.setdefault((ref, i), {m: [] for m in metrics})
                for m, r in resolved.items():
                    cell[m].append(np.asarray(values[r], dtype=np.float64))
    meta = ds.index.iloc[rows][["split", "case_id", "image_id"]].reset_index(drop=True)
    frames = []
    for ref in references:
        per_annotator = []
        for i, a in enumerate(annotators):
            if (ref, i) not in cells:
                continue
            joined = {m: np.concatenate(v) for m, v in cells[(ref, i)].items()}
            per_annotator.append(joined)
            frames.extend(_tidy(meta, a, ref, joined))
        if per_annotator:
            pooled = {m: _nanmean([v[m] for v in per_annotator]) for m in per_annotator[0]}
            frames.extend(_tidy(meta, POOLED, ref, pooled))
    if not frames:
        return pd.DataFrame({c: [] for c in HUMAN_COLUMNS})
    return pd.concat(frames, ignore_index=True)[HUMAN_COLUMNS]


def _nanmean(arrays: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(arrays)
    n = np.sum(~np.isnan(stacked), axis=0)
    total = np.nansum(stacked, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _tidy(meta: pd.DataFrame, annotator: str, reference: str,
          values: dict[str, np.ndarray]) -> list[pd.DataFrame]:
    out = []
    for metric, v in values.items():
        f = meta.copy()
        f["annotator"], f["reference"], f["metric"], f["value"] = (
            annotator, reference, metric, v)
        out.append(f)
    return out
