"""The report's tables for a paper: CSV (tidy, unrounded) and LaTeX (booktabs).

:func:`export_tables` writes ``RUN/tables/<name>.csv`` and ``RUN/tables/<name>.tex`` for
every table the run has (empty or missing ones are skipped). The CSV holds the run's
rows behind the table, every number as stored; the ``.tex`` file is a ``tabular`` with
``\\toprule``/``\\midrule``/``\\bottomrule`` (``\\usepackage{booktabs}``) whose cells read
``0.59 [0.56, 0.62]``, ready for ``\\input`` inside the paper's own ``table``.

User strings (model, method, split, annotator names) are LaTeX-escaped here; pandas'
``to_latex`` is called with ``escape=False`` because the cells also carry our own
markup (``$-$``, ``$^{\\dagger}$``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.report import tables
from benchmark.report.context import (
    ReportContext,
    lower_is_better,
    records,
    resolve_context,
)
from benchmark.report.data_section import (
    checkpoint_frame,
    counting_model,
    ordered_splits,
    split_counts,
)
from benchmark.report.escape import is_missing
from benchmark.store import Run, atomic_open

TABLES_DIR = "tables"  # beside report.html in the run directory

MISSING_TEX = "---"
DAGGER_TEX = r"$^{\dagger}$"  # the report's dagger: not shown to beat the best baseline
DDAGGER_TEX = r"$^{\ddagger}$"  # the report's double dagger: fallback interval method

# One pass over the characters, so an inserted backslash is never escaped again.
_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # Not special, but wrong in the default OT1 encoding (<, >, | print as other
    # glyphs) or misread after ``\\`` ("[" starts the optional row-skip argument).
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "[": "{[}",
    "]": "{]}",
}


def tex(text: Any) -> str:
    """``text`` as literal LaTeX text: special characters escaped, whitespace flattened."""
    flat = " ".join(str(text).split())
    return "".join(_TEX_ESCAPES.get(c, c) for c in flat)


def tex_num(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals and a true minus sign; ``---`` when missing."""
    if is_missing(value):
        return MISSING_TEX
    text = f"{float(value):.{digits}f}"
    if text.startswith("-") and float(text) == 0.0:
        return text[1:]  # -0.001 rounds to 0.00, which has no sign
    return "$-$" + text[1:] if text.startswith("-") else text


def tex_ci(estimate: Any, low: Any, high: Any, digits: int = 2) -> str:
    """``0.59 [0.56, 0.62]``; the interval is dropped when it is undefined."""
    if is_missing(estimate):
        return MISSING_TEX
    if is_missing(low) or is_missing(high):
        return tex_num(estimate, digits)
    return (f"{tex_num(estimate, digits)} [{tex_num(low, digits)}, "
            f"{tex_num(high, digits)}]")


def tex_p(p: Any) -> str:
    """p as in the report: three decimals, ``$<$0.001`` below."""
    if is_missing(p):
        return MISSING_TEX
    return "$<$0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def booktabs(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A booktabs ``tabular``; ``header`` and ``rows`` must already be LaTeX."""
    if len(align) != len(header):
        raise ValueError(f"`align` has {len(align)} letters for {len(header)} columns")
    frame = pd.DataFrame([list(r) for r in rows], columns=list(header))
    return str(frame.to_latex(index=False, escape=False, column_format=align))


@dataclass(frozen=True)
class ExportTable:
    """One exported table: the tidy rows (CSV) and the LaTeX text."""

    name: str
    frame: pd.DataFrame
    latex: str
    caption: str
    intervals: bool = True  # cells are estimates with intervals (say so in the header)


def _comment(table: ExportTable, ctx: ReportContext) -> str:
    level = ctx.config.get("level", 0.95)
    try:
        level_text = f"{float(level) * 100:g} %"
    except (TypeError, ValueError):
        level_text = str(level)
    cells = f"Cells: estimate [{level_text} interval]. " if table.intervals else ""
    lines = [f"% {table.caption}",
             f"% {cells}Run: {ctx.provenance.get('run_id', '')}; dataset: {ctx.dataset_name}.",
             r"% Needs \usepackage{booktabs}. Written by saliency-bench (bench report)."]
    return "\n".join(" ".join(line.split()) for line in lines) + "\n"


