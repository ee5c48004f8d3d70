"""Plotly figures of the report, emitted as HTML fragments without plotly.js.

The document inlines the plotly.js bundle once (:func:`plotlyjs_block`) from the
installed plotly package, so the report works offline and never reaches a CDN; each
figure is then a ``<div>`` plus a ``Plotly.newPlot`` call.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
from plotly.subplots import make_subplots

from benchmark.report.context import ReportContext, lower_is_better, records
from benchmark.report.escape import fmt_ci, html_text, is_missing, raw_html_block
from benchmark.report.tables import headline_frame

# Okabe-Ito: distinguishable with the common colour-vision deficiencies; splits are few.
SPLIT_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]
BASELINE_FILL = "rgba(120, 120, 120, 0.10)"
HUMAN_FILL = "rgba(0, 158, 115, 0.13)"  # Okabe-Ito bluish green, light
HUMAN_LINE = "#009E73"
_FIGURE_CONFIG = {"displaylogo": False, "responsive": True}


def plotlyjs_block() -> str:
    """The plotly.js bundle of the installed plotly package, as one inline ``<script>``."""
    return f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>'


def figure_html(fig: go.Figure, div_id: str) -> str:
    """``fig`` as an HTML fragment that expects plotly.js to be loaded already."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config=_FIGURE_CONFIG,
            default_width="100%",
            # The container needs the figure's own height: "100%" of an auto-height
            # block collapses and the plot overflows onto the text below.
            default_height=f"{fig.layout.height or 450}px",
        )
    )


def figure_block(fig: go.Figure, div_id: str) -> str:
    """``fig`` as a raw HTML block of the report (pandoc and Quarto pass it through)."""
    return raw_html_block(f'<div class="report-figure">{figure_html(fig, div_id)}</div>')


def quarto_figure(label: str, block: str, caption: str) -> str:
    """A Quarto cross-referenceable figure: a ``fig-`` div whose last paragraph is the
    caption (pandoc keeps it as a div with that id)."""
    return f"::: {{#{label}}}\n\n{block}\n{caption}\n\n:::\n\n"


def forest_hover_key(model: str, method: str) -> str:
    """The label a forest-plot point carries for ``model`` x ``method`` (tests look for it)."""
    return f"{html_text(model)} \u00b7 {html_text(method)}"


def human_band(ctx: ReportContext, human: pd.DataFrame | None) -> dict[str, Any] | None:
    """The pooled human benchmark (all annotators against the others) of the headline
    metric and reference on the primary split, or None when the run has none."""
    if human is None or human.empty or "annotator" not in human.columns:
        return None
    sel = human[(human["annotator"] == "all") & (human["split"] == ctx.primary_split)
                & (human["metric"] == ctx.headline_metric)
                & (human["reference"] == ctx.headline_reference)]
    recs = records(sel)
    if not recs or is_missing(recs[0]["estimate"]):
        return None
    return recs[0]


def forest_figure(
    ctx: ReportContext, summary: pd.DataFrame, human: pd.DataFrame | None = None
) -> go.Figure:
    """Forest plot of the headline metric: one panel per model, one row per method.

    Points are the estimates, whiskers the intervals, colour is the split (dodged
    vertically). Null baselines use open diamonds on a grey band so they read as a
    floor, not as competitors. The human benchmark (annotators against the others, on
    the primary split) is a green vertical band: its interval, with a line at its
    estimate.
    """
    traces, shapes = forest_parts(ctx, summary, human)
    fig = forest_frame(ctx)
    fig.update_layout(shapes=shapes)
    fig.add_traces(traces)
    return fig


