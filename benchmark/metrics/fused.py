"""Counting metrics on CPU: every region and count of a map from one read of it.

``compute`` scores the region metrics (precision, irrelevant_fraction, recall, iou and
dice at fixed tau, top-K and Otsu), ``auroc``, ``rank_accuracy`` and the pointing game
(tolerance 0) here when JAX runs on the CPU, numba is installed and the maps are already
on the reference grid (:func:`routed`); other names of the call go to the XLA kernel.
Under XLA:CPU these took separate loops around host callbacks (sign, bounds, normalised
map, Otsu's histogram, the top-K cut, then each count: about 5 % of the memory-copy
bandwidth for the threshold family). Here one compiled function (:mod:`.fused_kernel`)
reads each map and its G once from memory, keeps what it derives in the core's cache,
and returns integer counts:

1. one vectorised pass over S and G: the sign rule, the order keys of
   :func:`.threshold.order_keys` (whose unsigned order is S's, so S's bounds over Ω are
   integer minima and maxima), G ∩ Ω as bytes, |G|, the counts above and at zero, and
   the checks (S finite, G only 0/1);
2. the maximal pixels and those in G (pointing game); per fixed tau, S̃ of
   :func:`.threshold.minmax_normalise` (the same float32 operations, XLA:CPU's flushed
   subnormals included) and |A|, |A ∩ G|;
3. every pixel's Otsu bin of S̃, then one histogram of the 256 bins split by G (|A| and
   |A ∩ G| at any split are suffix sums);
4. per top-K size k (rank accuracy: k = |G|): S̃ is monotone in S, so the k-th largest
   key lies in the bin where the histogram's counts from the top reach k; a radix
   selection (11 + 11 + 10 bits) among that bin's pixels finds it (the zeros of S⁺ are
   counted directly), and a tie group that must be cut is walked in the tie-break order
   of :func:`.threshold.tiebreak_ranks`;
5. for AUROC the kernel keeps the keys and numpy sorts each map
   (:func:`.ranking.twice_u_of`: the exact integer 2U).

The float tails stay in JAX (:func:`.threshold.otsu_split`, :func:`.kernels.overlap_scores`,
:func:`.kernels.auroc_score`, :func:`.kernels.rank_accuracy_score`,
:func:`.kernels.pointing_score`), so every score has the bits of the XLA kernel's
(tests/test_metrics_fused.py compares them over signs, ties, rois, subnormals, 3D and
errors). Other backends (GPUs) keep the XLA kernel.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from benchmark.metrics import ranking
from benchmark.metrics.counting import RADIX
from benchmark.metrics.kernels import (
    REGION_METRICS,
    auroc_score,
    overlap_scores,
    pointing_score,
    rank_accuracy_score,
)
from benchmark.metrics.plan import Region, region_slots, topk_sizes
from benchmark.metrics.preprocess import SIGNS
from benchmark.metrics.registry import parse_metric
from benchmark.metrics.threshold import N_OTSU_BINS, otsu_split, tiebreak_ranks
from benchmark.metrics.validate import (
    Array,
    binary_reference_message,
    check_shapes,
    host_array,
    host_roi,
    raise_non_finite,
)
from benchmark.threads import over_rows


def available() -> bool:
    """Whether this path can run: JAX on the CPU and the numba kernel loadable."""
    return jax.default_backend() == "cpu" and _kernel_loads()


@lru_cache(maxsize=1)
def _kernel_loads() -> bool:
    """Whether :mod:`.fused_kernel` imports (numba installed, and a folder for its
    compile cache: beside the package, ``$NUMBA_CACHE_DIR`` or numba's user cache; with
    none writable numba refuses ``cache=True``). Otherwise every metric stays on the XLA
    kernel, with a warning naming the cause."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        importlib.import_module("benchmark.metrics.fused_kernel")
    except Exception as exc:  # numba's own errors (no cache folder, an unsupported CPU)
        warnings.warn(
            f"the compiled CPU kernel of the counting metrics is unavailable ({exc}); "
            "scoring on the XLA kernel instead (same values, slower). Set "
            "NUMBA_CACHE_DIR to a writable folder if the cause is numba's cache.",
            RuntimeWarning, stacklevel=3,
        )
        return False
    return True


#: Metrics without a threshold scored here (the pointing game at tolerance 0 only).
COUNTED_METRICS = ("auroc", "rank_accuracy", "pointing_game")


def handles(base: str, kind: str | None) -> bool:
    """Whether a metric ``base@<threshold of kind>`` (``base`` alone: kind None) is
    scored here: the region metrics and :data:`COUNTED_METRICS`."""
    if kind is None:
        return base in COUNTED_METRICS
    return base in REGION_METRICS and kind in ("fixed", "top", "otsu")


