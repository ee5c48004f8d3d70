"""compute_curve (region metrics over a threshold grid) and tune_threshold (``@tuned``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchmark.metrics import TuneResult, compute, compute_curve, tune_threshold

REGION = ["precision", "irrelevant_fraction", "recall", "iou", "dice"]
GRID = np.round(np.arange(0.05, 1.0, 0.05), 2)
GRID_TAUS = [float(t) for t in GRID]  # Python floats: repr() is "0.05", not "np.float64(...)"


def make_batch(seed: int, n: int = 6, shape=(12, 16)):
    """Mixed-sign maps, quantised every other image (ties), correlated masks, a roi."""
    rng = np.random.default_rng(seed)
    sal = rng.normal(size=(n, *shape)).astype(np.float32)
    sal[::2] = np.round(sal[::2] * 2) / 4
    ref = ((sal + rng.normal(size=sal.shape)) > 1).astype(np.float32)
    ref[1] = 0  # an empty reference: NaN at every tau
    return sal, ref, rng.random(sal.shape) < 0.8


@pytest.mark.parametrize("metric", REGION)
def test_curve_equals_compute_at_every_threshold(metric):
    sal, ref, roi = make_batch(0)
    taus = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]
    curve = compute_curve(sal, ref, metric, taus, roi=roi, sign="abs")
    got = compute(sal, ref, [f"{metric}@{t!r}" for t in taus], roi=roi, sign="abs")
    want = np.stack([got[f"{metric}@{t!r}"] for t in taus], axis=1)
    assert curve.shape == (6, 7) and curve.dtype == np.float64
    np.testing.assert_array_equal(curve, want)


def test_curve_in_3d_with_chunks_and_a_coarse_map():
    rng = np.random.default_rng(1)
    sal = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)  # resized to (6, 8, 8)
    ref = (rng.random((5, 6, 8, 8)) < 0.3).astype(np.float32)
    taus = [0.05, 0.3, 0.55, 0.8]  # few: compute() compiles one region per tau
    curve = compute_curve(sal, ref, "dice", taus, chunk_size=2)
    got = compute(sal, ref, [f"dice@{t!r}" for t in taus])
    np.testing.assert_array_equal(curve, np.stack([got[f"dice@{t!r}"] for t in taus], 1))


@settings(max_examples=30, deadline=None)
@given(
    sal=hnp.arrays(np.float32, (2, 6, 7), elements=st.sampled_from([-1.0, 0.0, 0.25, 0.5, 2.0])),
    ref=hnp.arrays(bool, (2, 6, 7)),
    taus=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 1.0]), min_size=1, max_size=4),
)
def test_curve_equals_compute_on_quantised_maps(sal, ref, taus):
    curve = compute_curve(sal, ref.astype(np.float32), "iou", taus)
    for j, t in enumerate(taus):
        want = compute(sal, ref.astype(np.float32), [f"iou@{t!r}"])[f"iou@{t!r}"]
        np.testing.assert_array_equal(curve[:, j], want)


@pytest.mark.parametrize("metric", ["irrelevant_fraction", "iou"])
def test_long_grids_read_the_sorted_map_and_agree_with_counting(metric):
    """Grids longer than COUNT_MAX_TAUS take the sort path; on a shared prefix of taus
    both paths give the same values, and those equal compute()'s."""
    from benchmark.metrics.curve import COUNT_MAX_TAUS

    sal, ref, roi = make_batch(3)
    long_grid = np.round(np.linspace(0.0, 1.0, COUNT_MAX_TAUS + 1), 4)
    short = compute_curve(sal, ref, metric, long_grid[:COUNT_MAX_TAUS], roi=roi, sign="abs")
    long = compute_curve(sal, ref, metric, long_grid, roi=roi, sign="abs")
    np.testing.assert_array_equal(long[:, :COUNT_MAX_TAUS], short)
    picks = [float(t) for t in long_grid[[0, 7, 32, COUNT_MAX_TAUS]]]
    got = compute(sal, ref, [f"{metric}@{t!r}" for t in picks], roi=roi, sign="abs")
    want = np.stack([got[f"{metric}@{t!r}"] for t in picks], axis=1)
    np.testing.assert_array_equal(long[:, [0, 7, 32, COUNT_MAX_TAUS]], want)


