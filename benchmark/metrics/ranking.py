"""One sort of a map, shared by every rank-based metric of the same image.

The top-K region, ``rank_accuracy``, ``auroc``, ``auprc`` and the ranks of Spearman's
correlation all derive from one ordering of the pixels of Ω by value. A sort is by far
the most expensive operation of those metrics on CPU, so :func:`descending` sorts the
map once and keeps what they need: the order, its inverse (the rank of every pixel) and
the tie groups (equal values) of the sorted sequence. Every quantity derived from it is
an exact integer count, the same as the ``searchsorted`` counts of the definitions; the
float arithmetic on those counts is left to the metric kernels, in pixel order.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class Ranking(NamedTuple):
    """Pixels of one map sorted by value, descending; pixels outside Ω come last.

    Attributes
    ----------
    order : jax.Array, shape (P,), int32
        Flat index of the pixel at each sorted position.
    ranks : jax.Array, shape (P,), int32
        Sorted position of every pixel (the inverse permutation of ``order``).
    first, last : jax.Array, shape (P,), int32
        For each sorted position, the first and last position of its tie group (the
        run of equal values it belongs to). Ω fills positions ``0 .. n - 1``.
    n : jax.Array, scalar int32
        Number of pixels in Ω.
    """

    order: jax.Array
    ranks: jax.Array
    first: jax.Array
    last: jax.Array
    n: jax.Array


def tiebreak_order(keys: jax.Array) -> jax.Array:
    """Flat indices ordered by jitter key, then by index (the top-K tie-break)."""
    idx = lax.iota(jnp.int32, keys.shape[0])
    return lax.sort((keys, idx), num_keys=2)[1]


def descending(s: jax.Array, roi: jax.Array, keys: jax.Array | None = None) -> Ranking:
    """Sort ``s`` over Ω, highest first, with one (variadic) sort.

    Parameters
    ----------
    s : jax.Array, shape (P,), float32
        Finite values.
    roi : jax.Array, shape (P,), bool
    keys : jax.Array, shape (P,), uint32, optional
        Jitter keys of :func:`benchmark.metrics.threshold.tiebreak_keys`. Given, ties
        are ordered by key, then by flat index (the top-K rule), so ``ranks`` is exactly
        :func:`benchmark.metrics.threshold.topk_ranks`; the keys do not depend on the
        image, so under ``vmap`` their ordering is computed once per batch and each image
        needs only a stable single-key sort. Without keys the order within a tie group
        is unspecified (the tie groups themselves are not).

    Returns
    -------
    Ranking
    """
    size = s.shape[0]
    idx = lax.iota(jnp.int32, size)
    # -0.0 and 0.0 compare equal in XLA's sort and in ``!=`` below: one tie group.
    primary = jnp.where(roi, -s, jnp.inf)
    if keys is None:
        ordered, order = lax.sort((primary, idx), num_keys=1)
    else:
        # A stable sort of pixels laid out in tie-break order keeps that order in ties.
        tb = tiebreak_order(keys)
        ordered, order = lax.sort((primary[tb], tb), num_keys=1, is_stable=True)
    ranks = jnp.zeros(size, jnp.int32).at[order].set(idx, unique_indices=True)
    new = ordered[1:] != ordered[:-1]
    is_first = jnp.concatenate([jnp.ones(1, bool), new])
    is_last = jnp.concatenate([new, jnp.ones(1, bool)])
    first = lax.cummax(jnp.where(is_first, idx, 0))
    last = lax.cummin(jnp.where(is_last, idx, size), reverse=True)
    n = jnp.sum(roi, dtype=jnp.int32)
    return Ranking(order, ranks, first, last, n)


def to_pixels(r: Ranking, sorted_values: jax.Array) -> jax.Array:
    """Values given per sorted position, returned per pixel (flat index order)."""
    return sorted_values[r.ranks]


def counts_above(r: Ranking, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per pixel p, ``#{q in mask: x_q >= x_p}`` and ``#{q in mask: x_q > x_p}``.

    Exact int32 counts; meaningful for the pixels of Ω (``mask`` must lie within Ω).
    """
    in_order = mask[r.order].astype(jnp.int32)
    inclusive = jnp.cumsum(in_order)
    exclusive = inclusive - in_order
    return to_pixels(r, inclusive[r.last]), to_pixels(r, exclusive[r.first])


def average_ranks(r: Ranking) -> jax.Array:
    """1-based ascending average ranks among Ω (ties share their mean rank), float32.

    Equal to ``(#{< x} + #{<= x} + 1) / 2`` over Ω: with the tie group of a pixel at
    descending positions ``a .. b``, ``#{< x} = n - 1 - b`` and ``#{<= x} = n - a``.
    Values outside Ω are meaningless.
    """
    twice = 2 * r.n - r.first - r.last
    return to_pixels(r, twice).astype(jnp.float32) / 2.0
