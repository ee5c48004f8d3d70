"""The ``bench`` command line (Typer + Rich).

Exit codes: 0 success; 2 a user error (bad configuration, manifest, checkpoint or data),
reported as one line on stderr; 130 interrupted (Ctrl-C); 1 an internal error (a bug: the
traceback is shown so it can be reported).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="bench",
    help="saliency-bench: score saliency maps of a classifier against expert annotations.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
demo_app = typer.Typer(help="The embedded demo (pmct-phantom): train its checkpoints.")
app.add_typer(demo_app, name="demo")

# Piped output (CI logs) is not cut at 80 columns: the headline table is wide.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

EXIT_USER = 2
EXIT_INTERRUPT = 130


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn user mistakes into one line on stderr and exit status 2."""
    from benchmark.errors import BenchError

    try:
        yield
    except (BenchError, FileNotFoundError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USER) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]; finished stages are kept in the run directory")
        raise typer.Exit(EXIT_INTERRUPT) from None


def _fmt_ci(est: float, lo: float, hi: float) -> str:
    if est != est:  # NaN
        return "n/a"
    return f"{est:.3f} [{lo:.3f}, {hi:.3f}]"


def headline_table(run: Any) -> Table:
    """One row per model x method: image-level AUROC and the headline metric per split."""
    cfg = run.config
    metric, ref = cfg.get("headline_metric"), cfg.get("headline_reference")
    summary, cls = run.summary, run.classification
    present = set(summary["split"])
    splits = [sp for sp in cfg.get("splits") or sorted(present) if sp in present]
    table = Table(title=f"AUROC (image level) and {metric} vs {ref}, 95% case-bootstrap CI")
    table.add_column("model")
    for sp in splits:
        table.add_column(f"AUROC {sp}")
    table.add_column("method")
    for sp in splits:
        table.add_column(f"{metric.split('@')[0]} {sp}")
    for model in dict.fromkeys(summary["model"]):
        aucs = []
        for sp in splits:
            auc = cls[(cls.model == model) & (cls.split == sp) & (cls.level == "image")
                      & (cls.metric == "auroc")]
            aucs.append(_fmt_ci(*auc[["estimate", "ci_low", "ci_high"]].iloc[0])
                        if len(auc) else "n/a")
        have = set(summary.loc[summary.model == model, "method"])
        methods = [m for m in cfg.get("methods") or sorted(have) if m in have]
        for i, m in enumerate(methods):
            cells = []
            for sp in splits:
                cell = summary[(summary.model == model) & (summary.split == sp)
                               & (summary.method == m) & (summary.metric == metric)
                               & (summary.reference == ref)]
                cells.append(_fmt_ci(*cell[["estimate", "ci_low", "ci_high"]].iloc[0])
                             if len(cell) else "n/a")
            first = i == 0
            table.add_row(str(model) if first else "", *(aucs if first else [""] * len(aucs)),
                          m, *cells, end_section=i == len(methods) - 1)
    return table


Opt = typer.Option


