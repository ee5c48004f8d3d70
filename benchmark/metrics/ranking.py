"""Orderings of a map by value, shared by the rank-based metrics of the same image.

The top-K region, ``rank_accuracy``, ``auroc``, ``auprc`` and the ranks of Spearman's
correlation all derive from the order of the pixels of Ω by value; a sort is by far the
most expensive operation of those metrics on CPU. Every quantity derived here is an
exact integer count, the same as the ``searchsorted`` counts of the definitions; the
float arithmetic on those counts is left to the metric kernels, in pixel order, so each
path below gives bit-identical scores.

- :func:`descending` sorts the map once with one variadic sort and keeps the order, its
  inverse (the rank of every pixel) and the tie groups: the top-K rank of every pixel
  (:func:`benchmark.metrics.threshold.topk_ranks`) and, off CPU, Spearman's average
  ranks (:func:`twice_ranks`; numpy sorts the order keys on the host on CPU).
- ``auroc`` needs one exact integer per map, twice the Mann-Whitney U of G against B;
  ``auprc`` needs, for each pixel of G, how many pixels of B and of G lie below it. Both
  come from :func:`positive_counts`. On CPU numpy computes them on the host
  (:func:`host_positive_counts`): U from one sort of the map's keys and one of G's, the
  per-pixel counts from a sort of B's keys and a sort of G's keys; elsewhere one radix
  sort of all the order keys (:func:`ascending`, single-operand uint32 sorts, fast on
  GPU) and prefix counts.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmark.metrics.counting import RADIX, exact_sum
from benchmark.threads import over_rows


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


class KeyOrder(NamedTuple):
    """Pixels sorted by order key, ascending (pixels outside Ω, key 0, come first).

    The cheap alternative to :class:`Ranking` for ``auroc`` and ``auprc`` off CPU
    (:func:`xla_positive_counts`): built by :func:`ascending` from single-operand uint32
    sorts (a radix sort), much faster than the variadic sort of :func:`descending`. It
    carries the tie groups but not the inverse permutation; per-position results go
    back to pixel order with one scatter (:func:`scatter_to_pixels`).

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


def ascending(u: jax.Array) -> KeyOrder:
    """:class:`KeyOrder` of order keys ``u``.

    ``u`` is :func:`benchmark.metrics.threshold.order_keys` of ``(s, roi)``: equal keys
    are exactly equal values of S over Ω (-0.0 and 0.0 included), the same tie groups as
    :func:`descending`, and pixels outside Ω (key 0) sort below every pixel of Ω.
    """
    order, keys = radix_sort_keys(u)
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


def scatter_to_pixels(a: KeyOrder, sorted_values: jax.Array) -> jax.Array:
    """Values given per ascending position, returned per pixel (flat index order)."""
    return jnp.zeros_like(sorted_values).at[a.order].set(sorted_values, unique_indices=True)


#: The counts :func:`positive_counts` can return: ``twice_u`` per map, the others per pixel.
COUNTS = ("twice_u", "neg_below", "pos_below")


class PositiveCounts(NamedTuple):
    """Exact counts of the pixels of B = Ω \\ G and G below the pixels of G.

    What ``auroc`` and ``auprc`` read, from :func:`positive_counts`; a count that was not
    asked for is None. Values at pixels outside G are unspecified.

    Attributes
    ----------
    twice_u : jax.Array, shape (2,), int32, or None
        Twice the Mann-Whitney U of G against B, ``Σ_{p in G} (#{b in B: u_b < u_p} +
        #{b in B: u_b <= u_p})`` (AUROC's numerator), as the two digits ``(hi, lo)`` of
        :func:`~benchmark.metrics.counting.exact_sum` (it exceeds int32 on large maps).
    neg_below : jax.Array, shape (P,), int32, or None
        ``#{b in B: u_b < u_p}``.
    pos_below : jax.Array, shape (P,), int32, or None
        ``#{g in G: u_g < u_p}``.
    """

    twice_u: jax.Array | None = None
    neg_below: jax.Array | None = None
    pos_below: jax.Array | None = None


def xla_positive_counts(
    u: jax.Array, g: jax.Array, fields: tuple[str, ...]
) -> tuple[jax.Array, ...]:
    """:func:`positive_counts` from one radix sort of all the keys (:func:`ascending`)."""
    a = ascending(u)
    neg_below, neg_at_most = counts_below(a, (u != 0) & ~g)
    pos_below, _ = counts_below(a, g)
    out = {}
    if "twice_u" in fields:  # a sum over G: taken in sorted order, no scatter back
        out["twice_u"] = exact_sum(jnp.where(g[a.order], neg_below + neg_at_most, 0))
    for name, sorted_counts in (("neg_below", neg_below), ("pos_below", pos_below)):
        if name in fields:
            out[name] = scatter_to_pixels(a, sorted_counts)
    return tuple(out[name] for name in fields)


