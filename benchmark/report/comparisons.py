"""The report's comparisons section: difference matrices, critical-difference diagrams,
the mixed-model sensitivity table and the confidence-agreement correlation.

Everything here reads the run's tables (``comparisons``, ``omnibus``, ``mixed``,
``correlation``) for the headline metric and reference on the primary split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmark.report.context import ReportContext, records
from benchmark.report.escape import (
    EMPTY_CELL,
    fmt_ci,
    fmt_num,
    html_text,
    is_missing,
    md,
    pipe_table,
)

SIGNIFICANT = "*"  # adjusted p below alpha
ALPHA = 0.05


def _headline(ctx: ReportContext, frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None or frame.empty or "metric" not in frame.columns:
        return pd.DataFrame()
    return frame[(frame["metric"] == ctx.headline_metric)
                 & (frame["reference"] == ctx.headline_reference)
                 & (frame["split"] == ctx.primary_split)]


def fmt_p(p: Any) -> str:
    """p-values as a reader expects them: 3 significant digits, ``< 0.001`` below."""
    if is_missing(p):
        return EMPTY_CELL
    return "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def difference_matrix(ctx: ReportContext, comparisons: pd.DataFrame | None,
                      model: str) -> str:
    """Methods x methods of one model: row minus column, interval, adjusted p.

    Upper triangle only (the lower is the same with the sign flipped); ``*`` marks an
    adjusted p below 0.05.
    """
    sel = _headline(ctx, comparisons)
    if sel.empty:
        return ""
    sel = sel[(sel["family"] == "methods") & (sel["within"] == model)]
    pairs = {(str(r["a"]), str(r["b"])): r for r in records(sel)}
    methods = [m for m in ctx.methods if any(m in k for k in pairs)]
    if len(methods) < 2:
        return ""
    rows = []
    for i, a in enumerate(methods[:-1]):
        row = [md(ctx.method_label(a))]
        for j, b in enumerate(methods[1:], start=1):
            row.append(_pair_cell(pairs, a, b, ctx.digits) if j > i else "")
        rows.append(row)
    header = ["Row − column", *[md(m) for m in methods[1:]]]
    return pipe_table(header, rows, "l" + "r" * (len(methods) - 1))


def _pair_cell(pairs: dict[tuple[str, str], dict[str, Any]], a: str, b: str,
               digits: int) -> str:
    if (a, b) in pairs:
        r, sign = pairs[(a, b)], 1.0
    elif (b, a) in pairs:
        r, sign = pairs[(b, a)], -1.0
    else:
        return EMPTY_CELL
    if is_missing(r["diff"]):
        return EMPTY_CELL
    lo, hi = (r["ci_low"], r["ci_high"]) if sign > 0 else (
        None if is_missing(r["ci_high"]) else -float(r["ci_high"]),
        None if is_missing(r["ci_low"]) else -float(r["ci_low"]))
    star = SIGNIFICANT if not is_missing(r["p_adj"]) and float(r["p_adj"]) < ALPHA else ""
    return (f"{fmt_ci(sign * float(r['diff']), lo, hi, digits)}{star}<br>"
            f"p~adj~ {fmt_p(r['p_adj'])}")


def model_pairs_table(ctx: ReportContext, comparisons: pd.DataFrame | None) -> str:
    """Pairs of models within each explainer (headline metric, primary split)."""
    sel = _headline(ctx, comparisons)
    if sel.empty:
        return ""
    sel = sel[sel["family"] == "models"]
    order = {m: i for i, m in enumerate(ctx.methods)}
    recs = sorted(records(sel), key=lambda r: (order.get(str(r["within"]), 99),
                                               str(r["a"]), str(r["b"])))
    rows = [
        [md(r["within"]), f"{md(r['a'])} − {md(r['b'])}",
         fmt_ci(r["diff"], r["ci_low"], r["ci_high"], ctx.digits), fmt_p(r["p"]),
         fmt_p(r.get("p_wilcoxon")), fmt_num(r.get("effect_size"), 2), fmt_p(r["p_adj"])]
        for r in recs if not ctx.is_baseline(str(r["within"]))
    ]
    if not rows:
        return ""
    header = ["Method", "Models", "Difference", "p (sign-flip)", "p (Wilcoxon)",
              "Rank-biserial", "p adjusted"]
    return pipe_table(header, rows, "llrrrrr")


def cliques(ranks: list[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs ``(i, j)`` of rank-sorted methods whose mean ranks differ by less
    than ``cd`` (Demšar 2006's bars of methods not significantly different)."""
    out: list[tuple[int, int]] = []
    n = len(ranks)
    for i in range(n):
        j = i
        while j + 1 < n and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in out):
            out.append((i, j))
    return out


