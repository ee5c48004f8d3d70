"""Assemble ``report.qmd``: front matter, sections, figures already computed.

The document is Quarto markdown that pandoc reads as well: YAML front matter, headings
with ``{#sec-...}`` anchors, callouts as fenced divs (``::: {.callout-note}``), tables as
pipe tables, figures as raw HTML blocks (```` ```{=html} ````). Nothing in it needs a
Jupyter kernel, so ``bench report`` re-renders without touching a model.
"""

from __future__ import annotations

import datetime as _dt
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from benchmark.data.dataset import Dataset
from benchmark.errors import BenchError
from benchmark.report import (
    agreement,
    comparisons,
    diagnosis,
    figures,
    gallery,
    narrative,
    regression,
    tables,
)
from benchmark.report.context import ReportContext, lower_is_better
from benchmark.report.escape import EMPTY_CELL, md, md_code, pipe_table, raw_html_block
from benchmark.store import Run, atomic_open, sha256_json

ASSETS = ("styles.css", "references.bib")
ASSETS_DIR = "report_assets"  # beside report.qmd in the run directory

# (anchor, heading): the report's sections in order; tests and the TOC rely on them.
SECTIONS = (
    ("sec-summary", "Summary"),
    ("sec-data", "Data and models"),
    ("sec-agreement", "Agreement with experts"),
    ("sec-comparisons", "Comparisons"),
    ("sec-gallery", "Gallery"),
    ("sec-methods", "Methods"),
    ("sec-provenance", "Provenance"),
    ("sec-references", "References"),
)
# (anchor, heading, after): sections drawn only when the run has their table, placed
# after the section ``after``; :func:`sections` lists those of one run.
OPTIONAL_SECTIONS = (
    (diagnosis.ANCHOR, diagnosis.TITLE, "sec-agreement"),
    (regression.ANCHOR, regression.TITLE, "sec-comparisons"),
)
# Must not equal any id pandoc derives from a heading ("### Forest plot" -> "forest-plot"),
# or Plotly draws into the <section> instead of the figure's <div>.
FOREST_DIV_ID = "forest-plot-figure"
CD_DIV_ID = "cd-diagram-figure"


def asset_text(name: str) -> str:
    """A file shipped in ``benchmark/report/assets`` (works from an installed wheel)."""
    return resources.files("benchmark.report").joinpath("assets", name).read_text("utf-8")


def copy_assets(run_dir: Path, source: Path | None = None) -> Path:
    """Write the CSS and bibliography beside the report so the qmd renders on its own.

    ``source``: a folder holding your own ``styles.css`` and ``references.bib`` (e.g. an
    edited copy of the project's ``reports/``); default: the files shipped in the package.
    """
    target = Path(run_dir) / ASSETS_DIR
    for name in ASSETS:
        if source is None:
            text = asset_text(name)
        else:
            path = Path(source) / name
            try:
                text = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise BenchError(
                    f"report assets: cannot read {path} ({type(err).__name__}); the folder "
                    f"needs {' and '.join(ASSETS)}"
                ) from None
        with atomic_open(target / name) as fh:
            fh.write(text)
    return target


