"""Every edge case of METRICS.md, one test each, with closed-form expected values.

Each test scores one 12 x 16 image (|Ω| = 192) with the metric list of
``test_metrics.py``, batched with five blank images so that the whole module runs on
the kernel those tests compile (a batch's images never influence each other).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.metrics import compute, tiebreak_keys, topk_count

REGION = ["precision", "irrelevant_fraction", "recall", "iou", "dice"]
PLAIN = ["pointing_game", "mass_accuracy", "rank_accuracy", "auroc", "auprc", "nss"]
GRADED = ["weighted_mass", "cc", "spearman", "sim", "kl"]
NAMES = [f"{m}@{t}" for m in REGION for t in ("0", "0.5", "top15", "otsu")] + PLAIN + GRADED
SHAPE = (12, 16)
P = 192
N_BLANK = 5


def score(s, g, roi=None, **kw) -> dict[str, float]:
    """All metrics for a single image (flat, P pixels), as floats."""

    def batch(x, dtype):
        x = np.asarray(x, dtype).reshape(1, *SHAPE)
        return np.concatenate([x, np.ones((N_BLANK, *SHAPE), dtype)])

    roi = None if roi is None else batch(roi, bool)
    out = compute(batch(s, np.float32), batch(g, np.float32), NAMES, roi=roi, **kw)
    return {k: float(v[0]) for k, v in out.items()}


def mask(*pixels: int) -> np.ndarray:
    m = np.zeros(P, np.float32)
    m[list(pixels)] = 1
    return m


G_PIXELS = (0, 1, 2, 5, 6, 7, 12, 100, 150, 191)
G10 = mask(*G_PIXELS)  # |G| = 10


def test_empty_reference_makes_every_metric_nan():
    r = score(np.arange(P), np.zeros(P))
    assert all(math.isnan(v) for v in r.values()), {k: v for k, v in r.items() if v == v}


def test_reference_covering_omega_makes_auroc_and_auprc_nan():
    r = score(np.arange(P), np.ones(P))
    assert math.isnan(r["auroc"]) and math.isnan(r["auprc"])
    assert r["precision@top15"] == 1.0  # other metrics stay defined


def test_reference_covering_the_roi_makes_auroc_nan():
    roi = mask(*range(10))
    r = score(np.arange(P), roi, roi=roi)  # G = Ω = the roi, though G ≠ the image
    assert math.isnan(r["auroc"]) and math.isnan(r["auprc"])


def test_constant_map_auroc_is_one_half():
    assert score(np.full(P, 3.0), G10)["auroc"] == 0.5


def test_constant_map_pointing_game_is_g_over_n():
    assert score(np.full(P, 3.0), G10)["pointing_game"] == pytest.approx(10 / 192)


def test_zero_map_mass_ratios_are_nan():
    r = score(np.zeros(P), G10)
    assert math.isnan(r["mass_accuracy"]) and math.isnan(r["weighted_mass"])
    assert r["auroc"] == 0.5 and r["pointing_game"] == pytest.approx(10 / 192)


def test_all_negative_map_is_zero_after_positive_part():
    r = score(-np.arange(1, P + 1), G10)  # S⁺ = 0 everywhere
    assert math.isnan(r["mass_accuracy"]) and r["auroc"] == 0.5


@pytest.mark.parametrize("name", ["cc", "spearman", "nss", "sim", "kl"])
def test_constant_map_correlations_are_nan(name):
    assert math.isnan(score(np.full(P, 2.0), G10)[name])


@pytest.mark.parametrize("rule", ["0.5", "otsu"])
def test_empty_attention_region(rule):
    # A constant map normalises to 0: no pixel reaches tau = 0.5, and Otsu has no split.
    r = score(np.full(P, 2.0), G10)
    assert math.isnan(r[f"precision@{rule}"]) and math.isnan(r[f"irrelevant_fraction@{rule}"])
    assert r[f"recall@{rule}"] == 0 and r[f"iou@{rule}"] == 0 and r[f"dice@{rule}"] == 0


def test_constant_map_at_tau_zero_selects_omega():
    r = score(np.full(P, 2.0), G10)
    assert r["precision@0"] == pytest.approx(10 / 192) and r["recall@0"] == 1.0


def test_constant_map_at_top_k_is_decided_by_the_seeded_jitter():
    k = 29  # 15 % of 192 = 28.8
    for seed in (0, 1):
        chosen = set(np.argsort(tiebreak_keys(seed, P), kind="stable")[:k].tolist())
        expected = len(chosen & set(G_PIXELS)) / k
        assert score(np.full(P, 2.0), G10, seed=seed)["precision@top15"] == pytest.approx(expected)


@pytest.mark.parametrize("sign", ["positive", "signed"])
def test_negative_zero_ties_with_zero(sign):
    # -0.0 == 0.0 but sorts below it; ranking must treat them as one tied value.
    s = np.zeros(P, np.float32)
    s[1::2] = -0.0
    order = np.argsort(tiebreak_keys(0, P), kind="stable")  # all tied: the jitter decides
    r = score(s, G10, sign=sign)
    assert r["precision@top15"] == pytest.approx(len(set(order[:29]) & set(G_PIXELS)) / 29)
    assert r["rank_accuracy"] == pytest.approx(len(set(order[:10]) & set(G_PIXELS)) / 10)
    assert r["auroc"] == 0.5


def test_top_k_region_has_exactly_k_pixels_despite_ties():
    # G = Ω, so recall = |A| / 192; 15 % of 192 pixels is 28.8 -> 29.
    s = np.repeat([0.0, 1.0, 2.0, 3.0], 48)  # ties everywhere: 48 pixels per level
    assert score(s, np.ones(P))["recall@top15"] == pytest.approx(29 / 192)


def test_top_k_count_rounds_half_up_and_keeps_one_pixel():
    assert topk_count(15, 20) == 3
    assert topk_count(15, 10) == 2  # 1.5 -> 2
    assert topk_count(25, 10) == 3  # 2.5 -> 3 (not banker's rounding's 2)
    assert topk_count(15, 30) == 5  # 4.5 -> 5
    assert topk_count(25, 2) == 1  # 0.5 -> 1
    assert topk_count(1, 20) == 1  # 0.2 -> at least one pixel
    assert topk_count(100, 7) == 7
    assert topk_count(50, 0) == 0


def test_top_k_percentage_is_of_the_roi():
    roi = mask(*range(10))
    s = np.arange(P, dtype=np.float32)  # the highest roi pixels are 9, 8 (k = 2 of 10)
    r = score(s, mask(9, 3), roi=roi)
    assert r["precision@top15"] == pytest.approx(1 / 2)


def test_pointing_game_gives_fractional_credit_to_tied_maxima():
    s = np.zeros(P)
    s[[0, 19]] = 5.0  # two maxima, one inside G
    assert score(s, G10)["pointing_game"] == pytest.approx(1 / 2)


def test_pointing_game_ignores_maxima_outside_the_roi():
    s = np.zeros(P)
    s[19], s[0] = 9.0, 5.0  # the peak at 19 is outside the roi
    roi = np.ones(P)
    roi[19] = 0
    assert score(s, G10, roi=roi)["pointing_game"] == 1.0


def test_perfect_and_reversed_rankings_give_auroc_one_and_zero():
    s = G10 * 10 + np.arange(P) / 100
    assert score(s, G10)["auroc"] == 1.0 and score(s, G10)["auprc"] == pytest.approx(1.0)
    assert score(-s + s.max() + 1, G10)["auroc"] == 0.0


def test_mixed_sign_map_with_signed_mass_leaves_unit_interval():
    s = np.zeros(P)
    s[0], s[19] = 3.0, -2.0  # Σ_G S = 3, Σ_Ω S = 1
    assert score(s, G10, sign="signed")["mass_accuracy"] == 3.0


def test_otsu_on_a_two_level_map_selects_the_upper_level():
    s = mask(0, 1, 2, 3)  # values {0, 1}: A = the four ones, three of them in G
    r = score(s, G10)
    assert r["precision@otsu"] == pytest.approx(3 / 4) and r["recall@otsu"] == pytest.approx(3 / 10)


def test_empty_roi_makes_every_metric_nan():
    r = score(np.arange(P), G10, roi=np.zeros(P))
    assert all(math.isnan(v) for v in r.values())


def test_zero_graded_reference_makes_graded_metrics_nan():
    r = score(np.arange(P), np.zeros(P))
    assert all(math.isnan(r[name]) for name in GRADED)


# --------------------------------------------------------------------------- new metrics
# Two more kernels: the three map-to-map metrics (graded W allowed), and the pointing
# game alone (binary G); one 12 x 16 image batched with blank ones as above.

MAP_TO_MAP = ["peak_distance", "ssim", "spearman_abs"]
SIGNS = ("positive", "abs", "signed")


def score_maps(s, w, roi=None, names=MAP_TO_MAP, **kw) -> dict[str, float]:
    def batch(x, dtype):
        x = np.asarray(x, dtype).reshape(1, *SHAPE)
        return np.concatenate([x, np.ones((N_BLANK, *SHAPE), dtype)])

    roi = None if roi is None else batch(roi, bool)
    out = compute(batch(s, np.float32), batch(w, np.float32), names, roi=roi, **kw)
    return {k: float(v[0]) for k, v in out.items()}


def at(row: int, col: int) -> int:
    return row * SHAPE[1] + col


def test_empty_reference_makes_map_to_map_metrics_nan():
    r = score_maps(np.arange(P), np.zeros(P))
    assert all(math.isnan(v) for v in r.values())


def test_constant_map_peak_is_the_grid_centre():
    # Every pixel is maximal: S's peak is the centroid of the grid, (5.5, 7.5); W's
    # peak is pixel (0, 0). Distance sqrt(5.5² + 7.5²) pixels, here 1 mm each.
    r = score_maps(np.full(P, 3.0), mask(at(0, 0)))
    assert r["peak_distance"] == pytest.approx(math.hypot(5.5, 7.5))


def test_zero_map_peak_is_the_centroid_of_the_roi():
    roi = np.zeros(SHAPE)
    roi[2:5, 4:10] = 1  # centroid (3, 6.5)
    r = score_maps(np.zeros(P), mask(at(3, 4)), roi=roi.ravel())
    assert r["peak_distance"] == pytest.approx(2.5)


def test_peak_distance_uses_the_spacing_in_mm():
    s = np.zeros(P)
    s[at(1, 2)] = 1.0
    r = score_maps(s, mask(at(4, 6)), spacing=(2.0, 0.5))  # (3 * 2 mm, 4 * 0.5 mm)
    assert r["peak_distance"] == pytest.approx(math.hypot(6.0, 2.0))


def test_peak_distance_takes_the_centroid_of_tied_maxima():
    s = np.zeros(P)
    s[[at(0, 0), at(0, 4)]] = 5.0  # centroid (0, 2)
    w = np.full(P, 0.5)
    w[at(0, 2)] = 1.0
    assert score_maps(s, w)["peak_distance"] == 0.0


@pytest.mark.parametrize("name", ["ssim", "spearman_abs"])
def test_constant_map_makes_map_to_map_similarity_nan(name):
    assert math.isnan(score_maps(np.full(P, 2.0), G10)[name])


def test_constant_nonzero_reference_makes_ssim_nan_but_not_peak_distance():
    r = score_maps(np.arange(P), np.ones(P))  # W peak: the grid centre
    assert math.isnan(r["ssim"]) and math.isnan(r["spearman_abs"])
    assert r["peak_distance"] == pytest.approx(math.hypot(11 - 5.5, 15 - 7.5))


def test_ssim_of_a_map_with_itself_is_one():
    w = np.random.default_rng(0).random(P)
    assert score_maps(w, w)["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_ssim_without_a_window_inside_the_roi_is_nan():
    roi = np.zeros(SHAPE)
    roi[:6, :] = 1  # 6 rows: no 7 x 7 window fits
    assert math.isnan(score_maps(np.arange(P), G10, roi=roi.ravel())["ssim"])


def test_ssim_rejects_grids_smaller_than_its_window():
    with pytest.raises(ValueError, match=r"'ssim' needs every spatial axis >= 7.*\(6, 16\)"):
        compute(np.zeros((1, 6, 16)), np.zeros((1, 6, 16)), ["ssim"])


def test_spearman_abs_ignores_the_sign_option():
    s = np.random.default_rng(1).normal(size=P)  # mixed signs
    w = np.abs(s) / np.abs(s).max()
    values = {sign: score_maps(s, w, sign=sign)["spearman_abs"] for sign in SIGNS}
    assert values == {sign: pytest.approx(1.0) for sign in SIGNS}


# --------------------------------------------------------------------------- tolerance


def peak_at(row: int, col: int) -> np.ndarray:
    s = np.zeros(P)
    s[at(row, col)] = 1.0
    return s


def pointing(s, g, **kw) -> float:
    return score_maps(s, g, names=["pointing_game"], **kw)["pointing_game"]


G_BLOCK = mask(at(5, 5), at(5, 6), at(6, 5), at(6, 6))


@pytest.mark.parametrize(
    ("tolerance", "spacing", "expected"),
    [
        (0.0, None, 0.0),  # two pixels right of G: a miss without tolerance
        (1.99, None, 0.0),
        (2.0, None, 1.0),  # exactly 2 mm away: inclusive
        (2.0, (1.0, 1.5), 0.0),  # columns are 1.5 mm wide: 3 mm away
        (3.0, (1.0, 1.5), 1.0),
    ],
)
def test_pointing_tolerance_counts_maxima_within_the_radius(tolerance, spacing, expected):
    assert pointing(peak_at(5, 8), G_BLOCK, spacing=spacing,
                    pointing_tolerance_mm=tolerance) == expected  # fmt: skip


def test_pointing_tolerance_includes_a_diagonal_step_at_sqrt_two():
    assert pointing(peak_at(7, 7), G_BLOCK, pointing_tolerance_mm=math.sqrt(2)) == 1.0


def test_pointing_tolerance_keeps_fractional_credit_for_ties():
    s = peak_at(5, 8) + peak_at(0, 0) + peak_at(11, 15)  # one of three maxima is near
    assert pointing(s, G_BLOCK, pointing_tolerance_mm=2) == pytest.approx(1 / 3)


def test_pointing_tolerance_on_a_constant_map_credits_the_dilated_reference():
    # Pixels within 1 mm of the 2 x 2 block: the block and its 8 edge neighbours.
    assert pointing(np.full(P, 2.0), G_BLOCK, pointing_tolerance_mm=1.0) == pytest.approx(12 / 192)


def test_pointing_tolerance_with_empty_reference_is_nan():
    r = pointing(peak_at(0, 0), np.zeros(P), pointing_tolerance_mm=5)
    assert math.isnan(r)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1mm"])
def test_invalid_pointing_tolerance_is_rejected(bad):
    with pytest.raises(ValueError, match="`pointing_tolerance_mm` must be a finite number >= 0"):
        compute(np.zeros((1, 4, 4)), np.ones((1, 4, 4)), ["pointing_game"],
                pointing_tolerance_mm=bad)  # fmt: skip
