"""Figures and tables of the report's agreement section beyond the headline forest plot:
forest plots of every metric (one figure, a menu picks the metric), distributions of
case-level scores, threshold curves and agreement per annotator."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmark.report.context import ReportContext, lower_is_better, records
from benchmark.report.escape import fmt_ci, html_text, md, pipe_table
from benchmark.report.figures import SPLIT_COLOURS, forest_frame, forest_parts

MODEL_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
BASELINE_COLOUR = "#888888"


def metric_views(ctx: ReportContext, summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(reference, metric) pairs the all-metrics forest plot offers: every metric of the
    headline reference, then every metric of ``graded``; the headline first."""
    have = set(zip(summary["reference"], summary["metric"], strict=True))
    views = [(ctx.headline_reference, m) for m in ctx.metrics]
    views += [("graded", m) for m in ctx.metrics if ctx.headline_reference != "graded"]
    views = [v for v in views if v in have]
    head = (ctx.headline_reference, ctx.headline_metric)
    return [head, *[v for v in views if v != head]] if head in views else views


def forest_all_figure(
    ctx: ReportContext, summary: pd.DataFrame, human: pd.DataFrame | None
) -> go.Figure | None:
    """The forest plot of every metric in one figure; a drop-down menu shows one at a
    time (traces, bands and axis title switch together)."""
    views = metric_views(ctx, summary)
    if not views:
        return None
    parts = [forest_parts(dataclasses.replace(ctx, headline_reference=ref,
                                              headline_metric=metric), summary, human)
             for ref, metric in views]
    # One validated frame (the first view's panels and axes); the views' traces and
    # shapes are plain dicts, validated once with it.
    frame = forest_frame(dataclasses.replace(ctx, headline_reference=views[0][0],
                                             headline_metric=views[0][1]))
    frame.update_layout(shapes=parts[0][1])
    data: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    for i, (traces, _) in enumerate(parts):
        start = len(data)
        data += [{**trace, "visible": i == 0} for trace in traces]
        spans.append((start, len(data)))
    # Sorted: plotly's layout iterates its keys in a per-process order, and the report
    # must be byte-for-byte the same on every render of the same run.
    x_axes = sorted(k for k in frame.layout if k.startswith("xaxis"))
    buttons = []
    for i, ((ref, metric), (_, shapes)) in enumerate(zip(views, parts, strict=True)):
        visible = [spans[i][0] <= k < spans[i][1] for k in range(len(data))]
        direction = "lower is better" if lower_is_better(metric) else "higher is better"
        layout: dict[str, Any] = {"shapes": shapes}
        for axis in x_axes:
            layout[f"{axis}.title.text"] = (
                f"{html_text(metric)} vs {html_text(ref)} ({direction})")
        buttons.append({"label": f"{html_text(metric)} · {html_text(ref)}",
                        "method": "update", "args": [{"visible": visible}, layout]})
    top, bottom = 150, 50
    height = max((frame.layout.height or 450) + 60, top + bottom + 200)
    out = go.Figure(data=data, layout=frame.layout)
    out.update_layout(
        # The menu sits in the top margin, above the legend (paper y beyond 1).
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 0, "xanchor": "left",
                      "y": min(3.0, 1 + (top - 8) / (height - top - bottom)),
                      "yanchor": "top",
                      "showactive": True}],
        margin={"l": 10, "r": 10, "t": top, "b": bottom},
        height=height,
    )
    return out


def case_means(ctx: ReportContext, scores: pd.DataFrame) -> pd.DataFrame:
    """Per-case mean of the headline metric and reference on the primary split."""
    sel = scores[(scores["metric"] == ctx.headline_metric)
                 & (scores["reference"] == ctx.headline_reference)
                 & (scores["split"] == ctx.primary_split)]
    return (sel.dropna(subset=["value"])
            .groupby(["model", "method", "case_id"], sort=True, observed=True)["value"]
            .mean().reset_index())


