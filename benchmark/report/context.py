"""What the report is about: the run's settings resolved once, with defaults.

The configuration is read with ``.get`` everywhere because a run directory may come from
an older version of the tool; lists missing from the configuration fall back to the
values present in the tables, in the configuration's order where it has one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import pandas as pd

from benchmark.methods import METHODS
from benchmark.metrics import METRICS
from benchmark.store import Run

DEFAULT_HEADLINE_METRIC = "irrelevant_fraction@top15"
DEFAULT_HEADLINE_REFERENCE = "consensus"
DEFAULT_GALLERY_METHOD = "gradcam"

# Methods that explain nothing about the model: they give every metric a floor
# (STATISTICS.md, "Baselines").
NULL_BASELINES = tuple(name for name, info in METHODS.items() if info.is_baseline)

# The split the headline sentences talk about: in-distribution test data if present.
PREFERRED_SPLIT = "test"


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as dicts keyed by column name (typed for the callers)."""
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def metric_base(metric: str) -> str:
    """``irrelevant_fraction@top15`` -> ``irrelevant_fraction``."""
    return metric.split("@", 1)[0]


def lower_is_better(metric: str) -> bool:
    """Direction from the metric registry; unknown names count as higher-is-better."""
    spec = METRICS.get(metric_base(metric))
    return spec is not None and spec.direction == "lower"


def _ordered(preferred: Iterable[Any] | None, present: Iterable[Any]) -> list[str]:
    """``preferred`` (the config's order) restricted to ``present``, then the rest sorted."""
    present_set = {str(p) for p in present}
    out = [str(p) for p in (preferred or []) if str(p) in present_set]
    out += sorted(present_set - set(out))
    return out


@dataclass(frozen=True)
class ReportContext:
    """Settings every section needs, resolved from ``run.config`` and the tables."""

    title: str
    dataset_name: str
    models: list[str]
    methods: list[str]
    splits: list[str]
    metrics: list[str]
    references: list[str]
    headline_metric: str
    headline_reference: str
    baselines: frozenset[str]
    primary_split: str
    gallery_method: str
    ci_method: str
    config: dict[str, Any] = field(repr=False)
    provenance: dict[str, Any] = field(repr=False)
    digits: int = 2

    def is_baseline(self, method: str) -> bool:
        return method in self.baselines

    def method_label(self, method: str) -> str:
        """Plain-text label; null baselines are named as such everywhere."""
        return f"{method} (null baseline)" if self.is_baseline(method) else method

    @property
    def explainers(self) -> list[str]:
        """The methods that are not null baselines, in report order."""
        return [m for m in self.methods if not self.is_baseline(m)]


def resolve_context(run: Run, gallery_method: str | None = None) -> ReportContext:
    """Read the configuration and tables of ``run`` into a :class:`ReportContext`."""
    config = dict(run.config or {})
    provenance = _read_provenance(run)
    summary = run.summary
    classification = _optional_table(run, "classification")

    models = _ordered(
        config.get("models"),
        _union(summary["model"], None if classification is None else classification["model"]),
    )
    methods = _ordered(config.get("methods"), summary["method"].unique())
    splits = _ordered(config.get("splits"), summary["split"].unique())
    metrics = _ordered(config.get("metrics"), summary["metric"].unique())
    # The run's own references; single annotators scored for the headline metric only
    # (the per-annotator table) are not references of the run.
    present = summary["reference"].unique()
    configured = [r for r in config.get("references") or [] if r in set(present)]
    references = configured or _ordered(None, present)

    headline_metric = str(config.get("headline_metric") or DEFAULT_HEADLINE_METRIC)
    if headline_metric not in metrics and metrics:
        # A run without the default headline still gets a report: use its first metric.
        headline_metric = metrics[0]
    headline_reference = str(config.get("headline_reference") or DEFAULT_HEADLINE_REFERENCE)
    if headline_reference not in references and references:
        headline_reference = references[0]

    baselines = frozenset(str(b) for b in config.get("baselines") or NULL_BASELINES)
    primary = PREFERRED_SPLIT if PREFERRED_SPLIT in splits else (splits[0] if splits else "")
    explainers = [m for m in methods if m not in baselines]
    wanted = gallery_method or DEFAULT_GALLERY_METHOD
    if wanted not in methods:
        wanted = explainers[0] if explainers else (methods[0] if methods else wanted)

    dataset_name = str(config.get("dataset") or "dataset")
    return ReportContext(
        title=f"Saliency benchmark: {dataset_name}",
        dataset_name=dataset_name,
        models=models,
        methods=methods,
        splits=splits,
        metrics=metrics,
        references=references,
        headline_metric=headline_metric,
        headline_reference=headline_reference,
        baselines=baselines,
        primary_split=primary,
        gallery_method=wanted,
        ci_method=str(config.get("ci_method") or "bca"),
        config=config,
        provenance=provenance,
    )


def _union(*columns: pd.Series | None) -> list[str]:
    seen: dict[str, None] = {}
    for col in columns:
        if col is not None:
            seen.update((str(v), None) for v in col.unique())
    return list(seen)


def _read_provenance(run: Run) -> dict[str, Any]:
    try:
        return dict(run.provenance or {})
    except FileNotFoundError:
        return {}


def _optional_table(run: Run, name: str) -> pd.DataFrame | None:
    """A table the report can do without (older runs, partial runs)."""
    try:
        return cast(pd.DataFrame, getattr(run, name))
    except FileNotFoundError:
        return None
