"""The report's "Data and models" section: splits, labels, annotators, checkpoints and
classification performance.

Counts come from ``predictions.parquet`` (one row per model and image), annotators from
the dataset when the report has it (else from the human benchmark table), checkpoints
from ``provenance.json``. Nothing is recomputed from images except the annotated-pixel
share, which needs the masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from benchmark.data.dataset import Dataset
from benchmark.report import tables
from benchmark.report.context import ReportContext
from benchmark.report.escape import EMPTY_CELL, is_missing, md, md_code, pipe_table
from benchmark.store import Run

#: Columns of :func:`split_counts`, one row per split.
COUNT_COLUMNS = [
    "split", "n_cases", "n_pos_cases", "n_neg_cases", "n_images", "n_pos_images",
    "n_neg_images", "pos_share_cases", "pos_share_images",
]
#: Columns of :func:`checkpoint_frame`, one row per model.
CHECKPOINT_COLUMNS = ["model", "sha256", "target_layer"]
#: Columns of :func:`annotator_frame`, one row per annotator.
ANNOTATOR_COLUMNS = ["annotator", "n_pos_images", "n_marked", "mean_share"]


def ordered_splits(ctx: ReportContext, present: Any) -> list[str]:
    """The report's splits that are ``present``, then any others, sorted."""
    present_set = {str(s) for s in present}
    out = [s for s in ctx.splits if s in present_set]
    return out + sorted(present_set - set(out))


def counting_model(ctx: ReportContext, predictions: pd.DataFrame) -> str | None:
    """The model whose prediction rows are counted: the report's first model present."""
    present = {str(m) for m in predictions["model"].unique()}
    for model in ctx.models:
        if model in present:
            return model
    return min(present) if present else None


def split_counts(predictions: pd.DataFrame, model: str, splits: list[str]) -> pd.DataFrame:
    """Cases and images per split, by label, from one model's prediction rows.

    A case is positive when any of its images is labelled 1: the case label of the
    case-level classification metrics (:func:`benchmark.stats.classification`).
    Shares are fractions in [0, 1] (NaN for an empty split).
    """
    rows = []
    mine = predictions[predictions["model"].astype(str) == model]
    for split in splits:
        sub = mine[mine["split"].astype(str) == split]
        images = sub.drop_duplicates("image_id")
        labels = images["label"].astype(int)
        case_labels = images.groupby("case_id")["label"].max().astype(int)
        n_cases, n_images = len(case_labels), len(images)
        n_pos_cases, n_pos_images = int(case_labels.sum()), int(labels.sum())
        rows.append([
            split, n_cases, n_pos_cases, n_cases - n_pos_cases, n_images, n_pos_images,
            n_images - n_pos_images,
            n_pos_cases / n_cases if n_cases else np.nan,
            n_pos_images / n_images if n_images else np.nan,
        ])
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def models_disagree(predictions: pd.DataFrame, model: str) -> list[str]:
    """Models whose (split, image) rows differ from ``model``'s (normally none)."""
    keys = predictions[["model", "split", "image_id"]].astype(str)
    sets = {m: set(map(tuple, g[["split", "image_id"]].to_numpy()))
            for m, g in keys.groupby("model", sort=True)}
    ref = sets.get(model, set())
    return [str(m) for m, s in sets.items() if s != ref]


def checkpoint_frame(ctx: ReportContext) -> pd.DataFrame:
    """Model, checkpoint sha256 and explained layer (provenance), in report order."""
    prov = ctx.provenance
    shas = {str(k): str(v) for k, v in (prov.get("checkpoints") or {}).items()}
    layers = prov.get("target_layers") or {}
    layers = {str(k): v for k, v in layers.items()} if isinstance(layers, dict) else {}
    names = [m for m in ctx.models if m in shas or m in layers]
    names += sorted((set(shas) | set(layers)) - set(names))
    rows = [[m, shas.get(m), None if layers.get(m) is None else str(layers[m])]
            for m in names]
    return pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)


def annotator_frame(dataset: Dataset, splits: list[str]) -> pd.DataFrame:
    """Per annotator, over the positive images of ``splits``: how many images carry a
    mark and the mean share of the image's pixels marked.

    Parameters
    ----------
    dataset : Dataset
        Its ``masks`` (N, A, *spatial) bool and ``annotators`` (A names).
    splits : list of str
        Splits to count; all of the dataset's when none of them is present.
    """
    index = dataset.index
    in_splits = index["split"].astype(str).isin(splits).to_numpy()
    if not in_splits.any():
        in_splits = np.ones(len(index), bool)
    pos = np.flatnonzero(in_splits & (index["label"].to_numpy() == 1))
    rows = []
    for a, name in enumerate(dataset.annotators):
        masks = np.asarray(dataset.masks[pos, a]).reshape(len(pos), -1)
        share = masks.mean(axis=1) if masks.shape[1] else np.zeros(len(pos))
        rows.append([str(name), len(pos), int(masks.any(axis=1).sum()),
                     float(share.mean()) if len(pos) else np.nan])
    return pd.DataFrame(rows, columns=ANNOTATOR_COLUMNS)


def _percent(share: Any, digits: int = 0) -> str:
    return EMPTY_CELL if is_missing(share) else f"{100 * float(share):.{digits}f} %"


def _counts_table(counts: pd.DataFrame) -> str:
    header = ["Split", "Cases", "Positive cases", "Negative cases", "Images",
              "Positive images", "Negative images", "Positive share (cases)",
              "Positive share (images)"]
    rows = [[md(r["split"]), *(str(int(r[c])) for c in COUNT_COLUMNS[1:7]),
             _percent(r["pos_share_cases"]), _percent(r["pos_share_images"])]
            for r in counts.to_dict("records")]
    return pipe_table(header, rows, "l" + "r" * 8)