@dataclass(frozen=True)
class RegionCounts:
    """What the kernel returns for N maps (numpy, host memory).

    Attributes
    ----------
    finite, reference_ok : ndarray, shape (N,), bool
        Every pixel of S finite; G only 0/1. The counts of a map failing either are
        meaningless (the caller rejects the batch).
    n_g, n_omega : ndarray, shape (N,), int32
        |G ∩ Ω| and |Ω|.
    fixed : ndarray, shape (N, n_tau, 2), int32
        (|A|, |A ∩ G|) at each fixed tau.
    top : ndarray, shape (N, n_k, 2), int32
        (|A|, |A ∩ G|) of each top-K region.
    otsu : ndarray, shape (N, 256, 2), int32
        Per Otsu bin, the pixels of Ω outside G and inside G (zeros when not asked).
    peak : ndarray, shape (N, 2), int32
        |M| and |M ∩ G| of the maximal pixels M of Ω (zeros when not asked).
    twice_u : ndarray, shape (N,), int64, or None
        AUROC's ``2U`` (:func:`.ranking.positive_counts`) when asked.
    """

    finite: np.ndarray
    reference_ok: np.ndarray
    n_g: np.ndarray
    n_omega: np.ndarray
    fixed: np.ndarray
    top: np.ndarray
    otsu: np.ndarray
    peak: np.ndarray
    twice_u: np.ndarray | None = None


def region_counts(
    sal: np.ndarray, ref: np.ndarray, roi: np.ndarray | None, sign_code: int,
    taus: np.ndarray, ks: np.ndarray, tb_ranks: np.ndarray, otsu: bool,
    auroc: bool = False, peak: bool = False,
) -> RegionCounts:
    """Count every attention region of N maps (two threads on two CPUs).

    Parameters
    ----------
    sal : ndarray, shape (N, P), float32, C-contiguous
        Raw saliency on the reference grid (the sign is applied here).
    ref : ndarray, shape (N, P), float32 or uint8, C-contiguous
        G (0/1; any other value is reported in ``reference_ok``).
    roi : ndarray, shape (N, P), uint8 (0/1), or None for every pixel
    sign_code : int
        ``SIGNS.index(sign)`` (:func:`.preprocess.apply_sign`).
    taus : ndarray, shape (n_tau,), float32
    ks : ndarray, shape (N, n_k), int32
        Top-K sizes per map (:func:`.threshold.topk_count` of |Ω|).
    tb_ranks : ndarray, shape (P,), int32
        :func:`.threshold.tiebreak_ranks` (any (1,) array when ``n_k == 0``).
    otsu : bool
        Whether to fill the Otsu histograms.
    auroc : bool, default False
        Whether to compute AUROC's ``2U``: the kernel keeps every map's keys, then numpy
        sorts them (:func:`.ranking.twice_u_of`; its SIMD sort beats a compiled one here).
    peak : bool, default False
        Whether to count the maximal pixels (the pointing game).

    A top-K size of -1 in ``ks`` stands for |G ∩ Ω| of the map (rank accuracy).
    """
    from benchmark.metrics.fused_kernel import rows  # numba: loaded on first use

    n, n_pixels = sal.shape
    flags = np.zeros((n, 2), np.bool_)
    n_g = np.zeros(n, np.int32)
    n_omega = np.zeros(n, np.int32)
    keys = np.zeros((n, n_pixels) if auroc else (1, 1), np.uint32)
    in_g = np.zeros((n, n_pixels) if auroc else (1, 1), np.uint8)
    twice_u = np.zeros(n, np.int64) if auroc else None
    peaks = np.zeros((n, 2), np.int32)
    fixed = np.zeros((n, len(taus), 2), np.int32)
    top = np.zeros((n, ks.shape[1], 2), np.int32)
    slots = np.zeros((n if otsu else 1, 2 * N_OTSU_BINS), np.int32)
    roi_arr = np.zeros((1, 1), np.uint8) if roi is None else roi
    sal_bits = sal.view(np.uint32)
    # XLA:CPU reads a subnormal tau as 0 (denormals are zero).
    taus = np.where(np.abs(taus) < np.finfo(np.float32).tiny, np.float32(0), taus)
    taus = taus.astype(np.float32)
    # Pixels in tie-break order (the inverse permutation of the ranks).
    order = np.zeros(n_pixels, np.int32)
    if ks.shape[1]:
        order[tb_ranks] = np.arange(n_pixels, dtype=np.int32)

    def part(maps: range) -> None:
        rows(maps.start, maps.stop, sal_bits, ref, roi_arr, roi is not None, sign_code,
             taus, ks, order, otsu, auroc, peak, flags, n_g, n_omega, fixed, top, slots,
             peaks, keys, in_g)  # fmt: skip
        if twice_u is not None:
            for i in maps:
                if flags[i, 0] and flags[i, 1]:
                    twice_u[i] = ranking.twice_u_of(keys[i], in_g[i].view(np.bool_))

    over_rows(part, n)
    hist = slots.reshape(-1, N_OTSU_BINS, 2) if otsu else np.zeros((n, N_OTSU_BINS, 2), np.int32)
    return RegionCounts(flags[:, 0], flags[:, 1], n_g, n_omega, fixed, top, hist, peaks,
                        twice_u)  # fmt: skip


