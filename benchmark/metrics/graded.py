"""JAX kernels of the graded-reference metrics (W: Ω -> [0, 1]), for one flattened image.

Conventions as in :mod:`.kernels`: ``s`` the sign-transformed saliency, ``w`` the graded
map, ``roi`` Ω, all of shape ``(P,)``. Pixels outside Ω are ignored. A reference with
Σ_Ω W = 0 is an empty reference: every graded metric is NaN, as for an empty G.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmark.metrics import ranking
from benchmark.metrics.kernels import NAN, is_constant, tree_sum
from benchmark.metrics.threshold import minmax_normalise, order_keys

KL_EPS = 2.2e-16  # METRICS.md's ε (float64 machine epsilon); a float32 normal number


def _nonempty(w: jax.Array, roi: jax.Array) -> jax.Array:
    return jnp.any(roi & (w > 0))


def weighted_mass(s: jax.Array, w: jax.Array, roi: jax.Array) -> jax.Array:
    """Σ_Ω S W / Σ_Ω S. NaN when Σ_Ω S = 0 or W = 0 on Ω."""
    total = tree_sum(jnp.where(roi, s, 0.0))
    weighted = tree_sum(jnp.where(roi, s * w, 0.0))
    ok = (total != 0) & _nonempty(w, roi)
    return jnp.where(ok, weighted / jnp.where(total != 0, total, 1.0), NAN)


Bounds = tuple[jax.Array, jax.Array]


def _pearson(
    x: jax.Array, y: jax.Array, roi: jax.Array, x_bounds: Bounds | None = None
) -> jax.Array:
    """Pearson correlation over Ω; NaN when x or y is constant on Ω (``x_bounds``: as
    in :func:`.kernels.is_constant`)."""
    n = jnp.maximum(jnp.sum(roi, dtype=jnp.int32), 1).astype(jnp.float32)
    xc = jnp.where(roi, x - tree_sum(jnp.where(roi, x, 0.0)) / n, 0.0)
    yc = jnp.where(roi, y - tree_sum(jnp.where(roi, y, 0.0)) / n, 0.0)
    r = tree_sum(xc * yc) / jnp.sqrt(tree_sum(xc**2) * tree_sum(yc**2))
    # Rounding can push |r| a hair past 1 for perfectly (anti)correlated maps.
    r = jnp.clip(r, -1.0, 1.0)
    return jnp.where(is_constant(x, roi, x_bounds) | is_constant(y, roi), NAN, r)


def cc(s: jax.Array, w: jax.Array, roi: jax.Array, bounds: Bounds | None = None) -> jax.Array:
    """Pearson correlation of S and W over Ω. NaN when S or W is constant on Ω.

    ``bounds``: ``(min, max)`` of S over Ω when the caller has them.
    """
    return _pearson(s, w, roi, bounds)


def average_ranks(x: jax.Array, roi: jax.Array) -> jax.Array:
    """1-based average ranks of ``x`` among the pixels of Ω (ties share their mean rank).

    ``rank = (#{< x} + #{<= x} + 1) / 2`` over Ω, from the integer
    :func:`benchmark.metrics.ranking.twice_ranks` (numpy's sort on CPU, the tie groups
    of one XLA sort elsewhere: the same values). Values outside Ω are meaningless.
    """
    twice = ranking.twice_ranks(order_keys(x, roi), x, roi)
    return twice.astype(jnp.float32) / 2.0


def spearman(
    s: jax.Array,
    w: jax.Array,
    roi: jax.Array,
    s_ranks: jax.Array | None = None,
    w_ranks: jax.Array | None = None,
) -> jax.Array:
    """Pearson correlation of the average ranks of S and W over Ω. NaN when constant.

    ``s_ranks`` / ``w_ranks``: :func:`average_ranks` of S / W when the caller already
    has them (shared between metrics); None computes them here.
    """
    rs = average_ranks(s, roi) if s_ranks is None else s_ranks
    rw = average_ranks(w, roi) if w_ranks is None else w_ranks
    return _pearson(rs, rw, roi)


def spearman_abs(
    s_raw: jax.Array, w: jax.Array, roi: jax.Array, w_ranks: jax.Array | None = None
) -> jax.Array:
    """Spearman rank correlation of |S| and W over Ω (average ranks for ties).

    Takes the resized map *before* the sign option: |S| is part of the definition
    (the sanity checks of Adebayo et al. compare absolute maps), so ``sign`` does not
    change this metric. NaN when |S| or W is constant on Ω. ``w_ranks`` as in
    :func:`spearman`.
    """
    return spearman(jnp.abs(s_raw), w, roi, w_ranks=w_ranks)


def _as_distribution(x: jax.Array, roi: jax.Array, bounds: Bounds | None = None) -> jax.Array:
    """Min-max normalise over Ω, zero outside, divide by the sum (0 for a constant map)."""
    x_norm = jnp.where(roi, minmax_normalise(x, roi, bounds), 0.0)
    total = tree_sum(x_norm)
    return x_norm / jnp.where(total > 0, total, 1.0)


def sim(s: jax.Array, w: jax.Array, roi: jax.Array, bounds: Bounds | None = None) -> jax.Array:
    """Histogram intersection Σ min(Ŝ, Ŵ). NaN when S or W is constant on Ω.

    A constant map min-max normalises to 0 everywhere and cannot be made a
    distribution, hence NaN. ``bounds``: ``(min, max)`` of S over Ω when the caller
    has them.
    """
    s_hat, w_hat = _as_distribution(s, roi, bounds), _as_distribution(w, roi)
    value = tree_sum(jnp.minimum(s_hat, w_hat))
    return jnp.where(is_constant(s, roi, bounds) | is_constant(w, roi), NAN, value)


def kl(s: jax.Array, w: jax.Array, roi: jax.Array, bounds: Bounds | None = None) -> jax.Array:
    """KL(W ‖ S) = Σ Ŵ log(ε + Ŵ / (Ŝ + ε)), Ŝ and Ŵ as in :func:`sim`; lower is better.

    NaN when S or W is constant on Ω. ``bounds`` as in :func:`sim`.
    """
    s_hat, w_hat = _as_distribution(s, roi, bounds), _as_distribution(w, roi)
    eps = jnp.float32(KL_EPS)
    terms = w_hat * jnp.log(eps + w_hat / (s_hat + eps))
    value = tree_sum(jnp.where(roi, terms, 0.0))
    return jnp.where(is_constant(s, roi, bounds) | is_constant(w, roi), NAN, value)
