"""Map-to-map structural similarity (``ssim``), for sanity checks between maps.

Unlike the other kernels, SSIM needs the spatial layout: the kernel takes the flattened
maps and the grid shape, and works on local windows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from benchmark.metrics.kernels import NAN, is_constant, tree_sum
from benchmark.metrics.threshold import minmax_normalise

SSIM_WIN = 7  # window side, as skimage's default for gaussian_weights=False
SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. (2004); data_range = 1 after normalisation


def box_sum(x: jax.Array, win: int) -> jax.Array:
    """Sums over every ``win``-sided window lying fully inside the grid ("valid" mode).

    Separable: ``win`` shifted slices summed along each axis in turn, so each output
    value is a sum of ``win**ndim`` inputs with only short float32 partial sums.

    Parameters
    ----------
    x : jax.Array, shape (*spatial)
    win : int
        At most every axis length.

    Returns
    -------
    jax.Array, shape ``tuple(n - win + 1 for n in spatial)``
        Entry ``i`` is the sum over the window whose first corner is ``i``.
    """
    for axis in range(x.ndim):
        n = x.shape[axis] - win + 1
        acc = lax.slice_in_dim(x, 0, n, axis=axis)
        for offset in range(1, win):
            acc = acc + lax.slice_in_dim(x, offset, offset + n, axis=axis)
        x = acc
    return x


def ssim(s: jax.Array, w: jax.Array, roi: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Mean structural similarity of the min-max normalised S and W.

    Parameters
    ----------
    s, w : jax.Array, shape (P,), float32
        Sign-transformed saliency and reference, flattened in C order.
    roi : jax.Array, shape (P,), bool
    shape : tuple of int
        The grid (2D or 3D), every axis >= 7 (``compute`` checks this).

    Returns
    -------
    jax.Array, scalar float32
        In [-1, 1]. NaN when S or W is constant on Ω (min-max normalisation undefined,
        as for ``sim``; this includes W = 0, the empty reference) or when no 7-sided
        window lies fully inside Ω.

    Notes
    -----
    With x = S̃ and y = W̃ (min-max normalised over Ω), for every 7 x 7 (x 7) window
    with sample moments (``n = 7**ndim``, covariances normalised by ``n - 1``)::

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x² + mu_y² + C1)(s_x² + s_y² + C2))

    with ``C1 = (0.01)²``, ``C2 = (0.03)²``, averaged over the windows lying fully inside
    Ω (the grid without a roi: skimage's "valid", cropped region). This equals
    ``skimage.metrics.structural_similarity(x, y, win_size=7, data_range=1,
    gaussian_weights=False)`` without a roi. With a roi, only windows of Ω pixels count,
    so no value outside Ω enters the score.

    Float32 care: both maps are centred on their Ω mean before the window moments, and
    variances are formed from window sums as ``(Σx² - (Σx)²/n) / (n - 1)``; with C2 of
    only 9e-4, a variance error of 1e-7 would move a flat window's score by 1e-4.

    References
    ----------
    Wang, Bovik, Sheikh, Simoncelli (2004). Image quality assessment: from error
    visibility to structural similarity. IEEE TIP 13(4), 600-612.
    """
    n_win = SSIM_WIN ** len(shape)
    n_omega = jnp.maximum(jnp.sum(roi, dtype=jnp.int32), 1).astype(jnp.float32)

    def centred(v: jax.Array) -> tuple[jax.Array, jax.Array]:
        v = jnp.where(roi, minmax_normalise(v, roi), 0.0)
        mean = tree_sum(v) / n_omega
        return jnp.where(roi, v - mean, 0.0).reshape(shape), mean

    x, mx = centred(s)
    y, my = centred(w)
    sx, sy = box_sum(x, SSIM_WIN), box_sum(y, SSIM_WIN)
    var_x = (box_sum(x * x, SSIM_WIN) - sx * sx / n_win) / (n_win - 1)
    var_y = (box_sum(y * y, SSIM_WIN) - sy * sy / n_win) / (n_win - 1)
    cov = (box_sum(x * y, SSIM_WIN) - sx * sy / n_win) / (n_win - 1)
    mu_x, mu_y = sx / n_win + mx, sy / n_win + my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    # Window counts are small integers: exact in float32.
    inside = box_sum(roi.reshape(shape).astype(jnp.float32), SSIM_WIN) == n_win
    n_inside = jnp.sum(inside, dtype=jnp.int32)
    total = tree_sum(jnp.where(inside, num / den, 0.0).ravel())
    value = total / jnp.maximum(n_inside, 1).astype(jnp.float32)
    undefined = is_constant(s, roi) | is_constant(w, roi) | (n_inside == 0)
    return jnp.where(undefined, NAN, value)


def ssim_fits(shape: tuple[int, ...]) -> bool:
    """Whether a grid is large enough for one SSIM window (every axis >= 7)."""
    return min(shape) >= SSIM_WIN
