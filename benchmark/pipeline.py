"""load -> explain -> score -> analyse -> report, with progress and a map cache.

Each stage writes its output to the run directory before the next starts, so any later
stage can be re-run alone from the files (``bench report RUN`` re-renders without a model).
"""

from __future__ import annotations

import datetime as dt
import getpass
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmark import store
from benchmark.checks import run_checks
from benchmark.config import ConfigError, RunConfig, make_config
from benchmark.data.dataset import Dataset
from benchmark.errors import BenchError
from benchmark.executor import ShardFailed, ShardJob, run_local, run_ray
from benchmark.explainers import (
    EXPLAINERS,
    check_methods,
    default_methods,
    get_explainer,
    needs_hooks,
)
from benchmark.human import human_scores
from benchmark.metrics import compute_curve, parse_metric, tune_threshold
from benchmark.metrics.compute import compute_by_spacing
from benchmark.metrics.curve import DEFAULT_GRID, REGION_METRICS
from benchmark.models import LoadedModel, check_output, predict
from benchmark.resolve import ModelOptions, ResolvedDataset, resolve_dataset
from benchmark.stats import (
    classification_table,
    compare,
    friedman,
    mixed_model_table,
    spearman_table,
    summarize,
)
from benchmark.stats.baselines import flag_baselines
from benchmark.stats.comparisons import CONTRACT_COLUMNS, EXTRA_COLUMNS
from benchmark.stats.curves import curve_table
from benchmark.threads import available_cpus

console = Console(stderr=True)

#: Split on which ``@tuned`` thresholds are chosen (METRICS.md), then frozen.
TUNE_SPLIT = "val"
TUNED_METRIC = "iou"

#: Contrasts of the mixed model are against this method when the run has it: the floor
#: of a map that knows nothing.
MIXED_REFERENCE = "random"

#: config.yaml key mapping each model given by path to its checkpoint (for ``--resume``).
CHECKPOINTS_KEY = "checkpoints"

#: Packages whose versions go into provenance.json and the report.
PROVENANCE_PACKAGES = [
    "saliency-bench", "torch", "captum", "jax", "jaxlib", "numpy", "scipy", "statsmodels",
    "pandas", "pyarrow", "pydantic", "plotly", "pypandoc-binary",
]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``run_dir`` can be continued with ``bench run --resume``."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@dataclass
class Plan:
    """The validated, fully resolved work of one run."""

    config: RunConfig
    data: ResolvedDataset
    models: list[str]
    methods: list[str]
    binary_metrics: list[str]
    graded_metrics: list[str]
    out: Path
    tune_split: str | None = None

    @property
    def splits(self) -> list[str]:
        """Evaluated splits (resolved by :func:`plan`)."""
        return list(self.config.splits or [])

    @property
    def explain_splits(self) -> list[str]:
        """Evaluated splits, plus the split that tuned thresholds are chosen on."""
        splits = list(self.config.splits or [])
        if self.tune_split is not None and self.tune_split not in splits:
            splits.append(self.tune_split)
        return splits

    @property
    def tune_reference(self) -> str:
        """Binary reference that ``@tuned`` thresholds maximise mean IoU against."""
        ref = self.config.headline_reference
        return ref if ref != "graded" else "consensus"


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=False,
        disable=not console.is_terminal and not console.is_jupyter,
    )


@contextmanager
def _stage(name: str, timings: dict[str, float] | None = None, quiet: bool = False
           ) -> Iterator[None]:
    """Time a stage (into ``timings``, which goes to provenance.json) and log it."""
    t0 = time.perf_counter()
    if not quiet:
        console.log(f"[cyan]{name}[/] ...")
    yield
    seconds = time.perf_counter() - t0
    if timings is not None:
        timings[name] = round(timings.get(name, 0.0) + seconds, 3)
    if not quiet:
        console.log(f"[cyan]{name}[/] done in {seconds:.1f} s")