def _key_order(values: Sequence[str], order: Sequence[str]) -> dict[str, int]:
    rank = {v: i for i, v in enumerate(order)}
    return {str(v): rank.get(str(v), len(rank)) for v in values}


def _sorted(frame: pd.DataFrame, orders: dict[str, Sequence[str]]) -> pd.DataFrame:
    """``frame`` sorted by the report's order of models, splits, methods ..."""
    if frame.empty:
        return frame
    cols = [c for c in orders if c in frame.columns]

    def key(col: pd.Series) -> pd.Series:
        if col.name in orders:
            ranks = _key_order(col.astype(str).unique().tolist(), orders[str(col.name)])
            return col.astype(str).map(ranks)
        return col

    ranked = frame.sort_values(cols, key=key, kind="stable") if cols else frame
    return ranked.reset_index(drop=True)


def _orders(ctx: ReportContext) -> dict[str, Sequence[str]]:
    return {"model": ctx.models, "split": ctx.splits, "level": ["image", "case"],
            "method": ctx.methods, "reference": ctx.references, "metric": ctx.metrics}


def _headline(ctx: ReportContext, frame: pd.DataFrame | None) -> pd.DataFrame:
    """Rows of the headline metric and reference (all splits)."""
    if frame is None or frame.empty or not {"metric", "reference"} <= set(frame.columns):
        return pd.DataFrame()
    return frame[(frame["metric"] == ctx.headline_metric)
                 & (frame["reference"] == ctx.headline_reference)]


def _optional(run: Run, name: str) -> pd.DataFrame | None:
    try:
        frame = getattr(run, name)
    except FileNotFoundError:
        return None
    return None if frame is None or frame.empty else frame


# --- the tables ----------------------------------------------------------------------


def headline_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """Model x split rows: image-level AUROC and the headline metric per method."""
    summary = run.summary
    head = _sorted(_headline(ctx, summary), _orders(ctx))
    if head.empty:
        return None
    classification = _optional(run, "classification")
    auroc = tables.image_auroc(classification)
    flagged = tables.not_above_baseline(ctx, head)
    cells = {(str(r["model"]), str(r["split"]), str(r["method"])): r for r in records(head)}
    methods = [m for m in ctx.methods if any(k[2] == m for k in cells)]
    rows = []
    for model in ctx.models:
        for split in ctx.splits:
            if not any((model, split, m) in cells for m in methods):
                continue
            a = auroc.get((model, split), {})
            row = [tex(model), tex(split),
                   tex_ci(a.get("estimate"), a.get("ci_low"), a.get("ci_high"), ctx.digits)]
            for m in methods:
                r = cells.get((model, split, m), {})
                cell = tex_ci(r.get("estimate"), r.get("ci_low"), r.get("ci_high"), ctx.digits)
                if (model, split, m) in flagged:
                    cell += DAGGER_TEX
                row.append(cell)
            rows.append(row)
    header = ["Model", "Split", "AUROC (image)"] + [tex(ctx.method_label(m)) for m in methods]
    direction = "lower" if lower_is_better(ctx.headline_metric) else "higher"
    caption = (f"{ctx.headline_metric} against the {ctx.headline_reference} reference "
               f"({direction} is better) per model, split and method; image-level AUROC. "
               "Dagger: not shown to beat the best null baseline of the same model and split.")
    return ExportTable("headline", head, booktabs(header, rows, "ll" + "r" * (len(header) - 2)),
                       caption)


