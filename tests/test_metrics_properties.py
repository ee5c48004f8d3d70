"""Property-based tests: every metric against an independent numpy brute force.

Hypothesis draws batches of two maps on a 10 x 12 or 7 x 8 x 9 grid (2D and 3D; every
axis >= 7 so that ``ssim`` has windows), with continuous, quantised (many ties), constant,
all-zero and mixed-sign maps, random / empty / full / single-pixel masks, graded maps,
an optional roi and every sign option. The brute force works in float64 on pixel lists
with the textbook formulas (pairwise comparisons, explicit windows, explicit rankings);
where a standard library computes the same quantity, the kernel is compared with it too.

Tolerance: 1e-5 (relative and absolute) everywhere. The Otsu rule uses a histogram, but
an exact one (integer bin counts, exact-fraction variance in the brute force), so the
region metrics at ``otsu`` need no looser tolerance; only the comparison with
skimage's Otsu, whose threshold is a bin centre rather than a bin edge, is within one bin
width (1/256).

The grids and the batch size are fixed so that each test compiles one kernel per grid;
``max_examples`` keeps all of this file well under a minute.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import skimage.filters
import skimage.metrics
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchmark.metrics import compute, tiebreak_keys
from benchmark.metrics.threshold import otsu_threshold

SHAPES = [(10, 12), (7, 8, 9)]
N = 2
KL_EPS = 2.2e-16
TOL = {"rtol": 1e-5, "atol": 1e-5}  # numpy.testing
APPROX = {"rel": 1e-5, "abs": 1e-5}  # the same for pytest.approx
QUANTA = [-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0]
SETTINGS = settings(max_examples=25, deadline=None)

# --------------------------------------------------------------------------- strategies


@st.composite
def saliency_maps(draw, shape):
    """Continuous, quantised (ties), constant, all-zero or all-negative; mixed signs."""
    kind = draw(st.sampled_from(["continuous", "quantised", "constant", "zero", "negative"]))
    if kind == "continuous":
        elements = st.floats(-4, 4, width=32, allow_subnormal=False)
        return draw(hnp.arrays(np.float32, shape, elements=elements))
    if kind == "quantised":
        return draw(hnp.arrays(np.float32, shape, elements=st.sampled_from(QUANTA)))
    if kind == "constant":
        return np.full(shape, draw(st.sampled_from(QUANTA)), np.float32)
    if kind == "zero":
        return np.zeros(shape, np.float32)
    return -np.abs(draw(hnp.arrays(np.float32, shape, elements=st.floats(0.125, 3, width=32))))


@st.composite
def masks(draw, shape):
    """Random, empty, full or single-pixel binary masks (float32 0/1)."""
    kind = draw(st.sampled_from(["random", "random", "empty", "full", "single"]))
    if kind == "random":
        return draw(hnp.arrays(bool, shape)).astype(np.float32)
    m = np.full(shape, kind == "full", np.float32)
    if kind == "single":
        m[tuple(draw(st.integers(0, n - 1)) for n in shape)] = 1
    return m


@st.composite
def graded_maps(draw, shape):
    """Graded W: a mask, a mean of annotator masks (ties), continuous, or all zero."""
    kind = draw(st.sampled_from(["mask", "annotators", "continuous", "zero"]))
    if kind == "mask":
        return draw(masks(shape))
    if kind == "annotators":
        raters = draw(hnp.arrays(bool, (4, *shape)))
        return raters.mean(axis=0).astype(np.float32)
    if kind == "continuous":
        elements = st.floats(0, 1, width=32, allow_subnormal=False)
        return draw(hnp.arrays(np.float32, shape, elements=elements))
    return np.zeros(shape, np.float32)


@st.composite
def batches(draw, graded=False):
    """(saliency, reference, roi or None, sign, seed) for N images on one drawn grid."""
    shape = draw(st.sampled_from(SHAPES))
    make_ref = graded_maps if graded else masks
    sal = np.stack([draw(saliency_maps(shape)) for _ in range(N)])
    ref = np.stack([draw(make_ref(shape)) for _ in range(N)])
    roi = None
    if draw(st.booleans()):
        roi = np.stack([draw(hnp.arrays(bool, shape)) | draw(masks(shape)).astype(bool)
                        for _ in range(N)])  # fmt: skip
    sign = draw(st.sampled_from(["positive", "abs", "signed"]))
    return sal, ref, roi, sign, draw(st.integers(0, 2**32 - 1))


# --------------------------------------------------------------------------- brute force


def flat(sal, ref, roi, sign):
    """Float64 copies: sign-applied S, reference, Ω (bool) as flat arrays."""
    s = sal.astype(np.float64).ravel()
    s = {"positive": np.maximum(s, 0), "abs": np.abs(s), "signed": s}[sign]
    omega = np.ones(s.size, bool) if roi is None else roi.ravel().astype(bool)
    return s, ref.astype(np.float64).ravel(), omega


def normalised(x, omega):
    lo, hi = x[omega].min(), x[omega].max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def bf_otsu_bin(x):
    """Smallest split t maximising the exact between-class variance of 256 bins."""
    hist = np.bincount(np.minimum(np.floor(x * 256).astype(int), 255), minlength=256)
    best_t, best = 1, Fraction(-1)
    for t in range(1, 256):
        nb, na = int(hist[:t].sum()), int(hist[t:].sum())
        sb = int((np.arange(t) * hist[:t]).sum())
        sa = int((np.arange(t, 256) * hist[t:]).sum())
        var = Fraction((sb * na - sa * nb) ** 2, nb * na) if nb and na else Fraction(0)
        if var > best:
            best_t, best = t, var
    return best_t


def bf_topk_order(s, omega, seed):
    """Pixels of Ω by descending S, then jitter key, then index."""
    keys = tiebreak_keys(seed, s.size).astype(np.int64)
    idx = np.flatnonzero(omega)
    return idx[np.lexsort((idx, keys[idx], -s[idx]))]


def bf_region(rule, s, omega, seed):
    a = np.zeros(s.size, bool)
    if not omega.any():
        return a
    if rule.startswith("top"):
        k = max(1, math.floor(Fraction(rule[3:]) * int(omega.sum()) / 100 + Fraction(1, 2)))
        a[bf_topk_order(s, omega, seed)[:k]] = True
        return a
    norm = normalised(s, omega)
    if rule == "otsu":
        t = bf_otsu_bin(norm[omega])
        return omega & (np.minimum(np.floor(norm * 256), 255) >= t)
    return omega & (norm >= float(rule))


def bf_region_metric(name, a, g):
    na, ng, nag = a.sum(), g.sum(), (a & g).sum()
    if ng == 0 or (na == 0 and name in ("precision", "irrelevant_fraction")):
        return math.nan
    return {
        "precision": nag / max(na, 1), "irrelevant_fraction": 1 - nag / max(na, 1),
        "recall": nag / ng, "iou": nag / (na + ng - nag), "dice": 2 * nag / (na + ng),
    }[name]  # fmt: skip


def bf_ranks(x):
    """Average ranks (1-based) by explicit comparison: #{<} + (#{=} + 1) / 2."""
    return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])


