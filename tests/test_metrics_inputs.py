"""Inputs of benchmark.metrics.compute: resizing coarse maps, and validation at the edge."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmark.metrics import compute
from benchmark.metrics.preprocess import resize_to

REGION = ["precision", "irrelevant_fraction", "recall", "iou", "dice"]
PLAIN = ["pointing_game", "mass_accuracy", "rank_accuracy", "auroc", "auprc", "nss"]
GRADED = ["weighted_mass", "cc", "spearman", "sim", "kl"]
# The list of test_metrics.py: with 12 x 16 images in batches of 5-8 it reuses that kernel.
NAMES = [f"{m}@{t}" for m in REGION for t in ("0", "0.5", "top15", "otsu")] + PLAIN + GRADED


def np_linear_resize(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation, half-pixel centres, borders clamped (plain numpy)."""
    out = x.astype(np.float64)
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        coord = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(coord).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (coord - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis) * (1 - frac) + np.take(out, hi, axis) * frac
    return out


@pytest.mark.parametrize(("coarse", "fine"), [((3, 4), (12, 16)), ((2, 3, 4), (4, 9, 10))])
def test_resize_matches_independent_linear_interpolation(coarse, fine):
    x = np.random.default_rng(0).normal(size=coarse).astype(np.float32)
    got = np.asarray(resize_to(jnp.asarray(x), fine))
    np.testing.assert_allclose(got, np_linear_resize(x, fine), rtol=1e-5, atol=1e-6)
    mode = "bilinear" if len(coarse) == 2 else "trilinear"
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None, None], size=fine, mode=mode, align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_resize_of_a_ramp_is_the_ramp_at_pixel_centres():
    # Column j of 2 coarse columns -> 4 fine ones samples coarse x = (j + .5)/2 - .5,
    # clamped to [0, 1]: values 0, 0.25, 0.75, 1 for the ramp [0, 1].
    got = np.asarray(resize_to(jnp.asarray([[0.0, 1.0]] * 2), (4, 4)))
    np.testing.assert_allclose(got, np.tile([0.0, 0.25, 0.75, 1.0], (4, 1)))
    np.testing.assert_array_equal(np.asarray(resize_to(jnp.full((3, 3), 2.5), (7, 9))), 2.5)


def test_coarse_map_is_scored_as_its_upsampled_version():
    rng = np.random.default_rng(1)
    coarse = rng.normal(size=(6, 3, 4)).astype(np.float32)
    ref = (rng.random((6, 12, 16)) < 0.3).astype(np.float32)
    fine = np.stack([np_linear_resize(c, (12, 16)) for c in coarse]).astype(np.float32)
    names = ["mass_accuracy", "auroc", "iou@0.5"]
    got, want = compute(coarse, ref, names), compute(fine, ref, NAMES)
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)


# --------------------------------------------------------------------------- validation

S = np.random.default_rng(2).random((6, 12, 16)).astype(np.float32)
G = (np.random.default_rng(3).random((6, 12, 16)) < 0.4).astype(np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_saliency_is_rejected_naming_the_image(bad):
    s = S.copy()
    s[2, 1, 1] = bad
    with pytest.raises(ValueError, match="saliency image 2 contains NaN or inf"):
        compute(s, G, ["auroc"])


@pytest.mark.parametrize("roi", [None, np.ones(S.shape, bool)])
def test_non_finite_maps_are_named_across_chunks_of_the_kernel(roi):
    # The check runs inside the metric kernel, chunk by chunk: indices stay global.
    s = np.concatenate([S] * 4)
    s[[9, 17, 22]] = np.nan
    g = np.concatenate([G] * 4)
    with pytest.raises(ValueError, match=r"saliency image 9 contains NaN or inf \(and 2 "
                                         r"more: \[17, 22\]\)"):
        compute(s, g, ["pointing_game", "iou@top15"], chunk_size=4,
                roi=None if roi is None else np.concatenate([roi] * 4))


def test_non_finite_torch_saliency_is_rejected_too():
    s = torch.from_numpy(S.copy())
    s[5, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="saliency image 5"):
        compute(s, torch.from_numpy(G), ["auroc"])


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(6, 12, 16\).*\(3, 12, 16\)"):
        compute(S, G[:3], ["auroc"])


def test_saliency_finer_than_the_reference_is_rejected():
    with pytest.raises(ValueError, match=r"not finer.*\(6, 16, 12\).*\(6, 12, 16\)"):
        compute(np.zeros((6, 16, 12)), G, ["auroc"])


def test_binary_metric_rejects_a_graded_reference_naming_the_metric():
    with pytest.raises(ValueError, match="'dice@0.5' needs a binary reference"):
        compute(S, G * 0.5, ["weighted_mass", "dice@0.5"])


def test_graded_reference_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match=r"reference image 0 has values outside \[0, 1\]"):
        compute(S, G * 2, ["weighted_mass"])


def test_tuned_threshold_must_be_resolved_first():
    with pytest.raises(ValueError, match="'tuned' threshold must be resolved"):
        compute(S, G, ["irrelevant_fraction@tuned"])


def test_unknown_metric_message_lists_valid_names():
    with pytest.raises(ValueError, match="unknown metric 'ioux'.*auroc.*iou@<threshold>"):
        compute(S, G, ["ioux@top15"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sign": "negative"}, "`sign` must be one of positive, abs, signed"),
        ({"seed": -1}, "`seed` must be an integer"),
        ({"seed": 1.5}, "`seed` must be an integer"),
        ({"chunk_size": 0}, "`chunk_size` must be a positive integer"),
        ({"spacing": (1.0,)}, "`spacing` must be 2 positive finite numbers"),
        ({"spacing": (1.0, -0.5)}, "`spacing` must be 2 positive finite numbers"),
        ({"roi": np.ones((6, 12, 15), bool)}, r"`roi` shape \(6, 12, 15\) must equal"),
        ({"roi": np.full((6, 12, 16), 0.5)}, "`roi` must be boolean"),
    ],
)
def test_invalid_options_are_rejected_with_the_argument_named(options, message):
    with pytest.raises(ValueError, match=message):
        compute(S, G, ["auroc"], **options)


def test_valid_spacing_is_accepted_and_does_not_change_results():
    a = compute(S, G, NAMES, spacing=(0.7, 0.7))
    b = compute(S, G, NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(a[name], b[name])


def test_empty_batch_and_empty_metric_list():
    out = compute(np.zeros((0, 6, 6)), np.zeros((0, 6, 6)), ["auroc"])
    assert out["auroc"].shape == (0,) and out["auroc"].dtype == np.float64
    assert compute(S, G, []) == {}


def test_keys_are_the_names_as_given_and_values_float64_of_shape_n():
    names = [n if n != "precision@0.5" else "precision@0.50" for n in NAMES]
    out = compute(S, G, names)
    assert list(out) == names
    assert all(v.shape == (6,) and v.dtype == np.float64 for v in out.values())