def forest_frame(ctx: ReportContext) -> go.Figure:
    """The forest plot without data: panels, axes (titled for the headline metric),
    size and template. One validated figure; :func:`forest_parts` gives the rest."""
    methods = ctx.methods
    n_methods = max(len(methods), 1)
    ypos = _ypos(methods)
    fig = make_subplots(
        rows=1,
        cols=max(len(ctx.models), 1),
        shared_yaxes=True,
        horizontal_spacing=0.03,
        subplot_titles=[html_text(m) for m in ctx.models],
    )
    fig.update_xaxes(
        title_text=forest_axis_title(ctx.headline_metric),
        zeroline=False, showgrid=True, gridcolor="#e6e6e6",
        matches="x",  # one scale for all models, so panels compare at a glance
    )
    fig.update_yaxes(
        tickmode="array",
        tickvals=[ypos[m] for m in methods],
        ticktext=[_tick_label(ctx, m) for m in methods],
        range=[-0.6, n_methods - 0.4],
        showgrid=False,
    )
    fig.update_layout(
        template="simple_white",
        height=170 + 36 * n_methods,
        margin={"l": 10, "r": 10, "t": 90, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.1, "x": 0,
                "title": {"text": "split"}},
        hoverlabel={"align": "left"},
        font={"size": 12},
    )
    return fig


def forest_axis_title(metric: str) -> str:
    direction = "lower is better" if lower_is_better(metric) else "higher is better"
    return f"{html_text(metric)} ({direction})"


def _ypos(methods: list[str]) -> dict[str, int]:
    n_methods = max(len(methods), 1)
    return {m: n_methods - 1 - i for i, m in enumerate(methods)}  # first method on top


