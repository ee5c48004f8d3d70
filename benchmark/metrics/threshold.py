"""Attention regions A: min-max normalisation, fixed tau, top-K with tie-breaking, Otsu.

The JAX functions here act on one flattened image (shape ``(P,)``, P the number of
pixels of the reference grid) and a boolean ``roi`` of the same shape; ``compute``
vmaps them over the batch. The host helpers (:func:`topk_count`,
:func:`tiebreak_keys`) are public so that tests and other stages reproduce the exact
top-K rule.

Top-K rule (``name@topK``)
--------------------------
- ``k = max(1, floor(K / 100 * n + 1/2))`` (round half up), ``n = |Ω|`` the pixels
  inside the roi (all pixels without a roi), computed on the host in float64.
- Pixels of Ω are ranked by the sign-transformed saliency S (descending; ranking S or
  the min-max normalised S̃ is the same order, but S avoids float rounding merging
  distinct values), then by the jitter key ``tiebreak_keys(seed, P)`` (ascending), then
  by flat C-order index (ascending). A is the first k pixels, so ``|A| = k`` exactly.
- The jitter keys are the same for every image of one grid size and seed: an image's
  score does not depend on its position in the batch.

Normalisation
-------------
S̃ = (S - min_Ω S) / (max_Ω S - min_Ω S); a constant map (max = min) gives S̃ = 0
everywhere, so at a fixed tau > 0 and at ``otsu`` A is empty, at tau = 0 A = Ω, and at
top-K the jitter decides.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmark.metrics.counting import count
from benchmark.metrics.ranking import descending
from benchmark.threads import over_rows

N_OTSU_BINS = 256


def topk_count(percent: float, n: int) -> int:
    """Size of the top-K attention region.

    Parameters
    ----------
    percent : float
        K in (0, 100].
    n : int
        Number of pixels in Ω (inside the roi).

    Returns
    -------
    int
        ``max(1, floor(percent / 100 * n + 0.5))``, at most ``n`` (0 when ``n == 0``).
    """
    if n <= 0:
        return 0
    # percent * n first: exact for integer K, so 15 % of 10 pixels is 1.5 -> 2, not 1.
    return min(n, max(1, math.floor(percent * n / 100.0 + 0.5)))


@partial(jax.jit, static_argnums=1)
def _tiebreak_keys(seed: jax.Array, size: int) -> jax.Array:
    return jax.random.bits(jax.random.key(seed), (size,), jnp.uint32)


def tiebreak_keys(seed: int, size: int) -> np.ndarray:
    """The per-pixel jitter used to break ties in top-K rankings.

    Parameters
    ----------
    seed : int
        The ``seed`` passed to :func:`benchmark.metrics.compute`, in [0, 2**32).
    size : int
        Number of pixels P of the (flattened, C order) reference grid.

    Returns
    -------
    numpy.ndarray, shape (P,), uint32
        Random keys; among pixels of equal saliency, the smaller key ranks higher
        (equal keys: the smaller flat index ranks higher).
    """
    return np.asarray(_tiebreak_keys(jnp.uint32(seed), size))


@lru_cache(maxsize=8)
def _tiebreak_ranks(seed: int, size: int) -> np.ndarray:
    order = np.argsort(tiebreak_keys(seed, size), kind="stable")  # key, then flat index
    ranks = np.empty(size, np.int32)
    ranks[order] = np.arange(size, dtype=np.int32)
    ranks.flags.writeable = False
    return ranks


def tiebreak_ranks(seed: int, size: int) -> np.ndarray:
    """Position of every pixel in the tie-break order of the top-K rule.

    Parameters
    ----------
    seed, size : int
        As for :func:`tiebreak_keys`.

    Returns
    -------
    numpy.ndarray, shape (P,), int32, read-only
        A permutation of ``0 .. P - 1``: pixels sorted by jitter key ascending, then by
        flat index ascending. Among pixels of equal saliency, the smaller rank wins; the
        ranks are the 64-bit (key, index) order squeezed into one int32.
    """
    return _tiebreak_ranks(int(seed), int(size))


def order_keys(s: jax.Array, roi: jax.Array) -> jax.Array:
    """uint32 keys whose unsigned order is the order of ``s`` over Ω; 0 outside Ω.

    -0.0 and 0.0 get the same key (they compare equal); every finite value of Ω gets a
    key >= 0x00800000 (the key of -max float32), so pixels outside Ω sort strictly last.
    """
    s = jnp.where(s == 0, jnp.float32(0.0), s)  # -0.0 -> +0.0
    bits = lax.bitcast_convert_type(s, jnp.uint32)
    negative = (bits >> 31) == 1
    key = jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))
    return jnp.where(roi, key, jnp.uint32(0))


def kth_largest_key(u: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The k-th largest of ``u`` by bisection on its bits, without a sort.

    Parameters
    ----------
    u : jax.Array, shape (P,), uint32
    k : jax.Array, scalar int32, 1 <= k <= P

    Returns
    -------
    t : jax.Array, scalar uint32
        The largest value with ``#{u >= t} >= k`` (the k-th largest key), or a value with
        ``#{u >= t} == k`` exactly found on the way (the loop stops early there).
    exact : jax.Array, scalar bool
        Whether ``#{u >= t} == k``, i.e. the region ``u >= t`` needs no tie-break.
    """

    def cond(state: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        _, bit, exact = state
        return (bit >= 0) & ~exact

    def body(
        state: tuple[jax.Array, jax.Array, jax.Array],
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        t, bit, _ = state
        cand = t | (jnp.uint32(1) << bit.astype(jnp.uint32))
        c = count(u >= cand)
        return jnp.where(c >= k, cand, t), bit - 1, c == k

    t, _, exact = lax.while_loop(cond, body, (jnp.uint32(0), jnp.int32(31), jnp.bool_(False)))
    return t, exact


def xla_topk_cut(
    u: jax.Array, k: jax.Array, tb_ranks: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`topk_cut` by two bisections of integer counts (no sort): the k-th largest
    key (:func:`kth_largest_key`, at most 32 passes over the map), then, only when its
    tie group is larger than the places left, the cut-off tie-break rank among that
    group (at most ``bit_length(P - 1)`` passes)."""
    t, exact = kth_largest_key(u, jnp.maximum(k, 1))
    tied = u == t
    places = k - count(u > t)  # >= 1 unless exact (then == |tied|)
    need = ~exact & (count(tied) > places)
    # Largest r with #{tied, tb_rank < r} < places: r is the tb_rank of the last winner.
    n_bits = max(int(u.shape[0] - 1).bit_length(), 1)

    def cond(state: tuple[jax.Array, jax.Array]) -> jax.Array:
        return (state[1] >= 0) & need

    def body(state: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        r, bit = state
        cand = r | (jnp.int32(1) << bit)
        c = count(tied & (tb_ranks < cand))
        return jnp.where(c < places, cand, r), bit - 1

    r, _ = lax.while_loop(cond, body, (jnp.int32(0), jnp.int32(n_bits - 1)))
    return t, jnp.where(need, r, jnp.int32(u.shape[0]))


def _numpy_topk_cut(
    u: np.ndarray, k: np.ndarray, tb_ranks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk_cut` in numpy: ``u`` (..., P), ``k`` (...), ``tb_ranks`` (..., P)
    (broadcast). Per map one sort of the keys (numpy's SIMD sort; a partition is far
    slower on maps that are mostly ties) and, when the k-th key's tie group must be cut,
    one partition of the tie-break ranks of that group (distinct integers)."""
    u, k, tb_ranks = np.asarray(u, np.uint32), np.asarray(k), np.asarray(tb_ranks, np.int32)
    size = u.shape[-1]
    batch = np.broadcast_shapes(u.shape[:-1], k.shape, tb_ranks.shape[:-1])
    flat_u = np.broadcast_to(u, (*batch, size)).reshape(-1, size)
    flat_k = np.broadcast_to(k, batch).reshape(-1)
    flat_tb = np.broadcast_to(tb_ranks, (*batch, size)).reshape(-1, size)
    t = np.zeros(flat_u.shape[0], np.uint32)
    r = np.full(flat_u.shape[0], size, np.int32)

    def maps(rows: range) -> None:
        for i in rows:
            k_i = int(flat_k[i])
            if k_i < 1:  # empty region (masked by the caller)
                continue
            keys = np.sort(flat_u[i])
            t[i] = keys[size - k_i]
            above = size - int(np.searchsorted(keys, t[i], side="right"))
            places = k_i - above
            if size - above - int(np.searchsorted(keys, t[i], side="left")) > places:
                ranks = flat_tb[i][flat_u[i] == t[i]]  # the tie group's tie-break ranks
                r[i] = np.partition(ranks, places - 1)[places - 1]

    over_rows(maps, flat_u.shape[0])
    return t.reshape(batch), r.reshape(batch)


def host_topk_cut(
    u: jax.Array, k: jax.Array, tb_ranks: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`topk_cut` by numpy on the host (CPU backends); the same cut.

    The bisections of :func:`xla_topk_cut` pass over the map up to 32 + 17 times
    (224 x 224); numpy sorts it once. Under ``vmap`` the callback gets the whole batch.
    """
    shapes = (jax.ShapeDtypeStruct(k.shape, jnp.uint32), jax.ShapeDtypeStruct(k.shape, jnp.int32))
    t, r = jax.pure_callback(_numpy_topk_cut, shapes, u, k, tb_ranks,
                             vmap_method="expand_dims")
    return t, r


def topk_cut(u: jax.Array, k: jax.Array, tb_ranks: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Where the top-k region of order keys ``u`` ends: ``(t, r)``.

    The region is ``(u > t) | ((u == t) & (tb_ranks <= r))``: the pixels above the k-th
    largest key t, plus, among the pixels equal to it, those first in tie-break order
    (r is the tie-break rank of the last one; ``P`` when the whole tie group fits). The
    bisection may return a smaller t with exactly k pixels at or above it: the same region.

    Parameters
    ----------
    u : jax.Array, shape (P,), uint32
        :func:`order_keys` (0 outside Ω).
    k : jax.Array, scalar int32
        Region size, 1 <= k <= |Ω| (k < 1: ``t`` and ``r`` are meaningless).
    tb_ranks : jax.Array, shape (P,), int32
        From :func:`tiebreak_ranks`.

    Numpy on the host on CPU (:func:`host_topk_cut`), bisection elsewhere
    (:func:`xla_topk_cut`): the same region.
    """
    t, r = lax.platform_dependent(u, k, tb_ranks, cpu=host_topk_cut, default=xla_topk_cut)
    return t, r


def topk_region(s: jax.Array, roi: jax.Array, k: jax.Array, tb_ranks: jax.Array) -> jax.Array:
    """The top-k region of the top-K rule, found by selection (:func:`topk_cut`).

    Parameters
    ----------
    s : jax.Array, shape (P,), float32
        Sign-transformed saliency (finite).
    roi : jax.Array, shape (P,), bool
    k : jax.Array, scalar int32
        Region size, 0 <= k <= |Ω| (:func:`topk_count`).
    tb_ranks : jax.Array, shape (P,), int32
        From :func:`tiebreak_ranks`.

    Returns
    -------
    jax.Array, shape (P,), bool
        Exactly ``(topk_ranks(s, roi, keys) < k) & roi``: the pixels above the k-th
        largest value, plus, among the pixels equal to it, those first in tie-break order.
    """
    u = order_keys(s, roi)
    k = jnp.maximum(k, 0).astype(jnp.int32)
    t, r = topk_cut(u, k, tb_ranks)
    winners = (u == t) & (tb_ranks <= r)
    return ((u > t) | winners) & roi & (k > 0)


def minmax_normalise(
    s: jax.Array, roi: jax.Array, bounds: tuple[jax.Array, jax.Array] | None = None
) -> jax.Array:
    """Min-max normalise ``s`` over the roi; a constant map gives 0 everywhere.

    Parameters
    ----------
    s : jax.Array, shape (P,), float32
    roi : jax.Array, shape (P,), bool
    bounds : (lo, hi) of scalar float32, optional
        ``min`` and ``max`` of ``s`` over the roi when the caller has them already
        (:func:`.preprocess.signed_bounds`); computed here otherwise.

    Returns
    -------
    jax.Array, shape (P,), float32
        Values in [0, 1] inside the roi (outside values are meaningless).
    """
    if bounds is None:
        lo = jnp.min(jnp.where(roi, s, jnp.inf))
        hi = jnp.max(jnp.where(roi, s, -jnp.inf))
    else:
        lo, hi = bounds
    span = hi - lo
    # An empty roi gives span = -inf; a constant map span = 0: both normalise to 0.
    safe = jnp.where(span > 0, span, 1.0)
    # Pixels at the maximum are exactly 1 (so ``@1`` keeps them): in float32,
    # (max - lo) / (max - lo) need not round to 1 after the subtraction.
    return jnp.where(span > 0, jnp.where(s >= hi, 1.0, (s - lo) / safe), 0.0)


def topk_ranks(s: jax.Array, roi: jax.Array, keys: jax.Array) -> jax.Array:
    """Rank (0 = highest) of every pixel under the top-K rule; outside-roi pixels last.

    Parameters
    ----------
    s : jax.Array, shape (P,), float32
        Sign-transformed saliency.
    roi : jax.Array, shape (P,), bool
    keys : jax.Array, shape (P,), uint32
        From :func:`tiebreak_keys`.

    Returns
    -------
    jax.Array, shape (P,), int32
        ``A = (rank < k) & roi`` is the top-k region.
    """
    return descending(s, roi, keys).ranks


def _numpy_bin_counts(bins: np.ndarray) -> np.ndarray:
    """Per row of ``bins`` (..., P) uint8, how often each value 0..255 occurs:
    (..., 256) int32. One ``np.bincount`` per row (a row's 256 counters stay in cache;
    one bincount over all rows offset by row is 2-3x slower)."""
    b = np.asarray(bins, np.uint8)
    flat = b.reshape(-1, b.shape[-1])
    out = np.empty((flat.shape[0], N_OTSU_BINS), np.int32)
    for i, row in enumerate(flat):
        out[i] = np.bincount(row, minlength=N_OTSU_BINS)
    return out.reshape(*b.shape[:-1], N_OTSU_BINS)


def host_bin_counts(bins: jax.Array) -> jax.Array:
    """:func:`bin_counts` by numpy on the host (CPU backends): the same integers.

    XLA:CPU runs the histogram's scatter-add as a scalar loop (26-36 ms per 64 maps of
    224 x 224); ``np.bincount`` takes about 8 ms, 11-14 ms with the callback's copies.
    Under ``vmap`` the callback gets the whole batch.
    """
    shape = jax.ShapeDtypeStruct((*bins.shape[:-1], N_OTSU_BINS), jnp.int32)
    out: jax.Array = jax.pure_callback(_numpy_bin_counts, shape, bins,
                                       vmap_method="expand_dims")
    return out


def xla_bin_counts(bins: jax.Array) -> jax.Array:
    """:func:`bin_counts` by a scatter-add (GPUs and other backends)."""
    return jnp.zeros(N_OTSU_BINS, jnp.int32).at[bins.astype(jnp.int32)].add(1)


def bin_counts(bins: jax.Array) -> jax.Array:
    """How often each value 0..255 occurs in ``bins``.

    Parameters
    ----------
    bins : jax.Array, shape (P,), uint8

    Returns
    -------
    jax.Array, shape (256,), int32

    Numpy on the host on CPU (:func:`host_bin_counts`), a scatter-add elsewhere
    (:func:`xla_bin_counts`): the same counts.
    """
    out: jax.Array = lax.platform_dependent(bins, cpu=host_bin_counts, default=xla_bin_counts)
    return out


def otsu_threshold(s_norm: jax.Array, roi: jax.Array) -> jax.Array:
    """Otsu's threshold tau on a 256-bin histogram of the normalised map.

    Bin ``i`` holds ``i/256 <= S̃ < (i+1)/256`` (S̃ = 1 goes to bin 255). For every
    split ``t`` in 1..255 (B = bins below t, A = bins from t on) the between-class
    variance ``w_B w_A (mu_B - mu_A)**2`` is computed from bin indices; the smallest
    maximising ``t`` wins and ``tau = t / 256``, so ``A = {S̃ >= tau}`` is exactly the
    pixels in bins ``>= t``. A map whose pixels all share one bin (e.g. a constant map)
    has zero variance at every split: t = 1, and A holds only pixels with S̃ >= 1/256.

    Parameters
    ----------
    s_norm : jax.Array, shape (P,), float32
        Min-max normalised map.
    roi : jax.Array, shape (P,), bool

    Returns
    -------
    jax.Array, scalar float32
    """
    bins = jnp.clip(jnp.floor(s_norm * N_OTSU_BINS), 0, N_OTSU_BINS - 1).astype(jnp.uint8)
    # Pixels outside the roi are counted in bin 0, then taken out again.
    counts = bin_counts(jnp.where(roi, bins, jnp.uint8(0)))
    counts = counts.at[0].add(count(roi) - roi.shape[0])
    return otsu_split(counts).astype(jnp.float32) / N_OTSU_BINS


def otsu_split(counts: jax.Array) -> jax.Array:
    """The split ``t`` in 1..255 of Otsu's rule on a 256-bin histogram (see
    :func:`otsu_threshold`: the smallest ``t`` maximising the between-class variance of
    bins ``< t`` and ``>= t``; 1 when no split has both classes).

    Parameters
    ----------
    counts : jax.Array, shape (256,), int32
        Pixels of Ω per bin.

    Returns
    -------
    jax.Array, scalar int32
    """
    n_below = jnp.cumsum(counts)[:-1]  # split t = 1..255: B = bins 0..t-1
    # Emptiness from exact integer counts: 1 - w_B in float32 can leave a spurious
    # tiny w_A whose mean is garbage.
    valid = (n_below > 0) & (n_below < n_below[-1] + counts[-1])
    # Probabilities, not counts, for the moments: cumulative sums of counts * index
    # would leave float32's exact-integer range on large 3D volumes.
    p = counts.astype(jnp.float32) / jnp.maximum(jnp.sum(counts), 1).astype(jnp.float32)
    levels = jnp.arange(N_OTSU_BINS, dtype=jnp.float32)
    w_b = jnp.cumsum(p)[:-1]
    m_b = jnp.cumsum(p * levels)[:-1]
    w_a = jnp.cumsum(p[::-1])[::-1][1:]
    m_a = jnp.cumsum((p * levels)[::-1])[::-1][1:]
    mu_b = m_b / jnp.where(valid, w_b, 1.0)
    mu_a = m_a / jnp.where(valid, w_a, 1.0)
    var = jnp.where(valid, w_b * w_a * (mu_b - mu_a) ** 2, 0.0)
    return (jnp.argmax(var) + 1).astype(jnp.int32)  # argmax returns the first maximiser