def test_curve_of_an_empty_batch_has_shape_zero_by_t():
    assert compute_curve(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), "iou", [0.5]).shape == (0, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "iou@0.5"}, r"`metric` must be one of precision, .* \(without '@threshold'\)"),
        ({"metric": "auroc"}, "`metric` must be one of"),
        ({"thresholds": []}, "`thresholds` must be a non-empty 1-D sequence"),
        ({"thresholds": [0.5, 1.5]}, r"numbers in \[0, 1\]"),
        ({"thresholds": [[0.5]]}, "1-D"),
        ({"sign": "neg"}, "`sign` must be one of"),
    ],
)
def test_curve_rejects_invalid_arguments(kwargs, message):
    args = {"metric": "iou", "thresholds": [0.5]} | kwargs
    with pytest.raises(ValueError, match=message):
        compute_curve(np.zeros((1, 4, 4)), np.ones((1, 4, 4)), **args)


def test_curve_needs_a_binary_reference():
    with pytest.raises(ValueError, match="'iou' needs a binary reference"):
        compute_curve(np.zeros((1, 4, 4)), np.full((1, 4, 4), 0.5), "iou", [0.5])


# --------------------------------------------------------------------------- tuning


@pytest.mark.parametrize("metric", ["iou", "dice", "precision", "irrelevant_fraction"])
def test_tuned_threshold_is_the_brute_force_best_mean(metric):
    sal, ref, roi = make_batch(2)
    res = tune_threshold(sal, ref, metric=metric, roi=roi)
    scores = np.stack([compute(sal, ref, [f"{metric}@{t!r}"], roi=roi)[f"{metric}@{t!r}"]
                       for t in GRID_TAUS], axis=1)  # fmt: skip
    means = [np.mean(c[~np.isnan(c)]) for c in scores.T]  # NaN images left out
    best = np.argmax(means) if metric != "irrelevant_fraction" else np.argmin(means)
    assert res.threshold == GRID[best] and res.metric == metric
    np.testing.assert_allclose(res.mean_scores, means, rtol=1e-12)
    assert res.n_images == np.isfinite(scores[:, best]).sum()
    np.testing.assert_array_equal(res.grid, GRID)


def test_ties_go_to_the_smallest_threshold():
    # Values {0, 1}: every tau in (0, 1] selects the same region, so all means tie.
    s = np.zeros((2, 8, 8), np.float32)
    s[:, :4] = 1
    g = np.zeros_like(s)
    g[:, :2] = 1
    res = tune_threshold(s, g, grid=[0.9, 0.3, 0.6])
    assert res.threshold == 0.3
    np.testing.assert_array_equal(res.mean_scores, [0.5, 0.5, 0.5])


def test_default_grid_is_005_to_095():
    sal, ref, _ = make_batch(3)
    res = tune_threshold(sal, ref)
    np.testing.assert_array_equal(res.grid, GRID)
    assert res.grid[0] == 0.05 and res.grid[-1] == 0.95 and res.grid.size == 19


def test_tuned_threshold_prints_back_as_a_fixed_threshold():
    sal, ref, _ = make_batch(4)
    res = tune_threshold(sal, ref)
    name = f"iou@{res.threshold!r}"
    assert np.nanmean(compute(sal, ref, [name])[name]) == pytest.approx(res.mean_scores.max())


def test_all_nan_scores_are_an_error():
    with pytest.raises(ValueError, match="cannot tune a threshold: iou is NaN for all 3 images"):
        tune_threshold(np.random.default_rng(0).random((3, 8, 8)), np.zeros((3, 8, 8)))


def test_nan_taus_are_skipped_when_others_are_finite():
    # One image whose map is constant: at every tau > 0 A is empty, so precision is NaN;
    # at tau = 0 it is defined. The NaN taus have NaN means and are never chosen.
    s = np.full((1, 8, 8), 2.0, np.float32)
    g = np.zeros_like(s)
    g[0, :2] = 1
    res = tune_threshold(s, g, grid=[0.0, 0.5], metric="precision")
    assert res.threshold == 0.0 and math.isnan(res.mean_scores[1]) and res.n_images == 1


def test_tune_result_is_frozen_and_read_only():
    res = tune_threshold(*make_batch(5)[:2])
    assert isinstance(res, TuneResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.threshold = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        res.mean_scores[0] = 1.0


def test_tune_rejects_an_invalid_grid():
    with pytest.raises(ValueError, match="`grid` must be a non-empty 1-D sequence"):
        tune_threshold(np.zeros((1, 4, 4)), np.ones((1, 4, 4)), grid=[2.0])


def test_compute_still_rejects_tuned_and_points_to_tune_threshold():
    with pytest.raises(ValueError, match="resolved to a number.*tune_threshold"):
        compute(np.zeros((1, 4, 4)), np.ones((1, 4, 4)), ["iou@tuned"])
