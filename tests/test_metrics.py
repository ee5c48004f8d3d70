"""benchmark.metrics.compute against an independent brute force (plain loops and sets).

The brute force below re-implements METRICS.md in float64 Python from the float32 maps:
pixel sets, pairwise comparisons, exact-fraction Otsu, scikit-learn's definition of
average precision, scipy for rank statistics. The only thing shared with the package is
the jitter keys (``tiebreak_keys``), which *define* the tie-breaking rule.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats
import torch

from benchmark.metrics import compute, tiebreak_keys

REGION_METRICS = ["precision", "irrelevant_fraction", "recall", "iou", "dice"]
THRESHOLDS = ["0", "0.5", "top15", "otsu"]
BINARY_PLAIN = ["pointing_game", "mass_accuracy", "rank_accuracy", "auroc", "auprc", "nss"]
GRADED = ["weighted_mass", "cc", "spearman", "sim", "kl"]
# Every metric; the graded ones accept a binary W too. Test files that score 12 x 16
# images in batches of 5-8 with exactly this list share one compiled kernel (compiling
# dominates the run time of these tests).
NAMES = [f"{m}@{t}" for m in REGION_METRICS for t in THRESHOLDS] + BINARY_PLAIN + GRADED
KL_EPS = 2.2e-16


# --------------------------------------------------------------------------- brute force


def bf_region(s: np.ndarray, omega: list[int], rule: str, keys: np.ndarray) -> set[int]:
    """Attention region A ⊆ Ω by plain loops."""
    lo, hi = min(s[p] for p in omega), max(s[p] for p in omega)
    norm = {p: (s[p] - lo) / (hi - lo) if hi > lo else 0.0 for p in omega}
    if rule.startswith("top"):
        k = max(1, math.floor(Fraction(rule[3:]) * len(omega) / 100 + Fraction(1, 2)))
        order = sorted(omega, key=lambda p: (-s[p], int(keys[p]), p))
        return set(order[:k])
    if rule == "otsu":
        bins = {p: min(math.floor(norm[p] * 256), 255) for p in omega}
        hist = [0] * 256
        for b in bins.values():
            hist[b] += 1
        # Exact integers: σ_B² ∝ (S_B n_A - S_A n_B)² / (n_B n_A), S = Σ bin index.
        best_t, best_var = 1, Fraction(-1)
        for t in range(1, 256):
            nb, na = sum(hist[:t]), sum(hist[t:])
            sb = sum(i * hist[i] for i in range(t))
            sa = sum(i * hist[i] for i in range(t, 256))
            var = Fraction((sb * na - sa * nb) ** 2, nb * na) if nb and na else Fraction(0)
            if var > best_var:
                best_t, best_var = t, var
        return {p for p in omega if bins[p] >= best_t}
    return {p for p in omega if norm[p] >= float(rule)}


def bf_region_metric(name: str, a: set[int], g: set[int]) -> float:
    if not g:
        return math.nan
    inter = len(a & g)
    if name in ("precision", "irrelevant_fraction"):
        if not a:
            return math.nan
        return inter / len(a) if name == "precision" else 1 - inter / len(a)
    if name == "recall":
        return inter / len(g)
    if name == "iou":
        return inter / len(a | g)
    return 2 * inter / (len(a) + len(g))


def bf_auroc(s: np.ndarray, g: set[int], omega: list[int]) -> float:
    pos = [s[p] for p in omega if p in g]
    neg = [s[p] for p in omega if p not in g]
    if not pos or not neg:
        return math.nan
    wins = sum((x > y) + 0.5 * (x == y) for x in pos for y in neg)
    return wins / (len(pos) * len(neg))


def bf_auprc(s: np.ndarray, g: set[int], omega: list[int]) -> float:
    """scikit-learn's AP: Σ over distinct thresholds of ΔRecall · Precision."""
    if not g or len(g) == len(omega):
        return math.nan
    ap, prev_recall = 0.0, 0.0
    for t in sorted({s[p] for p in omega}, reverse=True):
        selected = [p for p in omega if s[p] >= t]
        tp = sum(p in g for p in selected)
        ap += (tp / len(g) - prev_recall) * tp / len(selected)
        prev_recall = tp / len(g)
    return ap


def bf_distribution(x: np.ndarray) -> np.ndarray:
    x = (x - x.min()) / (x.max() - x.min())
    return x / x.sum()


