"""The "Model or explainer?" section: agreement, faithfulness and sanity side by side.

Drawn when the run holds the tables of the checks stage (:mod:`benchmark.checks`):
``region_deletion_summary.parquet`` (the model's output drop when the findings, or the
outside of the region of interest, are deleted), ``faithfulness_summary.parquet``
(deletion and insertion areas against the random order) and ``sanity.parquet`` /
``sanity_verdicts.parquet`` (cascading randomisation). Each model x method gets one
reading from the rule of :data:`RULE`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmark.report.context import ReportContext, lower_is_better, records
from benchmark.report.escape import EMPTY_CELL, fmt_ci, html_text, md, pipe_table
from benchmark.report.figures import SPLIT_COLOURS, figure_block, quarto_figure
from benchmark.store import Run

ANCHOR = "sec-diagnosis"
TITLE = "Model or explainer?"
#: The null baseline that stands for chance agreement.
CHANCE = "random"
#: The interpretation rule, in the order it is applied (also the Methods text).
RULE = (
    "A map that fails the randomisation check (its similarity to the original maps does "
    "not fall below that of maps of different images) shows the image more than the "
    "model: its agreement figure says nothing about the model (**explainer**). A sane map "
    "whose top pixels hurt the model no more than pixels in random order when deleted is "
    "not faithful: its agreement is not evidence about the model either (**explainer**). "
    "A sane, faithful map that agrees with the experts no better than chance (the random "
    "map) shows that the model relies on evidence the experts do not mark "
    "(**model: other evidence**); one that beats chance shows that the model uses the "
    "marked findings (**model: marked evidence**)."
)


def has_diagnosis(run: Run) -> bool:
    """Whether ``run`` has any table of the checks stage (the section is drawn)."""
    return any(not t.empty for t in (run.sanity_verdicts, run.faithfulness_summary,
                                      run.region_deletion_summary))


def _cell(table: pd.DataFrame, **where: Any) -> dict[str, Any] | None:
    sel = table
    for col, value in where.items():
        if col not in sel.columns:
            return None
        sel = sel[sel[col].astype(str) == str(value)]
    return records(sel.head(1))[0] if len(sel) else None


def _ci(rec: dict[str, Any] | None, digits: int) -> str:
    if rec is None:
        return EMPTY_CELL
    return fmt_ci(rec["estimate"], rec["ci_low"], rec["ci_high"], digits)


def region_table(ctx: ReportContext, table: pd.DataFrame) -> str:
    """One row per model: output drop when the findings / the outside are deleted."""
    rows = []
    for model in ctx.models:
        f = _cell(table, model=model, region="findings")
        o = _cell(table, model=model, region="outside")
        d = _cell(table, model=model, region="outside - findings")
        if f is None and o is None:
            continue
        if d is None or pd.isna(d["ci_low"]):
            reading = EMPTY_CELL
        elif d["ci_low"] > 0:
            reading = "relies more on what lies outside the region of interest"
        elif d["ci_high"] < 0:
            reading = "relies more on the annotated findings"
        else:
            reading = "no clear difference"
        rows.append([md(model), _ci(f, ctx.digits), _ci(o, ctx.digits), _ci(d, ctx.digits),
                     reading])
    return pipe_table(["Model", "Deleting the findings", "Deleting the outside",
                       "Outside − findings", "Reading"], rows, "lrrrl") if rows else ""


def _chance(ctx: ReportContext, run: Run, model: str, method: str, split: str
            ) -> bool | None:
    """Whether ``method`` agrees better than the random map (paired interval), else the
    run's beats-the-baselines flag; None when neither is known."""
    metric, ref = ctx.headline_metric, ctx.headline_reference
    comp = run.comparisons
    if len(comp) and CHANCE in ctx.methods:
        sel = comp[(comp["family"] == "methods") & (comp["within"].astype(str) == model)
                   & (comp["split"] == split) & (comp["metric"] == metric)
                   & (comp["reference"] == ref)]
        lower = lower_is_better(metric)
        for r in records(sel):
            if {str(r["a"]), str(r["b"])} != {method, CHANCE} or pd.isna(r["ci_low"]):
                continue
            sign = 1.0 if str(r["a"]) == method else -1.0  # diff = a - b
            lo, hi = sorted((sign * r["ci_low"], sign * r["ci_high"]))
            return bool(hi < 0) if lower else bool(lo > 0)
    rec = _cell(run.summary, model=model, method=method, split=split, metric=metric,
                reference=ref)
    if rec is None or "beats_baseline" not in rec or pd.isna(rec["beats_baseline"]):
        return None
    return bool(rec["beats_baseline"])


