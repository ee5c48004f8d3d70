"""Markdown tables of the report: headline, classification, all agreement metrics.

Every cell is ``estimate [ci_low, ci_high]`` as stored in the run's tables; nothing is
recomputed here. Tables are pandoc pipe tables, which Quarto reads the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from benchmark.report.context import ReportContext, lower_is_better, records
from benchmark.report.escape import EMPTY_CELL, fmt_ci, is_missing, md, pipe_table

Key = tuple[str, str, str]  # (model, split, method)

NOT_ABOVE_BASELINE = "\u2020"  # dagger: explainer does not beat the best null baseline
FALLBACK_INTERVAL = "\u2021"  # double dagger: interval method differs from the configured one

CLASSIFICATION_METRICS = ("auroc", "accuracy", "sensitivity", "specificity")
_CLASSIFICATION_LABELS = {
    "auroc": "AUROC",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
}


def headline_frame(ctx: ReportContext, summary: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``summary`` for the headline metric and reference."""
    sel = (summary["metric"] == ctx.headline_metric) & (
        summary["reference"] == ctx.headline_reference
    )
    return summary.loc[sel]


def _rows_by_key(frame: pd.DataFrame) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for rec in records(frame):
        out[(str(rec["model"]), str(rec["split"]), str(rec["method"]))] = rec
    return out


def not_above_baseline(ctx: ReportContext, headline: pd.DataFrame) -> set[Key]:
    """Explainers that do not beat the best null baseline of their model and split.

    From ``summary.parquet``'s ``beats_baseline`` (the paired case-bootstrap interval of
    the difference from the best baseline excludes zero, see
    :func:`benchmark.stats.baselines.flag_baselines`); runs without that column fall
    back to point estimates (estimate no better than the best baseline's).
    """
    if "beats_baseline" in headline.columns:
        return {
            (str(r["model"]), str(r["split"]), str(r["method"]))
            for r in records(headline)
            if not ctx.is_baseline(str(r["method"])) and not is_missing(r["beats_baseline"])
            and not bool(r["beats_baseline"])
        }
    lower = lower_is_better(ctx.headline_metric)
    flagged: set[Key] = set()
    for (model, split), group in headline.groupby(["model", "split"], sort=False):
        base = group[group["method"].isin(list(ctx.baselines))]["estimate"].dropna()
        if base.empty:
            continue
        floor = base.min() if lower else base.max()
        for rec in records(group):
            method, est = str(rec["method"]), rec["estimate"]
            if ctx.is_baseline(method) or is_missing(est):
                continue
            if (est >= floor) if lower else (est <= floor):
                flagged.add((str(model), str(split), method))
    return flagged


def human_table(ctx: ReportContext, human: pd.DataFrame | None) -> str:
    """Annotator x split table of the human benchmark (headline metric and reference);
    empty string when the run has none."""
    if human is None or human.empty or "annotator" not in human.columns:
        return ""
    sel = human[(human["metric"] == ctx.headline_metric)
                & (human["reference"] == ctx.headline_reference)]
    if sel.empty:
        return ""
    cells = {(str(r["annotator"]), str(r["split"])): r for r in records(sel)}
    annotators = sorted({a for a, _ in cells} - {"all"}) + ["all"]
    splits = [s for s in ctx.splits if any(k[1] == s for k in cells)]
    rows = [[md(a) if a != "all" else "*all (pooled)*"]
            + [_ci(cells.get((a, s), {}), ctx.digits) for s in splits]
            for a in annotators]
    return pipe_table(["Annotator", *[md(s) for s in splits]], rows, "l" + "r" * len(splits))


def image_auroc(classification: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, Any]]:
    """``(model, split) -> row`` of the image-level AUROC."""
    if classification is None:
        return {}
    sel = (classification["level"] == "image") & (classification["metric"] == "auroc")
    return {
        (str(r["model"]), str(r["split"])): r
        for r in records(classification.loc[sel])
    }


def headline_table(
    ctx: ReportContext, summary: pd.DataFrame, classification: pd.DataFrame | None
) -> str:
    """Model x split rows: image-level AUROC, then the headline metric per method."""
    headline = headline_frame(ctx, summary)
    cells = _rows_by_key(headline)
    flagged = not_above_baseline(ctx, headline)
    auroc = image_auroc(classification)
    header = ["Model", "Split", "AUROC (image)"] + [md(ctx.method_label(m)) for m in ctx.methods]
    rows = []
    for model in ctx.models:
        for split in ctx.splits:
            a = auroc.get((model, split), {})
            row = [md(model), md(split), _ci(a, ctx.digits)]
            for method in ctx.methods:
                cell = _ci(cells.get((model, split, method), {}), ctx.digits)
                if (model, split, method) in flagged:
                    cell += " " + NOT_ABOVE_BASELINE
                row.append(cell)
            if any(c != EMPTY_CELL for c in row[2:]):
                rows.append(row)
    return pipe_table(header, rows, "ll" + "r" * (len(header) - 2))