def twice_u_of(keys: np.ndarray, pos_mask: np.ndarray) -> int:
    """``twice_u`` of one map (keys ``(P,)`` uint32, G ``(P,)`` bool), exact.

    From one sort of all the keys and the sorted keys of G, without B's own keys:
    ``Σ_{p in G} (#{q: u_q < u_p} + #{q: u_q <= u_p})`` over all pixels q counts the z
    pixels outside Ω (key 0, below every key of Ω) twice per pixel of G, and over the
    pixels of G alone it is n1² whatever the ties (each unordered pair of G adds 2 to it,
    either way round or tied, and each pixel 1 for itself).
    """
    pos = keys[pos_mask]
    pos.sort()
    every = np.sort(keys)
    left = np.searchsorted(every, pos, side="left")
    # #{q <= key} exceeds #{q < key} + 1 only where another pixel holds the key too:
    # a second search for those keys alone.
    after = every[np.minimum(left + 1, every.size - 1)]
    tied = np.flatnonzero((after == pos) & (left + 1 < every.size))
    total = 2 * int(left.sum(dtype=np.int64)) + pos.size
    if tied.size:
        extra = np.searchsorted(every, pos[tied], side="right") - left[tied] - 1
        total += int(extra.sum(dtype=np.int64))
    outside = int(np.searchsorted(every, 0, side="right"))
    return total - 2 * outside * pos.size - pos.size * pos.size


