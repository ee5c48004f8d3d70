"""The static plan of one ``compute`` call and the jitted chunk kernel built from it.

A :class:`Plan` holds everything that fixes the compiled program (grid shapes, which
metrics on which attention regions); what may vary from call to call (the sign rule,
fixed thresholds tau, top-K sizes k, jitter keys) are array arguments, so a new sign,
tau or seed does not recompile. :func:`chunk_kernel` is cached on the plan; ``jax.jit`` then
compiles once per chunk length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from benchmark.metrics import distance, graded, kernels, ranking, similarity
from benchmark.metrics.counting import count
from benchmark.metrics.preprocess import apply_sign, resize_to, signed_bounds
from benchmark.metrics.registry import ThresholdSpec
from benchmark.metrics.threshold import (
    minmax_normalise,
    order_keys,
    otsu_threshold,
    topk_count,
    topk_region,
)

# Metric name -> kernel for the metrics that take no threshold.
_BINARY = {"mass_accuracy": kernels.mass_accuracy}
# Metrics read from the counts below each pixel of G, shared by both
# (:func:`.ranking.positive_counts`).
_COUNTED = {"auroc": kernels.auroc, "auprc": kernels.auprc}
_GRADED = {"weighted_mass": graded.weighted_mass}
# Graded kernels that also take S's bounds over Ω (:func:`.preprocess.signed_bounds`).
_GRADED_BOUNDED = {"cc": graded.cc, "sim": graded.sim, "kl": graded.kl}


@dataclass(frozen=True)
class Region:
    """An attention-region rule: ``kind`` in {"fixed", "top", "otsu"}; ``slot`` indexes
    the ``taus`` (fixed) or ``ks`` (top) argument of the kernel, -1 for otsu."""

    kind: str
    slot: int = -1


def region_slots(
    thresholds: Sequence[ThresholdSpec],
) -> tuple[dict[ThresholdSpec, Region], list[float], list[float]]:
    """One :class:`Region` per distinct threshold rule, in first-seen order, with the
    fixed taus and top-K percentages their slots index.

    Parameters
    ----------
    thresholds : sequence of ThresholdSpec
        Resolved rules (kind "fixed", "top" or "otsu"), repeats allowed.

    Returns
    -------
    regions : dict of ThresholdSpec to Region
    taus, percents : list of float
        ``Region("fixed", j)`` reads ``taus[j]``, ``Region("top", j)`` ``percents[j]``.
    """
    regions: dict[ThresholdSpec, Region] = {}
    taus: list[float] = []
    percents: list[float] = []
    for thr in thresholds:
        if thr in regions:
            continue
        if thr.kind == "fixed":
            regions[thr] = Region("fixed", len(taus))
            taus.append(float(thr.value or 0.0))
        elif thr.kind == "top":
            regions[thr] = Region("top", len(percents))
            percents.append(float(thr.value or 0.0))
        else:
            regions[thr] = Region("otsu")
    return regions, taus, percents


def topk_sizes(percents: Sequence[float], n_omega: np.ndarray) -> np.ndarray:
    """(N, len(percents)) int32: :func:`.threshold.topk_count` of each percentage for each
    image's |Ω| (``n_omega``, shape (N,))."""
    return np.array([[topk_count(p, int(n)) for p in percents] for n in n_omega],
                    np.int32).reshape(len(n_omega), len(percents))  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """Static description of a chunk kernel.

    Attributes
    ----------
    saliency_shape, reference_shape : tuple of int
        Spatial shapes (2D or 3D); the saliency is resized when they differ.
    metrics : tuple of (str, int)
        Base metric name and index into ``regions`` (-1 for metrics without threshold),
        in output order.
    regions : tuple of Region
    pointing_tolerance : bool, default False
        Whether the pointing game reads a hit region H (tolerance > 0) from the ``hit``
        argument instead of using G.
    has_roi : bool, default True
        Whether Ω comes from the ``roi`` argument; False means every pixel (``roi`` is
        then a dummy ``(C, 1)`` array and is not read).
    """

    saliency_shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    metrics: tuple[tuple[str, int], ...]
    regions: tuple[Region, ...]
    pointing_tolerance: bool = False
    has_roi: bool = True

    @property
    def needs_ranks(self) -> bool:
        """Whether any metric selects a top-K region (and so reads the tie-break ranks)."""
        return any(r.kind == "top" for r in self.regions) or any(
            m == "rank_accuracy" for m, _ in self.metrics
        )

    @property
    def needs_counts(self) -> bool:
        """Whether ``auroc`` or ``auprc`` read :func:`.ranking.positive_counts`."""
        return any(m in _COUNTED for m, _ in self.metrics)

    @property
    def needs_host(self) -> bool:
        """Whether the kernel has steps that run as numpy on the host on CPU (the counts
        of ``auroc`` / ``auprc``, top-K cuts, Spearman's ranks, Otsu's histogram)."""
        return (self.needs_counts or self.needs_ranks
                or any(r.kind == "otsu" for r in self.regions)
                or any(m in ("spearman", "spearman_abs") for m, _ in self.metrics))