def cd_figure(ctx: ReportContext, omnibus: pd.DataFrame | None) -> go.Figure | None:
    """Critical-difference diagram per model (Demšar 2006): methods at their mean rank
    (1 = best), the Nemenyi CD as a bar, thick lines joining methods whose mean ranks
    differ by less than the CD."""
    sel = _headline(ctx, omnibus)
    if sel.empty:
        return None
    models = [m for m in ctx.models if (sel["within"] == m).any()]
    fig = make_subplots(rows=len(models), cols=1, vertical_spacing=0.16,
                        subplot_titles=[_cd_title(sel[sel["within"] == m], m)
                                        for m in models])
    k_max = int(sel["k"].max())
    for row, model in enumerate(models, start=1):
        sub = sel[sel["within"] == model].sort_values("mean_rank")
        ranks = sub["mean_rank"].to_numpy(dtype=float).tolist()
        names = [str(m) for m in sub["method"]]
        cd = float(sub["cd"].iloc[0])
        colours = ["#777" if ctx.is_baseline(n) else "#0072B2" for n in names]
        fig.add_trace(go.Scatter(
            x=ranks, y=[0] * len(ranks), mode="markers+text",
            text=[html_text(n) for n in names],
            textposition=["top center" if i % 2 == 0 else "bottom center"
                          for i in range(len(names))],
            marker={"color": colours, "size": 9}, showlegend=False,
            hovertext=[f"{html_text(n)}: mean rank {r:.2f}" for n, r in zip(names, ranks,
                                                                           strict=True)],
            hoverinfo="text",
        ), row=row, col=1)
        for level, (i, j) in enumerate(cliques(ranks, cd) if np.isfinite(cd) else []):
            y = -0.35 - 0.12 * level
            fig.add_trace(go.Scatter(x=[ranks[i] - 0.05, ranks[j] + 0.05], y=[y, y],
                                     mode="lines", line={"color": "#333", "width": 4},
                                     showlegend=False, hoverinfo="skip"), row=row, col=1)
        if np.isfinite(cd):
            fig.add_trace(go.Scatter(x=[1, 1 + cd], y=[0.6, 0.6], mode="lines+text",
                                     line={"color": "#D55E00", "width": 3},
                                     text=["", f"CD = {cd:.2f}"], textposition="middle right",
                                     showlegend=False, hoverinfo="skip"), row=row, col=1)
    fig.update_xaxes(range=[0.7, k_max + 0.3], dtick=1, showgrid=True, gridcolor="#eee")
    fig.update_xaxes(title_text="mean rank (1 = best)", row=len(models), col=1)
    fig.update_yaxes(visible=False, range=[-0.9, 0.9])
    fig.update_layout(template="simple_white", height=60 + 190 * len(models),
                      margin={"l": 20, "r": 20, "t": 50, "b": 40}, font={"size": 12})
    return fig


def _cd_title(sub: pd.DataFrame, model: str) -> str:
    if sub.empty:
        return html_text(model)
    r = sub.iloc[0]
    return (f"{html_text(model)}: Friedman χ² = {fmt_num(r['statistic'], 1)}, "
            f"p {_p_relation(r['p'])}, {int(r['n_cases'])} cases")


def _p_relation(p: Any) -> str:
    """``= 0.012`` or ``< 0.001``: a p-value after "p" in running text."""
    text = fmt_p(p)
    return text if text.startswith("<") or text == EMPTY_CELL else f"= {text}"


def mixed_table(ctx: ReportContext, mixed: pd.DataFrame | None) -> str:
    """Fixed effects of the mixed model (method vs reference method, random case
    intercept) for the headline metric on the primary split."""
    sel = _headline(ctx, mixed)
    if sel.empty:
        return ""
    rows = [
        [md(r["model"]), f"{md(r['method'])} − {md(r['reference_method'])}",
         fmt_ci(r["estimate"], r["ci_low"], r["ci_high"], ctx.digits),
         fmt_num(r["std_err"], 3), fmt_p(r["p"]), fmt_num(r["icc"], 2),
         md(r["note"]) if isinstance(r.get("note"), str) and r["note"] else ""]
        for r in records(sel)
    ]
    header = ["Model", "Contrast", "Estimate", "SE", "p", "ICC (case)", "Note"]
    return pipe_table(header, rows, "llrrrrl")


def correlation_table(ctx: ReportContext, correlation: pd.DataFrame | None) -> str:
    """Spearman rho of model probability and the headline metric, per model x method."""
    sel = _headline(ctx, correlation)
    if sel.empty:
        return ""
    methods = [m for m in ctx.methods if (sel["method"] == m).any()]
    cells = {(str(r["model"]), str(r["method"])): r for r in records(sel)}
    rows = []
    for model in ctx.models:
        row = [md(model)]
        for m in methods:
            r = cells.get((model, m), {})
            row.append(fmt_ci(r.get("rho"), r.get("ci_low"), r.get("ci_high"), ctx.digits))
        rows.append(row)
    return pipe_table(["Model", *[md(m) for m in methods]], rows, "l" + "r" * len(methods))