def reading(sane: bool | None, faithful: bool | None, chance: bool | None) -> str:
    """The rule of :data:`RULE` for one model x method."""
    if sane is False:
        return "**explainer**: fails the sanity check"
    if faithful is False:
        return "**explainer**: not faithful"
    if sane is None or faithful is None or chance is None:
        return EMPTY_CELL
    return ("**model: marked evidence**" if chance
            else "**model: other evidence** (low agreement)")


def panel_rows(ctx: ReportContext, run: Run) -> list[dict[str, Any]]:
    """One record per model x explainer with the panel's values and its reading."""
    faith, verdicts = run.faithfulness_summary, run.sanity_verdicts
    split = str(faith["split"].iloc[0]) if len(faith) else ctx.primary_split
    out = []
    for model in ctx.models:
        for method in ctx.explainers:
            agree = _cell(run.summary, model=model, method=method, split=split,
                          metric=ctx.headline_metric, reference=ctx.headline_reference)
            dele = _cell(faith, model=model, method=method, metric="faithful_deletion")
            ins = _cell(faith, model=model, method=method, metric="faithful_insertion")
            v = verdicts[(verdicts["model"].astype(str) == model)
                         & (verdicts["method"].astype(str) == method)] if len(verdicts) \
                else pd.DataFrame(columns=["metric", "passed"])
            sane = None if len(v) == 0 else bool(v["passed"].all())
            faithful = None if dele is None or pd.isna(dele["ci_low"]) else dele["ci_low"] > 0
            chance = _chance(ctx, run, model, method, split)
            if agree is None and dele is None and sane is None:
                continue
            out.append({"model": model, "method": method, "split": split, "agreement": agree,
                        "deletion": dele, "insertion": ins, "sanity": v, "sane": sane,
                        "faithful": faithful, "beats_chance": chance,
                        "reading": reading(sane, faithful, chance)})
    return out


def _sanity_text(v: Any) -> str:
    if len(v) == 0:
        return EMPTY_CELL
    return ", ".join(f"{md(r['metric'])} {'pass' if r['passed'] else '**fail**'}"
                     for r in records(v.sort_values("metric")))


def panel_table(ctx: ReportContext, rows: list[dict[str, Any]]) -> str:
    body = [[md(r["model"]), md(r["method"]), _ci(r["agreement"], ctx.digits),
             {True: "yes", False: "no", None: EMPTY_CELL}[r["beats_chance"]],
             _ci(r["deletion"], ctx.digits), _ci(r["insertion"], ctx.digits),
             _sanity_text(r["sanity"]), r["reading"]] for r in rows]
    return pipe_table(["Model", "Method", "Agreement", "Beats chance", "Deletion gain",
                       "Insertion gain", "Randomisation check", "Reading"], body, "llrlrrll")