def _numpy_positive_counts(
    u: np.ndarray, g: np.ndarray, fields: tuple[str, ...]
) -> tuple[np.ndarray, ...]:
    """:func:`positive_counts` in numpy over the last axis of ``(..., P)`` arrays.

    ``twice_u`` alone: :func:`twice_u_of` per map. With the per-pixel counts: the keys of
    B sorted alone (uint32, no index), the keys of G sorted with their flat index
    (``key << 32 | index``, uint64), then binary searches of the sorted G keys in the
    sorted B keys and the first position of each run of equal G keys. G is usually the
    smaller set, so the sorts are of fewer and narrower values than a sort of the whole
    map with its indices. Maps are split between two threads
    (:func:`~benchmark.threads.over_rows`).
    """
    u, g = np.broadcast_arrays(np.asarray(u, np.uint32), np.asarray(g, bool))
    size = u.shape[-1]
    flat_u, flat_g = u.reshape(-1, size), g.reshape(-1, size)
    out = {name: np.zeros(flat_u.shape, np.int32) for name in fields if name != "twice_u"}
    twice_u = np.zeros(flat_u.shape[0], np.int64)
    low = 0 if np.little_endian else 1  # word of each uint64 holding the index

    def maps(rows: range) -> None:
        for i in rows:
            keys, pos_mask = flat_u[i], flat_g[i]
            if not out:
                twice_u[i] = twice_u_of(keys, pos_mask)
                continue
            in_g = np.flatnonzero(pos_mask)
            packed = (keys[in_g].astype(np.uint64) << np.uint64(32)) | in_g.astype(np.uint64)
            packed.sort()
            words = packed.view(np.uint32).reshape(-1, 2)
            where, pos = words[:, low], words[:, 1 - low]
            if "twice_u" in fields or "neg_below" in out:
                neg = keys[~pos_mask]
                neg.sort()
                neg = neg[np.searchsorted(neg, 0, side="right") :]  # B: Ω (key > 0) minus G
                below = np.searchsorted(neg, pos, side="left")
                if "neg_below" in out:
                    out["neg_below"][i, where] = below
                if "twice_u" in fields:
                    # #{b <= key} exceeds #{b < key} only where B holds the key itself.
                    at = neg[np.minimum(below, neg.size - 1)] if neg.size else pos
                    tied = np.flatnonzero((at == pos) & (below < neg.size))
                    ties = np.searchsorted(neg, pos[tied], "right") - below[tied]
                    twice_u[i] = 2 * int(below.sum(dtype=np.int64)) + int(ties.sum(dtype=np.int64))
            if "pos_below" in out:
                run_start = np.ones(pos.size, bool)
                run_start[1:] = pos[1:] != pos[:-1]
                first = np.maximum.accumulate(np.where(run_start, np.arange(pos.size), 0))
                out["pos_below"][i, where] = first

    over_rows(maps, flat_u.shape[0])
    digits = np.stack([twice_u // RADIX, twice_u % RADIX], axis=-1).astype(np.int32)
    out["twice_u"] = digits.reshape(*u.shape[:-1], 2)
    return tuple(out[name].reshape(u.shape) if name != "twice_u" else out[name]
                 for name in fields)


def host_positive_counts(
    u: jax.Array, g: jax.Array, fields: tuple[str, ...]
) -> tuple[jax.Array, ...]:
    """:func:`positive_counts` by numpy on the host (CPU backends); the same integers.

    Several times faster than XLA:CPU's sort, gathers, scans and scatters of
    :func:`xla_positive_counts` (256 maps of 224 x 224: 0.13 s against 2.2 s). Under
    ``vmap`` the callback gets the whole batch ``(N, P)`` at once.
    """
    shapes = tuple(jax.ShapeDtypeStruct((2,) if name == "twice_u" else u.shape, jnp.int32)
                   for name in fields)
    return tuple(jax.pure_callback(partial(_numpy_positive_counts, fields=fields),
                                   shapes, u, g, vmap_method="expand_dims"))


def positive_counts(
    u: jax.Array, g: jax.Array, fields: tuple[str, ...] = COUNTS
) -> PositiveCounts:
    """Per pixel of G, the counts of B and G below it (:class:`PositiveCounts`).

    Parameters
    ----------
    u : jax.Array, shape (P,), uint32
        :func:`benchmark.metrics.threshold.order_keys` of ``(s, roi)``: equal keys are
        exactly equal values over Ω (-0.0 and 0.0 included), 0 outside Ω.
    g : jax.Array, shape (P,), bool
        G, within Ω; B is the rest of Ω.
    fields : tuple of str, default all of :data:`COUNTS`
        The counts to compute (static); each per-pixel count is one more ``(P,)`` int32
        array to fill and hand back from the host.

    Numpy on the host on CPU (:func:`host_positive_counts`), one radix sort elsewhere
    (:func:`xla_positive_counts`, fast on GPU): the same integers, so the same scores.
    """
    fields = tuple(name for name in COUNTS if name in fields)
    counts = lax.platform_dependent(u, g, cpu=partial(host_positive_counts, fields=fields),
                                    default=partial(xla_positive_counts, fields=fields))
    return PositiveCounts(**dict(zip(fields, counts, strict=True)))


def _numpy_twice_ranks(u: np.ndarray) -> np.ndarray:
    """:func:`twice_ranks` in numpy over the last axis of ``(..., P)`` order keys.

    Per map one sort of ``key << 32 | flat index`` (uint64): pixels outside Ω (key 0)
    come first, then Ω ascending; a tie group of ``n`` pixels starting at ascending
    position ``a`` spans ``a .. a + n - 1``, so among the ``z`` pixels outside Ω each of
    its pixels has ``#{<} + #{<=} + 1 = 2 a + n + 1 - 2 z``: one value per group,
    repeated over the group (a third fewer passes than a running max and min over
    every position).
    """
    u = np.asarray(u, np.uint32)
    size = u.shape[-1]
    flat = u.reshape(-1, size)
    out = np.empty(flat.shape, np.int32)
    index = np.arange(size, dtype=np.uint64)
    low = 0 if np.little_endian else 1  # word of each uint64 holding the index

    def maps(rows: range) -> None:
        for i in rows:
            packed = (flat[i].astype(np.uint64) << np.uint64(32)) | index
            packed.sort()
            words = packed.view(np.uint32).reshape(-1, 2)
            where, keys = words[:, low], words[:, 1 - low]
            starts = np.ones(size, bool)
            starts[1:] = keys[1:] != keys[:-1]
            first = np.flatnonzero(starts)
            lengths = np.diff(first, append=size)
            outside = int(np.searchsorted(keys, 1))
            out[i, where] = np.repeat(2 * first + lengths + 1 - 2 * outside, lengths)

    over_rows(maps, flat.shape[0])
    return out.reshape(u.shape)


def host_twice_ranks(u: jax.Array) -> jax.Array:
    """:func:`twice_ranks` by numpy on the host (CPU backends); the same integers.

    XLA:CPU's variadic sort of :func:`descending` takes about 25 ms per map of
    224 x 224; numpy's sort of the packed keys under 1 ms. Under ``vmap`` the callback
    gets the whole batch.
    """
    shape = jax.ShapeDtypeStruct(u.shape, jnp.int32)
    twice: jax.Array = jax.pure_callback(_numpy_twice_ranks, shape, u, vmap_method="expand_dims")
    return twice


def twice_ranks(u: jax.Array, x: jax.Array, roi: jax.Array) -> jax.Array:
    """Twice the 1-based average rank of every pixel among Ω, int32 (meaningless outside).

    ``2 rank = #{< x} + #{<= x} + 1`` over Ω. ``u`` is
    :func:`benchmark.metrics.threshold.order_keys` of ``(x, roi)``. On CPU numpy sorts
    ``u`` on the host (:func:`host_twice_ranks`); elsewhere the tie groups of
    :func:`descending` give it. The same integers either way.
    """

    def sorted_on_device(u: jax.Array, x: jax.Array, roi: jax.Array) -> jax.Array:
        r = descending(x, roi)
        return to_pixels(r, 2 * r.n - r.first - r.last)

    twice: jax.Array = lax.platform_dependent(
        u, x, roi, cpu=lambda u, x, roi: host_twice_ranks(u), default=sorted_on_device
    )
    return twice
