"""JAX kernels of the binary-reference metrics, for one flattened image.

Every kernel takes float32 / bool arrays of shape ``(P,)`` (P pixels of the reference
grid, C order) and returns a float32 scalar, NaN where METRICS.md says the metric is
undefined. Conventions shared by all kernels:

- ``s`` is the sign-transformed saliency (S⁺, |S| or S), already resized;
- ``roi`` is Ω; ``g`` is G ∩ Ω (the caller intersects), so every count is within Ω;
- counts are exact int32 sums (P < 2**31); float sums use :func:`tree_sum`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmark.metrics.counting import RADIX, count
from benchmark.metrics.ranking import PositiveCounts, positive_counts
from benchmark.metrics.threshold import order_keys

NAN = jnp.float32(jnp.nan)
#: The metrics :func:`overlap_scores` returns, each scored on an attention region.
REGION_METRICS = ("precision", "irrelevant_fraction", "recall", "iou", "dice")


def tree_sum(x: jax.Array, block: int = 64) -> jax.Array:
    """Blockwise pairwise-style sum of a 1-D float32 array.

    A float32 running sum over a 256**3 volume can lose several digits whatever the
    backend does; summing blocks of ``block`` values level by level bounds the error
    to about ``block * levels`` ulps (levels = log_block(P), 4 for 256**3) while
    keeping the compiled program small.
    """
    while x.shape[0] > 1:
        pad = -x.shape[0] % block if x.shape[0] > block else 0
        if pad:
            x = jnp.concatenate([x, jnp.zeros(pad, x.dtype)])
        x = x.reshape(-1, min(block, x.shape[0])).sum(axis=1)
    return x[0]


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` in float32, NaN where ``den == 0``."""
    den_f = den.astype(jnp.float32)
    return jnp.where(den != 0, num.astype(jnp.float32) / jnp.where(den != 0, den_f, 1.0), NAN)


def overlap_scores(n_a: jax.Array, n_g: jax.Array, n_ag: jax.Array) -> dict[str, jax.Array]:
    """precision, irrelevant_fraction, recall, iou and dice from the three region counts.

    Parameters
    ----------
    n_a, n_g, n_ag : jax.Array, int32, broadcastable shapes
        |A|, |G| and |A ∩ G|; any shape, so one call scores a whole grid of thresholds
        (:func:`benchmark.metrics.compute_curve`) with the same rules as one region.

    Returns
    -------
    dict of str to float32 array (the broadcast shape)
        All NaN when G is empty. When A is empty (G not): precision and
        irrelevant_fraction NaN, recall, iou and dice 0.
    """
    has_g = n_g > 0
    precision = jnp.where(has_g, _ratio(n_ag, n_a), NAN)
    return {
        "precision": precision,
        "irrelevant_fraction": 1.0 - precision,
        "recall": _ratio(n_ag, n_g),
        "iou": jnp.where(has_g, _ratio(n_ag, n_a + n_g - n_ag), NAN),
        "dice": jnp.where(has_g, _ratio(2 * n_ag, n_a + n_g), NAN),
    }


def region_overlap(a: jax.Array, g: jax.Array) -> dict[str, jax.Array]:
    """The five region metrics of an attention region A against G (:func:`overlap_scores`).

    Parameters
    ----------
    a, g : jax.Array, shape (P,), bool
        Attention region and reference, both already restricted to Ω.
    """
    return overlap_scores(count(a), count(g), count(a & g))