def summary_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """Every metric and reference: one tabular per reference, one column per metric."""
    summary = _sorted(run.summary, _orders(ctx))
    if summary.empty:
        return None
    parts = []
    for reference in ctx.references:
        sub = summary[summary["reference"] == reference]
        if sub.empty:
            continue
        metrics = [m for m in ctx.metrics if m in set(sub["metric"])]
        cells: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        for r in records(sub):
            key = (str(r["model"]), str(r["split"]), str(r["method"]))
            cells.setdefault(key, {})[str(r["metric"])] = r
        rows = []
        for key, recs in cells.items():
            row = [tex(key[0]), tex(key[1]), tex(ctx.method_label(key[2]))]
            for metric in metrics:
                r = recs.get(metric, {})
                cell = tex_ci(r.get("estimate"), r.get("ci_low"), r.get("ci_high"), ctx.digits)
                if r and str(r.get("ci_method", ctx.ci_method)) != ctx.ci_method:
                    cell += DDAGGER_TEX
                row.append(cell)
            rows.append(row)
        header = ["Model", "Split", "Method"] + [tex(m) for m in metrics]
        parts.append(f"% Reference: {' '.join(reference.split())}\n"
                     + booktabs(header, rows, "lll" + "r" * len(metrics)))
    caption = ("Every metric (columns) per model, split and method, one tabular per "
               f"reference. Double dagger: interval by another method than {ctx.ci_method}.")
    return ExportTable("summary", summary, "\n\\par\\bigskip\n\n".join(parts), caption)


def classification_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """AUROC, accuracy, sensitivity, specificity per model, split and level."""
    frame = _optional(run, "classification")
    if frame is None:
        return None
    frame = _sorted(frame, _orders(ctx))
    by_key: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in records(frame):
        by_key.setdefault((str(r["model"]), str(r["split"]), str(r["level"])), {})[
            str(r["metric"])] = r
    rows = []
    for (model, split, level), recs in by_key.items():
        any_rec = next(iter(recs.values()))
        row = [tex(model), tex(split), tex(level)]
        row += [tex_ci(recs.get(m, {}).get("estimate"), recs.get(m, {}).get("ci_low"),
                       recs.get(m, {}).get("ci_high"), ctx.digits)
                for m in tables.CLASSIFICATION_METRICS]
        row += [_count(any_rec.get("n_cases")), _count(any_rec.get("n_images"))]
        rows.append(row)
    header = ["Model", "Split", "Level", "AUROC", "Accuracy", "Sensitivity", "Specificity",
              "Cases", "Images"]
    caption = "Classification performance per model, split and level (image, case)."
    return ExportTable("classification", frame, booktabs(header, rows, "lll" + "r" * 6),
                       caption)


def data_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """Cases and images per split, by label (one model's prediction rows)."""
    predictions = _optional(run, "predictions")
    if predictions is None:
        return None
    model = counting_model(ctx, predictions)
    if model is None:
        return None
    counts = split_counts(predictions, model,
                          ordered_splits(ctx, predictions["split"].astype(str).unique()))
    rows = [[tex(r["split"]), *(str(int(r[c])) for c in counts.columns[1:7]),
             _share(r["pos_share_cases"]), _share(r["pos_share_images"])]
            for r in records(counts)]
    header = ["Split", "Cases", "Pos. cases", "Neg. cases", "Images", "Pos. images",
              "Neg. images", r"Pos. cases (\%)", r"Pos. images (\%)"]
    caption = ("Cases and images per split by label; a case is positive when any of its "
               "images is.")
    return ExportTable("data", counts, booktabs(header, rows, "l" + "r" * 8), caption,
                       intervals=False)


def checkpoints_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """Checkpoint sha256 (and target layer) per model."""
    frame = checkpoint_frame(ctx)
    if frame.empty:
        return None
    has_layers = bool(frame["target_layer"].notna().any())
    rows = []
    for r in records(frame):
        row = [tex(r["model"]),
               MISSING_TEX if r["sha256"] is None else r"\texttt{" + tex(r["sha256"]) + "}"]
        if has_layers:
            row.append(MISSING_TEX if r["target_layer"] is None
                       else r"\texttt{" + tex(r["target_layer"]) + "}")
        rows.append(row)
    header = ["Model", "sha256"] + (["Target layer"] if has_layers else [])
    frame = frame if has_layers else frame.drop(columns="target_layer")
    return ExportTable("checkpoints", frame, booktabs(header, rows, "l" * len(header)),
                       "Checkpoint files (sha256)" + (
                           " and the layer the CAM methods explain." if has_layers else "."),
                       intervals=False)


