"""The agreement section's extra figures and tables, checked against the run's tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_run

from benchmark.report import agreement
from benchmark.report.context import resolve_context
from benchmark.store import CURVES, SUMMARY, write_table


@pytest.fixture(scope="module")
def run_ctx(tmp_path_factory):
    root = Path(tmp_path_factory.mktemp("agree"))
    run, _ = make_run(root)
    rows = [dict(model=m, split=s, method=meth, reference="consensus", metric="iou",
                 threshold=t, median=0.5 - t / 2, ci_low=0.4 - t / 2, ci_high=0.6 - t / 2,
                 n_cases=6)
            for m in ("clean", "partial", "shortcut") for s in ("test", "shifted")
            for meth in ("gradcam", "random") for t in (0.25, 0.5, 0.75)]
    write_table(pd.DataFrame(rows), root / CURVES)
    s = run.summary
    extra = s[s.metric == "irrelevant_fraction@top15"].copy()
    extra = pd.concat([extra.assign(reference="annotator:a1", estimate=extra.estimate + 0.01)
                       [lambda d: d.reference != "graded"].drop_duplicates(
                           ["model", "split", "method"])], ignore_index=True)
    write_table(pd.concat([s, extra], ignore_index=True), root / SUMMARY)
    run._cache.clear()
    return run, resolve_context(run)


def test_metric_views_put_the_headline_first_and_cover_both_references(run_ctx):
    run, ctx = run_ctx
    views = agreement.metric_views(ctx, run.summary)
    assert views[0] == (ctx.headline_reference, ctx.headline_metric)
    assert set(views) == {(r, m) for r in ("consensus", "graded") for m in ctx.metrics}
    assert "annotator:a1" not in ctx.references  # headline-only cells are not references


def test_forest_menu_shows_exactly_one_metric_per_button(run_ctx):
    run, ctx = run_ctx
    fig = agreement.forest_all_figure(ctx, run.summary, run.human)
    buttons = fig.layout.updatemenus[0].buttons
    assert len(buttons) == len(agreement.metric_views(ctx, run.summary))
    masks = np.array([b.args[0]["visible"] for b in buttons])
    assert (masks.sum(axis=0) == 1).all()  # every trace belongs to exactly one view
    assert [t.visible for t in fig.data] == list(masks[0])


def test_distribution_points_are_the_case_means(run_ctx):
    run, ctx = run_ctx
    fig = agreement.distribution_figure(ctx, run.scores)
    sc = run.scores
    sel = sc[(sc.model == "clean") & (sc.split == ctx.primary_split)
             & (sc.metric == ctx.headline_metric) & (sc.reference == ctx.headline_reference)]
    expected = sel.dropna(subset=["value"]).groupby(["method", "case_id"]).value.mean()
    trace = next(t for t in fig.data if t.name == "clean")
    got = sorted(np.round(trace.y, 4))
    assert got == pytest.approx(sorted(np.round(expected.to_numpy(), 4)))


def test_curves_figure_draws_the_median_per_method(run_ctx):
    run, ctx = run_ctx
    fig = agreement.curves_figure(ctx, run.curves)
    lines = [t for t in fig.data if t.mode == "lines" and t.name == "gradcam"]
    assert len(lines) == 3  # one per model panel
    assert list(lines[0].y) == pytest.approx([0.375, 0.25, 0.125])


def test_annotator_table_lists_the_single_annotator_estimates(run_ctx):
    run, ctx = run_ctx
    table = agreement.annotator_table(ctx, run.summary)
    s = run.summary
    row = s[(s.model == "clean") & (s.method == "gradcam") & (s.split == ctx.primary_split)
            & (s.reference == "annotator:a1") & (s.metric == ctx.headline_metric)].iloc[0]
    line = next(ln for ln in table.splitlines() if ln.startswith("| clean | gradcam"))
    assert f"{row.estimate:.2f}" in line.split("|")[-2]


_FOREST_JSON = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from benchmark.report import agreement
from benchmark.report.context import resolve_context
from benchmark.store import Run
run = Run.open(Path(sys.argv[1]))
ctx = resolve_context(run)
fig = agreement.forest_all_figure(ctx, run.summary, None)
print(fig.to_json())
"""


def test_forest_figure_is_the_same_under_any_hash_seed(run_ctx):
    """The report is byte-for-byte reproducible: nothing may follow set or dict orders
    that change from one process to the next (plotly's layout keys did)."""
    import os
    import subprocess
    import sys

    run, _ = run_ctx
    outs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _FOREST_JSON, str(run.path), str(Path(__file__).parent)],
            env=env, capture_output=True, text=True, check=True)
        outs.append(proc.stdout)
    assert outs[0] and outs[0] == outs[1] == outs[2]