def bf_pearson(x, y):
    if x.max() == x.min() or y.max() == y.min():
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    return (xc * yc).sum() / math.sqrt((xc**2).sum() * (yc**2).sum())


def bf_distribution(x):
    x = (x - x.min()) / (x.max() - x.min())
    return x / x.sum()


def bf_peak(x, omega, shape):
    """Centroid of the maximal pixels of Ω, in index units."""
    xs = np.where(omega, x, -np.inf)
    return np.argwhere((xs == xs.max()).reshape(shape)).mean(axis=0)


def bf_ssim(x, y, omega, shape):
    """Mean SSIM over explicit 7-sided windows lying fully inside Ω (sample moments)."""
    x, y, omega = (normalised(x, omega).reshape(shape), normalised(y, omega).reshape(shape),
                   omega.reshape(shape))  # fmt: skip
    c1, c2, values = 0.01**2, 0.03**2, []
    for corner in np.ndindex(*(n - 6 for n in shape)):
        win = tuple(slice(c, c + 7) for c in corner)
        if not omega[win].all():
            continue
        a, b = x[win].ravel(), y[win].ravel()
        cov = np.cov(a, b)  # ddof = 1
        num = (2 * a.mean() * b.mean() + c1) * (2 * cov[0, 1] + c2)
        den = (a.mean() ** 2 + b.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)
        values.append(num / den)
    return np.mean(values) if values else math.nan