@app.command()
def run(
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML file of run settings.")] = None,
    manifest: Annotated[str | None, Opt(help="Data manifest [default: ./data_manifest.yaml].")] = None,
    dataset: Annotated[str | None, Opt(help="Dataset name [default: the manifest's first].")] = None,
    model: Annotated[list[str] | None, Opt("--model", "-m", help="Model name (repeat) [default: all].")] = None,
    method: Annotated[list[str] | None, Opt("--method", help="Saliency method (repeat) [default: all]; see `bench methods`.")] = None,
    metric: Annotated[list[str] | None, Opt("--metric", help="Metric, e.g. iou@top15 (repeat); see `bench metrics`.")] = None,
    reference: Annotated[list[str] | None, Opt("--reference", help="consensus, union, intersection, annotator:ID, graded (repeat).")] = None,
    split: Annotated[list[str] | None, Opt("--split", help="Split to evaluate (repeat) [default: test, shifted].")] = None,
    out_dir: Annotated[str | None, Opt("--out", "-o", help="Run directory [default: runs/<time>-<hash>].")] = None,
    n_boot: Annotated[int | None, Opt(help="Bootstrap replicates B [default: 10000].")] = None,
    level: Annotated[float | None, Opt(help="Confidence level [default: 0.95].")] = None,
    ci_method: Annotated[str | None, Opt(help="bca or percentile [default: bca].")] = None,
    weighting: Annotated[str | None, Opt(help="case (mean of case means) or image (pooled) [default: case].")] = None,
    stratify: Annotated[bool, Opt(help="Stratify the case bootstrap by label.")] = False,
    seed: Annotated[int | None, Opt(help="Seed of every random draw [default: 0].")] = None,
    sign: Annotated[str | None, Opt(help="positive, abs or signed saliency [default: positive].")] = None,
    roi: Annotated[bool, Opt("--roi", help="Restrict every metric to the region of interest (the body mask).")] = False,
    explain: Annotated[str | None, Opt(help="positive (positive-label images) or all [default: positive].")] = None,
    batch_size: Annotated[int | None, Opt(help="Images per explainer batch [default: 64].")] = None,
    report: Annotated[bool, Opt(help="Render report.html at the end.")] = True,
    engine: Annotated[str | None, Opt(help="Report engine: auto, quarto or pandoc.")] = None,
) -> None:
    """Run saliency methods on checkpoints, score the maps, bootstrap, and render the report."""
    import benchmark.pipeline as pipeline

    overrides: dict[str, Any] = dict(
        manifest=manifest, dataset=dataset, models=model or None, methods=method or None,
        metrics=metric or None, references=reference or None, splits=split or None,
        out=out_dir, n_boot=n_boot, level=level, ci_method=ci_method, weighting=weighting,
        seed=seed, sign=sign, explain=explain, batch_size=batch_size, engine=engine,
    )
    if stratify:
        overrides["stratify"] = True
    if roi:
        overrides["roi"] = True
    if not report:
        overrides["report"] = False
    with user_errors():
        result = pipeline.run(config, **overrides)
    out.print(headline_table(result))
    if result.report_html.exists():
        out.print(f"report: [bold]{result.report_html}[/]")
    out.print(f"run directory: {result.path}")


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `bench run`.")],
    engine: Annotated[str, Opt(help="auto, quarto or pandoc.")] = "auto",
    fmt: Annotated[str, Opt("--format", help="html: render report.html and export the tables to RUN/tables/; latex-tables: only export the tables (CSV + LaTeX), no renderer needed.")] = "html",
    assets: Annotated[Path | None, Opt("--assets", help="Folder with your own styles.css and references.bib (e.g. an edited copy of reports/); default: the packaged ones.")] = None,
) -> None:
    """Re-render report.qmd and report.html of a run, without touching any model."""
    from benchmark.store import Run

    if engine not in ("auto", "quarto", "pandoc"):
        err.print(f"[bold red]error:[/] --engine must be auto, quarto or pandoc, not {engine!r}")
        raise typer.Exit(EXIT_USER)
    if fmt not in ("html", "latex-tables"):
        err.print(f"[bold red]error:[/] --format must be html or latex-tables, not {fmt!r}",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USER)
    if fmt == "latex-tables":
        from benchmark.report.export import export_tables

        with user_errors():
            paths = export_tables(Run.open(run_dir))
        for p in paths:
            out.print(str(p), markup=False, highlight=False, soft_wrap=True)
        return

    from rich.markup import escape

    from benchmark.report import build_report
    from benchmark.report.export import TABLES_DIR
    from benchmark.report.render import resolve_engine
    from benchmark.resolve import resolve_dataset

    try:
        resolve_engine(engine)  # --engine quarto without Quarto: say so before any work
    except RuntimeError as e:
        err.print(f"[bold red]error:[/] {str(e).splitlines()[0]}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(EXIT_USER) from None
    with user_errors():
        r = Run.open(run_dir)
        cfg = r.config
        data = resolve_dataset(cfg.get("manifest"), cfg.get("dataset"), cfg.get("splits", []))
        path = build_report(r, data.dataset, engine=engine, assets=assets)
    out.print(f"report: [bold]{escape(str(path))}[/]", soft_wrap=True)
    out.print(f"tables: {r.path / TABLES_DIR}", markup=False, highlight=False, soft_wrap=True)


def _print_frame(frame: Any, title: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(frame.to_dict(orient="records"), default=str, indent=2) + "\n")
        return
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col))
    for rec in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in rec])
    out.print(table)


@app.command()
def methods(
    as_json: Annotated[bool, Opt("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the saliency methods (explainers) and null baselines."""
    from benchmark.explainers import list_methods

    _print_frame(list_methods(), "saliency methods", as_json)


@app.command()
def metrics(
    as_json: Annotated[bool, Opt("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the metrics: direction, range, threshold, reference kind, definition."""
    from benchmark.metrics import list_metrics

    _print_frame(list_metrics(), "metrics (region metrics take @threshold: 0.5, top15, otsu or tuned)", as_json)


@app.command()
def validate(
    manifest: Annotated[str | None, typer.Argument(help="Manifest [default: ./data_manifest.yaml].")] = None,
    dataset: Annotated[str | None, Opt(help="Only this dataset.")] = None,
) -> None:
    """Check a manifest and its checkpoints without running a model; print a summary."""
    from benchmark.manifest import load_manifest, verify_checkpoint

    with user_errors():
        m = load_manifest(manifest)
        entries = [m.dataset(dataset)] if dataset else list(m.datasets)
        table = Table(title=f"manifest {m.path or '(built-in)'}")
        for col in ("dataset", "kind", "splits (cases)", "models (checksum)"):
            table.add_column(col)
        for d in entries:
            splits = ", ".join(f"{k} ({s.n_cases})" for k, s in d.generator.splits.items())
            models = []
            for me in d.models:
                verify_checkpoint(me, m.base)
                models.append(f"{me.name} ({'ok' if me.sha256 else 'no sha256'})")
            table.add_row(d.name, d.kind, splits, ", ".join(models))
    out.print(table)


@demo_app.command("train")
def demo_train(
    out_dir: Annotated[Path | None, Opt("--out", help="Where to write the checkpoints [default: the package's demo/checkpoints].")] = None,
    epochs: Annotated[int, Opt(help="Training epochs per model.")] = 10,
    seed: Annotated[int, Opt(help="Training seed.")] = 0,
    manifest: Annotated[str | None, Opt(help="Manifest with the phantom entry.")] = None,
) -> None:
    """Train the three demo checkpoints (clean, partial, shortcut) deterministically."""
    from benchmark.demo.train import train_all

    with user_errors():
        rows = train_all(out_dir=out_dir, epochs=epochs, seed=seed, manifest=manifest,
                         log=lambda s: err.print(s))
    table = Table(title="demo checkpoints")
    for col in ("model", "train confounder", "sha256", "seconds"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], f"{r['confounder']:.2f}", r["sha256"], f"{r['seconds']:.1f}")
    out.print(table)
