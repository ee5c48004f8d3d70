"""The ``bench`` command line (Typer + Rich).

Exit codes: 0 success; 1 a regression gate failed (``--fail-if-worse``); 2 a user error
(bad configuration, manifest, checkpoint or data), reported as one line on stderr;
3 an internal error (a bug: the traceback is shown so it can be reported); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
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

EXIT_GATE = 1
EXIT_USER = 2
EXIT_BUG = 3
EXIT_INTERRUPT = 130


def main() -> None:
    """The ``bench`` entry point: :data:`app`, with any unexpected exception (a bug, not a
    user mistake) shown with its traceback and exit status 3, distinct from a failed
    regression gate (1)."""
    import traceback

    from benchmark.compile_cache import enable

    enable()  # before any stage imports JAX
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(EXIT_INTERRUPT)
    except Exception:  # noqa: BLE001 - the last line of defence
        traceback.print_exc()
        err.print("[bold red]internal error[/]: this is a bug in saliency-bench; please "
                  "report it with the traceback above")
        sys.exit(EXIT_BUG)


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
    except KeyboardInterrupt as e:
        run_dir = getattr(e, "run_dir", None)
        if run_dir is not None:
            err.print(f"[yellow]interrupted[/]; cached maps are kept in {run_dir}; continue with: "
                      f"bench run --resume {run_dir}", highlight=False, soft_wrap=True)
        else:
            err.print("[yellow]interrupted[/]")
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
    manifest: Annotated[str | None, Opt(help="Data manifest \\[default: ./data_manifest.yaml].")] = None,
    dataset: Annotated[str | None, Opt(help="Dataset name \\[default: the manifest's first].")] = None,
    model: Annotated[list[str] | None, Opt("--model", "-m", help="Model name from the manifest, or a checkpoint path: TorchScript, torch.export .pt2, or a state dict with --factory (repeat) \\[default: all of the manifest's].")] = None,
    method: Annotated[list[str] | None, Opt("--method", help="Saliency method (repeat) \\[default: all]; see `bench methods`.")] = None,
    metric: Annotated[list[str] | None, Opt("--metric", help="Metric, e.g. iou@top15 (repeat); see `bench metrics`.")] = None,
    reference: Annotated[list[str] | None, Opt("--reference", help="consensus, union, intersection, annotator:ID, graded (repeat).")] = None,
    split: Annotated[list[str] | None, Opt("--split", help="Split to evaluate (repeat) \\[default: test, shifted].")] = None,
    out_dir: Annotated[str | None, Opt("--out", "-o", help="Run directory \\[default: runs/<time>-<hash>].")] = None,
    n_boot: Annotated[int | None, Opt(help="Bootstrap replicates B \\[default: 10000].")] = None,
    level: Annotated[float | None, Opt(help="Confidence level \\[default: 0.95].")] = None,
    ci_method: Annotated[str | None, Opt(help="bca or percentile \\[default: bca].")] = None,
    weighting: Annotated[str | None, Opt(help="case (mean of case means) or image (pooled) \\[default: case].")] = None,
    stratify: Annotated[bool, Opt(help="Stratify the case bootstrap by label.")] = False,
    seed: Annotated[int | None, Opt(help="Seed of every random draw \\[default: 0].")] = None,
    sign: Annotated[str | None, Opt(help="positive, abs or signed saliency \\[default: positive].")] = None,
    roi: Annotated[bool, Opt("--roi", help="Restrict every metric to the region of interest (the body mask).")] = False,
    explain: Annotated[str | None, Opt(help="positive (positive-label images) or all \\[default: positive].")] = None,
    batch_size: Annotated[int | None, Opt(help="Images per explainer batch \\[default: 64].")] = None,
    report: Annotated[bool, Opt(help="Render report.html at the end.")] = True,
    engine: Annotated[str | None, Opt(help="Report engine: auto, quarto or pandoc.")] = None,
    factory: Annotated[str | None, Opt(help="package.module:function that builds the module of a state-dict checkpoint.")] = None,
    factory_kwarg: Annotated[list[str] | None, Opt("--factory-kwarg", help="KEY=VALUE keyword argument of the factory (repeat); VALUE is read as YAML (3, 0.5, true, [1, 2], text).")] = None,
    target_layer: Annotated[str | None, Opt(help="Layer of the CAM methods \\[default: the manifest's, else the last convolution].")] = None,
    model_output: Annotated[str | None, Opt(help="What the model returns: logits or probabilities \\[default: logits].")] = None,
    target: Annotated[int | None, Opt(help="Output unit explained and scored \\[default: 0 for one output, else 1].")] = None,
    trust_checkpoint: Annotated[bool, Opt("--trust-checkpoint", help="Allow a pickled full model (runs code from the file; only for files you trust).")] = False,
    sanity: Annotated[bool | None, Opt("--sanity/--no-sanity", help="Cascading model-parameter randomisation check of each method \\[default: on].", show_default=False)] = None,
    faithfulness: Annotated[bool | None, Opt("--faithfulness/--no-faithfulness", help="Deletion/insertion curves of each method and the model's output drop when findings or the outside are deleted \\[default: on].", show_default=False)] = None,
    check_images: Annotated[int | None, Opt(help="Positive images of the first split used by the sanity and faithfulness checks \\[default: 16].")] = None,
    faithfulness_baseline: Annotated[str | None, Opt(help="What deleted pixels become in the deletion/insertion curves: mean or blur \\[default: mean].")] = None,
    faithfulness_output: Annotated[str | None, Opt(help="Model output the curves record: logit or probability \\[default: logit].")] = None,
    deletion_steps: Annotated[int | None, Opt(help="Steps of each deletion/insertion curve \\[default: 16].")] = None,
    resume: Annotated[Path | None, Opt(help="Continue an interrupted run in RUN_DIR with its own settings; cached maps are reused.")] = None,
    baseline: Annotated[Path | None, Opt(help="A run directory to compare this run with (paired on shared cases); adds a report section.")] = None,
    fail_if_worse: Annotated[list[str] | None, Opt("--fail-if-worse", help="METRIC[:MARGIN] (repeat): exit 1 when this run is significantly worse than --baseline by more than MARGIN.")] = None,
    executor: Annotated[str | None, Opt(help="Where the explain stage runs: local (this process) or ray (shards as Ray tasks; needs saliency-bench\\[ray]); never changes the results \\[default: local].")] = None,
    ray_address: Annotated[str | None, Opt(help="Ray cluster to use with --executor ray: auto, HOST:PORT or ray://HOST:10001 \\[default: a new local instance].")] = None,
    workers: Annotated[int | None, Opt(help="Local executor: model x method pairs explained side by side in N threads, each with its own model copy and CPUs/N torch threads; 1 = one after another on all torch threads \\[default: 0 = min(2, CPUs)].")] = None,
) -> None:
    """Run saliency methods on checkpoints, score the maps, bootstrap, and render the report."""
    import benchmark.pipeline as pipeline

    overrides: dict[str, Any] = dict(
        manifest=manifest, dataset=dataset, models=model or None, methods=method or None,
        metrics=metric or None, references=reference or None, splits=split or None,
        out=out_dir, n_boot=n_boot, level=level, ci_method=ci_method, weighting=weighting,
        seed=seed, sign=sign, explain=explain, batch_size=batch_size, engine=engine,
        factory=factory, target_layer=target_layer, model_output=model_output, target=target,
        baseline=str(baseline) if baseline is not None else None,
        fail_if_worse=fail_if_worse or None, sanity=sanity, faithfulness=faithfulness,
        check_images=check_images, faithfulness_baseline=faithfulness_baseline,
        faithfulness_output=faithfulness_output, deletion_steps=deletion_steps,
        executor=executor, ray_address=ray_address, workers=workers,
    )
    for flag, value in (("stratify", stratify), ("roi", roi), ("trust_checkpoint", trust_checkpoint)):
        if value:
            overrides[flag] = True
    if not report:
        overrides["report"] = False
    with user_errors():
        if factory_kwarg:
            overrides["factory_kwargs"] = _parse_kwargs(factory_kwarg)
        if resume is not None:
            config = pipeline.resume_config(resume)  # type: ignore[assignment]
            # Only what cannot change the results may differ from the interrupted run.
            keep = ("report", "engine", "executor", "ray_address", "workers")
            overrides = {k: v for k, v in overrides.items() if k in keep}
        result = pipeline.run(config, **overrides)
    out.print(headline_table(result))
    if result.report_html.exists():
        out.print(f"report: [bold]{result.report_html}[/]")
    out.print(f"run directory: {result.path}")
    if result.config.get("baseline"):
        raise typer.Exit(_gate_verdicts(result.path))


def _gate_verdicts(run_dir: Path) -> int:
    """Print the regression gates' verdicts of ``run_dir``; 1 if any failed, else 0."""
    from benchmark.store import REGRESSION_JSON

    doc = json.loads((run_dir / REGRESSION_JSON).read_text())
    status = 0
    for g in doc.get("gates", []):
        if g["passed"]:
            out.print(f"gate {g['gate']} ({g['reference']}): [green]pass[/] "
                      f"({g['n_cells']} cells)", highlight=False)
            continue
        status = 1
        for c in g["failed_cells"]:
            _print_failure(g["gate"], g["reference"], g["margin"], c)
    return status