@jax.jit
def _otsu_counts(hist: jax.Array) -> jax.Array:
    """(N, 2) int32: |A| and |A ∩ G| of each map's Otsu region, from (N, 256, 2) counts."""
    t = jax.vmap(otsu_split)(jnp.sum(hist, axis=2))
    above = jnp.arange(N_OTSU_BINS)[None, :] >= t[:, None]
    n_a = jnp.sum(jnp.where(above, hist[:, :, 0] + hist[:, :, 1], 0), axis=1)
    n_ag = jnp.sum(jnp.where(above, hist[:, :, 1], 0), axis=1)
    return jnp.stack([n_a, n_ag], axis=1).astype(jnp.int32)


@jax.jit
def _scores(n_g: jax.Array, n_a: jax.Array, n_ag: jax.Array) -> dict[str, jax.Array]:
    # One region at a time, on (N,) arrays as the XLA kernel does: XLA rewrites a
    # division by a broadcast |G| as a multiplication by its reciprocal (one ulp off).
    cols = [overlap_scores(n_a[:, r], n_g, n_ag[:, r]) for r in range(n_a.shape[1])]
    return {name: jnp.stack([c[name] for c in cols], axis=1) for name in cols[0]}


def region_scores(counts: RegionCounts, regions: Sequence[Region]) -> dict[str, np.ndarray]:
    """The five region metrics of each region (:func:`.kernels.overlap_scores`).

    Parameters
    ----------
    counts : RegionCounts
    regions : sequence of Region
        In output order (:func:`.plan.region_slots`).

    Returns
    -------
    dict of str to ndarray, shape (N, len(regions)), float32
    """
    n = counts.n_g.shape[0]
    if n == 0:
        return {name: np.zeros((0, len(regions)), np.float32) for name in REGION_METRICS}
    fixed, top, otsu, n_g = _size_class(counts.fixed, counts.top, counts.otsu, counts.n_g)
    cols = []
    for region in regions:
        if region.kind == "fixed":
            cols.append(fixed[:, region.slot])
        elif region.kind == "top":
            cols.append(top[:, region.slot])
        else:
            cols.append(np.asarray(_otsu_counts(otsu)))
    both = np.stack(cols, axis=1)  # (N, R, 2)
    out = _scores(n_g, both[:, :, 0], both[:, :, 1])
    return {name: np.asarray(v)[:n] for name, v in out.items()}


@jax.jit
def _auroc(digits: jax.Array, n1: jax.Array, n0: jax.Array) -> jax.Array:
    return jax.vmap(auroc_score)(digits, n1, n0)