# Traces and shapes are plain dicts (plotly's JSON): building validated graph objects
# one property at a time cost ~0.5 s per forest plot, and the report draws one per
# metric view. They are validated once, by the figure they go into.
def forest_parts(
    ctx: ReportContext, summary: pd.DataFrame, human: pd.DataFrame | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The traces and the layout shapes of :func:`forest_figure`, as plotly dicts."""
    frame = headline_frame(ctx, summary)
    methods = ctx.methods
    ypos = _ypos(methods)
    n_splits = max(len(ctx.splits), 1)
    dodge = {s: (i - (n_splits - 1) / 2) * min(0.5 / n_splits, 0.18) for i, s in
             enumerate(ctx.splits)}
    order = {m: i for i, m in enumerate(methods)}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records(frame):
        groups.setdefault((str(r["model"]), str(r["split"])), []).append(r)
    traces: list[dict[str, Any]] = []
    axes = _panel_axes(max(len(ctx.models), 1))
    for col, model in enumerate(ctx.models, start=1):
        for k, split in enumerate(ctx.splits):
            recs = [r for r in groups.get((model, split), []) if str(r["method"]) in ypos]
            recs.sort(key=lambda r: order[str(r["method"])])
            if not recs:
                continue
            trace = _split_trace(ctx, model, split, recs, ypos, dodge[split], k, col == 1)
            trace["xaxis"], trace["yaxis"] = axes[col - 1]
            traces.append(trace)
    shapes = _baseline_bands(ctx, ypos)
    band = human_band(ctx, human)
    if band is not None:
        band_shapes, band_trace = _human_band(ctx, band)
        shapes += band_shapes
        traces.append(band_trace)
    # Legend entry explaining the open marker (no data, so nothing is drawn).
    traces.append({
        "type": "scatter", "x": [None], "y": [None], "mode": "markers",
        "name": "null baseline (open marker)",
        "marker": {"symbol": "diamond-open", "size": 10, "color": "#555"},
        "hoverinfo": "skip",
    })
    return traces, shapes


def _split_trace(
    ctx: ReportContext,
    model: str,
    split: str,
    recs: list[dict[str, Any]],
    ypos: dict[str, int],
    offset: float,
    colour_index: int,
    show_legend: bool,
) -> dict[str, Any]:
    colour = SPLIT_COLOURS[colour_index % len(SPLIT_COLOURS)]
    est = [None if is_missing(r["estimate"]) else round(float(r["estimate"]), 4) for r in recs]
    plus = [_whisker(r["ci_high"], r["estimate"]) for r in recs]
    minus = [_whisker(r["estimate"], r["ci_low"]) for r in recs]
    symbols = ["diamond-open" if ctx.is_baseline(str(r["method"])) else "circle" for r in recs]
    hover = [
        f"{forest_hover_key(model, str(r['method']))} \u00b7 {html_text(split)}<br>"
        f"{html_text(ctx.headline_metric)} = "
        f"{fmt_ci(r['estimate'], r['ci_low'], r['ci_high'], 3)}<br>"
        f"{html_text(r.get('ci_method', ''))} interval, {_n(r.get('n_cases'))} cases, "
        f"{_n(r.get('n_images'))} images"
        for r in recs
    ]
    return {
        "type": "scatter",
        "x": est,
        "y": [ypos[str(r["method"])] + offset for r in recs],
        "mode": "markers",
        "name": html_text(split),
        "legendgroup": html_text(split),
        "showlegend": show_legend,
        "marker": {"color": colour, "size": 9, "symbol": symbols,
                   "line": {"width": 1.5, "color": colour}},
        "error_x": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus,
                    "color": colour, "thickness": 1.5, "width": 3},
        "hovertext": hover,
        "hoverinfo": "text",
    }


def _panel_axes(n_panels: int) -> list[tuple[str, str]]:
    """(x axis, y axis) ids of the panels of a one-row subplot grid: x, y, x2, y2, ..."""
    return [("x" if k == 1 else f"x{k}", "y" if k == 1 else f"y{k}")
            for k in range(1, n_panels + 1)]


# Shapes are written as plain dicts for every panel at once: plotly's add_hrect(row="all")
# validates each shape against the whole figure and costs ~50 ms per call.
def _baseline_bands(ctx: ReportContext, ypos: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"type": "rect", "xref": f"{xa} domain", "x0": 0, "x1": 1, "yref": ya,
         "y0": ypos[m] - 0.45, "y1": ypos[m] + 0.45, "fillcolor": BASELINE_FILL,
         "line": {"width": 0}, "layer": "below"}
        for m in ctx.methods if ctx.is_baseline(m)
        for xa, ya in _panel_axes(max(len(ctx.models), 1))
    ]


def _human_band(
    ctx: ReportContext, band: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lo, hi, est = band["ci_low"], band["ci_high"], float(band["estimate"])
    shapes = []
    for xa, ya in _panel_axes(max(len(ctx.models), 1)):
        if not (is_missing(lo) or is_missing(hi)):
            shapes.append({"type": "rect", "xref": xa, "x0": float(lo), "x1": float(hi),
                           "yref": f"{ya} domain", "y0": 0, "y1": 1, "fillcolor": HUMAN_FILL,
                           "line": {"width": 0}, "layer": "below"})
        shapes.append({"type": "line", "xref": xa, "x0": est, "x1": est,
                       "yref": f"{ya} domain", "y0": 0, "y1": 1,
                       "line": {"color": HUMAN_LINE, "width": 1.5, "dash": "dash"}})
    trace = {
        "type": "scatter", "x": [None], "y": [None], "mode": "lines",
        "name": f"experts vs each other ({html_text(ctx.primary_split)}): "
                f"{fmt_ci(est, lo, hi, 3)}",
        "line": {"color": HUMAN_LINE, "dash": "dash"}, "hoverinfo": "skip",
    }
    return shapes, trace


def _tick_label(ctx: ReportContext, method: str) -> str:
    label = html_text(method)
    return f"<i>{label} (baseline)</i>" if ctx.is_baseline(method) else label


def _whisker(a: Any, b: Any) -> float | None:
    if is_missing(a) or is_missing(b):
        return None
    return round(max(float(a) - float(b), 0.0), 4)


def _n(value: Any) -> str:
    return "?" if is_missing(value) else str(int(value))
