"""The report: one self-contained HTML file for a paper's supplement (DESIGN.md, "Report").

:func:`build_report` writes ``RUN/report.qmd`` (Quarto markdown with every figure
already computed) and renders it to ``RUN/report.html`` with Quarto or pandoc.

Modules: :mod:`~benchmark.report.context` (settings resolved from the run),
:mod:`~benchmark.report.tables`, :mod:`~benchmark.report.figures` (plotly),
:mod:`~benchmark.report.gallery` (matplotlib PNGs), :mod:`~benchmark.report.narrative`
(generated sentences), :mod:`~benchmark.report.data_section` ("Data and models"),
:mod:`~benchmark.report.document` (the qmd), :mod:`~benchmark.report.render` (the
engines) and :mod:`~benchmark.report.export` (the tables as CSV and LaTeX).
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.dataset import Dataset
from benchmark.report.context import ReportContext, resolve_context
from benchmark.report.document import build_document, copy_assets
from benchmark.report.export import TABLES_DIR, export_tables
from benchmark.report.render import ENGINES, render, resolve_engine
from benchmark.store import REPORT_QMD, Run, atomic_open


def build_report(
    run: Run | str | Path,
    dataset: Dataset | None = None,
    *,
    engine: str = "auto",
    gallery_method: str | None = None,
    assets: str | Path | None = None,
) -> Path:
    """Write ``RUN/report.qmd``, render it to ``RUN/report.html`` and export the tables.

    Parameters
    ----------
    run : Run or path
        The run directory (its tables, configuration, provenance and cached maps).
    dataset : Dataset, optional
        The run's dataset, for the gallery (CT images and annotations). Without it the
        gallery section says so and everything else is drawn.
    engine : {"auto", "quarto", "pandoc"}, default "auto"
        ``auto`` uses Quarto when a ``quarto`` executable is on PATH, else pandoc.
    gallery_method : str, optional
        Method whose maps the gallery shows; default ``gradcam`` when the run has it,
        else its first explainer.
    assets : path, optional
        Folder with your own ``styles.css`` and ``references.bib`` (e.g. an edited copy of
        the project's ``reports/``); default: the packaged files.

    Returns
    -------
    Path
        ``RUN/report.html``, one file that works offline (plotly.js, CSS and images
        inlined; no network request).

    Notes
    -----
    Every table of the report is also written to ``RUN/tables/`` as CSV (tidy,
    unrounded) and LaTeX (booktabs), see :func:`~benchmark.report.export.export_tables`;
    they are written before rendering, so a failed render still leaves them.

    Examples
    --------
    >>> import benchmark
    >>> run = benchmark.load_run("runs/demo")  # doctest: +SKIP
    >>> build_report(run, engine="pandoc")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    resolve_engine(engine)  # fail on a bad or missing engine before any work
    if not isinstance(run, Run):
        run = Run.open(run)
    ctx = resolve_context(run, gallery_method)
    assets_dir = copy_assets(run.path, None if assets is None else Path(assets))
    qmd = run.path / REPORT_QMD
    text = build_document(run, dataset, ctx)
    with atomic_open(qmd, "w") as fh:
        fh.write(text)
    export_tables(run, ctx, run.path / TABLES_DIR)
    return render(
        qmd,
        engine=engine,
        title=ctx.title,
        css=assets_dir / "styles.css",
        bibliography=assets_dir / "references.bib",
    )


__all__ = ["ENGINES", "ReportContext", "build_report", "export_tables", "resolve_context"]