def _score_image(
    plan: Plan,
    saliency: jax.Array,
    reference: jax.Array,
    roi: jax.Array,
    hit: jax.Array,
    ks: jax.Array,
    taus: jax.Array,
    keys: jax.Array,
    sign_code: jax.Array,
    spacing: jax.Array,
) -> jax.Array:
    """All metrics of the plan for one image; returns shape ``(len(plan.metrics),)``."""
    s_raw = resize_to(saliency, plan.reference_shape).ravel()
    s = apply_sign(s_raw, sign_code)
    ref = reference.ravel()
    omega = roi.ravel() if plan.has_roi else jnp.ones(ref.size, bool)
    g = (ref > 0.5) & omega  # binary metrics only; validated to be 0/1 then

    # Over the whole grid, bounds and peak come from the raw map (plain reductions).
    whole = not plan.has_roi and plan.saliency_shape == plan.reference_shape
    bounds = signed_bounds(s_raw, sign_code) if whole else None
    s_norm = None
    if any(r.kind != "top" for r in plan.regions):
        s_norm = minmax_normalise(s, omega, bounds)
    # auroc and auprc share the counts below each pixel of G; Spearman reads average
    # ranks (:func:`.graded.average_ranks`). Top-K regions and rank_accuracy select
    # their pixels by a cut instead (``keys`` holds the tie-break ranks of
    # :func:`.threshold.tiebreak_ranks` then, a dummy otherwise).
    shared: ranking.PositiveCounts | None = None
    if plan.needs_counts:
        fields = tuple(f for m, _ in plan.metrics for f in kernels.COUNTS_READ.get(m, ()))
        shared = ranking.positive_counts(order_keys(s, omega), g, fields)
    w_ranks: list[jax.Array] = []

    def ranks_of_w() -> jax.Array:
        if not w_ranks:
            w_ranks.append(graded.average_ranks(ref, omega))
        return w_ranks[0]

    overlaps: dict[int, dict[str, jax.Array]] = {}

    def overlap(i: int) -> dict[str, jax.Array]:
        if i not in overlaps:
            region = plan.regions[i]
            if region.kind == "top":
                a = topk_region(s, omega, ks[region.slot], keys)
            else:
                assert s_norm is not None
                tau = taus[region.slot] if region.kind == "fixed" else otsu_threshold(s_norm, omega)
                a = s_norm >= tau
            overlaps[i] = kernels.region_overlap(a & omega, g)
        return overlaps[i]

    out = []
    for name, region_index in plan.metrics:
        if region_index >= 0:
            out.append(overlap(region_index)[name])
        elif name == "rank_accuracy":
            top_g = topk_region(s, omega, kernels.count(g), keys)
            out.append(kernels.rank_accuracy(top_g, g))
        elif name == "pointing_game":
            h = hit if plan.pointing_tolerance else None
            peak = bounds[1] if bounds is not None else None
            out.append(kernels.pointing_game(s, g, omega, h, peak))
        elif name == "nss":  # with S's bounds, as the graded kernels below
            out.append(kernels.nss(s, g, omega, bounds))
        elif name in _BINARY:
            out.append(_BINARY[name](s, g, omega))
        elif name in _COUNTED:
            out.append(_COUNTED[name](s, g, omega, shared))
        elif name == "spearman":
            out.append(graded.spearman(s, ref, omega, w_ranks=ranks_of_w()))
        elif name == "spearman_abs":
            out.append(graded.spearman_abs(s_raw, ref, omega, ranks_of_w()))
        elif name == "ssim":
            out.append(similarity.ssim(s, ref, omega, plan.reference_shape))
        elif name == "peak_distance":
            coords = distance.grid_coordinates(plan.reference_shape)
            out.append(distance.peak_distance(s, ref, omega, coords, spacing))
        elif name in _GRADED_BOUNDED:
            out.append(_GRADED_BOUNDED[name](s, ref, omega, bounds))
        else:
            out.append(_GRADED[name](s, ref, omega))
    return jnp.stack(out).astype(jnp.float32)


@lru_cache(maxsize=64)
def chunk_kernel(plan: Plan) -> Callable[..., jax.Array]:
    """The jitted, vmapped kernel for ``plan``.

    Returns
    -------
    callable
        ``f(saliency, reference, roi, hit, ks, taus, keys, sign_code, spacing) -> (C, M + 1)``
        float32: the M metrics, then 1.0 where the saliency map is finite, else 0.0 (the
        check rides along in the kernel instead of a separate pass over the maps); with
        saliency ``(C, *saliency_shape)`` float32, reference
        ``(C, *reference_shape)`` float32, roi the same shape bool (``(C, 1)``, unused,
        unless ``plan.has_roi``), hit ``(C, P)`` bool
        when ``plan.pointing_tolerance`` (else ``(C, 1)``, unused), ks ``(C, n_top)``
        int32, and, shared by all images, taus ``(n_fixed,)`` float32, keys ``(P,)``
        int32 (the tie-break ranks of :func:`.threshold.tiebreak_ranks` when
        ``plan.needs_ranks``, else a dummy ``(1,)``), sign_code an int32 scalar (see
        :func:`.preprocess.apply_sign`) and spacing ``(D,)`` float32 (mm per axis;
        traced, so a new spacing does not recompile).
    """

    def per_image(sal: jax.Array, ref: jax.Array, roi: jax.Array, hit: jax.Array,
                  ks: jax.Array, taus: jax.Array, keys: jax.Array, sign_code: jax.Array,
                  spacing: jax.Array) -> jax.Array:  # fmt: skip
        scores = _score_image(plan, sal, ref, roi, hit, ks, taus, keys, sign_code, spacing)
        # An int8 block count, which XLA:CPU vectorises (``all`` over the fused
        # predicate runs as a scalar loop).
        finite = (count(~jnp.isfinite(sal.ravel())) == 0).astype(jnp.float32)
        return jnp.concatenate([scores, finite[None]])

    return jax.jit(jax.vmap(per_image, in_axes=(0, 0, 0, 0, 0, None, None, None, None)))
