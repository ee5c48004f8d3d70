"""The "Regression against a baseline run" section (``regression.parquet``, ``.json``).

Drawn only when the run directory holds a non-empty ``regression.parquet`` written by
``bench compare`` or ``bench run --baseline`` (:mod:`benchmark.regression`): one sentence
per ``--fail-if-worse`` gate and a table of the headline metric's cells.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from benchmark.report.context import ReportContext, records
from benchmark.report.escape import EMPTY_CELL, fmt_ci, fmt_num, is_missing, md, pipe_table
from benchmark.store import REGRESSION_JSON, Run

ANCHOR = "sec-regression"
TITLE = "Regression against a baseline run"
_ADJUST_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}
# Failing cells named in a gate's sentence; the rest are in the table and regression.json.
MAX_NAMED_CELLS = 5


def has_regression(run: Run) -> bool:
    """Whether ``run`` has a non-empty regression table (the section is drawn)."""
    return not run.regression.empty


def _read_json(run: Run) -> dict[str, Any]:
    """``regression.json``; empty when missing or unreadable (the table still renders)."""
    try:
        with open(run.path / REGRESSION_JSON, encoding="utf-8") as fh:
            loaded = json.load(fh)
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _pair_label(baseline: Any, candidate: Any) -> str:
    if str(baseline) == str(candidate):
        return md(baseline)
    return f"{md(baseline)} → {md(candidate)}"


def _p(value: Any) -> str:
    if is_missing(value):
        return EMPTY_CELL
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def _gate_sentences(gates: list[dict[str, Any]], digits: int) -> str:
    if not gates:
        return ("No gate was set (`--fail-if-worse METRIC[:MARGIN]`); the table shows the "
                "differences only.\n\n")
    lines = []
    for g in gates:
        what = (f"Gate **{md(g.get('metric'))}** (margin {fmt_num(g.get('margin'), 3)}, "
                f"reference {md(g.get('reference'))})")
        n_cells, n_failed = int(g.get("n_cells") or 0), int(g.get("n_failed") or 0)
        if g.get("passed"):
            lines.append(f"- {what}: **passed**; none of its {n_cells} cells is "
                         "significantly worse than the baseline by more than the margin.")
            continue
        failed = list(g.get("failed_cells") or [])
        cells = "; ".join(
            f"{_pair_label(c.get('baseline_model'), c.get('candidate_model'))} / "
            f"{md(c.get('method'))} on {md(c.get('split'))}, worse by "
            f"{fmt_ci(c.get('worse_by'), c.get('worse_ci_low'), c.get('worse_ci_high'), digits)}"
            for c in failed[:MAX_NAMED_CELLS])
        if len(failed) > MAX_NAMED_CELLS:
            cells += f"; and {len(failed) - MAX_NAMED_CELLS} more (`regression.json`)"
        lines.append(f"- {what}: **failed** in {n_failed} of {n_cells} cells: {cells}.")
    return "\n".join(lines) + "\n\n"


def _headline(ctx: ReportContext, table: pd.DataFrame) -> tuple[str, str]:
    """The metric and reference of the table: the report's headline where compared."""
    metrics = list(dict.fromkeys(table["metric"].astype(str)))
    metric = ctx.headline_metric if ctx.headline_metric in metrics else metrics[0]
    refs = list(dict.fromkeys(table.loc[table["metric"] == metric, "reference"].astype(str)))
    ref = ctx.headline_reference if ctx.headline_reference in refs else refs[0]
    return metric, ref


