"""The static plan of one ``compute`` call and the jitted chunk kernel built from it.

A :class:`Plan` holds everything that fixes the compiled program (grid shapes, which
metrics on which attention regions); what may vary from call to call (the sign rule,
fixed thresholds tau, top-K sizes k, jitter keys) are array arguments, so a new sign,
tau or seed does not recompile. :func:`chunk_kernel` is cached on the plan; ``jax.jit`` then
compiles once per chunk length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp

from benchmark.metrics import graded, kernels
from benchmark.metrics.preprocess import apply_sign, resize_to
from benchmark.metrics.threshold import (
    minmax_normalise,
    otsu_threshold,
    topk_ranks,
)

# Metric name -> kernel for the metrics that take no threshold.
_BINARY = {
    "pointing_game": kernels.pointing_game,
    "mass_accuracy": kernels.mass_accuracy,
    "auroc": kernels.auroc,
    "auprc": kernels.auprc,
    "nss": kernels.nss,
}
_GRADED = {
    "weighted_mass": graded.weighted_mass,
    "cc": graded.cc,
    "spearman": graded.spearman,
    "sim": graded.sim,
    "kl": graded.kl,
}


@dataclass(frozen=True)
class Region:
    """An attention-region rule: ``kind`` in {"fixed", "top", "otsu"}; ``slot`` indexes
    the ``taus`` (fixed) or ``ks`` (top) argument of the kernel, -1 for otsu."""

    kind: str
    slot: int = -1


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
    """

    saliency_shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    metrics: tuple[tuple[str, int], ...]
    regions: tuple[Region, ...]

    @property
    def needs_ranks(self) -> bool:
        """Whether any metric uses the top-K ranking (and so the jitter keys)."""
        return any(r.kind == "top" for r in self.regions) or any(
            m == "rank_accuracy" for m, _ in self.metrics
        )


def _score_image(
    plan: Plan,
    saliency: jax.Array,
    reference: jax.Array,
    roi: jax.Array,
    ks: jax.Array,
    taus: jax.Array,
    keys: jax.Array,
    sign_code: jax.Array,
) -> jax.Array:
    """All metrics of the plan for one image; returns shape ``(len(plan.metrics),)``."""
    s = apply_sign(resize_to(saliency, plan.reference_shape).ravel(), sign_code)
    ref = reference.ravel()
    omega = roi.ravel()
    g = (ref > 0.5) & omega  # binary metrics only; validated to be 0/1 then

    s_norm = minmax_normalise(s, omega) if any(r.kind != "top" for r in plan.regions) else None
    ranks = topk_ranks(s, omega, keys) if plan.needs_ranks else None
    overlaps: dict[int, dict[str, jax.Array]] = {}

    def overlap(i: int) -> dict[str, jax.Array]:
        if i not in overlaps:
            region = plan.regions[i]
            if region.kind == "top":
                assert ranks is not None
                a = ranks < ks[region.slot]
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
            assert ranks is not None
            out.append(kernels.rank_accuracy(ranks, g))
        elif name in _BINARY:
            out.append(_BINARY[name](s, g, omega))
        else:
            out.append(_GRADED[name](s, ref, omega))
    return jnp.stack(out).astype(jnp.float32)


@lru_cache(maxsize=64)
def chunk_kernel(plan: Plan) -> Callable[..., jax.Array]:
    """The jitted, vmapped kernel for ``plan``.

    Returns
    -------
    callable
        ``f(saliency, reference, roi, ks, taus, keys, sign_code) -> (C, M) float32``
        with saliency ``(C, *saliency_shape)`` float32, reference
        ``(C, *reference_shape)`` float32, roi the same shape bool, ks ``(C, n_top)``
        int32, and, shared by all images, taus ``(n_fixed,)`` float32, keys ``(P,)``
        uint32 and sign_code an int32 scalar (see :func:`.preprocess.apply_sign`).
    """

    def per_image(sal: jax.Array, ref: jax.Array, roi: jax.Array, ks: jax.Array,
                  taus: jax.Array, keys: jax.Array, sign_code: jax.Array) -> jax.Array:  # fmt: skip
        return _score_image(plan, sal, ref, roi, ks, taus, keys, sign_code)

    return jax.jit(jax.vmap(per_image, in_axes=(0, 0, 0, 0, None, None, None)))
