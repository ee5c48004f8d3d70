"""The run configuration: one pydantic model shared by YAML, the CLI and the Python API.

``RunConfig`` is validated once, at the edge; later stages trust it. The fully resolved
configuration (defaults filled in, dataset/models/methods expanded) is written to the run
directory as ``config.yaml``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.errors import BenchError

DEFAULT_METRICS = [
    "irrelevant_fraction@top15",
    "precision@top15",
    "recall@top15",
    "iou@top15",
    "dice@top15",
    "irrelevant_fraction@0.5",
    "precision@0.5",
    "recall@0.5",
    "iou@0.5",
    "dice@0.5",
    "mass_accuracy",
    "pointing_game",
    "auroc",
    "weighted_mass",
]


class ConfigError(BenchError):
    """An invalid run configuration; the message is one line naming the field."""


class RunConfig(BaseModel):
    """Everything that determines a run's results.

    Attributes default to the embedded demo: the first dataset of the manifest, all its
    models, every registered explainer, the ``test`` and ``shifted`` splits (those of them
    the dataset has). ``models`` holds manifest model names or checkpoint paths.
    """

    model_config = ConfigDict(extra="forbid")

    manifest: str | None = None
    dataset: str | None = None
    models: list[str] | None = None
    methods: list[str] | None = None
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    references: list[str] = Field(default_factory=lambda: ["consensus", "graded"])
    splits: list[str] | None = None  # None: those of test, shifted the dataset has
    explain: Literal["positive", "all"] = "positive"
    sign: Literal["positive", "abs", "signed"] = "positive"
    roi: bool = False  # restrict every metric to the dataset's region of interest (body)
    n_boot: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    level: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    ci_method: Literal["bca", "percentile"] = "bca"
    weighting: Literal["case", "image"] = "case"
    stratify: bool = False
    seed: int = 0
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    headline_metric: str = "irrelevant_fraction@top15"
    headline_reference: str = "consensus"
    out: str | None = None
    # Checkpoints given by path (in ``models``) and overrides for every model:
    factory: str | None = None  # package.module:function building a state dict's module
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    target_layer: str | None = None
    model_output: Literal["logits", "probabilities"] | None = None
    target: Annotated[int, Field(ge=0)] | None = None
    trust_checkpoint: bool = False
    # Is it the model or the explainer? Checks on a sample of positive images (checks.py):
    sanity: bool = True  # cascading model-parameter randomisation
    faithfulness: bool = True  # deletion/insertion curves and region deletion
    check_images: Annotated[int, Field(ge=2, le=100_000)] = 16
    faithfulness_baseline: Literal["blur", "mean"] = "mean"
    faithfulness_output: Literal["probability", "logit"] = "logit"
    deletion_steps: Annotated[int, Field(ge=2, le=1000)] = 16
    # Regression gate against an earlier run directory (``--baseline``):
    baseline: str | None = None
    fail_if_worse: list[str] = Field(default_factory=list)
    # Where the explain stage's shards run (never changes the results):
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: the running Ray instance, else a new local one
    # Threads of model passes (local executor, checks); 0: min(2, CPUs).
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    report: bool = True
    engine: Literal["auto", "quarto", "pandoc"] = "auto"


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, list(RunConfig.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def make_config(config: Any = None, **overrides: Any) -> RunConfig:
    """Build a validated :class:`RunConfig` from a RunConfig, dict, YAML path or None."""
    if isinstance(config, RunConfig):
        data = config.model_dump()
    elif config is None:
        data = {}
    elif isinstance(config, dict):
        data = dict(config)
    else:
        path = Path(config)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: malformed YAML ({' '.join(str(err).split())})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of configuration fields")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        e = sorted(err.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
        field = ".".join(str(p) for p in e["loc"])
        hint = _suggest(str(e["loc"][0])) if e["type"] == "extra_forbidden" else ""
        raise ConfigError(f"config field {field}: {e['msg']}{hint}") from None