def _cells_table(ctx: ReportContext, table: pd.DataFrame, metric: str, ref: str,
                 gated: set[tuple[str, str, str, str]]) -> str:
    rows = table[(table["metric"] == metric) & (table["reference"] == ref)]
    # The report's own order (configuration order) of models, methods and splits.
    rank = {col: {v: i for i, v in enumerate(values)} for col, values in
            (("candidate_model", ctx.models), ("method", ctx.methods), ("split", ctx.splits))}
    rows = rows.assign(**{f"_{c}": rows[c].map(r) for c, r in rank.items()})
    rows = rows.sort_values(["_candidate_model", "candidate_model", "_method", "method",
                             "_split", "split"], na_position="last")
    d = ctx.digits
    body = []
    for r in records(rows):
        key = (str(r["baseline_model"]), str(r["candidate_model"]), str(r["method"]),
               str(r["split"]))
        body.append([
            _pair_label(r["baseline_model"], r["candidate_model"]),
            md(ctx.method_label(str(r["method"]))),
            md(r["split"]),
            fmt_num(r["baseline_estimate"], d),
            fmt_num(r["candidate_estimate"], d),
            fmt_ci(r["diff"], r["ci_low"], r["ci_high"], d),
            _p(r["p_adj"]),
            "**fails**" if key in gated else "",
        ])
    return pipe_table(["Model", "Method", "Split", "Baseline", "Candidate",
                       "Difference [interval]", "Adjusted p", "Gate"], body, "lllrrrrl")


def regression_section(ctx: ReportContext, run: Run) -> str:
    """The section's markdown (heading included), or ``""`` without a regression table."""
    table = run.regression
    if table.empty:
        return ""
    info = _read_json(run)
    settings = info.get("settings") or {}
    gates = [g for g in info.get("gates") or [] if isinstance(g, dict)]
    metric, ref = _headline(ctx, table)
    gated = {(str(c.get("baseline_model")), str(c.get("candidate_model")),
              str(c.get("method")), str(c.get("split")))
             for g in gates if g.get("metric") == metric and g.get("reference") == ref
             for c in g.get("failed_cells") or []}
    direction = str(table.loc[table["metric"] == metric, "direction"].iloc[0]) \
        if "direction" in table.columns else "higher"
    level = settings.get("level", ctx.config.get("level", 0.95))
    adjust = str(settings.get("adjust") or table["adj_method"].iloc[0])
    dropped = table.groupby("split", sort=False)[
        ["n_cases_dropped_baseline", "n_cases_dropped_candidate"]].max()
    dropped_text = "; ".join(
        f"{md(split)}: {int(r.n_cases_dropped_baseline)} only in the baseline, "
        f"{int(r.n_cases_dropped_candidate)} only in this run"
        for split, r in dropped.iterrows())
    baseline = settings.get("baseline")
    if settings.get("baseline_run_id"):
        baseline = f"{settings['baseline_run_id']} ({baseline})"
    return (
        f"## {TITLE} {{#{ANCHOR}}}\n\n"
        f"This run (the candidate) against the baseline run "
        f"{md(baseline) if baseline else EMPTY_CELL}, paired on the cases both runs scored "
        f"(cases left out per split: {dropped_text}). Differences are candidate − baseline "
        f"in the metric's units with {float(level) * 100:g} % paired case-bootstrap "
        f"intervals ({md(settings.get('ci_method', ctx.ci_method))}, "
        f"B = {md(settings.get('n_boot', EMPTY_CELL))}, seed "
        f"{md(settings.get('seed', EMPTY_CELL))}); p from the two-sided sign-flip "
        f"permutation test, adjusted with {_ADJUST_NAMES.get(adjust, md(adjust))} over "
        "all cells (model pairs, methods, references, metrics) of each split.\n\n"
        + _gate_sentences(gates, ctx.digits)
        + "A gate `METRIC:MARGIN` fails in a cell when the whole interval of how much "
        "worse the candidate is lies above the margin (with margin 0, the adjusted p must "
        "also be below 1 − level).\n\n"
        + _cells_table(ctx, table, metric, ref, gated)
        + f"\n{md(metric)} against the {md(ref)} reference "
        f"({direction} is better); *Gate*: a cell failing a gate on this metric. Every "
        "metric's cells are in `regression.parquet`.\n\n"
    )