def plan(config: Any = None, **overrides: Any) -> Plan:
    """Validate a configuration against the manifest and registries (no heavy work)."""
    cfg = make_config(config, **overrides)
    tuned = [m for m in cfg.metrics if m.endswith("@tuned")]
    tune_split = TUNE_SPLIT if tuned else None
    options = ModelOptions(
        factory=cfg.factory, factory_kwargs=dict(cfg.factory_kwargs),
        target_layer=cfg.target_layer, output=cfg.model_output, target=cfg.target,
        trust_checkpoint=cfg.trust_checkpoint,
    )
    data = resolve_dataset(cfg.manifest, cfg.dataset, cfg.splits, options)
    cfg.splits = list(data.splits)
    if tuned and TUNE_SPLIT not in data.splits:
        data = resolve_dataset(cfg.manifest, cfg.dataset, [*data.splits, TUNE_SPLIT], options)
    known_models = data.model_names
    models = []
    for m in cfg.models or known_models:
        if m in known_models:
            models.append(m)
        elif Path(m).expanduser().is_file():
            models.append(data.add_checkpoint(m))
        else:
            raise ConfigError(
                f"unknown model {m!r} for dataset {data.entry.name!r}; "
                f"known: {', '.join(known_models) or 'none'}; or give a checkpoint file path"
            )
    if not models:
        raise ConfigError(
            f"dataset {data.entry.name!r} lists no models; give checkpoints with --model PATH"
        )
    try:
        methods = check_methods(cfg.methods or default_methods())
    except ValueError as err:
        raise ConfigError(str(err)) from None
    specs = []
    for name in cfg.metrics:
        try:
            specs.append(parse_metric(name))
        except ValueError as err:
            raise ConfigError(f"metric {name!r}: {err}") from None
    valid_refs = data.references
    for r in cfg.references:
        if r not in valid_refs:
            raise ConfigError(
                f"unknown reference {r!r}; valid references: {', '.join(valid_refs)}"
            )
    kinds = [s.reference_kind for s, _ in specs]
    binary = [m for m, k in zip(cfg.metrics, kinds, strict=True) if k == "binary"]
    graded = [m for m, k in zip(cfg.metrics, kinds, strict=True) if k == "graded"]
    try:
        parse_metric(cfg.headline_metric)
    except ValueError as err:
        raise ConfigError(f"headline_metric: {err}") from None
    if cfg.out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{stamp}-{store.sha256_json(cfg.model_dump())[:6]}"
    else:
        out = Path(cfg.out)
    for name, (spec, thr) in zip(cfg.metrics, specs, strict=True):
        if thr is not None and thr.kind == "tuned" and spec.reference_kind != "binary":
            raise ConfigError(f"metric {name!r}: only binary-reference metrics take @tuned")
    if cfg.fail_if_worse and cfg.baseline is None:
        raise ConfigError("fail_if_worse needs a baseline run directory (--baseline RUN_DIR)")
    if cfg.baseline is not None:
        from benchmark.regression import parse_gate

        if not (Path(cfg.baseline) / store.SCORES).is_file():
            raise ConfigError(f"--baseline {cfg.baseline}: no {store.SCORES} there; "
                              "not a finished run directory")
        for gate in cfg.fail_if_worse:
            parse_gate(gate)  # a typo fails now, not after the whole run
    return Plan(cfg, data, models, methods, binary, graded, out, tune_split)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    out = {}
    for pkg in PROVENANCE_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    out["python"] = platform.python_version()
    return out


def _explain_rows(ds: Dataset, cfg: RunConfig, splits: list[str]) -> np.ndarray:
    """Row positions of the images to explain: ``splits``, positives only unless
    ``explain: all``."""
    mask = ds.index["split"].isin(splits).to_numpy()
    if cfg.explain == "positive":
        mask = mask & (ds.index["label"].to_numpy() == 1)
    return np.flatnonzero(mask)