def comparisons_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """Paired differences of the headline metric: methods within models, models within
    methods, every split."""
    orders = dict(_orders(ctx))
    orders["family"] = ["methods", "models"]
    frame = _headline(ctx, _optional(run, "comparisons"))
    if frame.empty:
        return None
    frame = _sorted(frame, {k: orders[k] for k in ("family", "split")})
    rows = [[tex(r["family"]), _tex_opt(r.get("within")), tex(r["split"]),
             f"{tex(r['a'])} $-$ {tex(r['b'])}",
             tex_ci(r["diff"], r["ci_low"], r["ci_high"], ctx.digits), tex_p(r["p"]),
             tex_p(r["p_adj"])]
            for r in records(frame)]
    header = ["Family", "Within", "Split", "Pair", "Difference", "p", "p (adjusted)"]
    caption = (f"Paired differences (a $-$ b) of {ctx.headline_metric} against the "
               f"{ctx.headline_reference} reference, case-bootstrap intervals on shared "
               "draws, sign-flip permutation p and its multiplicity-adjusted value.")
    return ExportTable("comparisons", frame, booktabs(header, rows, "llllrrr"), caption)


def regression_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """The comparison with a baseline run (``--baseline`` / ``bench compare``): headline
    metric, every model pair, method and split."""
    frame = _headline(ctx, _optional(run, "regression"))
    if frame.empty:
        return None
    frame = _sorted(frame, {"split": _orders(ctx)["split"]})
    rows = [[f"{tex(r['baseline_model'])} $\\to$ {tex(r['candidate_model'])}",
             tex(r["method"]), tex(r["split"]), tex_num(r["baseline_estimate"], ctx.digits),
             tex_num(r["candidate_estimate"], ctx.digits),
             tex_ci(r["diff"], r["ci_low"], r["ci_high"], ctx.digits), tex_p(r["p_adj"]),
             _count(r["n_cases"])]
            for r in records(frame)]
    header = ["Models", "Method", "Split", "Baseline", "Candidate", "Difference",
              "p (adjusted)", "Cases"]
    caption = (f"{ctx.headline_metric} against the {ctx.headline_reference} reference: this "
               "run (candidate) against the baseline run, paired on the cases both scored; "
               "difference = candidate $-$ baseline with its case-bootstrap interval.")
    return ExportTable("regression", frame, booktabs(header, rows, "lllrrrrr"), caption)


def human_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """The human benchmark of the headline metric: annotator x split."""
    frame = _headline(ctx, _optional(run, "human"))
    if frame.empty or "annotator" not in frame.columns:
        return None
    cells = {(str(r["annotator"]), str(r["split"])): r for r in records(frame)}
    annotators = sorted({a for a, _ in cells} - {"all"}) + (
        ["all"] if any(a == "all" for a, _ in cells) else [])
    splits = ordered_splits(ctx, {s for _, s in cells})
    rows = []
    for a in annotators:
        row = [tex(a) if a != "all" else "all (pooled)"]
        for s in splits:
            r = cells.get((a, s), {})
            row.append(tex_ci(r.get("estimate"), r.get("ci_low"), r.get("ci_high"),
                              ctx.digits))
        rows.append(row)
    header = ["Annotator", *[tex(s) for s in splits]]
    frame = _sorted(frame, {"split": ctx.splits})
    caption = (f"Human benchmark: each annotator's mask scored against the "
               f"{ctx.headline_reference} of the other annotators ({ctx.headline_metric}).")
    return ExportTable("human", frame, booktabs(header, rows, "l" + "r" * len(splits)),
                       caption)