def _splits_part(ctx: ReportContext, run: Run) -> str:
    try:
        predictions = run.predictions
    except FileNotFoundError:
        predictions = None
    text = "### Cases and labels {#sec-data-splits}\n\n"
    if predictions is None or predictions.empty:
        return text + _callout("This run has no predictions table (`predictions.parquet`): "
                               "no counts per split.", "warning")
    model = counting_model(ctx, predictions)
    assert model is not None  # predictions is not empty
    counts = split_counts(predictions, model,
                          ordered_splits(ctx, predictions["split"].astype(str).unique()))
    differ = models_disagree(predictions, model)
    note = ("Every model was evaluated on these images." if not differ else
            f"Counts of model {md(model)}; models {', '.join(md(m) for m in differ)} were "
            "evaluated on other images.")
    return (text + _counts_table(counts)
            + "\nCounted from the prediction table. A case is positive when any of its "
            "images is (the case label of the case-level metrics below). " + note + "\n\n")


def _annotators_part(ctx: ReportContext, run: Run, dataset: Dataset | None) -> str:
    text = "### Annotators {#sec-annotators}\n\n"
    if dataset is not None:
        frame = annotator_frame(dataset, ctx.splits)
        if frame.empty:
            return text + _callout("The dataset has no annotators.")
        rows = [[md(r["annotator"]), f"{int(r['n_marked'])} of {int(r['n_pos_images'])}",
                 _percent(r["mean_share"], 1)] for r in frame.to_dict("records")]
        return (text + pipe_table(["Annotator", "Positive images marked",
                                   "Annotated pixels (mean share)"], rows, "lrr")
                + f"\n{len(frame)} annotators marked the findings on the positive images of "
                f"splits {', '.join(md(s) for s in ordered_splits(ctx, ctx.splits))}; the "
                "share is the fraction of an image's pixels marked, averaged over those "
                "images. The consensus reference is the pixels marked by at least half of "
                "the annotators, the graded reference their mean.\n\n")
    names = _annotators_from_human(run)
    listed = f"Annotators: {', '.join(md(a) for a in names)}. " if names else ""
    return text + _callout(listed + "The dataset was not available when this report was "
                           "rendered, so the annotated-pixel shares are not shown.")


def _annotators_from_human(run: Run) -> list[str]:
    human = run.human
    if human is None or human.empty or "annotator" not in human.columns:
        return []
    return sorted({str(a) for a in human["annotator"].unique()} - {"all"})


def _checkpoints_part(ctx: ReportContext) -> str:
    frame = checkpoint_frame(ctx)
    text = "### Checkpoints {#sec-checkpoints}\n\n"
    if frame.empty:
        return text + _callout("The run's provenance lists no checkpoints.", "warning")
    has_layers = frame["target_layer"].notna().any()
    header = ["Model", "sha256"] + (["Target layer"] if has_layers else [])
    rows = []
    for r in frame.to_dict("records"):
        row = [md(r["model"]), EMPTY_CELL if r["sha256"] is None else md_code(r["sha256"])]
        if has_layers:
            row.append(EMPTY_CELL if r["target_layer"] is None else md_code(r["target_layer"]))
        rows.append(row)
    layer_note = (" Target layer: the module whose activations the layer methods "
                  "(Grad-CAM and its variants) explain." if has_layers else "")
    return (text + pipe_table(header, rows, "l" * len(header))
            + "\nsha256 of each checkpoint file as loaded for this run (`bench validate` "
            f"checks them against the manifest).{layer_note}\n\n")


def _classification_part(ctx: ReportContext, classification: pd.DataFrame | None,
                         level: str) -> str:
    text = "### Classification performance {#sec-classification}\n\n"
    table = tables.classification_table(ctx, classification)
    if not table:
        return text + _callout(
            "This run has no classification table (`classification.parquet`).", "warning")
    note = "" if classification is None else tables.interval_methods_note(classification)
    return (text + table
            + f"\nCells: estimate [{level} interval] on every evaluated split. Image level: "
            "every image a sample; case level: the case score is the mean of its images' "
            "scores and the case label positive when any image is. Interval method per "
            f"metric: {note}.\n\n")


def _callout(text: str, kind: str = "note") -> str:
    return f"::: {{.callout-{kind}}}\n{text}\n:::\n\n"


def _lead(ctx: ReportContext) -> str:
    data_sha = ctx.provenance.get("data_sha256")
    sha = f" (data sha256 {md_code(data_sha)})" if data_sha else ""
    n_models = len(ctx.models)
    return (f"Dataset {md(ctx.dataset_name)}{sha}, {n_models} "
            f"model{'s' if n_models != 1 else ''}, splits "
            f"{', '.join(md(s) for s in ctx.splits) or EMPTY_CELL}.\n\n")


def data_section(
    ctx: ReportContext,
    run: Run,
    dataset: Dataset | None,
    classification: pd.DataFrame | None,
    *,
    level: str = "95 %",
) -> str:
    """Markdown of the section body (without its ``##`` heading).

    Parameters
    ----------
    ctx : ReportContext
    run : Run
        Reads ``predictions`` and ``human``.
    dataset : Dataset or None
        For the annotators table; without it the annotators are listed from the human
        benchmark and the section says what is missing.
    classification : DataFrame or None
        ``classification.parquet``.
    level : str
        The confidence level as the report writes it (``"95 %"``).
    """
    return (_lead(ctx) + _splits_part(ctx, run) + _annotators_part(ctx, run, dataset)
            + _checkpoints_part(ctx) + _classification_part(ctx, classification, level))