def bf_metric(name, sal, ref, roi, sign, seed=0, spacing=None, tolerance=0.0):
    """One metric of one image from scratch (``name`` may carry ``@rule``)."""
    shape = sal.shape
    s, w, omega = flat(sal, ref, roi, sign)
    g = (w == 1) & omega
    base, _, rule = name.partition("@")
    so, wo = s[omega], w[omega]
    s_constant = so.size == 0 or so.max() == so.min()
    w_constant = wo.size == 0 or wo.max() == wo.min()
    if rule:
        return bf_region_metric(base, bf_region(rule, s, omega, seed), g)
    if base in ("pointing_game", "mass_accuracy", "rank_accuracy", "auroc", "auprc", "nss"):
        if not g.any():
            return math.nan
        pos, neg = s[g], s[omega & ~g]
        if base == "pointing_game":
            maxima = np.argwhere(((s == so.max()) & omega).reshape(shape))
            targets = np.argwhere(g.reshape(shape))
            sp = np.ones(len(shape)) if spacing is None else np.asarray(spacing)
            dist = np.sqrt((((maxima[:, None] - targets[None]) * sp) ** 2).sum(-1)).min(1)
            return float((dist <= tolerance).mean())
        if base == "mass_accuracy":
            return pos.sum() / so.sum() if so.sum() != 0 else math.nan
        if base == "rank_accuracy":
            return g[bf_topk_order(s, omega, seed)[: g.sum()]].mean()
        if base == "nss":
            return math.nan if s_constant else ((pos - so.mean()) / so.std()).mean()
        if neg.size == 0:
            return math.nan
        if base == "auroc":
            return ((pos[:, None] > neg) + 0.5 * (pos[:, None] == neg)).mean()
        ap, prev = 0.0, 0.0  # auprc: Σ over distinct thresholds of ΔRecall · Precision
        for t in np.unique(so)[::-1]:
            tp = (pos >= t).sum()
            ap += (tp / pos.size - prev) * tp / (so >= t).sum()
            prev = tp / pos.size
        return ap
    if not (wo > 0).any():
        return math.nan  # empty graded reference
    if base == "weighted_mass":
        return (so * wo).sum() / so.sum() if so.sum() != 0 else math.nan
    if base == "peak_distance":
        sp = np.ones(len(shape)) if spacing is None else np.asarray(spacing)
        delta = (bf_peak(s, omega, shape) - bf_peak(w, omega, shape)) * sp
        return math.sqrt((delta**2).sum())
    if base == "spearman_abs":
        a = np.abs(sal.astype(np.float64).ravel())[omega]
        return bf_pearson(bf_ranks(a), bf_ranks(wo))
    if s_constant or w_constant:
        return math.nan
    if base == "cc":
        return bf_pearson(so, wo)
    if base == "spearman":
        return bf_pearson(bf_ranks(so), bf_ranks(wo))
    if base == "sim":
        return np.minimum(bf_distribution(so), bf_distribution(wo)).sum()
    if base == "kl":
        sh, wh = bf_distribution(so), bf_distribution(wo)
        return (wh * np.log(KL_EPS + wh / (sh + KL_EPS))).sum()
    if base == "ssim":
        return bf_ssim(s, w, omega, shape)
    raise AssertionError(name)


def check(names, batch, **options):
    """compute() on the batch equals the brute force, image by image, for ``names``."""
    sal, ref, roi, sign, seed = batch
    got = compute(sal, ref, names, roi=roi, sign=sign, seed=seed, **options)
    bf_options = {"spacing": options.get("spacing"),
                  "tolerance": options.get("pointing_tolerance_mm", 0.0)}  # fmt: skip
    for name in names:
        want = [bf_metric(name, sal[i], ref[i], None if roi is None else roi[i], sign, seed,
                          **bf_options) for i in range(N)]  # fmt: skip
        tol = dict(TOL)
        if name == "nss":
            # nss sums z-scores over G, which cancel: the float32 kernel's error scales
            # with the largest |z| (up to sqrt(N)), so atol is 1e-5 times that scale.
            tol["atol"] = 1e-5 * max(1.0, _max_abs_z(sal, sign))
        np.testing.assert_allclose(got[name], want, **tol, err_msg=name)
    return got