def auroc_scores(counts: RegionCounts) -> np.ndarray:
    """AUROC of each map from its ``2U`` (:func:`.kernels.auroc_score`), float64 (N,)."""
    assert counts.twice_u is not None
    n = counts.twice_u.shape[0]
    digits = np.stack([counts.twice_u // RADIX, counts.twice_u % RADIX], axis=-1)
    values = _auroc(*_size_class(digits.astype(np.int32), counts.n_g,
                                 counts.n_omega - counts.n_g))  # fmt: skip
    return np.asarray(values)[:n].astype(np.float64)


def _size_class(*arrays: np.ndarray) -> list[np.ndarray]:
    """``arrays`` (same length N on axis 0) padded with zeros to the next power of two:
    a jitted tail compiles once per size class, not once per batch length."""
    n = arrays[0].shape[0]
    size = 1 << (max(n, 1) - 1).bit_length()
    out = []
    for x in arrays:
        padded = np.zeros((size, *x.shape[1:]), x.dtype)
        padded[:n] = x
        out.append(padded)
    return out


def routed(saliency: Array, reference: Array, metrics: Sequence[str],
           pointing_tolerance_mm: float = 0.0) -> list[str]:  # fmt: skip
    """The names of ``metrics`` that :func:`compute` scores on this path (may be []).

    All or nothing on the inputs: JAX on the CPU with numba installed, maps already on
    the reference grid (no resize), and every name valid and resolved (an unknown or
    ``@tuned`` name goes the usual way, which names the error first). The pointing game
    with a tolerance (hit regions) stays on the XLA kernel.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    shape_s, shape_r = getattr(saliency, "shape", None), getattr(reference, "shape", None)
    if shape_s is None or shape_r is None or tuple(shape_s) != tuple(shape_r) \
            or len(shape_s) not in (3, 4) or not available():
        return []
    out = []
    for name in dict.fromkeys(metrics):
        try:
            spec, thr = parse_metric(name)
        except ValueError:
            return []
        if thr is not None and thr.kind == "tuned":
            return []
        if spec.name == "pointing_game" and pointing_tolerance_mm != 0:
            continue
        if handles(spec.name, None if thr is None else thr.kind):
            out.append(name)
    return out


def score(
    saliency: Array, reference: Array, names: Sequence[str], *, sign: str,
    roi: Array | None, seed: int, first_binary: str,
) -> dict[str, np.ndarray]:
    """``compute(saliency, reference, names, ...)`` for names of :func:`routed`.

    The caller has checked the options; here the arrays are checked (the same messages
    as the XLA path's; ``first_binary`` is the metric named when G is not 0/1), counted
    (:func:`region_counts`) and scored (:func:`region_scores`, :func:`auroc_scores`,
    the rank accuracy and pointing game tails).
    """
    sal = host_array(saliency, np.float32)
    ref = host_array(reference, None)
    check_shapes(sal.shape, ref.shape)
    n, n_pixels = sal.shape[0], math.prod(sal.shape[1:])
    roi_flat = None
    if roi is not None:
        roi_flat = host_roi(roi, ref.shape).reshape(n, n_pixels)
    ref_flat = ref.view(np.uint8) if ref.dtype == np.bool_ else ref
    if ref_flat.dtype not in (np.uint8, np.float32):
        ref_flat = ref_flat.astype(np.float32)

    # Region metrics: (base name, threshold); COUNTED_METRICS have none.
    columns = {name: (spec.name, thr) for name in names
               for spec, thr in [parse_metric(name)] if thr is not None}  # fmt: skip
    regions, taus, percents = region_slots([thr for _, thr in columns.values()])
    if n == 0:
        return {name: np.zeros(0, np.float64) for name in names}

    if roi_flat is None:
        n_omega = np.full(n, n_pixels, np.int64)
    else:
        n_omega = np.count_nonzero(roi_flat, axis=1)
    rank = "rank_accuracy" in names
    # The top-|G| region of rank accuracy is one more top-K column, k = -1: |G ∩ Ω|,
    # which the kernel counts first.
    ks = np.hstack([topk_sizes(percents, n_omega), np.full((n, int(rank)), -1, np.int32)])
    tb = tiebreak_ranks(int(seed), n_pixels) if ks.shape[1] else np.zeros(1, np.int32)
    counts = region_counts(
        sal.reshape(n, n_pixels), ref_flat.reshape(n, n_pixels), roi_flat,
        SIGNS.index(sign), np.array(taus, np.float32), ks, tb,
        any(r.kind == "otsu" for r in regions.values()), auroc="auroc" in names,
        peak="pointing_game" in names,
    )
    bad = np.flatnonzero(~counts.reference_ok)
    if bad.size:
        raise ValueError(binary_reference_message(first_binary, int(bad[0])))
    raise_non_finite(counts.finite)
    order = list(regions)
    scores = region_scores(counts, list(regions.values())) if regions else {}
    out = {name: scores[base][:, order.index(thr)].astype(np.float64)
           for name, (base, thr) in columns.items()}
    if "auroc" in names:
        out["auroc"] = auroc_scores(counts)
    if rank or "pointing_game" in names:
        top_g = counts.top[:, -1, 1] if rank else np.zeros(n, np.int32)
        tails = _counted_tails(*_size_class(top_g, counts.peak[:, 0], counts.peak[:, 1],
                                            counts.n_g))  # fmt: skip
        if rank:
            out["rank_accuracy"] = np.asarray(tails[0])[:n].astype(np.float64)
        if "pointing_game" in names:
            out["pointing_game"] = np.asarray(tails[1])[:n].astype(np.float64)
    return {name: out[name] for name in names}


@jax.jit
def _counted_tails(rank_g: jax.Array, n_m: jax.Array, n_mg: jax.Array, n_g: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    return (jax.vmap(rank_accuracy_score)(rank_g, n_g),
            jax.vmap(pointing_score)(n_mg, n_m, n_g))
