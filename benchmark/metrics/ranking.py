"""One sort of a map, shared by every rank-based metric of the same image.

The top-K region, ``rank_accuracy``, ``auroc``, ``auprc`` and the ranks of Spearman's
correlation all derive from one ordering of the pixels of Ω by value. A sort is by far
the most expensive operation of those metrics on CPU, so :func:`descending` sorts the
map once and keeps what they need: the order, its inverse (the rank of every pixel) and
the tie groups (equal values) of the sorted sequence. Every quantity derived from it is
an exact integer count, the same as the ``searchsorted`` counts of the definitions; the
float arithmetic on those counts is left to the metric kernels, in pixel order.

That sort has two operands (values and indices), which XLA:CPU runs several times slower
than a sort of one uint32 array. ``auroc`` and ``auprc`` need only tie groups and counts,
so without Spearman they read :func:`ascending` instead: the order-preserving uint32 keys
of :func:`benchmark.metrics.threshold.order_keys`, sorted by an LSD radix sort whose
passes are single-operand uint32 sorts (:func:`radix_sort_keys`). The integer counts are
the same, so the scores are bit-identical.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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


class KeyOrder(NamedTuple):
    """Pixels sorted by order key, ascending (pixels outside Ω, key 0, come first).

    The cheap alternative to :class:`Ranking` for ``auroc`` and ``auprc``: built by
    :func:`ascending` from single-operand uint32 sorts (a radix sort), much faster on
    CPU than the variadic sort of :func:`descending`. It carries the tie groups but
    not the inverse permutation; per-position results go back to pixel order with one
    scatter (:func:`scatter_to_pixels`).

    Attributes
    ----------
    order : jax.Array, shape (P,), int32
        Flat index of the pixel at each ascending position (ties by flat index).
    is_first, is_last : jax.Array, shape (P,), bool
        Whether a position starts / ends its tie group (a run of equal keys).
    """

    order: jax.Array
    is_first: jax.Array
    is_last: jax.Array


def radix_sort_keys(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Stable ascending sort of uint32 keys by single-operand uint32 sorts.

    LSD radix sort: with ``b = bit_length(P - 1)`` bits for a position, each pass sorts
    ``digit << b | position`` (one uint32 per pixel, so XLA's fast single-operand sort)
    on the next ``32 - b`` bits of the key; the position in the low bits keeps every pass
    stable. Two passes up to P = 2**16 (224 x 224 maps), three up to 2**21 (128**3).

    Parameters
    ----------
    u : jax.Array, shape (P,), uint32, P < 2**31

    Returns
    -------
    order : jax.Array, shape (P,), int32
        Flat indices by key, then by index.
    sorted_keys : jax.Array, shape (P,), uint32
        ``u[order]``.
    """
    size = u.shape[0]
    pos_bits = max((size - 1).bit_length(), 1)
    digit_bits = 32 - pos_bits
    pos = lax.iota(jnp.uint32, size)
    pos_mask = jnp.uint32((1 << pos_bits) - 1)
    order: jax.Array | None = None
    cur = u
    for shift in range(0, 32, digit_bits):
        digit = (cur >> jnp.uint32(shift)) & jnp.uint32((1 << digit_bits) - 1)
        j = (lax.sort((digit << jnp.uint32(pos_bits)) | pos) & pos_mask).astype(jnp.int32)
        order = j if order is None else order[j]
        cur = cur[j]
    assert order is not None
    return order, cur


#: Keys packed and sorted at once on the host (8 MB of uint64): memory stays bounded for
#: large chunks of 3D volumes, and blocks near the cache sort faster (256 maps of
#: 224 x 224: 0.14 s in blocks against 0.18 s at once).
_HOST_SORT_BLOCK = 1 << 20