def distribution_figure(ctx: ReportContext, scores: pd.DataFrame) -> go.Figure | None:
    """Box plots (with every case as a point) of the case-level headline metric, per
    method (x) and model (colour), on the primary split."""
    means = case_means(ctx, scores)
    if means.empty:
        return None
    fig = go.Figure()
    for k, model in enumerate(ctx.models):
        sub = means[means["model"] == model]
        if sub.empty:
            continue
        order = {m: i for i, m in enumerate(ctx.methods)}
        sub = sub.sort_values("method", key=lambda s: s.map(order))
        fig.add_trace(go.Box(
            x=[html_text(m) for m in sub["method"]], y=sub["value"].round(4),
            name=html_text(model), marker_color=MODEL_COLOURS[k % len(MODEL_COLOURS)],
            boxpoints="all", jitter=0.4, pointpos=0, marker={"size": 3},
            hovertext=[html_text(c) for c in sub["case_id"]], line={"width": 1.2},
        ))
    direction = "lower is better" if lower_is_better(ctx.headline_metric) else "higher is better"
    fig.update_layout(
        template="simple_white", boxmode="group", height=420,
        yaxis_title=f"{html_text(ctx.headline_metric)} per case ({direction})",
        legend={"orientation": "h", "y": 1.08, "x": 0, "title": {"text": "model"}},
        margin={"l": 10, "r": 10, "t": 60, "b": 60}, font={"size": 12},
    )
    return fig


def curves_figure(ctx: ReportContext, curves: pd.DataFrame | None) -> go.Figure | None:
    """Median over cases of the curve metric against the threshold, one panel per model,
    one line per method with its case-bootstrap band (primary split)."""
    if curves is None or curves.empty:
        return None
    sel = curves[curves["split"] == ctx.primary_split]
    if sel.empty:
        return None
    metric, ref = str(sel["metric"].iloc[0]), str(sel["reference"].iloc[0])
    models = [m for m in ctx.models if (sel["model"] == m).any()]
    fig = make_subplots(rows=1, cols=len(models), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[html_text(m) for m in models])
    explainers = [m for m in ctx.methods if not ctx.is_baseline(m)]
    for col, model in enumerate(models, start=1):
        for method in ctx.methods:
            sub = sel[(sel["model"] == model) & (sel["method"] == method)].sort_values(
                "threshold")
            if sub.empty:
                continue
            base = ctx.is_baseline(method)
            colour = (BASELINE_COLOUR if base else
                      SPLIT_COLOURS[explainers.index(method) % len(SPLIT_COLOURS)]
                      if method in explainers else BASELINE_COLOUR)
            x = sub["threshold"].tolist()
            fig.add_trace(go.Scatter(
                x=x + x[::-1], y=sub["ci_high"].round(4).tolist()
                + sub["ci_low"].round(4).tolist()[::-1],
                fill="toself", fillcolor=_rgba(colour, 0.12), line={"width": 0},
                hoverinfo="skip", showlegend=False, legendgroup=html_text(method),
            ), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=x, y=sub["median"].round(4), mode="lines", name=html_text(method),
                legendgroup=html_text(method), showlegend=col == 1,
                line={"color": colour, "width": 1.8, "dash": "dot" if base else "solid"},
            ), row=1, col=col)
    fig.update_xaxes(title_text="threshold τ on the min-max normalised map", range=[0, 1])
    fig.update_yaxes(title_text=f"{html_text(metric)} vs {html_text(ref)} (median)",
                     row=1, col=1)
    fig.update_layout(template="simple_white", height=430,
                      margin={"l": 10, "r": 10, "t": 60, "b": 50}, font={"size": 12},
                      legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def annotator_table(ctx: ReportContext, summary: pd.DataFrame) -> str:
    """Headline metric of each model x explainer against each single annotator and the
    consensus (primary split): does agreement depend on whom you ask?"""
    refs = sorted(r for r in summary["reference"].unique() if str(r).startswith("annotator:"))
    if not refs:
        return ""
    cols = [ctx.headline_reference, *refs] if ctx.headline_reference not in refs else refs
    sel = summary[(summary["metric"] == ctx.headline_metric)
                  & (summary["split"] == ctx.primary_split)
                  & summary["reference"].isin(cols)]
    cells = {(str(r["model"]), str(r["method"]), str(r["reference"])): r for r in records(sel)}
    rows = []
    for model in ctx.models:
        for method in ctx.explainers:
            row = [md(model), md(method)]
            row += [fmt_ci(*(_triple(cells.get((model, method, ref)))), ctx.digits)
                    for ref in cols]
            if any(c != "\u2014" for c in row[2:]):
                rows.append(row)
    header = ["Model", "Method", *[md(c.replace("annotator:", "")) for c in cols]]
    return pipe_table(header, rows, "ll" + "r" * len(cols)) if rows else ""


def _triple(rec: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    if rec is None:
        return None, None, None
    return rec["estimate"], rec["ci_low"], rec["ci_high"]
