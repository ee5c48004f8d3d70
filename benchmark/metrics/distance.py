"""Metrics measured in millimetres: ``peak_distance`` and the pointing-game tolerance.

Both use the voxel size ``spacing`` (mm per spatial axis, 1.0 each when the caller
passes none). Pixel p of the C-order grid sits at ``index(p) * spacing``; distances are
between pixel centres.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from benchmark.metrics.kernels import NAN, count, tree_sum


def tolerance_hits(g: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float) -> np.ndarray:
    """Hit regions H = {p : distance(p, G) <= tolerance_mm} of the pointing game.

    Computed on the host, once per image, with scipy's exact Euclidean distance
    transform (``distance_transform_edt(~G, sampling=spacing)``, linear time in C), and
    passed to the kernel as a boolean array. Why not in JAX: an exact Euclidean
    transform is a sequence of dependent 1-D passes (Maurer et al.) with no efficient
    array formulation, and the brute force costs O(P |G|) per image; the transform
    depends only on G and the spacing, so doing it once per image on the host is cheap
    next to reading the maps. The comparison with the tolerance is made here in float64
    too, so a pixel exactly at the tolerance (e.g. one diagonal step) is a hit.

    Parameters
    ----------
    g : numpy.ndarray, shape (N, *spatial), bool
        G ∩ Ω of every image.
    spacing : tuple of float
        mm per spatial axis.
    tolerance_mm : float
        >= 0; at 0, H = G.

    Returns
    -------
    numpy.ndarray, shape (N, *spatial), bool
        All False for an image with empty G (its pointing game is NaN anyway; scipy's
        transform is undefined without a G pixel).
    """
    hits = np.zeros(g.shape, bool)
    for i, gi in enumerate(g):
        if gi.any():
            hits[i] = ndimage.distance_transform_edt(~gi, sampling=spacing) <= tolerance_mm
    return hits


def grid_coordinates(shape: tuple[int, ...]) -> jax.Array:
    """Index coordinates of every pixel, shape ``(len(shape), P)`` float32, C order."""
    return jnp.indices(shape, dtype=jnp.float32).reshape(len(shape), math.prod(shape))


def peak_centroid(x: jax.Array, roi: jax.Array, coords: jax.Array) -> jax.Array:
    """Centroid (in index units) of the pixels of Ω where ``x`` is maximal.

    Parameters
    ----------
    x : jax.Array, shape (P,), float32
    roi : jax.Array, shape (P,), bool
    coords : jax.Array, shape (D, P), float32
        From :func:`grid_coordinates`.

    Returns
    -------
    jax.Array, shape (D,), float32
        A constant map has every pixel of Ω maximal: its centroid is the centroid of Ω
        (the grid centre without a roi). NaN when Ω is empty.
    """
    m = roi & (x == jnp.max(jnp.where(roi, x, -jnp.inf)))
    n = count(m).astype(jnp.float32)
    # tree_sum, not a running sum: Σ of indices over a 256**3 peak plateau is ~1e9.
    sums = jax.vmap(lambda c: tree_sum(jnp.where(m, c, 0.0)))(coords)
    return sums / n


def peak_distance(
    s: jax.Array, w: jax.Array, roi: jax.Array, coords: jax.Array, spacing: jax.Array
) -> jax.Array:
    """Distance in mm between the peak of S and the peak of W over Ω; lower is better.

    Each peak is the centroid of its maximal pixels (:func:`peak_centroid`), so tied
    maxima share the credit as in the pointing game. A constant S (all zero included, e.g.
    an all-negative map under ``sign="positive"``) has all of Ω maximal: its peak is the
    centroid of Ω (the grid centre without a roi), and the score is the distance from
    there to W's peak; a defined, documented value, like the pointing game's |G|/N and
    auroc's 0.5 for such a map, not a NaN. NaN when W is zero on Ω (empty reference).

    Parameters
    ----------
    s, w, roi : jax.Array, shape (P,)
        Sign-transformed saliency, graded (or binary) reference, Ω.
    coords : jax.Array, shape (D, P), float32
        From :func:`grid_coordinates`.
    spacing : jax.Array, shape (D,), float32
        mm per spatial axis.

    Returns
    -------
    jax.Array, scalar float32
        ``sqrt(Σ_d ((c_S[d] - c_W[d]) * spacing[d])**2)``.
    """
    delta = (peak_centroid(s, roi, coords) - peak_centroid(w, roi, coords)) * spacing
    value = jnp.sqrt(jnp.sum(delta**2))
    return jnp.where(jnp.any(roi & (w > 0)), value, NAN)
