"""Metrics: saliency maps scored against expert annotations, by JAX kernels.

Public API
----------
- :func:`compute` scores a batch ``(N, *spatial)`` of maps for a list of metric names;
- :func:`compute_curve` scores one region metric at a grid of fixed thresholds;
- :func:`tune_threshold` resolves ``@tuned``: the grid threshold with the best mean
  (a :class:`TuneResult`);
- :data:`METRICS` maps each name to its :class:`MetricSpec` (direction, range, ...);
- :func:`parse_metric` splits ``"iou@top15"`` into the spec and its threshold rule;
- :func:`list_metrics` is the registry as a table (``bench metrics``);
- :func:`topk_count` and :func:`tiebreak_keys` define the exact top-K rule.

Definitions and edge cases follow METRICS.md.
"""

from benchmark.metrics.compute import compute
from benchmark.metrics.curve import TuneResult, compute_curve, tune_threshold
from benchmark.metrics.registry import (
    METRICS,
    MetricSpec,
    ThresholdSpec,
    list_metrics,
    parse_metric,
    parse_threshold,
)
from benchmark.metrics.threshold import tiebreak_keys, topk_count

__all__ = [
    "METRICS",
    "MetricSpec",
    "ThresholdSpec",
    "TuneResult",
    "compute",
    "compute_curve",
    "list_metrics",
    "parse_metric",
    "parse_threshold",
    "tiebreak_keys",
    "topk_count",
    "tune_threshold",
]