def _max_abs_z(sal, sign):
    s = np.asarray(sal, np.float64).reshape(len(sal), -1)
    s = np.maximum(s, 0) if sign == "positive" else np.abs(s) if sign == "abs" else s
    sd = s.std(axis=1, keepdims=True)
    z = np.abs(s - s.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    return float(z.max())


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("metric", ["precision", "irrelevant_fraction", "recall", "iou", "dice"])
@SETTINGS
@given(batch=batches(), tau=st.sampled_from(["0", "0.25", "0.5", "0.9", "1"]),
       k=st.sampled_from(["1", "15", "50", "100"]))  # fmt: skip
def test_region_metric_matches_brute_force(metric, batch, tau, k):
    # Fixed tau, top-K and Otsu in one call: one plan (tau and K are kernel arguments).
    check([f"{metric}@{tau}", f"{metric}@top{k}", f"{metric}@otsu"], batch)


@pytest.mark.parametrize(
    "metric", ["pointing_game", "mass_accuracy", "rank_accuracy", "auroc", "auprc", "nss"]
)
@SETTINGS
@given(batch=batches())
def test_binary_metric_matches_brute_force(metric, batch):
    check([metric], batch)


@pytest.mark.parametrize(
    "metric", ["weighted_mass", "cc", "spearman", "sim", "kl", "spearman_abs", "ssim",
               "peak_distance"],
)  # fmt: skip
@SETTINGS
@given(batch=batches(graded=True))
def test_graded_metric_matches_brute_force(metric, batch):
    check([metric], batch)


@SETTINGS
@given(batch=batches(graded=True), spacing=st.sampled_from([None, (0.5, 2.0), (3.0, 1.0, 0.7)]))
def test_peak_distance_in_mm_matches_brute_force(batch, spacing):
    if spacing is not None and len(spacing) != batch[0].ndim - 1:
        spacing = None
    check(["peak_distance"], batch, spacing=spacing)


@SETTINGS
@given(batch=batches(), tolerance=st.sampled_from([0.0, 1.0, 1.5, 2.5, 4.0]),
       anisotropic=st.booleans())  # fmt: skip
def test_pointing_game_with_tolerance_matches_pairwise_distances(batch, tolerance, anisotropic):
    # (0.5, 2): a distance of exactly 2.5 mm exists (3 and 1 pixels), so the inclusive
    # boundary is exercised; the brute force measures every maximum-to-G distance.
    ndim = batch[0].ndim - 1
    spacing = ((0.5, 2.0) if ndim == 2 else (0.5, 2.0, 1.0)) if anisotropic else None
    check(["pointing_game"], batch, spacing=spacing, pointing_tolerance_mm=tolerance)


# --------------------------------------------------------------------------- libraries


def images(batch):
    """(sign-applied S, reference, Ω) per image, float64 flat arrays restricted to Ω."""
    sal, ref, roi, sign, _ = batch
    for i in range(N):
        s, w, omega = flat(sal[i], ref[i], None if roi is None else roi[i], sign)
        yield s[omega], w[omega]


@SETTINGS
@given(batch=batches())
def test_auroc_and_auprc_match_scikit_learn(batch):
    sal, ref, roi, sign, _ = batch
    got = compute(sal, ref, ["auroc", "auprc"], roi=roi, sign=sign)
    for i, (s, g) in enumerate(images(batch)):
        if 0 < g.sum() < g.size:
            auc = sklearn.metrics.roc_auc_score(g, s)
            ap = sklearn.metrics.average_precision_score(g, s)
            assert got["auroc"][i] == pytest.approx(auc, **APPROX)
            assert got["auprc"][i] == pytest.approx(ap, **APPROX)
        else:  # scikit-learn raises or warns here; our rule is NaN
            assert math.isnan(got["auroc"][i]) and math.isnan(got["auprc"][i])


@SETTINGS
@given(batch=batches(graded=True))
def test_correlations_match_scipy(batch):
    sal, ref, roi, sign, _ = batch
    got = compute(sal, ref, ["cc", "spearman", "spearman_abs"], roi=roi, sign=sign)
    for i, (s, w) in enumerate(images(batch)):
        raw = np.abs(sal[i].astype(np.float64).ravel())
        raw = raw if roi is None else raw[roi[i].ravel()]
        cases = [("cc", scipy.stats.pearsonr, s), ("spearman", scipy.stats.spearmanr, s),
                 ("spearman_abs", scipy.stats.spearmanr, raw)]  # fmt: skip
        for name, fn, x in cases:
            if x.size < 2 or np.ptp(x) == 0 or np.ptp(w) == 0:
                assert math.isnan(got[name][i]), name
            else:
                assert got[name][i] == pytest.approx(fn(x, w).statistic, **APPROX), name


@SETTINGS
@given(x=hnp.arrays(np.float32, st.sampled_from([40, 2000]), elements=st.floats(0, 1, width=32)))
def test_otsu_threshold_is_within_one_bin_of_skimage(x):
    # skimage thresholds at the centre of the last bin of the lower class (A = x > thr);
    # ours is the lower edge of the first bin of the upper class (A = x >= tau): the
    # same split puts them half a bin apart. Maps with one value have no split.
    if x.max() == x.min():
        return
    x = (x - x.min()) / (x.max() - x.min())
    tau = float(otsu_threshold(jnp.asarray(x), jnp.ones(x.size, bool)))
    assert tau == bf_otsu_bin(x.astype(np.float64)) / 256  # exact rule, exact histogram
    assert abs(tau - skimage.filters.threshold_otsu(x.astype(np.float64), nbins=256)) <= 1 / 256


@SETTINGS
@given(batch=batches(graded=True))
def test_ssim_matches_skimage(batch):
    sal, ref, _, sign, _ = batch
    got = compute(sal, ref, ["ssim"], sign=sign)["ssim"]  # skimage has no roi
    for i in range(N):
        s, w, omega = flat(sal[i], ref[i], None, sign)
        if np.ptp(s) == 0 or np.ptp(w) == 0:
            assert math.isnan(got[i])
            continue
        x, y = normalised(s, omega).reshape(sal.shape[1:]), normalised(w, omega)
        want = skimage.metrics.structural_similarity(
            x, y.reshape(x.shape), win_size=7, data_range=1, gaussian_weights=False
        )
        assert got[i] == pytest.approx(want, **APPROX)