def pointing_game(
    s: jax.Array, g: jax.Array, roi: jax.Array, hit: jax.Array | None = None,
    peak: jax.Array | None = None,
) -> jax.Array:
    """|M ∩ H| / |M| with M the pixels of Ω where S is maximal and H the hit region.

    ``hit`` is H = {p : distance(p, G) <= tolerance} from
    :func:`benchmark.metrics.distance.tolerance_hits`; None means tolerance 0, H = G.
    Ties get fractional credit, so a constant map scores |H ∩ Ω| / |Ω| (|G| / |Ω| at
    tolerance 0). NaN when G is empty. ``peak``, optional, is max S over Ω when the
    caller has it (:func:`benchmark.metrics.preprocess.signed_bounds`).
    """
    if peak is None:
        peak = jnp.max(jnp.where(roi, s, -jnp.inf))
    m = roi & (s == peak)
    h = g if hit is None else hit
    return pointing_score(count(m & h), count(m), count(g))


def pointing_score(n_mh: jax.Array, n_m: jax.Array, n_g: jax.Array) -> jax.Array:
    """The pointing game from |M ∩ H|, |M| and |G| (int32): NaN when G is empty."""
    return jnp.where(n_g > 0, _ratio(n_mh, n_m), NAN)


def mass_accuracy(s: jax.Array, g: jax.Array, roi: jax.Array) -> jax.Array:
    """Σ_G S / Σ_Ω S (S = S⁺ by default). NaN when G is empty or Σ_Ω S = 0."""
    total = tree_sum(jnp.where(roi, s, 0.0))
    inside = tree_sum(jnp.where(g, s, 0.0))
    return jnp.where(count(g) > 0, _ratio(inside, total), NAN)


def rank_accuracy(top_g: jax.Array, g: jax.Array) -> jax.Array:
    """|top-K(S) ∩ G| / K with K = |G| and the top-K rule of :mod:`.threshold`.

    ``top_g`` is the top-|G| region, :func:`~benchmark.metrics.threshold.topk_region`
    with ``k = |G|`` (G ⊆ Ω, so K <= |Ω| and the region lies in Ω). NaN when G is empty.
    """
    return rank_accuracy_score(count(g & top_g), count(g))


def rank_accuracy_score(n_top_g: jax.Array, n_g: jax.Array) -> jax.Array:
    """Rank accuracy from |top-|G| ∩ G| and |G| (int32): NaN when G is empty."""
    return _ratio(n_top_g, n_g)


#: The :func:`~benchmark.metrics.ranking.positive_counts` each metric reads.
COUNTS_READ = {"auroc": ("twice_u",), "auprc": ("neg_below", "pos_below")}


def auroc(
    s: jax.Array, g: jax.Array, roi: jax.Array, counts: PositiveCounts | None = None,
) -> jax.Array:
    """P(S_g > S_b) + ½ P(S_g = S_b) for g ∈ G, b ∈ Ω \\ G, exact with ties.

    ``counts`` are the caller's :func:`~benchmark.metrics.ranking.positive_counts` of
    :func:`~benchmark.metrics.threshold.order_keys` of ``(s, roi)``, shared with
    ``auprc`` (with at least the fields of :data:`COUNTS_READ`); None computes them here.

    Notes
    -----
    Mann–Whitney: ``AUC = 2U / (2 n1 n0)`` with the exact integer
    ``2U = Σ_{g ∈ G} (#{b: S_b < S_g} + #{b: S_b <= S_g})``. Its two base-2**24 digits
    give the float32 of 2U rounded once (exact below 2**24; 2U < 2**48 whenever P <=
    2**24), the denominator is rounded once, then one division: three roundings (relative
    error below 3 * 2**-24; the former sum of per-pixel shares took one per pixel), the
    same bits on every backend, and exactly 0.5 for a constant map (2U = n1 n0 rounds as
    the denominator's n1 n0 does).
    NaN when G is empty or G = Ω.
    """
    b = roi & ~g
    n1, n0 = count(g), count(b)
    c = positive_counts(order_keys(s, roi), g, COUNTS_READ["auroc"]) if counts is None else counts
    assert c.twice_u is not None
    return auroc_score(c.twice_u, n1, n0)


