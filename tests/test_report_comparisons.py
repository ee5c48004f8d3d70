"""The report's comparisons section, human band and baseline flags, from the tables."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_run

from benchmark.report import comparisons as rc
from benchmark.report.context import resolve_context
from benchmark.report.figures import forest_figure, human_band
from benchmark.report.tables import not_above_baseline


@pytest.fixture(scope="module")
def run_ctx(tmp_path_factory):
    run, _ = make_run(Path(tmp_path_factory.mktemp("cmp")))
    return run, resolve_context(run)


def test_difference_matrix_cells_are_the_comparisons_rows_oriented_row_minus_column(run_ctx):
    run, ctx = run_ctx
    table = rc.difference_matrix(ctx, run.comparisons, "clean")
    lines = [ln for ln in table.splitlines() if ln.startswith("|")][2:]
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    pairs = run.comparisons
    pairs = pairs[(pairs.family == "methods") & (pairs.within == "clean")
                  & (pairs.split == ctx.primary_split) & (pairs.metric == ctx.headline_metric)
                  & (pairs.reference == ctx.headline_reference)]
    checked = 0
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = cells[0].split(" ")[0].replace("\\", "")
        for col, cell in zip(header[1:], cells[1:], strict=True):
            col = col.replace("\\", "")
            if not cell:
                continue
            got = float(re.match(r"(-?\d+\.\d+)", cell).group(1))
            hit = pairs[(pairs.a == row) & (pairs.b == col)]
            expected = hit["diff"].iloc[0] if len(hit) else -pairs[
                (pairs.a == col) & (pairs.b == row)]["diff"].iloc[0]
            assert got == pytest.approx(expected, abs=0.006)
            checked += 1
    n = len(ctx.methods)
    assert checked == n * (n - 1) // 2


def test_cliques_are_the_maximal_runs_closer_than_cd():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ranks = sorted(rng.uniform(1, 6, rng.integers(2, 8)).tolist())
        cd = float(rng.uniform(0.2, 3))
        runs = [(i, j) for i, j in itertools.combinations(range(len(ranks)), 2)
                if ranks[j] - ranks[i] < cd]
        maximal = {(i, j) for i, j in runs
                   if not any(a <= i and j <= b and (a, b) != (i, j) for a, b in runs)}
        assert set(rc.cliques(ranks, cd)) == maximal


def test_cd_figure_places_methods_at_their_mean_ranks(run_ctx):
    run, ctx = run_ctx
    fig = rc.cd_figure(ctx, run.omnibus)
    om = run.omnibus
    om = om[(om.split == ctx.primary_split) & (om.metric == ctx.headline_metric)
            & (om.reference == ctx.headline_reference) & (om.within == ctx.models[0])]
    trace = fig.data[0]
    got = dict(zip(trace.text, trace.x, strict=True))
    assert got == pytest.approx(dict(zip(om.method, om.mean_rank, strict=True)))


def test_forest_plot_draws_the_pooled_human_band(run_ctx):
    run, ctx = run_ctx
    band = human_band(ctx, run.human)
    h = run.human
    row = h[(h.annotator == "all") & (h.split == ctx.primary_split)
            & (h.metric == ctx.headline_metric) & (h.reference == ctx.headline_reference)]
    assert band["estimate"] == pytest.approx(row.estimate.iloc[0])
    fig = forest_figure(ctx, run.summary, run.human)
    names = [t.name for t in fig.data if t.name and t.name.startswith("experts")]
    assert len(names) == 1 and f"{row.estimate.iloc[0]:.3f}" in names[0]
    assert human_band(ctx, pd.DataFrame()) is None


def test_baseline_flags_come_from_the_paired_column_when_present(run_ctx):
    run, ctx = run_ctx
    head = run.summary[(run.summary.metric == ctx.headline_metric)
                       & (run.summary.reference == ctx.headline_reference)].copy()
    head["beats_baseline"] = pd.array(
        [None if m in ctx.baselines else (m != "gradcam") for m in head.method],
        dtype="boolean")
    flagged = not_above_baseline(ctx, head)
    assert flagged and {k[2] for k in flagged} == {"gradcam"}


def test_p_values_are_formatted_for_readers():
    assert rc.fmt_p(0.0004) == "< 0.001"
    assert rc.fmt_p(0.0312) == "0.031"
    assert rc.fmt_p(float("nan")) == rc.EMPTY_CELL


def test_summary_states_the_margin_over_the_runner_up_and_the_human_band(run_ctx):
    from benchmark.report import narrative

    run, ctx = run_ctx
    text = narrative.summary_sentences(ctx, run.summary, run.classification,
                                       run.comparisons, run.human)
    m = re.search(r"runner-up explainer of that model, (\S+), differs by (-?\d+\.\d+)", text)
    assert m, text
    runner = m.group(1).rstrip(",").replace("\\", "")
    best = re.search(r"explained by \*\*(\S+)\*\*", text).group(1).replace("\\", "")
    c = run.comparisons
    c = c[(c.family == "methods") & (c.split == ctx.primary_split)
          & (c.metric == ctx.headline_metric) & (c.reference == ctx.headline_reference)
          & c.a.isin([best, runner]) & c.b.isin([best, runner])]
    best_model = re.search(r"for model \*\*(\S+)\*\*", text).group(1).replace("\\", "")
    row = c[c.within == best_model].iloc[0]
    diff = row["diff"] if row.a == best else -row["diff"]
    assert float(m.group(2)) == pytest.approx(diff, abs=0.006)
    h = run.human
    band = h[(h.annotator == "all") & (h.split == ctx.primary_split)
             & (h.metric == ctx.headline_metric) & (h.reference == ctx.headline_reference)]
    assert f"reach {band.estimate.iloc[0]:.2f}" in text


def test_figures_are_quarto_figure_divs_with_their_caption_inside(run_ctx):
    from benchmark.report.document import build_document

    run, ctx = run_ctx
    qmd = build_document(run, None, ctx)
    for label in ("fig-forest", "fig-forest-all", "fig-distributions", "fig-cd-diagram"):
        start = qmd.index(f"::: {{#{label}}}\n")
        body = qmd[start:qmd.index("\n:::\n", start)]
        assert body.count("```{=html}") == 1, label
        caption = body.rsplit("```", 1)[1].strip()
        assert len(caption) > 40, label  # the last paragraph is the caption