def _batches(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _check_hooks(lm: LoadedModel, methods: list[str]) -> None:
    """Layer methods hook a module's forward pass, which TorchScript does not allow."""
    hooked = [m for m in methods if needs_hooks(m)]
    if hooked and isinstance(lm.module, torch.jit.ScriptModule):
        raise ConfigError(
            f"model {lm.name!r} is TorchScript, which has no module hooks for "
            f"{', '.join(hooked)}; "
            "give a state dict with --factory or a torch.export .pt2, or leave these methods out"
        )
    if any(EXPLAINERS[m].info.needs_layer for m in methods):
        layer = lm.layer()
        console.log(f"model {lm.name}: target layer [bold]{lm.target_layer}[/] "
                    f"({type(layer).__name__})")


def predict_stage(p: Plan, loaded: dict[str, LoadedModel]) -> pd.DataFrame:
    ds = p.data.dataset
    rows = np.flatnonzero(ds.index["split"].isin(p.splits).to_numpy())
    frames = []
    for name in p.models:
        scores = [
            predict(loaded[name], p.data.to_input(ds.images(b))).numpy()
            for b in _batches(rows, 256)
        ]
        sub = ds.index.iloc[rows][["split", "case_id", "image_id", "label"]].copy()
        sub.insert(0, "model", name)
        sub["score"] = np.concatenate(scores).astype(np.float64)
        frames.append(sub)
    return pd.concat(frames, ignore_index=True)[store.PREDICTIONS_COLUMNS]


def explain_stage(
    p: Plan, loaded: dict[str, LoadedModel], progress: Progress
) -> dict[str, str]:
    """Compute (or reuse) the maps of every model x method; returns ``model/method -> key``."""
    ds = p.data.dataset
    rows = _explain_rows(ds, p.config, p.explain_splits)
    image_ids_all = ds.index["image_id"].to_numpy()
    image_ids = image_ids_all[rows]
    data_sha = store.sha256_json({"data": ds.sha256, "images": image_ids.tolist(),
                                  "input": p.data.input_config})
    index: dict[str, str] = {}
    priors = {}
    for method in p.methods:
        if EXPLAINERS[method].info.needs_prior:
            priors[method] = {"prior": p.data.mean_mask(p.tune_reference)}
    total = len(p.models) * len(p.methods)
    task = progress.add_task("explain", total=total * len(rows))
    shards = [rows[i:i + store.SHARD_SIZE] for i in range(0, len(rows), store.SHARD_SIZE)]
    jobs: list[ShardJob] = []
    remaining: dict[str, int] = {}
    for name in p.models:
        lm = loaded[name]
        for method in p.methods:
            layer = lm.layer() if EXPLAINERS[method].info.needs_layer else None
            explainer = get_explainer(method, lm.module, layer=layer,
                                      **priors.get(method, {}))
            key = store.map_key(lm.sha256, explainer.config(), data_sha)
            index[f"{name}/{method}"] = key
            if store.maps_complete(p.out, key):
                progress.advance(task, len(rows))
                continue
            todo = []
            for i, shard in enumerate(shards):
                cached = store.load_map_shard(p.out, key, i)
                if cached is not None and np.array_equal(cached[0], image_ids_all[shard]):
                    progress.advance(task, len(shard))  # finished before an interruption
                    continue
                todo.append(ShardJob(key, i, shard, explainer, lm.target or 0,
                                     f"{name}/{method}"))
            if todo:
                jobs.extend(todo)
                remaining[key] = len(todo)
            else:
                store.finish_maps(p.out, key, len(shards), len(rows))

    def done(job: ShardJob, maps: np.ndarray) -> None:
        _check_finite(ds, job, maps)
        store.save_map_shard(p.out, job.key, job.index, image_ids_all[job.rows], maps)
        remaining[job.key] -= 1
        if remaining[job.key] == 0:
            store.finish_maps(p.out, job.key, len(shards), len(rows))

    def inputs(at: np.ndarray) -> torch.Tensor:
        return p.data.to_input(ds.images(at))

    def describe(label: str) -> None:
        progress.update(task, description=f"explain {label}")

    try:
        if p.config.executor == "ray":
            run_ray(jobs, inputs, p.config.batch_size, done, lambda k: progress.advance(task, k),
                    describe, address=p.config.ray_address)
        else:
            run_local(jobs, inputs, p.config.batch_size, done,
                      lambda k: progress.advance(task, k), describe,
                      workers=model_workers(p.config))
    except ShardFailed as e:
        job = e.job or jobs[0]
        raise BenchError(
            f"model {job.label.split('/')[0]!r}, method {job.label.split('/')[1]!r} failed on "
            f"image {ds.index['image_id'].iloc[job.rows[e.offset]]!r} and its batch "
            f"({e.message})"
        ) from None
    store.write_json(index, p.out / store.MAPS / "index.json")
    return index


def model_workers(cfg: RunConfig) -> int:
    """Threads of model passes (the local executor, the checks): ``cfg.workers``, or for
    0 two where there are two CPUs (more copies of a model would multiply the memory of
    its passes)."""
    return cfg.workers or min(2, available_cpus())


def _check_finite(ds: Any, job: ShardJob, maps: np.ndarray) -> None:
    bad = ~np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    if bad.any():
        model, method = job.label.split("/")
        raise BenchError(
            f"model {model!r}, method {method!r}: saliency of image "
            f"{ds.index['image_id'].iloc[job.rows[np.argmax(bad)]]!r} contains NaN or inf"
        )


def _tune(p: Plan, maps: np.ndarray, meta: pd.DataFrame, pos: np.ndarray) -> dict[str, Any]:
    """Choose the ``@tuned`` threshold of one model x method on the tuning split."""
    ds = p.data.dataset
    sel = (meta["split"] == p.tune_split).to_numpy()
    if not sel.any():
        raise ConfigError(f"@tuned metrics need positive images in split {p.tune_split!r}")
    try:
        res = tune_threshold(
            maps[sel], ds.reference(pos[sel], p.tune_reference), metric=TUNED_METRIC,
            sign=p.config.sign, seed=p.config.seed,
            roi=ds.roi(pos[sel]) if p.config.roi else None,
        )
    except ValueError as err:
        raise BenchError(f"cannot tune a threshold: {err}") from None
    return {"threshold": float(res.threshold), "mean_score": float(np.max(res.mean_scores)),
            "n_images": int(res.n_images)}


def _lower_is_better(metric: str) -> bool:
    return parse_metric(metric)[0].direction == "lower"


def _resolve_metrics(metrics: list[str], threshold: float | None) -> dict[str, str]:
    """``name@tuned`` -> ``name@<tau>`` for compute(); other names map to themselves."""
    out = {}
    for m in metrics:
        if m.endswith("@tuned"):
            assert threshold is not None
            out[m] = f"{m.split('@', 1)[0]}@{threshold!r}"
        else:
            out[m] = m
    return out


def _score_plan(p: Plan) -> list[tuple[str, list[str]]]:
    """(reference, metrics) pairs to score: the run's references with their metrics, plus
    each single annotator not already a reference, with the headline metric only (the
    report's agreement per annotator)."""
    out = [(ref, p.graded_metrics if ref == "graded" else p.binary_metrics)
           for ref in p.config.references]
    headline = p.config.headline_metric
    if headline in p.binary_metrics:
        out += [(ref, [headline]) for ref in p.data.references
                if ref.startswith("annotator:") and ref not in p.config.references]
    return [(ref, metrics) for ref, metrics in out if metrics]


def _curve_metric(p: Plan) -> str:
    """Region metric of the threshold curves: the headline's, else IoU."""
    base = p.config.headline_metric.split("@", 1)[0]
    return base if base in REGION_METRICS else "iou"


def score_stage(
    p: Plan, index: dict[str, str], progress: Progress
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Score every model x method x reference, streaming the cached maps shard by shard
    (memory grows with the shard size, not the dataset).

    Returns (scores, tuned thresholds, curves): ``curves`` holds the per-image values of
    the curve metric against the tuning reference at every threshold of
    :data:`~benchmark.metrics.curve.DEFAULT_GRID`.
    """
    ds = p.data.dataset
    frames: list[pd.DataFrame] = []
    curve_frames: list[pd.DataFrame] = []
    tuned_rows: list[dict[str, Any]] = []
    plan_refs = _score_plan(p)
    task = progress.add_task("score", total=len(index))
    for key_name, key in index.items():
        model, method = key_name.split("/")
        tau = None
        if p.tune_split is not None:
            tuned = _tune(p, *_tuning_maps(p, key))
            tau = tuned["threshold"]
            tuned_rows.append({"model": model, "method": method, "split": p.tune_split,
                               "reference": p.tune_reference, "metric": TUNED_METRIC, **tuned})
        stream = _evaluated_rows(p, key)
        cells: list[list[pd.DataFrame]] = []  # per reference x metric, block by block
        for image_ids, maps in store.iter_maps(p.out, key):
            pos = ds.positions(image_ids)
            keep = np.isin(ds.index["split"].to_numpy()[pos], p.splits)
            if not keep.any():
                continue
            block, curve = _score_block(p, maps[keep], pos[keep], plan_refs, tau, stream,
                                        model=model, method=method)
            cells = cells or [[] for _ in block]
            for cell, f in zip(cells, block, strict=True):
                cell.append(f)
            curve_frames.append(curve)
        # Cell by cell, so the table reads the same however the maps were sharded.
        frames.extend(f for cell in cells for f in cell)
        progress.advance(task)
    thresholds = pd.DataFrame(tuned_rows, columns=store.THRESHOLDS_COLUMNS)
    curves = (pd.concat(curve_frames, ignore_index=True)[store.CURVE_POINTS_COLUMNS]
              if curve_frames else pd.DataFrame(columns=store.CURVE_POINTS_COLUMNS))
    scores = (pd.concat(frames, ignore_index=True)[store.SCORES_COLUMNS] if frames
              else pd.DataFrame(columns=store.SCORES_COLUMNS))
    return scores, thresholds, curves


def _evaluated_rows(p: Plan, key: str) -> int:
    """How many cached images of ``key`` belong to the evaluated splits (one pass over the
    shards' image ids only, so every block pads to one kernel shape)."""
    ds = p.data.dataset
    split = ds.index["split"].to_numpy()
    return sum(int(np.isin(split[ds.positions(ids)], p.splits).sum())
               for ids in store.iter_map_ids(p.out, key))


def _tuning_maps(p: Plan, key: str) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """The maps, index rows and positions of the tuning split's images of ``key``."""
    ds = p.data.dataset
    maps, pos = [], []
    for ids, m in store.iter_maps(p.out, key):
        at = ds.positions(ids)
        sel = ds.index["split"].to_numpy()[at] == p.tune_split
        maps.append(m[sel])
        pos.append(at[sel])
    all_pos = np.concatenate(pos)
    meta = ds.index.iloc[all_pos][["split", "case_id", "image_id"]].reset_index(drop=True)
    return np.concatenate(maps), meta, all_pos


def _score_block(
    p: Plan, maps: np.ndarray, pos: np.ndarray, plan_refs: list[tuple[str, list[str]]],
    tau: float | None, stream: int, *, model: str, method: str,
) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """Scores (one frame per reference x metric) and curve points of one block of maps.

    Each frame is built by one constructor: thousands of them per run, where copying a
    frame and adding columns one by one cost about twice as much.
    """
    ds = p.data.dataset
    rows = ds.index.iloc[pos]
    ids = {c: rows[c].to_numpy() for c in ("split", "case_id", "image_id")}
    region = ds.roi(pos) if p.config.roi else None
    groups = ds.spacing_groups(pos)
    frames = []
    for ref, metrics in plan_refs:
        names = _resolve_metrics(metrics, tau)
        values = compute_by_spacing(
            groups, maps, ds.reference(pos, ref), list(dict.fromkeys(names.values())),
            sign=p.config.sign, seed=p.config.seed, roi=region, stream_length=stream,
        )
        for metric, resolved in names.items():
            frames.append(pd.DataFrame({
                "model": model, "method": method, **ids, "reference": ref, "metric": metric,
                "value": np.asarray(values[resolved], dtype=np.float64),
            }))
    curve = compute_curve(maps, ds.reference(pos, p.tune_reference), _curve_metric(p),
                          DEFAULT_GRID, sign=p.config.sign, roi=region, stream_length=stream)
    n_tau = len(DEFAULT_GRID)
    f = pd.DataFrame({
        "model": model, "method": method, **{c: np.repeat(v, n_tau) for c, v in ids.items()},
        "reference": p.tune_reference, "metric": _curve_metric(p),
        "threshold": np.tile(DEFAULT_GRID, len(pos)), "value": curve.ravel(),
    })
    return frames, f


def human_stage(p: Plan) -> pd.DataFrame:
    """The annotators' scores against each other (positive images of evaluated splits)."""
    ds = p.data.dataset
    rows = np.flatnonzero((ds.index["split"].isin(p.splits)
                           & (ds.index["label"] == 1)).to_numpy())
    return human_scores(ds, rows, p.config.references, p.binary_metrics, p.graded_metrics,
                        sign=p.config.sign, seed=p.config.seed, roi=p.config.roi)


def checks_stage(p: Plan, loaded: dict[str, LoadedModel], progress: Progress
                 ) -> dict[str, pd.DataFrame]:
    """Model or explainer? Sanity and faithfulness tables (empty when both are off)."""
    cfg = p.config
    if not (cfg.sanity or cfg.faithfulness):
        return {}
    task = progress.add_task("checks", total=len(p.models))
    return run_checks(p.data, loaded, p.methods, cfg, p.splits[0], p.tune_reference,
                      lambda k: progress.advance(task, k), workers=model_workers(cfg))


def analyse_stage(
    p: Plan, scores: pd.DataFrame, predictions: pd.DataFrame, human: pd.DataFrame,
    curves: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """Every statistics table of the run, keyed by its file name in the run directory."""
    cfg = p.config
    strata = None
    if cfg.stratify:
        strata = predictions.drop_duplicates("case_id").set_index("case_id")["label"]
    boot: dict[str, Any] = dict(n_boot=cfg.n_boot, level=cfg.level, method=cfg.ci_method,
                                seed=cfg.seed)
    summary = summarize(
        scores, by=["model", "split", "method", "reference", "metric"],
        weighting=cfg.weighting, strata=strata, **boot,
    )[store.SUMMARY_COLUMNS]
    classification = classification_table(predictions, threshold=cfg.threshold, **boot)
    frames = [
        compare(scores, family=family, weighting=cfg.weighting, **boot).table
        for family, n in (("methods", len(p.methods)), ("models", len(p.models)))
        if n > 1
    ]
    comparisons = (
        pd.concat(frames, ignore_index=True) if frames
        else pd.DataFrame(columns=[*CONTRACT_COLUMNS, *EXTRA_COLUMNS])
    )
    baselines = [m for m in p.methods if EXPLAINERS[m].info.is_baseline]
    flags = flag_baselines(summary, comparisons, baselines, _lower_is_better)
    summary = pd.concat([summary, flags], axis=1)
    human_summary = summarize(
        human, by=["split", "annotator", "reference", "metric"], weighting=cfg.weighting,
        strata=None, **boot,
    )
    return {
        store.SUMMARY: summary,
        store.SUMMARY_CSV: summary,
        store.CLASSIFICATION: classification[store.CLASSIFICATION_COLUMNS],
        store.COMPARISONS: comparisons,
        store.OMNIBUS: friedman(scores, lower_is_better=_lower_is_better),
        store.HUMAN_SCORES: human,
        store.HUMAN: human_summary,
        store.CORRELATION: spearman_table(scores, predictions, strata=strata, **{
            k: v for k, v in boot.items() if k != "method"}),
        store.CURVES: curve_table(curves, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed),
        store.MIXED: mixed_model_table(
            scores, level=cfg.level,
            reference_method=MIXED_REFERENCE if MIXED_REFERENCE in p.methods else None),
    }


def regression_stage(baseline: str, run_dir: store.Run, gates: list[str]) -> None:
    """Compare the finished run with ``baseline`` (paired on shared cases) and write
    ``regression.parquet`` / ``regression.json`` with the gates' verdicts."""
    from benchmark.regression import compare_runs, write_regression

    write_regression(compare_runs(baseline, run_dir), run_dir.path, gates)


def resume_config(run_dir: str | Path) -> dict[str, Any]:
    """The configuration of an earlier run, to continue it in place (``--resume``).

    Maps already cached under ``RUN/maps`` are reused; every later stage is recomputed
    (they are cheap next to the explainers).
    """
    path = Path(run_dir) / store.CONFIG
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no {store.CONFIG} there; not a run directory")
    data = store.read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of configuration fields")
    paths = data.pop(CHECKPOINTS_KEY, None) or {}
    data["models"] = [paths.get(m, m) for m in data.get("models") or []] or None
    data["out"] = str(run_dir)
    return data


def run(config: Any = None, *, on_plan: Callable[[Plan], None] | None = None,
        **overrides: Any) -> store.Run:
    """Run every stage; returns the opened run directory. See :func:`benchmark.run`."""
    started = dt.datetime.now(dt.UTC)
    p = plan(config, **overrides)
    if on_plan is not None:
        on_plan(p)
    try:
        p.out.mkdir(parents=True, exist_ok=True)
        probe = p.out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot create the run directory {p.out} ({err.strerror or type(err).__name__})"
        ) from None
    _remove_stale_temporaries(p.out)
    try:
        return _run(p, started)
    except KeyboardInterrupt:
        raise RunInterrupted(p.out) from None


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of atomic writes that a killed run left behind (``.NAME.*.tmp``)."""
    for folder in (out, out / store.MAPS):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _warn_one_class(ds: Dataset, splits: list[str]) -> None:
    for split in splits:
        labels = set(ds.split(split)["label"])
        if len(labels) == 1:
            only = ds.class_names[labels.pop()]
            console.print(
                f"[yellow]warning:[/] split {split!r} has only {only!r} images: AUROC, "
                "accuracy and specificity are undefined there (NaN); the saliency metrics "
                "are not affected", highlight=False, soft_wrap=True)


def _run(p: Plan, started: dt.datetime) -> store.Run:
    cfg = p.config
    resolved = cfg.model_dump()
    resolved.update(
        manifest=str(p.data.manifest_path) if p.data.manifest_path else None,
        dataset=p.data.entry.name, models=p.models, methods=p.methods, out=str(p.out),
    )
    checkpoints = {n: p.data.model_entry(n).path for n in p.models
                   if n not in p.data.model_names}
    if checkpoints:  # models given by path: --resume needs the paths back
        resolved[CHECKPOINTS_KEY] = checkpoints
    store.write_yaml(resolved, p.out / store.CONFIG)
    torch.manual_seed(cfg.seed)

    timings: dict[str, float] = {}
    with _stage("load", timings):
        ds = p.data.load()
        _warn_one_class(ds, p.splits)
        sample = p.data.to_input(ds.images(np.arange(min(2, len(ds.index)))))
        loaded = {}
        for name in p.models:
            loaded[name] = p.data.load_model(name)
            check_output(loaded[name], sample)
            _check_hooks(loaded[name], p.methods)
    with _stage("predict", timings):
        predictions = predict_stage(p, loaded)
        store.write_table(predictions, p.out / store.PREDICTIONS)
    with _progress() as progress:
        with _stage("explain", timings, quiet=True):
            index = explain_stage(p, loaded, progress)
        with _stage("score", timings, quiet=True):
            scores, thresholds, curves = score_stage(p, index, progress)
            human = human_stage(p)
        with _stage("checks", timings, quiet=True):
            for name, table in checks_stage(p, loaded, progress).items():
                store.write_table(table, p.out / name)
    store.write_table(curves, p.out / store.CURVE_POINTS)
    store.write_table(scores, p.out / store.SCORES)
    if len(thresholds):
        store.write_table(thresholds, p.out / store.THRESHOLDS)
    with _stage("analyse", timings):
        for name, table in analyse_stage(p, scores, predictions, human, curves).items():
            store.write_table(table, p.out / name)

    provenance = {
        "run_id": p.out.name,
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "versions": _versions(),
        "checkpoints": {n: loaded[n].sha256 for n in p.models},
        "target_layers": {n: loaded[n].target_layer for n in p.models},
        "data_sha256": p.data.dataset.sha256,
        "seed": cfg.seed,
        "n_boot": cfg.n_boot,
        "config_sha256": store.sha256_json(resolved),
        "git_revision": _git_revision(),
        "machine": {"node": platform.node(), "platform": platform.platform(),
                    "processor": platform.machine(), "user": getpass.getuser(),
                    "torch_threads": torch.get_num_threads(),
                    "workers": model_workers(cfg)},
        "metrics": {m: parse_metric(m)[0].definition for m in cfg.metrics},
        "timings": timings,  # seconds per stage; the report's is added once rendered
    }
    store.write_json(provenance, p.out / store.PROVENANCE)
    run_dir = store.Run.open(p.out)
    if cfg.baseline is not None:
        with _stage("regression", timings):
            regression_stage(cfg.baseline, run_dir, cfg.fail_if_worse)
    if cfg.report:
        with _stage("report", timings):
            from benchmark.report import build_report

            build_report(run_dir, p.data.dataset, engine=cfg.engine)
        provenance["timings"] = timings
        store.write_json(provenance, p.out / store.PROVENANCE)
    return run_dir