def classification_table(ctx: ReportContext, classification: pd.DataFrame | None) -> str:
    """Model x split x level rows; AUROC, accuracy, sensitivity, specificity columns."""
    if classification is None or classification.empty:
        return ""
    by_key: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for rec in records(classification):
        key = (str(rec["model"]), str(rec["split"]), str(rec["level"]))
        by_key.setdefault(key, {})[str(rec["metric"])] = rec
    levels = _ordered_levels(classification["level"].unique())
    header = ["Model", "Split", "Level"]
    header += [_CLASSIFICATION_LABELS[m] for m in CLASSIFICATION_METRICS]
    header += ["Cases", "Images"]
    rows = []
    for model in ctx.models:
        for split in ctx.splits:
            for level in levels:
                recs = by_key.get((model, split, level))
                if not recs:
                    continue
                any_rec = next(iter(recs.values()))
                row = [md(model), md(split), md(level)]
                row += [_ci(recs.get(m, {}), ctx.digits) for m in CLASSIFICATION_METRICS]
                row += [_count(any_rec.get("n_cases")), _count(any_rec.get("n_images"))]
                rows.append(row)
    return pipe_table(header, rows, "lll" + "r" * (len(header) - 3))


def interval_methods_note(frame: pd.DataFrame, by: str = "metric") -> str:
    """``auroc: bca; accuracy: wilson`` -- the interval method actually used per metric."""
    if frame is None or frame.empty or "ci_method" not in frame:
        return ""
    parts = []
    for name, group in frame.groupby(by, sort=False):
        used = ", ".join(md(v) for v in sorted({str(x) for x in group["ci_method"].dropna()}))
        parts.append(f"{md(name)}: {used or EMPTY_CELL}")
    return "; ".join(parts)


def metrics_tables(ctx: ReportContext, summary: pd.DataFrame) -> str:
    """One table per reference: model x split x method rows, one column per metric."""
    out = []
    for reference in ctx.references:
        sub = summary[summary["reference"] == reference]
        if sub.empty:
            continue
        metrics = [m for m in ctx.metrics if m in set(sub["metric"])]
        cells: dict[Key, dict[str, dict[str, Any]]] = {}
        for rec in records(sub):
            key = (str(rec["model"]), str(rec["split"]), str(rec["method"]))
            cells.setdefault(key, {})[str(rec["metric"])] = rec
        header = ["Model", "Split", "Method"] + [md(m) for m in metrics]
        header += ["Cases", "NaN images"]
        rows = []
        for model in ctx.models:
            for split in ctx.splits:
                for method in ctx.methods:
                    recs = cells.get((model, split, method))
                    if not recs:
                        continue
                    row = [md(model), md(split), md(ctx.method_label(method))]
                    for metric in metrics:
                        rec = recs.get(metric, {})
                        cell = _ci(rec, ctx.digits)
                        if rec and str(rec.get("ci_method", ctx.ci_method)) != ctx.ci_method:
                            cell += " " + FALLBACK_INTERVAL
                        row.append(cell)
                    n_cases = max((_int(r.get("n_cases")) for r in recs.values()), default=0)
                    n_nan = max((_int(r.get("n_nan")) for r in recs.values()), default=0)
                    row += [str(n_cases), str(n_nan)]
                    rows.append(row)
        out.append(f"### Reference: {md(reference)}\n\n")
        out.append(pipe_table(header, rows, "lll" + "r" * (len(header) - 3)))
        out.append("\n")
    return "".join(out)


def thresholds_table(thresholds: pd.DataFrame) -> str:
    """Tuned thresholds: model, method, tau, mean score on the tuning split."""
    rows = [
        [md(r["model"]), md(r["method"]), f"{float(r['threshold']):.2f}",
         f"{float(r['mean_score']):.3f}", _count(r["n_images"])]
        for r in thresholds.to_dict("records")
    ]
    header = ["Model", "Method", "τ", "Mean IoU (tuning split)", "Images"]
    return pipe_table(header, rows, "llrrr") if rows else ""


def versions_table(versions: dict[str, Any]) -> str:
    """Package -> version, sorted by name."""
    rows = [[md(k), md(v)] for k, v in sorted(versions.items(), key=lambda kv: str(kv[0]))]
    return pipe_table(["Package", "Version"], rows, "ll") if rows else ""


def _ci(rec: dict[str, Any], digits: int) -> str:
    if not rec:
        return EMPTY_CELL
    return fmt_ci(rec.get("estimate"), rec.get("ci_low"), rec.get("ci_high"), digits)


def _int(value: Any) -> int:
    return 0 if is_missing(value) else int(value)


def _count(value: Any) -> str:
    return EMPTY_CELL if is_missing(value) else str(int(value))


def _ordered_levels(levels: Iterable[Any]) -> list[str]:
    order = {"image": 0, "case": 1}
    return sorted((str(v) for v in levels), key=lambda v: (order.get(v, 2), v))