def bf_scores(
    sal: np.ndarray, ref: np.ndarray, roi: np.ndarray | None, names: list[str],
    sign: str = "positive", seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Every requested metric for one image, from scratch."""
    s = sal.astype(np.float32).astype(np.float64).ravel()
    s = {"positive": np.maximum(s, 0), "abs": np.abs(s), "signed": s}[sign]
    ref = ref.astype(np.float64).ravel()
    roi_flat = np.ones(s.size, bool) if roi is None else roi.ravel().astype(bool)
    omega = [p for p in range(s.size) if roi_flat[p]]
    g = {p for p in omega if ref[p] == 1}
    keys = tiebreak_keys(seed, s.size)
    so, wo = s[omega], ref[omega]
    constant = so.max() == so.min()
    out = {}
    for full in names:
        name, _, rule = full.partition("@")
        if rule:
            value = bf_region_metric(name, bf_region(s, omega, rule, keys), g)
        elif name == "pointing_game":
            peak = max(s[p] for p in omega)
            m = {p for p in omega if s[p] == peak}
            value = len(m & g) / len(m) if g else math.nan
        elif name == "mass_accuracy":
            total = sum(s[p] for p in omega)
            value = sum(s[p] for p in g) / total if g and total != 0 else math.nan
        elif name == "rank_accuracy":
            order = sorted(omega, key=lambda p: (-s[p], int(keys[p]), p))
            value = len(set(order[: len(g)]) & g) / len(g) if g else math.nan
        elif name == "auroc":
            value = bf_auroc(s, g, omega)
        elif name == "auprc":
            value = bf_auprc(s, g, omega)
        elif name == "nss":
            z = (so - so.mean()) / so.std() if not constant else so  # np.std: ddof = 0
            value = z[[p in g for p in omega]].mean() if g and not constant else math.nan
        elif name == "weighted_mass":
            value = (so * wo).sum() / so.sum() if so.sum() != 0 and wo.sum() > 0 else math.nan
        elif constant or wo.max() == wo.min():
            value = math.nan  # cc, spearman, sim, kl need two non-constant maps
        elif name == "cc":
            value = np.corrcoef(so, wo)[0, 1]
        elif name == "spearman":
            value = scipy.stats.spearmanr(so, wo).statistic
        elif name == "sim":
            value = np.minimum(bf_distribution(so), bf_distribution(wo)).sum()
        elif name == "kl":
            sh, wh = bf_distribution(so), bf_distribution(wo)
            value = (wh * np.log(KL_EPS + wh / (sh + KL_EPS))).sum()
        else:
            raise AssertionError(full)
        out[full] = float(value)
    return out


def bf_batch(sal, ref, roi, names, **kw) -> dict[str, np.ndarray]:
    rows = [
        bf_scores(sal[i], ref[i], None if roi is None else roi[i], names, **kw)
        for i in range(sal.shape[0])
    ]
    return {n: np.array([r[n] for r in rows]) for n in names}


def assert_matches(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol=2e-5):
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.float64 and got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
def test_otsu_threshold_matches_exact_brute_force(seed):
    # Dense values (many occupied bins), so a threshold off by one bin changes A.
    import jax.numpy as jnp

    from benchmark.metrics.threshold import otsu_threshold

    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.beta(2, 6, 3000), rng.beta(7, 2, 1000 * (seed + 1))])
    x = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
    omega = list(range(x.size))
    a = bf_region(x.astype(np.float64), omega, "otsu", np.zeros(x.size, np.uint32))
    tau = float(otsu_threshold(jnp.asarray(x), jnp.ones(x.size, bool)))
    assert a == {p for p in omega if x[p] >= tau}
    assert tau * 256 == int(tau * 256)  # a bin edge


# --------------------------------------------------------------------------- random data


def make_batch(seed: int, n: int, shape: tuple[int, ...], quantised: bool):
    """Mixed-sign maps, references correlated with them, random roi (80% of pixels).

    ``quantised`` rounds to quarters: many ties, including ties at 0 after S⁺.
    """
    rng = np.random.default_rng(seed)
    sal = rng.normal(size=(n, *shape)).astype(np.float32)
    if quantised:
        sal = (np.round(sal * 2) / 4).astype(np.float32)
    noise = rng.normal(size=sal.shape)
    cut = rng.uniform(0.5, 2.0, size=(n,) + (1,) * len(shape))
    ref = ((sal + 1.5 * noise) > cut).astype(np.float32)
    roi = rng.random(sal.shape) < 0.8
    return sal, ref, roi


@pytest.fixture(scope="module")
def batch_2d():
    a = make_batch(1, 3, (12, 16), quantised=False)
    b = make_batch(2, 3, (12, 16), quantised=True)
    return tuple(np.concatenate([x, y]) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def batch_3d():
    a = make_batch(3, 2, (5, 6, 7), quantised=False)
    b = make_batch(4, 2, (5, 6, 7), quantised=True)
    return tuple(np.concatenate([x, y]) for x, y in zip(a, b, strict=True))


def test_all_metrics_match_brute_force_2d(batch_2d):
    sal, ref, _ = batch_2d
    assert_matches(compute(sal, ref, NAMES), bf_batch(sal, ref, None, NAMES))


def test_all_metrics_with_roi_match_brute_force_on_roi_pixels(batch_2d):
    sal, ref, roi = batch_2d
    got = compute(sal, ref, NAMES, roi=roi)
    assert_matches(got, bf_batch(sal, ref, roi, NAMES))


def test_all_metrics_match_brute_force_3d(batch_3d):
    sal, ref, roi = batch_3d
    got = compute(sal, ref, NAMES, roi=roi, seed=7)
    assert_matches(got, bf_batch(sal, ref, roi, NAMES, seed=7))


def test_graded_metrics_with_graded_reference_match_brute_force(batch_2d):
    sal, _, roi = batch_2d
    rng = np.random.default_rng(5)
    # Graded W: the mean of four annotator masks, so values in {0, .25, .5, .75, 1}.
    w = (rng.random((4, *sal.shape)) < 0.3).mean(axis=0).astype(np.float32)
    assert_matches(compute(sal, w, GRADED, roi=roi), bf_batch(sal, w, roi, GRADED), rtol=1e-4)


@pytest.mark.parametrize("sign", ["abs", "signed"])
def test_sign_options_match_brute_force(batch_2d, sign):
    sal, ref, roi = batch_2d
    got = compute(sal, ref, NAMES, roi=roi, sign=sign)
    assert_matches(got, bf_batch(sal, ref, roi, NAMES, sign=sign))


def test_auroc_equals_mann_whitney_u_over_n1_n0(batch_2d):
    sal, ref, _ = batch_2d
    got = compute(sal, ref, NAMES)["auroc"]  # same plan as above: no recompile
    for i in range(sal.shape[0]):
        s = np.maximum(sal[i].astype(np.float64), 0).ravel()
        g = ref[i].ravel() == 1
        u = scipy.stats.mannwhitneyu(s[g], s[~g]).statistic
        assert got[i] == pytest.approx(u / (g.sum() * (~g).sum()), rel=1e-5)


def test_torch_numpy_and_jax_inputs_give_identical_results(batch_2d):
    import jax.numpy as jnp

    sal, ref, roi = batch_2d
    from_numpy = compute(sal, ref, NAMES, roi=roi)
    from_torch = compute(torch.from_numpy(sal), torch.from_numpy(ref), NAMES,
                         roi=torch.from_numpy(roi))  # fmt: skip
    from_jax = compute(jnp.asarray(sal), jnp.asarray(ref), NAMES, roi=jnp.asarray(roi))
    for name in NAMES:
        np.testing.assert_array_equal(from_torch[name], from_numpy[name])
        np.testing.assert_array_equal(from_jax[name], from_numpy[name])


def test_result_does_not_depend_on_chunk_size(batch_2d):
    # N = 6 is not a multiple of 4: the second chunk is padded. The baseline reuses the
    # kernel of the tests above, so only one extra (small) kernel compiles.
    sal, ref, roi = batch_2d
    base = compute(sal, ref, NAMES, roi=roi)
    names = ["iou@top15", "recall@otsu", "auroc", "pointing_game"]
    other = compute(sal, ref, names, roi=roi, chunk_size=4)
    for name in names:
        np.testing.assert_allclose(other[name], base[name], rtol=1e-6, err_msg=name)


def test_roi_equals_cropping_the_images_to_the_roi():
    # Continuous maps (no ties), so the jitter, which depends on the grid, plays no part.
    sal, ref, _ = make_batch(12, 6, (12, 16), quantised=False)
    roi = np.zeros(sal.shape, bool)
    roi[:, 2:8, 3:11] = True
    with_roi = compute(sal, ref, NAMES, roi=roi)
    names = ["iou@top15", "recall@otsu", "auroc", "nss"]
    cropped = compute(sal[:, 2:8, 3:11], ref[:, 2:8, 3:11], names)
    for name in names:
        np.testing.assert_allclose(with_roi[name], cropped[name], rtol=1e-5, err_msg=name)
