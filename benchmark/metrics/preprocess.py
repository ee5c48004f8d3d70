"""Before any metric (METRICS.md): resize the saliency to the reference grid, apply the sign."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

Sign = Literal["positive", "abs", "signed"]
SIGNS: tuple[str, ...] = ("positive", "abs", "signed")


def resize_to(saliency: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Resize one map to the reference grid (bilinear in 2D, trilinear in 3D).

    Parameters
    ----------
    saliency : jax.Array, shape (*spatial_s), float32
        Each axis no larger than ``shape``'s (``compute`` checks this).
    shape : tuple of int
        The reference grid.

    Returns
    -------
    jax.Array, shape ``shape``, float32
        ``jax.image.resize(..., method="linear")``: output pixel ``i`` samples input
        coordinate ``(i + 0.5) * n_in / n_out - 0.5`` (half-pixel centres), clamped to
        ``[0, n_in - 1]`` at the borders; the same as torch's ``interpolate`` with
        ``align_corners=False``. Upsampling only, so no antialiasing is involved.
    """
    if tuple(saliency.shape) == tuple(shape):
        return saliency
    return jax.image.resize(saliency, shape, method="linear")


def apply_sign(s: jax.Array, sign_code: jax.Array) -> jax.Array:
    """S⁺ = max(S, 0), |S| or S for ``sign_code`` 0, 1, 2 (``SIGNS.index(sign)``).

    The sign is a traced argument, not a static one, so switching it does not compile a
    new program. (-0.0 needs no care: XLA's sort and comparisons treat it as 0.0, which
    ``test_negative_zero_ties_with_zero`` checks.)
    """
    return jnp.where(sign_code == 0, jnp.maximum(s, 0.0), jnp.where(sign_code == 1, jnp.abs(s), s))


def signed_bounds(s: jax.Array, sign_code: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(min, max)`` of ``apply_sign(s, sign_code)`` from the minimum and maximum of ``s``.

    The same values exactly: S⁺ = max(S, 0) is monotone, so its bounds are those of S
    clipped at 0; max |S| = max(max S, -min S). Only min |S| needs its own pass, and only
    for ``abs`` (a ``lax.cond`` on the unbatched sign). XLA:CPU computes a plain max /
    min of a kernel input with its vectorised reduction, while one over the fused sign
    rule runs as a scalar loop (about 10x slower).

    Parameters
    ----------
    s : jax.Array, shape (P,), float32
        The raw map (a kernel input, not an expression of one, for the fast reduction).
    sign_code : jax.Array, scalar int32

    Returns
    -------
    lo, hi : jax.Array, scalar float32
    """
    hi, lo = jnp.max(s), jnp.min(s)
    is_abs = sign_code == 1
    top = jnp.where(sign_code == 0, jnp.maximum(hi, 0.0),
                    jnp.where(is_abs, jnp.maximum(hi, -lo), hi))
    bottom = lax.cond(is_abs, lambda x: jnp.min(jnp.abs(x)), lambda x: lo, s)
    bottom = jnp.where(sign_code == 0, jnp.maximum(lo, 0.0), bottom)
    return bottom, top
