"""The metric registry: what each metric is, and how a metric name is parsed.

A metric name is ``name`` or ``name@threshold`` (METRICS.md, "Attention region"):

- ``0.5``: fixed threshold tau in [0, 1] on the min-max normalised map,
- ``top15``: the K = 15 percent highest pixels (0 < K <= 100),
- ``otsu``: Otsu's threshold on a 256-bin histogram of the normalised map,
- ``tuned``: a threshold tuned on the validation split; parsed here, but the caller
  must resolve it to a number with :func:`benchmark.metrics.tune_threshold` before
  :func:`benchmark.metrics.compute` is called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

Direction = Literal["higher", "lower"]
ReferenceKind = Literal["binary", "graded"]
ThresholdKind = Literal["fixed", "top", "otsu", "tuned"]


@dataclass(frozen=True)
class MetricSpec:
    """Static description of one metric.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"iou"``.
    direction : {"higher", "lower"}
        Which direction is better.
    range : tuple of float
        ``(lo, hi)`` of the values the metric can take (``inf`` for unbounded).
    needs_threshold : bool
        Whether the name must carry ``@threshold``.
    reference_kind : {"binary", "graded"}
        ``binary``: the reference must hold only 0/1 (a mask G); ``graded``: values in
        [0, 1] (an importance map W).
    definition : str
        One line, as in METRICS.md.
    """

    name: str
    direction: Direction
    range: tuple[float, float]
    needs_threshold: bool
    reference_kind: ReferenceKind
    definition: str


@dataclass(frozen=True)
class ThresholdSpec:
    """A parsed threshold rule.

    Attributes
    ----------
    kind : {"fixed", "top", "otsu", "tuned"}
        The rule.
    value : float or None
        tau for ``fixed``, K (percent) for ``top``, None otherwise.
    """

    kind: ThresholdKind
    value: float | None = None

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.value:g}"
        if self.kind == "top":
            return f"top{self.value:g}"
        return self.kind


def _spec(
    name: str,
    direction: Direction,
    lo: float,
    hi: float,
    needs_threshold: bool,
    reference_kind: ReferenceKind,
    definition: str,
) -> MetricSpec:
    return MetricSpec(name, direction, (lo, hi), needs_threshold, reference_kind, definition)


_INF = math.inf

METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        _spec("precision", "higher", 0, 1, True, "binary",
              "|A ∩ G| / |A|: share of the attention region that is medically important"),
        _spec("irrelevant_fraction", "lower", 0, 1, True, "binary",
              "1 - precision: share of the attention region outside G"),
        _spec("recall", "higher", 0, 1, True, "binary", "|A ∩ G| / |G|: coverage of G"),
        _spec("iou", "higher", 0, 1, True, "binary", "|A ∩ G| / |A ∪ G|"),
        _spec("dice", "higher", 0, 1, True, "binary", "2 |A ∩ G| / (|A| + |G|)"),
        _spec("pointing_game", "higher", 0, 1, False, "binary",
              "|M ∩ G| / |M| with M the maximal pixels of S (fractional credit for ties)"),
        _spec("mass_accuracy", "higher", 0, 1, False, "binary",
              "Σ_G S+ / Σ_Ω S+ (relevance mass accuracy)"),
        _spec("rank_accuracy", "higher", 0, 1, False, "binary",
              "|top-K(S) ∩ G| / K with K = |G| (relevance rank accuracy)"),
        _spec("auroc", "higher", 0, 1, False, "binary",
              "P(S_g > S_b) + ½ P(S_g = S_b), g ∈ G, b ∉ G (exact with ties)"),
        _spec("auprc", "higher", 0, 1, False, "binary",
              "average precision of S ranking G (baseline |G|/N)"),
        _spec("nss", "higher", -_INF, _INF, False, "binary",
              "mean over G of (S - mean S) / std S (std with ddof=0)"),
        _spec("weighted_mass", "higher", 0, 1, False, "graded",
              "Σ S+ W / Σ S+ (graded mass accuracy)"),
        _spec("cc", "higher", -1, 1, False, "graded", "Pearson correlation of S and W"),
        _spec("spearman", "higher", -1, 1, False, "graded",
              "Spearman rank correlation of S and W (average ranks for ties)"),
        _spec("sim", "higher", 0, 1, False, "graded",
              "Σ min(Ŝ, Ŵ), each min-max normalised then divided by its sum"),
        _spec("kl", "lower", 0, _INF, False, "graded",
              "KL(W ‖ S) = Σ Ŵ log(ε + Ŵ / (Ŝ + ε)), ε = 2.2e-16, Ŝ Ŵ as in sim"),
        _spec("spearman_abs", "higher", -1, 1, False, "graded",
              "Spearman rank correlation of |S| and W (ignores the sign option)"),
        _spec("ssim", "higher", -1, 1, False, "graded",
              "mean SSIM of min-max normalised S and W, 7-pixel uniform windows inside Ω"),
        _spec("peak_distance", "lower", 0, _INF, False, "graded",
              "mm between the centroids of the maximal pixels of S and of W "
              "(constant S: centroid of Ω)"),
    )
}  # fmt: skip


def _valid_names() -> str:
    return ", ".join(
        f"{n}@<threshold>" if s.needs_threshold else n for n, s in sorted(METRICS.items())
    )


def parse_threshold(text: str) -> ThresholdSpec:
    """Parse a threshold rule: ``"0.5"``, ``"top15"``, ``"otsu"`` or ``"tuned"``.

    Raises
    ------
    ValueError
        If ``text`` is none of these, tau is outside [0, 1], or K is outside (0, 100].
    """
    t = text.strip().lower()
    if t in ("otsu", "tuned"):
        return ThresholdSpec(t)  # type: ignore[arg-type]
    is_top = t.startswith("top")
    value = _to_float(t[3:] if is_top else t)
    if value is None:
        raise ValueError(
            f"unknown threshold {text!r}; use a number in [0, 1] (e.g. 0.5), "
            "topK with K a percent (e.g. top15), 'otsu' or 'tuned'"
        )
    if is_top:
        if not (0.0 < value <= 100.0):
            raise ValueError(f"top-K percent must be in (0, 100], got {text!r}")
        return ThresholdSpec("top", value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"fixed threshold must be in [0, 1] (min-max normalised), got {text!r}")
    return ThresholdSpec("fixed", value)


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_metric(name: str) -> tuple[MetricSpec, ThresholdSpec | None]:
    """Split ``name@threshold`` into its registry entry and threshold rule.

    Parameters
    ----------
    name : str
        ``"iou@top15"``, ``"dice@0.5"``, ``"auroc"``, ...

    Returns
    -------
    spec : MetricSpec
    threshold : ThresholdSpec or None
        None for metrics that take no threshold.

    Raises
    ------
    ValueError
        Unknown metric (the message lists the valid names), a threshold on a metric that
        takes none, a missing threshold, or an invalid threshold.

    Examples
    --------
    >>> spec, thr = parse_metric("iou@top15")
    >>> spec.name, thr.kind, thr.value
    ('iou', 'top', 15.0)
    """
    if not isinstance(name, str):
        raise ValueError(f"metric names must be strings, got {name!r}")
    base, sep, thr_text = name.partition("@")
    base = base.strip()
    if base not in METRICS:
        raise ValueError(f"unknown metric {base!r}; valid metrics: {_valid_names()}")
    spec = METRICS[base]
    if spec.needs_threshold and not sep:
        raise ValueError(
            f"metric {base!r} needs a threshold, e.g. '{base}@top15', '{base}@0.5' or '{base}@otsu'"
        )
    if not spec.needs_threshold and sep:
        raise ValueError(f"metric {base!r} takes no threshold; use {base!r}, not {name!r}")
    return spec, (parse_threshold(thr_text) if sep else None)


def list_metrics() -> pd.DataFrame:
    """One row per registered metric, for ``bench metrics``.

    Returns
    -------
    pandas.DataFrame
        Columns ``name, direction, range_low, range_high, needs_threshold,
        reference_kind, definition``, sorted by name.
    """
    rows = [
        {
            "name": s.name,
            "direction": s.direction,
            "range_low": s.range[0],
            "range_high": s.range[1],
            "needs_threshold": s.needs_threshold,
            "reference_kind": s.reference_kind,
            "definition": s.definition,
        }
        for s in METRICS.values()
    ]
    return pd.DataFrame(rows).sort_values("name", ignore_index=True)