def mixed_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """Mixed-model contrasts of the headline metric, every model and split."""
    frame = _sorted(_headline(ctx, _optional(run, "mixed")), _orders(ctx))
    if frame.empty:
        return None
    rows = [[tex(r["model"]), tex(r["split"]),
             f"{tex(r['method'])} $-$ {tex(r['reference_method'])}",
             tex_ci(r["estimate"], r["ci_low"], r["ci_high"], ctx.digits),
             tex_num(r.get("std_err"), 3), tex_p(r.get("p")), tex_num(r.get("icc"), 2)]
            for r in records(frame)]
    header = ["Model", "Split", "Contrast", "Estimate", "SE", "p", "ICC (case)"]
    caption = (f"Linear mixed model of {ctx.headline_metric} against the "
               f"{ctx.headline_reference} reference: method effects with a random case "
               "intercept (REML), Wald intervals.")
    return ExportTable("mixed", frame, booktabs(header, rows, "lllrrrr"), caption)


def correlation_export(ctx: ReportContext, run: Run) -> ExportTable | None:
    """Spearman rho of model probability and the headline metric, model x split x method."""
    frame = _sorted(_headline(ctx, _optional(run, "correlation")), _orders(ctx))
    if frame.empty:
        return None
    rows = [[tex(r["model"]), tex(r["split"]), tex(ctx.method_label(str(r["method"]))),
             tex_ci(r["rho"], r["ci_low"], r["ci_high"], ctx.digits), _count(r.get("n_cases"))]
            for r in records(frame)]
    header = ["Model", "Split", "Method", r"Spearman $\rho$", "Cases"]
    caption = (f"Spearman correlation over cases between the model's probability and "
               f"{ctx.headline_metric} against the {ctx.headline_reference} reference.")
    return ExportTable("correlation", frame, booktabs(header, rows, "lllrr"), caption)


EXPORTS: tuple[Callable[[ReportContext, Run], ExportTable | None], ...] = (
    headline_export, summary_export, classification_export, data_export,
    checkpoints_export, comparisons_export, regression_export, human_export, mixed_export,
    correlation_export,
)


def _tex_opt(value: Any) -> str:
    return MISSING_TEX if is_missing(value) else tex(value)


def _count(value: Any) -> str:
    return MISSING_TEX if is_missing(value) else str(int(value))


def _share(value: Any) -> str:
    return MISSING_TEX if is_missing(value) else f"{100 * float(value):.0f}"


def collect_tables(run: Run, ctx: ReportContext) -> list[ExportTable]:
    """Every table the run has, in report order (missing and empty ones left out)."""
    return [t for t in (make(ctx, run) for make in EXPORTS) if t is not None]


def export_tables(
    run: Run | str | Path, ctx: ReportContext | None = None, out_dir: Path | None = None
) -> list[Path]:
    """Write every report table as ``<name>.csv`` and ``<name>.tex`` under ``out_dir``.

    Parameters
    ----------
    run : Run or path
    ctx : ReportContext, optional
        Resolved from ``run`` when not given.
    out_dir : path, optional
        Default ``RUN/tables``.

    Returns
    -------
    list of Path
        The files written, CSV then LaTeX per table, in report order: ``headline``,
        ``summary``, ``classification``, ``data``, ``checkpoints``, ``comparisons``,
        ``human``, ``mixed``, ``correlation`` (tables the run lacks are skipped).

    Notes
    -----
    CSV files hold the run's own rows behind each table (tidy, numbers unrounded);
    ``headline``, ``comparisons``, ``human``, ``mixed`` and ``correlation`` are restricted
    to the headline metric and reference, every split. Each file is written atomically.
    """
    if not isinstance(run, Run):
        run = Run.open(run)
    if ctx is None:
        ctx = resolve_context(run)
    out = Path(out_dir) if out_dir is not None else run.path / TABLES_DIR
    written = []
    for table in collect_tables(run, ctx):
        csv_path = out / f"{table.name}.csv"
        with atomic_open(csv_path, "wb") as fh:
            fh.write(table.frame.to_csv(index=False).encode("utf-8"))
        tex_path = out / f"{table.name}.tex"
        with atomic_open(tex_path, "wb") as fh:
            fh.write((_comment(table, ctx) + table.latex).encode("utf-8"))
        written += [csv_path, tex_path]
    return written
