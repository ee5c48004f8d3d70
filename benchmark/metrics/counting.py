"""Exact pixel counts that XLA:CPU vectorises.

XLA:CPU emits a fused ``sum(mask)`` over a whole image as a scalar loop (about 35 ms for
256 maps of 224 x 224, whatever the accumulator type), but vectorises a sum of short
int8 rows: 0/1 values summed in blocks of at most 127 cannot overflow int8, and the block
totals are then summed in int32. The result is the same integer, 3-5x sooner
(figures in ``perf/RESULTS.md``, item 1). Every count of the metric kernels goes
through :func:`count`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The largest block whose int8 sum of 0/1 values cannot overflow (127).
MAX_BLOCK = 127
# Blocks shorter than this leave too many int32 partial sums; pad to MAX_BLOCK instead.
MIN_BLOCK = 32


def block_length(n: int) -> int:
    """Block length for counting ``n`` values: the largest divisor of ``n`` in
    [MIN_BLOCK, MAX_BLOCK] (no padding), else MAX_BLOCK (the tail is padded with zeros)."""
    for b in range(min(MAX_BLOCK, n), MIN_BLOCK - 1, -1):
        if n % b == 0:
            return b
    return min(MAX_BLOCK, max(n, 1))


def count(mask: jax.Array) -> jax.Array:
    """Number of True entries of a 1-D bool array, int32 (exact for any length < 2**31).

    Parameters
    ----------
    mask : jax.Array, shape (P,), bool

    Returns
    -------
    jax.Array, int32 scalar
    """
    n = mask.shape[0]
    block = block_length(n)
    ones = mask.astype(jnp.int8)
    pad = -n % block
    if pad:
        ones = jnp.concatenate([ones, jnp.zeros(pad, jnp.int8)])
    partial = jnp.sum(ones.reshape(-1, block), axis=1, dtype=jnp.int8)
    return jnp.sum(partial, dtype=jnp.int32)