def _print_failure(gate: str, reference: str, margin: float, cell: Mapping[Any, Any]) -> None:
    """One stderr line per failing cell of a regression gate."""
    err.print(f"FAIL {gate} ({reference}): {cell['baseline_model']} → "
              f"{cell['candidate_model']} / {cell['method']} on {cell['split']}: worse by "
              f"{cell['worse_by']:.4g} [{cell['worse_ci_low']:.4g}, {cell['worse_ci_high']:.4g}] "
              f"> margin {margin:g}, p_adj {cell['p_adj']:.3g}",
              markup=False, highlight=False, soft_wrap=True)


def _parse_kwargs(items: list[str]) -> dict[str, Any]:
    """``["width=8", "name=x"]`` -> ``{"width": 8, "name": "x"}`` (values read as YAML)."""
    import yaml

    from benchmark.config import ConfigError

    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--factory-kwarg {item!r} must look like KEY=VALUE")
        try:
            kwargs[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            kwargs[key] = value
    return kwargs


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


@app.command("compare")
def compare(
    baseline: Annotated[Path, typer.Argument(help="The baseline run directory (RUN_A).")],
    candidate: Annotated[Path, typer.Argument(help="The candidate run directory (RUN_B), e.g. a new checkpoint's run.")],
    fail_if_worse: Annotated[list[str] | None, Opt("--fail-if-worse", help="METRIC[:MARGIN] (repeat): exit 1 when the candidate is significantly worse than the baseline by more than MARGIN (metric units, default 0) in any model pair, method and split.")] = None,
    reference: Annotated[str | None, Opt(help="Reference the gates and the table use \\[default: the candidate's headline reference].")] = None,
    out_dir: Annotated[Path | None, Opt("--out", "-o", help="Where to write regression.parquet and regression.json \\[default: RUN_B].")] = None,
    n_boot: Annotated[int | None, Opt(help="Bootstrap replicates B \\[default: the candidate's config].")] = None,
    seed: Annotated[int | None, Opt(help="Seed \\[default: the candidate's config].")] = None,
    adjust: Annotated[str, Opt(help="Multiplicity adjustment over each split's cells: holm or bh.")] = "holm",
    pair: Annotated[list[str] | None, Opt("--pair", help="BASELINE_MODEL=CANDIDATE_MODEL (repeat) \\[default: same names; or the two runs' only models].")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print settings, gate verdicts and every cell as JSON.")] = False,
) -> None:
    """Compare two runs paired on their shared cases; gate CI on a worse candidate."""
    from rich.markup import escape

    from benchmark.regression import (
        RegressionError,
        compare_runs,
        gate_exit,
        parse_gate,
        write_regression,
    )

    with user_errors():
        gates = [parse_gate(g, reference=reference) for g in fail_if_worse or []]
        pairs = {}
        for item in pair or []:
            b_model, sep, c_model = item.partition("=")
            if not sep or not b_model or not c_model:
                raise RegressionError(f"--pair {item!r} must look like BASELINE=CANDIDATE")
            pairs[b_model] = c_model
        result = compare_runs(baseline, candidate, n_boot=n_boot, seed=seed,
                              adjust=adjust, pairs=pairs or None)
        verdicts = result.verdicts(gates)  # a gate matching no cell fails here, before writing
        path = write_regression(result, out_dir or candidate, gates)
        status = gate_exit(result, gates)
    table = result.table
    if as_json:
        doc = result.to_dict(gates, cells=True)
        sys.stdout.write(json.dumps(doc, default=str, indent=2, allow_nan=False) + "\n")
    else:
        metrics = list(dict.fromkeys(g.metric for g in gates))
        metrics = metrics or [str(result.settings.get("headline_metric"))]
        ref = reference or result.settings.get("headline_reference")
        shown = table[table["metric"].isin(metrics) & (table["reference"] == ref)]
        if shown.empty:  # the headline cell was not compared: show the first metric's
            first = table.iloc[0]
            ref = first["reference"]
            shown = table[(table["metric"] == first["metric"]) & (table["reference"] == ref)]
        def cell(r: Any) -> tuple[Any, ...]:
            return (r["baseline_model"], r["method"], r["split"], r["metric"])

        failed = {cell(r) for r in verdicts[verdicts["failed"]].to_dict("records")}
        checked = {cell(r) for r in verdicts.to_dict("records")}
        rt = Table(title=f"candidate − baseline vs {escape(str(ref))}, paired on shared cases "
                         f"({result.settings['level'] * 100:g}% CI, p adjusted: {adjust})")
        for col in ("model pair", "method", "split", "metric", "baseline", "candidate",
                    "diff [CI]", "p_adj", "verdict"):
            rt.add_column(col, justify="right" if col in ("baseline", "candidate", "p_adj") else "left")
        for r in shown.to_dict("records"):
            if cell(r) in failed:
                verdict = "[bold red]FAIL[/]"
            elif cell(r) in checked:
                verdict = "[green]pass[/]"
            elif r["worse_ci_low"] > 0:
                verdict = "worse"
            elif r["worse_ci_high"] < 0:
                verdict = "better"
            else:
                verdict = "no clear change"
            models = (str(r["baseline_model"]) if r["baseline_model"] == r["candidate_model"]
                      else f"{r['baseline_model']} → {r['candidate_model']}")
            rt.add_row(escape(models), escape(str(r["method"])), escape(str(r["split"])),
                       escape(str(r["metric"])), f"{r['baseline_estimate']:.3f}",
                       f"{r['candidate_estimate']:.3f}",
                       _fmt_ci(r["diff"], r["ci_low"], r["ci_high"]), f"{r['p_adj']:.3g}",
                       verdict)
        out.print(rt)
        for key, diff in result.settings["config_differences"].items():
            out.print(f"[yellow]note:[/] the runs differ in {escape(key)} (baseline "
                      f"{escape(str(diff['baseline']))}, candidate {escape(str(diff['candidate']))})",
                      highlight=False, soft_wrap=True)
        out.print(f"regression table: {path}", markup=False, highlight=False, soft_wrap=True)
    for r in verdicts[verdicts["failed"]].to_dict("records"):
        _print_failure(r["gate"], r["reference"], r["margin"], r)
    if status:
        raise typer.Exit(status)

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
    manifest: Annotated[str | None, typer.Argument(help="Manifest \\[default: ./data_manifest.yaml].")] = None,
    dataset: Annotated[str | None, Opt(help="Only this dataset.")] = None,
) -> None:
    """Check every file and checkpoint of a manifest without a model; list every problem.

    Prints cases, images and label balance per split, annotators, grid and spacing.
    """
    from rich.markup import escape

    from benchmark.manifest import load_manifest
    from benchmark.validate import check_dataset, summary_rows

    failed = False
    with user_errors():
        m = load_manifest(manifest)
        entries = [m.dataset(dataset)] if dataset else list(m.datasets)
        for d in entries:
            with _progress_bar(f"reading {d.name}") as tick:
                check = check_dataset(m, d, progress=tick)
            table = Table(title=f"{d.name} ({d.kind}) in {m.path or '(built-in manifest)'}")
            for col in ("split", "cases", "images", "positive", "negative"):
                table.add_column(col, justify="left" if col == "split" else "right")
            for row in summary_rows(check):
                table.add_row(*[escape(str(v)) for v in row.values()])
            out.print(table)
            out.print(f"annotators: {escape(', '.join(check.annotators) or '-')}; "
                      f"grid {check.shape}; spacing {check.spacing} mm", highlight=False)
            out.print(f"models: {escape(', '.join(check.models) or '-')}", highlight=False)
            for w in check.warnings:
                out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
            for prob in check.problems:
                err.print(f"[bold red]problem:[/] {escape(prob)}", highlight=False, soft_wrap=True)
            verdict = ("[green]ok[/]" if check.ok
                       else f"[bold red]{len(check.problems)} problem(s)[/]")
            out.print(f"{escape(d.name)}: {verdict}")
            failed |= not check.ok
    if failed:
        raise typer.Exit(EXIT_USER)


@contextmanager
def _progress_bar(label: str) -> Iterator[Any]:
    """A Rich progress bar on stderr; yields ``tick(done, total)``."""
    from rich.progress import Progress

    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(label, total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield tick


@demo_app.command("train")
def demo_train(
    out_dir: Annotated[Path | None, Opt("--out", help="Where to write the checkpoints \\[default: the package's demo/checkpoints].")] = None,
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
