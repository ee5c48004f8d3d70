"""Helpers of the former AUROC / AUPRC / Spearman kernels, kept as test references.

The package computed these from :func:`benchmark.metrics.ranking.descending` (one
variadic sort) until the counts and ranks moved to the host on CPU; the tests compare the
current kernels bit for bit against kernels built on these, verbatim.
"""

import jax
import jax.numpy as jnp

from benchmark.metrics.ranking import Ranking, to_pixels


def counts_above(r: Ranking, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per pixel p, ``#{q in mask: x_q >= x_p}`` and ``#{q in mask: x_q > x_p}``."""
    in_order = mask[r.order].astype(jnp.int32)
    inclusive = jnp.cumsum(in_order)
    exclusive = inclusive - in_order
    return to_pixels(r, inclusive[r.last]), to_pixels(r, exclusive[r.first])


def average_ranks(r: Ranking) -> jax.Array:
    """1-based ascending average ranks among Ω (ties share their mean rank), float32:
    ``(#{< x} + #{<= x} + 1) / 2`` from the tie group at descending positions a .. b."""
    twice = 2 * r.n - r.first - r.last
    return to_pixels(r, twice).astype(jnp.float32) / 2.0
