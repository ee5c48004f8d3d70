"""The metric registry and the name@threshold syntax."""

from __future__ import annotations

import dataclasses

import pytest

from benchmark.metrics import METRICS, MetricSpec, ThresholdSpec, list_metrics, parse_metric

REQUIRED = {
    "precision", "irrelevant_fraction", "recall", "iou", "dice", "mass_accuracy",
    "pointing_game", "auroc", "weighted_mass",
}  # fmt: skip


def test_registry_holds_the_required_metrics_with_complete_specs():
    assert set(METRICS) >= REQUIRED
    for name, spec in METRICS.items():
        assert spec.name == name
        assert spec.direction in ("higher", "lower")
        assert spec.range[0] < spec.range[1]
        assert spec.reference_kind in ("binary", "graded")
        assert spec.definition and "\n" not in spec.definition


def test_metric_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        METRICS["iou"].name = "x"  # type: ignore[misc]


def test_directions_of_lower_is_better_metrics():
    assert METRICS["irrelevant_fraction"].direction == "lower"
    assert METRICS["kl"].direction == "lower"
    assert METRICS["precision"].direction == "higher"


@pytest.mark.parametrize(
    ("name", "threshold"),
    [
        ("iou@top15", ThresholdSpec("top", 15.0)),
        ("precision@0.5", ThresholdSpec("fixed", 0.5)),
        ("dice@otsu", ThresholdSpec("otsu")),
        ("irrelevant_fraction@top2.5", ThresholdSpec("top", 2.5)),
        ("recall@tuned", ThresholdSpec("tuned")),
        ("auroc", None),
    ],
)
def test_parse_metric(name, threshold):
    spec, thr = parse_metric(name)
    assert isinstance(spec, MetricSpec) and spec.name == name.split("@")[0]
    assert thr == threshold


def test_threshold_spec_prints_back_to_its_syntax():
    assert [str(parse_metric(n)[1]) for n in ("iou@top15", "iou@0.5", "iou@otsu")] == [
        "top15",
        "0.5",
        "otsu",
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("iou", "needs a threshold"),
        ("auroc@0.5", "takes no threshold"),
        ("iou@1.5", r"must be in \[0, 1\]"),
        ("iou@top0", r"must be in \(0, 100\]"),
        ("iou@top101", r"must be in \(0, 100\]"),
        ("iou@nan", r"must be in \[0, 1\]"),
        ("iou@median", "unknown threshold 'median'"),
        ("peak_dist", "unknown metric 'peak_dist'; valid metrics: "),
    ],
)
def test_malformed_names_are_rejected(name, message):
    with pytest.raises(ValueError, match=message):
        parse_metric(name)


def test_list_metrics_has_one_row_per_metric():
    table = list_metrics()
    assert sorted(table["name"]) == sorted(METRICS)
    assert list(table.columns) == [
        "name", "direction", "range_low", "range_high", "needs_threshold",
        "reference_kind", "definition",
    ]  # fmt: skip