def sanity_figure(ctx: ReportContext, curves: pd.DataFrame) -> go.Figure | None:
    """Similarity to the original maps against the number of randomised layers, one panel
    per model, one line per method (``spearman_abs``), with its interval."""
    if curves.empty:
        return None
    metric = "spearman_abs" if (curves["metric"] == "spearman_abs").any() else str(
        curves["metric"].iloc[0])
    sel = curves[curves["metric"] == metric]
    models = [m for m in ctx.models if (sel["model"] == m).any()]
    fig = make_subplots(rows=1, cols=len(models), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[html_text(m) for m in models])
    methods = [m for m in ctx.explainers if (sel["method"] == m).any()]
    for col, model in enumerate(models, start=1):
        for i, method in enumerate(methods):
            sub = sel[(sel["model"] == model) & (sel["method"] == method)].sort_values("step")
            if sub.empty:
                continue
            colour = SPLIT_COLOURS[i % len(SPLIT_COLOURS)]
            err = {"type": "data", "symmetric": False,
                   "array": (sub["ci_high"] - sub["estimate"]).round(4).tolist(),
                   "arrayminus": (sub["estimate"] - sub["ci_low"]).round(4).tolist()}
            fig.add_trace(go.Scatter(
                x=sub["layer"].astype(str).tolist(), y=sub["estimate"].round(4).tolist(),
                error_y=err, mode="lines+markers", name=html_text(method),
                legendgroup=html_text(method), showlegend=col == 1,
                line={"color": colour, "width": 1.8},
            ), row=1, col=col)
    fig.update_xaxes(title_text="randomised down to layer")
    fig.update_yaxes(title_text=f"{html_text(metric)} to the original maps", row=1, col=1)
    fig.update_layout(template="simple_white", height=430,
                      margin={"l": 10, "r": 10, "t": 60, "b": 50}, font={"size": 12},
                      legend={"orientation": "h", "y": -0.3, "x": 0})
    return fig


def diagnosis_section(ctx: ReportContext, run: Run) -> str:
    """The section's markdown (heading included), or ``""`` without check tables."""
    if not has_diagnosis(run):
        return ""
    cfg = ctx.config
    text = (
        f"## {TITLE} {{#{ANCHOR}}}\n\n"
        "Low agreement with the experts has two causes: the model relies on other "
        "evidence, or the map does not show what the model relies on. These checks tell "
        f"them apart, on {md(cfg.get('check_images', EMPTY_CELL))} positive images (at "
        "most) of the first evaluated split, with case-bootstrap intervals.\n\n"
    )
    regions = run.region_deletion_summary
    table = region_table(ctx, regions) if len(regions) else ""
    if table:
        text += (
            "### What the model needs {#sec-region-deletion}\n\n"
            "The model's output (its logit, unless it returns probabilities) drops by "
            "this much when the annotated findings, or everything outside the region of "
            "interest, are deleted; no explainer is involved.\n\n" + table
            + "\nDeleted pixels become the dataset's `deletion_fill` value (default: the "
            "image mean). A model that needs what lies outside the body more than the "
            "findings has learned a shortcut.\n\n")
    rows = panel_rows(ctx, run)
    if rows:
        what = f"{md(ctx.headline_metric)} against {md(ctx.headline_reference)}"
        text += (
            "### Agreement, faithfulness and sanity {#sec-panel}\n\n"
            + panel_table(ctx, rows)
            + f"\n*Agreement*: {what} on split {md(rows[0]['split'])} (all explained "
            "images). *Beats chance*: its paired interval against the random map lies on "
            "the better side. *Deletion gain*: area under the deletion curve of random "
            "pixel order minus that of the map's order (positive: the map's top pixels "
            "matter more to the model than random ones); *insertion gain*: the same for "
            "insertion. *Randomisation check*: pass when the similarity after randomising "
            "every layer falls below that of maps of different images. *Reading*: "
            + RULE + "\n\n")
    fig = sanity_figure(ctx, run.sanity)
    if fig is not None:
        text += ("### Randomisation curves {#sec-sanity-curves}\n\n" + quarto_figure(
            "fig-sanity", figure_block(fig, "sanity-figure"),
            "Cascading model-parameter randomisation: mean similarity (|Spearman|) of each "
            "method's maps to its maps from the trained model, as layers are re-initialised "
            "from the output backwards; bars: case-bootstrap interval. A method that "
            "depends on the model falls towards zero."))
    return text