def front_matter(ctx: ReportContext) -> str:
    """YAML front matter valid for Quarto (``format: html``) and harmless to pandoc."""
    prov = ctx.provenance
    meta: dict[str, Any] = {
        # Quarto and pandoc read YAML strings as markdown: escape the user's part.
        "title": f"Saliency benchmark: {md(ctx.dataset_name)}",
        "subtitle": f"Run {md(prov.get('run_id', EMPTY_CELL))}",
        "date": str(prov.get("finished") or _dt.date.today().isoformat())[:10],
        "lang": "en",
        "format": {
            "html": {
                "embed-resources": True,
                "toc": True,
                "toc-depth": 2,
                "toc-title": "Contents",
                "css": f"{ASSETS_DIR}/styles.css",
                # plotly.js has tab characters inside string literals; pandoc's
                # markdown reader would expand them to spaces and change the code.
                "preserve-tabs": True,
                "link-citations": True,
            }
        },
        "bibliography": f"{ASSETS_DIR}/references.bib",
        "link-citations": True,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def sections(run: Run) -> list[tuple[str, str]]:
    """``(anchor, heading)`` of every section of ``run``'s report, in document order:
    :data:`SECTIONS` plus the optional sections whose table the run has."""
    present = {regression.ANCHOR: regression.has_regression(run),
               diagnosis.ANCHOR: diagnosis.has_diagnosis(run)}
    out = list(SECTIONS)
    for anchor, title, after in OPTIONAL_SECTIONS:
        if present[anchor]:
            out.insert([a for a, _ in out].index(after) + 1, (anchor, title))
    return out


def _heading(anchor: str) -> str:
    title = dict(SECTIONS)[anchor]
    return f"## {title} {{#{anchor}}}\n\n"


def _callout(text: str, kind: str = "note", title: str | None = None) -> str:
    attr = f' title="{title}"' if title else ""
    return f"::: {{.callout-{kind}{attr}}}\n{text}\n:::\n\n"


def _summary(ctx: ReportContext, run: Run, classification: Any) -> str:
    summary = run.summary
    lower = "lower" if lower_is_better(ctx.headline_metric) else "higher"
    return (
        _heading("sec-summary")
        + narrative.summary_sentences(ctx, summary, classification, run.comparisons,
                                      run.human)
        + "\n"
        + tables.headline_table(ctx, summary, classification)
        + "\n"
        + f"Cells: estimate [{_level(ctx)} interval]. Method columns: "
        f"{md(ctx.headline_metric)} against the {md(ctx.headline_reference)} reference "
        f"({lower} is better); {tables.NOT_ABOVE_BASELINE} = not shown to beat the best null "
        "baseline of the same model and split (the paired case-bootstrap interval of the "
        "difference includes zero or favours the baseline). AUROC at image level; "
        "case-level numbers in the next section.\n\n"
    )


def _classification(ctx: ReportContext, run: Run, dataset: Dataset | None,
                    classification: Any) -> str:
    """The "Data and models" section: splits, annotators, checkpoints, classification."""
    from benchmark.report.data_section import data_section

    return _heading("sec-data") + data_section(ctx, run, dataset, classification,
                                               level=_level(ctx))


def _agreement(ctx: ReportContext, run: Run) -> str:
    human = run.human
    fig = figures.forest_figure(ctx, run.summary, human)
    return (
        _heading("sec-agreement")
        + "### Forest plot {#sec-forest-plot}\n\n"
        # plotly.js inlined once, before the first figure needs it (never a CDN). Not
        # via include-in-header: pandoc's template indents every line of an include,
        # which would alter the bundle's multi-line string literals.
        + raw_html_block(figures.plotlyjs_block())
        + "\n"
        + _quarto_figure(
            "fig-forest", _figure(fig, FOREST_DIV_ID),
            f"{md(ctx.headline_metric)} against the {md(ctx.headline_reference)} reference, "
            f"per model (panels) and method (rows); points are estimates, whiskers "
            f"{_level(ctx)} case-bootstrap intervals, colours the splits. Null baselines "
            "(open diamonds, grey band) show what a map without information about the model "
            "scores. The green band is the human benchmark: each annotator scored against "
            f"the {md(ctx.headline_reference)} of the other annotators, pooled, with its "
            "interval (an explainer is not expected to agree with the experts better than "
            "they agree with each other).")
        + _human_section(ctx, human)
        + "### All metrics {#sec-all-metrics}\n\n"
        + tables.metrics_tables(ctx, run.summary)
        + f"Cells: estimate [{_level(ctx)} interval]; {tables.FALLBACK_INTERVAL} = "
        f"interval by another method than the configured {md(ctx.ci_method)} (percentile "
        "fallback where BCa is undefined). *NaN images*: images where the metric is "
        "undefined (e.g. empty reference), dropped before aggregation.\n\n"
        + _more_agreement(ctx, run)
    )


_figure = figures.figure_block
_quarto_figure = figures.quarto_figure


def _more_agreement(ctx: ReportContext, run: Run) -> str:
    """Every metric's forest plot, case-level distributions, threshold curves and
    agreement per annotator."""
    what = f"{md(ctx.headline_metric)} against the {md(ctx.headline_reference)} reference"
    text = ""
    fig = agreement.forest_all_figure(ctx, run.summary, run.human)
    if fig is not None:
        text += ("### Forest plots of every metric {#sec-forest-all}\n\n"
                 + _quarto_figure(
                     "fig-forest-all", _figure(fig, "forest-all-figure"),
                     "The same forest plot for each metric; pick the metric and reference "
                     "in the menu (graded metrics are against the graded reference)."))
    fig = agreement.distribution_figure(ctx, run.scores)
    if fig is not None:
        text += ("### Case-level distributions {#sec-distributions}\n\n"
                 + _quarto_figure(
                     "fig-distributions", _figure(fig, "distribution-figure"),
                     f"Per-case mean of {what} on split {md(ctx.primary_split)}, each "
                     "point a case; boxes show quartiles and whiskers 1.5 IQR."))
    fig = agreement.curves_figure(ctx, run.curves)
    if fig is not None:
        curves = run.curves
        text += ("### Threshold curves {#sec-threshold-curves}\n\n"
                 + _quarto_figure("fig-threshold-curves", _figure(fig, "curves-figure"),
                 f"{md(curves['metric'].iloc[0])} against the "
                 f"{md(curves['reference'].iloc[0])} reference at fixed thresholds τ of the "
                 "min-max normalised map (the region is S̃ ≥ τ): median over cases, band = "
                 f"{_level(ctx)} case-bootstrap interval of the median, split "
                 f"{md(ctx.primary_split)}; dotted = null baselines."))
    table = agreement.annotator_table(ctx, run.summary)
    if table:
        text += ("### Agreement per annotator {#sec-per-annotator}\n\n" + table
                 + f"\n{md(ctx.headline_metric)} of each explainer against each single "
                 f"annotator's mask and against the {md(ctx.headline_reference)} (split "
                 f"{md(ctx.primary_split)}, {_level(ctx)} intervals).\n\n")
    return text


def _human_section(ctx: ReportContext, human: Any) -> str:
    table = tables.human_table(ctx, human)
    if not table:
        return ""
    return (
        "### Agreement between the experts {#sec-human}\n\n"
        + table
        + f"\nEach annotator's mask scored as if it were a saliency map against the "
        f"{md(ctx.headline_reference)} of the other annotators ({md(ctx.headline_metric)}; "
        "*all* = mean over annotators per image), with the same case bootstrap "
        f"({_level(ctx)} intervals). `@tuned` metrics use threshold 0.5 on the binary "
        "mask, i.e. the mask itself.\n\n"
    )


def _comparisons(ctx: ReportContext, run: Run) -> str:
    what = (f"{md(ctx.headline_metric)} against the {md(ctx.headline_reference)} reference "
            f"on split {md(ctx.primary_split)}")
    text = _heading("sec-comparisons")
    pairs = run.comparisons
    method_tables = [(m, comparisons.difference_matrix(ctx, pairs, m)) for m in ctx.models]
    method_tables = [(m, t) for m, t in method_tables if t]
    if method_tables:
        text += (
            "### Methods within each model {#sec-method-pairs}\n\n"
            f"Paired differences (row − column) of {what}: estimate, {_level(ctx)} "
            "case-bootstrap interval on shared draws, and the sign-flip permutation p "
            f"adjusted within each model ({md(_adjust_name(pairs))}); "
            f"{comparisons.SIGNIFICANT} = adjusted p < 0.05.\n\n"
        )
        for model, table in method_tables:
            text += f"**{md(model)}**\n\n" + table + "\n"
    models_table = comparisons.model_pairs_table(ctx, pairs)
    if models_table:
        text += ("### Models within each method {#sec-model-pairs}\n\n"
                 f"Paired differences of {what} between models, per explainer; the "
                 "Wilcoxon signed-rank p (zsplit) is a second opinion on the sign-flip p, "
                 "the rank-biserial correlation the effect size.\n\n" + models_table + "\n")
    fig = comparisons.cd_figure(ctx, run.omnibus)
    if fig is not None:
        text += (
            "### Critical-difference diagram {#sec-cd-diagram}\n\n"
            + _quarto_figure(
                "fig-cd-diagram", _figure(fig, CD_DIV_ID),
                f"Mean rank of each method over cases (Friedman test, cases as blocks; "
                f"rank 1 = best) for {what}. Methods joined by a black bar are not "
                "significantly different by the Nemenyi test (mean ranks closer than the "
                "critical difference CD, α = 0.05).")
        )
    mixed = comparisons.mixed_table(ctx, run.mixed)
    if mixed:
        text += ("### Sensitivity: mixed model {#sec-mixed-model}\n\n"
                 "A linear mixed model of the image-level scores, method as a fixed effect "
                 "and a random intercept per case (statsmodels MixedLM, REML), fitted per "
                 f"model for {what}. Its contrasts should agree with the bootstrap "
                 "differences above; ICC = share of the variance between cases.\n\n"
                 + mixed + "\n")
    corr = comparisons.correlation_table(ctx, run.correlation)
    if corr:
        text += ("### Confidence and agreement {#sec-confidence-agreement}\n\n"
                 f"Spearman correlation over cases between the model's probability and "
                 f"{what} (per-case means; {_level(ctx)} case-bootstrap percentile "
                 "interval). A model whose agreement rises with its confidence uses the "
                 "findings when it is sure.\n\n" + corr + "\n")
    if text == _heading("sec-comparisons"):
        text += _callout("This run compares a single model and method: nothing to compare.")
    return text


def _adjust_name(pairs: Any) -> str:
    names = {"holm": "Holm", "bh": "Benjamini-Hochberg"}
    if pairs is None or pairs.empty:
        return "Holm"
    return ", ".join(names.get(str(a), str(a)) for a in sorted(pairs["adj_method"].unique()))


def _gallery(ctx: ReportContext, run: Run, dataset: Dataset | None) -> str:
    return (_heading("sec-gallery") + gallery.gallery_section(run, dataset, ctx)
            + f"The layout follows figure 2 of the drowning study [@{narrative.JIIM}].\n\n")


def _methods(ctx: ReportContext, run: Run) -> str:
    versions = ctx.provenance.get("versions") or {}
    text = _heading("sec-methods") + narrative.methods_paragraph(ctx) + "\n"
    thresholds = run.thresholds
    if len(thresholds):
        first = thresholds.iloc[0]
        text += (
            "### Tuned thresholds {#sec-tuned-thresholds}\n\n"
            f"Metrics marked `@tuned` use, per model and method, the fixed threshold τ on the "
            f"min-max normalised map that maximises the mean {md(first['metric'])} against the "
            f"{md(first['reference'])} reference on split {md(first['split'])}; τ is then "
            "frozen for every other split.\n\n" + tables.thresholds_table(thresholds) + "\n"
        )
    if versions:
        text += "### Software\n\n" + tables.versions_table(dict(versions)) + "\n"
    return text


def _provenance(ctx: ReportContext) -> str:
    prov = ctx.provenance
    rows = [
        ["Run id", md_code(prov.get("run_id", EMPTY_CELL))],
        ["Configuration sha256", md_code(sha256_json(ctx.config))],
        ["Git revision", md_code(prov.get("git_revision", EMPTY_CELL))],
        ["Started", md(prov.get("started", EMPTY_CELL))],
        ["Finished", md(prov.get("finished", EMPTY_CELL))],
        ["Machine", md(prov.get("machine", EMPTY_CELL))],
        ["Data sha256", md_code(prov.get("data_sha256", EMPTY_CELL))],
        ["Seed", md(prov.get("seed", ctx.config.get("seed", EMPTY_CELL)))],
    ]
    rows += [[f"Checkpoint {md(name)} sha256", md_code(sha)]
             for name, sha in sorted((prov.get("checkpoints") or {}).items())]
    return (
        _heading("sec-provenance")
        + "::: {.provenance}\n"
        + pipe_table(["Field", "Value"], rows, "ll")
        + "\nThe full configuration is `config.yaml` in the run directory; re-render with "
        "`bench report RUN`.\n:::\n\n"
    )


def _level(ctx: ReportContext) -> str:
    level = ctx.config.get("level", 0.95)
    try:
        return f"{float(level) * 100:g} %"
    except (TypeError, ValueError):
        return md(level)


def build_document(run: Run, dataset: Dataset | None, ctx: ReportContext) -> str:
    """The whole ``report.qmd`` text."""
    try:
        classification = run.classification
    except FileNotFoundError:
        classification = None
    return "".join([
        front_matter(ctx),
        _summary(ctx, run, classification),
        _classification(ctx, run, dataset, classification),
        _agreement(ctx, run),
        diagnosis.diagnosis_section(ctx, run),  # "" unless the run has the checks' tables
        _comparisons(ctx, run),
        regression.regression_section(ctx, run),  # "" unless the run has regression.parquet
        _gallery(ctx, run, dataset),
        _methods(ctx, run),
        _provenance(ctx),
        _heading("sec-references"),
        "::: {#refs}\n:::\n",
    ])
