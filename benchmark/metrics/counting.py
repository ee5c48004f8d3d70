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


#: Base of the two digits :func:`exact_sum` returns (``total = hi * RADIX + lo``); every
#: integer below 2**24 is a float32, so each digit converts exactly.
RADIX = 1 << 24
# Sums run over base-2**12 digits in blocks of 64: a block of digits sums below 2**18.
_DIGIT_BITS = 12
_SUM_BLOCK = 64


def exact_sum(x: jax.Array) -> jax.Array:
    """Exact sum of non-negative int32 values, past int32's range, as two int32 digits.

    Integer sums are associative, so the digits are the same whatever order a backend
    reduces in (a float32 sum is not).

    Parameters
    ----------
    x : jax.Array, shape (P,), int32, every value >= 0

    Returns
    -------
    jax.Array, shape (2,), int32
        ``(hi, lo)`` with ``sum(x) = hi * RADIX + lo`` and ``0 <= lo < RADIX``; exact while
        the sum is below 2**55.

    Each value is split into three base-2**12 digits (the top one holds bits 24 and up);
    blocks of 64 are summed digit by digit (each block sum below 2**18 for the low two)
    and the carries are moved up before the next level, so nothing overflows.
    """
    mask = (1 << _DIGIT_BITS) - 1
    digits = jnp.stack([x & mask, (x >> _DIGIT_BITS) & mask, x >> 2 * _DIGIT_BITS])
    while digits.shape[1] > 1:
        n = digits.shape[1]
        pad = -n % _SUM_BLOCK if n > _SUM_BLOCK else 0
        if pad:
            digits = jnp.concatenate([digits, jnp.zeros((3, pad), digits.dtype)], axis=1)
        block = digits.reshape(3, -1, min(_SUM_BLOCK, n)).sum(axis=2)
        middle = block[1] + (block[0] >> _DIGIT_BITS)
        top = block[2] + (middle >> _DIGIT_BITS)
        digits = jnp.stack([block[0] & mask, middle & mask, top])
    return jnp.stack([digits[2, 0], (digits[1, 0] << _DIGIT_BITS) | digits[0, 0]])