def _numpy_sort_keys(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`radix_sort_keys` in numpy over the last axis of ``(..., P)`` keys: one sort of
    ``key << 32 | flat index`` (uint64), so ties keep flat-index order here too."""
    u = np.asarray(u, dtype=np.uint32)
    flat = u.reshape(-1, u.shape[-1])
    order = np.empty(flat.shape, np.int32)
    keys = np.empty(flat.shape, np.uint32)
    index = np.arange(flat.shape[1], dtype=np.uint64)
    low, high = (0, 1) if np.little_endian else (1, 0)  # words of each uint64
    rows = max(1, _HOST_SORT_BLOCK // max(flat.shape[1], 1))
    for a in range(0, flat.shape[0], rows):
        packed = (flat[a:a + rows].astype(np.uint64) << np.uint64(32)) | index
        packed.sort(axis=-1)
        words = packed.view(np.uint32).reshape(*packed.shape, 2)
        order[a:a + rows] = words[..., low]
        keys[a:a + rows] = words[..., high]
    return order.reshape(u.shape), keys.reshape(u.shape)


def host_sort_keys(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:func:`radix_sort_keys` by numpy on the host, for CPU backends; the same result.

    numpy's SIMD sort (AVX2 / AVX-512) of the packed uint64 is about 9x faster than the
    radix sort's two passes of XLA:CPU's sort (256 maps of 224 x 224: 0.18 against
    1.6 s). Under ``vmap`` the callback gets the whole batch ``(N, P)`` at once.
    """
    shapes = (jax.ShapeDtypeStruct(u.shape, jnp.int32), jax.ShapeDtypeStruct(u.shape, u.dtype))
    order, keys = jax.pure_callback(_numpy_sort_keys, shapes, u, vmap_method="expand_dims")
    return order, keys


def sort_keys(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(order, sorted keys)`` of uint32 keys ``u``, shape (P,), ties by flat index:
    numpy's sort on CPU (:func:`host_sort_keys`), the radix sort of XLA sorts elsewhere
    (:func:`radix_sort_keys`, fast on GPU). Both give the same arrays."""
    order, keys = lax.platform_dependent(u, cpu=host_sort_keys, default=radix_sort_keys)
    return order, keys


def ascending(u: jax.Array) -> KeyOrder:
    """:class:`KeyOrder` of order keys ``u``.

    ``u`` is :func:`benchmark.metrics.threshold.order_keys` of ``(s, roi)``: equal keys
    are exactly equal values of S over Ω (-0.0 and 0.0 included), the same tie groups as
    :func:`descending`, and pixels outside Ω (key 0) sort below every pixel of Ω.
    """
    order, keys = sort_keys(u)
    new = keys[1:] != keys[:-1]
    is_first = jnp.concatenate([jnp.ones(1, bool), new])
    is_last = jnp.concatenate([new, jnp.ones(1, bool)])
    return KeyOrder(order, is_first, is_last)


def counts_below(a: KeyOrder, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per ascending position i, ``#{q in mask: u_q < u_i}`` and ``#{q in mask: u_q <= u_i}``.

    Exact int32 counts, per sorted position (not per pixel). The prefix counts are
    non-decreasing, so a running max (min) carries the value at the start (end) of each
    tie group to the whole group without a gather.
    """
    in_order = mask[a.order].astype(jnp.int32)
    inclusive = jnp.cumsum(in_order)
    below = lax.cummax(jnp.where(a.is_first, inclusive - in_order, 0))
    at_most = lax.cummin(
        jnp.where(a.is_last, inclusive, jnp.iinfo(jnp.int32).max), reverse=True
    )
    return below, at_most


def group_start(a: KeyOrder) -> jax.Array:
    """Per ascending position, the position of the first member of its tie group, int32."""
    idx = lax.iota(jnp.int32, a.order.shape[0])
    return lax.cummax(jnp.where(a.is_first, idx, 0))


def scatter_to_pixels(a: KeyOrder, sorted_values: jax.Array) -> jax.Array:
    """Values given per ascending position, returned per pixel (flat index order)."""
    return jnp.zeros_like(sorted_values).at[a.order].set(sorted_values, unique_indices=True)