def auroc_score(twice_u: jax.Array, n1: jax.Array, n0: jax.Array) -> jax.Array:
    """AUROC from ``2U`` as two base-2**24 int32 digits ``(hi, lo)`` (shape (2,)) and the
    int32 sizes of G and B (see :func:`auroc`, Notes); NaN when either is empty."""
    # hi * 2**24 is exact, so a fused multiply-add rounds the same as the sum.
    hi, lo = twice_u[0].astype(jnp.float32), twice_u[1].astype(jnp.float32)
    total = hi * jnp.float32(RADIX) + lo
    den = 2.0 * (jnp.maximum(n1, 1).astype(jnp.float32) * jnp.maximum(n0, 1).astype(jnp.float32))
    return jnp.where((n1 > 0) & (n0 > 0), total / den, NAN)


def auprc(
    s: jax.Array, g: jax.Array, roi: jax.Array, counts: PositiveCounts | None = None,
) -> jax.Array:
    """Average precision of S ranking G over Ω (tied scores form one threshold).

    ``counts`` as in :func:`auroc`.

    Notes
    -----
    ``AP = Σ_t (R_t - R_{t-1}) P_t`` over the distinct values t of S (the
    scikit-learn definition) equals ``mean_{g ∈ G} TP(S_g) / PP(S_g)`` with
    ``TP(v) = #{g ∈ G: S_g >= v}`` and ``PP(v) = #{p ∈ Ω: S_p >= v}``, which is what is
    computed here from the sorted map (descending: PP is one past the last position of
    the pixel's tie group; from the counts: ``PP = TP + #{b: S_b >= v}``). NaN when G is
    empty or G = Ω.
    """
    n1, n = count(g), count(roi)
    c = positive_counts(order_keys(s, roi), g, COUNTS_READ["auprc"]) if counts is None else counts
    assert c.neg_below is not None and c.pos_below is not None
    tp = n1 - c.pos_below  # #{g: S_g >= S}
    pp = tp + (count(roi & ~g) - c.neg_below)  # #{p in Ω: S_p >= S}
    ratio = tp.astype(jnp.float32) / jnp.maximum(pp, 1).astype(jnp.float32)
    prec = jnp.where(g, ratio, 0.0)
    ap = tree_sum(prec) / jnp.maximum(n1, 1).astype(jnp.float32)
    return jnp.where((n1 > 0) & (n1 < n), ap, NAN)


def nss(
    s: jax.Array, g: jax.Array, roi: jax.Array,
    bounds: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """Mean over G of (S - mean_Ω S) / std_Ω S (population std, ddof = 0).

    NaN when G is empty or S is constant on Ω (tested exactly as max == min, since a
    float32 std of a constant map need not be exactly 0). ``bounds``: ``(min, max)`` of
    S over Ω when the caller has them (:func:`is_constant`).
    """
    n = jnp.maximum(count(roi), 1).astype(jnp.float32)
    mean = tree_sum(jnp.where(roi, s, 0.0)) / n
    centred = jnp.where(roi, s - mean, 0.0)
    std = jnp.sqrt(tree_sum(centred**2) / n)
    n_g = count(g)
    score = tree_sum(jnp.where(g, centred, 0.0)) / jnp.maximum(n_g, 1) / std
    return jnp.where((n_g > 0) & ~is_constant(s, roi, bounds), score, NAN)


def is_constant(
    x: jax.Array, roi: jax.Array, bounds: tuple[jax.Array, jax.Array] | None = None
) -> jax.Array:
    """True when ``x`` takes one value on Ω (or Ω is empty).

    ``bounds``, optional: ``(min, max)`` of ``x`` over Ω when the caller has them
    (:func:`benchmark.metrics.preprocess.signed_bounds`: plain reductions of the raw
    map, where XLA:CPU runs the masked ones here as scalar loops).
    """
    if bounds is not None:
        return bounds[1] <= bounds[0]
    return jnp.max(jnp.where(roi, x, -jnp.inf)) <= jnp.min(jnp.where(roi, x, jnp.inf))
