"""Region metrics over a grid of fixed thresholds, and the ``@tuned`` threshold.

:func:`compute_curve` scores ``precision``, ``irrelevant_fraction``, ``recall``,
``iou`` or ``dice`` at T fixed thresholds in one kernel per chunk: each normalised map is
computed once, then the region sizes at every tau are counted (a grid of up to
``COUNT_MAX_TAUS`` taus) or read off one sort of the map by binary search (longer grids).
:func:`tune_threshold` picks the tau of a grid that is best on average (METRICS.md,
``tuned``); callers then score the test split with ``name@<tau>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from benchmark.metrics.compute import chunk_length, chunks, image_blocks
from benchmark.metrics.counting import count
from benchmark.metrics.kernels import REGION_METRICS, overlap_scores
from benchmark.metrics.preprocess import SIGNS, apply_sign, resize_to
from benchmark.metrics.registry import METRICS
from benchmark.metrics.threshold import minmax_normalise
from benchmark.metrics.validate import (
    Array,
    check_options,
    check_reference,
    reused_buffers,
    standard_arrays,
)

#: tau = 0.05, 0.10, ..., 0.95 (rounded, so each prints back as itself: ``iou@0.35``).
DEFAULT_GRID = np.round(np.arange(0.05, 1.0, 0.05), 2)


#: Grids up to this many taus are scored by counting, longer ones by one sort per map.
COUNT_MAX_TAUS = 64


@lru_cache(maxsize=32)
def _curve_kernel(
    saliency_shape: tuple[int, ...], reference_shape: tuple[int, ...], metric: str,
    n_taus: int,
) -> Callable[..., jax.Array]:
    """``f(saliency, reference, roi, taus, sign_code) -> (C, T) float32``, jitted.

    Shapes as in :func:`benchmark.metrics.plan.chunk_kernel`; ``taus`` ``(T,)`` float32
    with ``T = n_taus``.
    """
    del saliency_shape  # part of the cache key only: jit retraces per input shape anyway

    def prepare(
        sal: jax.Array, ref: jax.Array, roi: jax.Array, sign_code: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """S̃, Ω and G ∩ Ω of one image, flat (P,)."""
        s = apply_sign(resize_to(sal, reference_shape).ravel(), sign_code)
        omega = roi.ravel()
        # The same S̃ (same function, same float32 values) and the same test S̃ >= tau as
        # compute(), so a curve point equals compute()'s "metric@tau" exactly.
        return minmax_normalise(s, omega), omega, (ref.ravel() > 0.5) & omega

    def sorted_counts(
        s_norm: jax.Array, omega: jax.Array, g: jax.Array, taus: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        size = s_norm.shape[0]
        # searchsorted(..., "left") counts values < tau; excluded pixels sit at -inf.
        in_omega = jnp.sort(jnp.where(omega, s_norm, -jnp.inf))
        in_g = jnp.sort(jnp.where(g, s_norm, -jnp.inf))
        return (size - jnp.searchsorted(in_omega, taus, side="left"),
                size - jnp.searchsorted(in_g, taus, side="left"))

    def kernel(
        sal: jax.Array, ref: jax.Array, roi: jax.Array, taus: jax.Array, sign_code: jax.Array
    ) -> jax.Array:
        s_norm, omega, g = jax.vmap(prepare, in_axes=(0, 0, 0, None))(sal, ref, roi, sign_code)
        if n_taus <= COUNT_MAX_TAUS:
            # One counting pass of the whole chunk per tau (a scan, so XLA fuses each
            # compare-and-sum and never holds a (C, T, P) array) beats XLA's CPU sort:
            # 8x on the demo's 64 x 64 maps at T = 19, 5.5x on 224 x 224. Both give the
            # same integers.
            def one_tau(carry: None, tau: jax.Array) -> tuple[None, tuple[jax.Array, jax.Array]]:
                above = s_norm >= tau
                return carry, (jax.vmap(count)(above & omega), jax.vmap(count)(above & g))

            _, (n_a, n_ag) = jax.lax.scan(one_tau, None, taus)
            n_a, n_ag = n_a.T, n_ag.T  # (C, T)
        else:
            n_a, n_ag = jax.vmap(sorted_counts, in_axes=(0, 0, 0, None))(s_norm, omega, g, taus)
        n_g = jax.vmap(count)(g)[:, None]
        return overlap_scores(n_a, n_g, n_ag)[metric]

    return jax.jit(kernel)


def compute_curve(
    saliency: Array,
    reference: Array,
    metric: str,
    thresholds: Sequence[float] | np.ndarray,
    *,
    sign: str = "positive",
    roi: Array | None = None,
    seed: int = 0,
    chunk_size: int = 256,
    stream_length: int | None = None,
) -> np.ndarray:
    """One fixed-threshold region metric at every tau of a grid.

    Parameters
    ----------
    saliency, reference, roi, sign, chunk_size, stream_length
        As in :func:`benchmark.metrics.compute`; the reference must be binary.
    metric : {"precision", "irrelevant_fraction", "recall", "iou", "dice"}
        A base name, without ``@threshold``.
    thresholds : sequence of float, shape (T,)
        Fixed taus in [0, 1] on the min-max normalised map, T >= 1, any order.
    seed : int, default 0
        Validated as in ``compute`` and otherwise unused: fixed-threshold regions have
        no ties to break. Accepted so that a call mirrors ``compute``'s.

    Returns
    -------
    numpy.ndarray, shape (N, T), float64
        Column t equals ``compute(..., [f"{metric}@{thresholds[t]}"])`` exactly, with
        the same NaN rules (empty G: NaN; empty A: precision NaN, recall/iou/dice 0).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.arange(16.0).reshape(1, 4, 4)
    >>> g = (s >= 8).astype(float)
    >>> compute_curve(s, g, "iou", [0.25, 0.5, 0.75])
    array([[0.66666669, 1.        , 0.5       ]])
    """
    check_options(sign, seed, chunk_size)
    name, taus = _curve_iv(metric, thresholds)
    # Large numpy batches in blocks whose aligned copies are reused, as in ``compute``.
    return np.concatenate([
        _curve_block(block.saliency, block.reference, block.roi, name, taus, sign,
                     chunk_size, block.stream_length, offset=block.offset)
        for block in image_blocks(saliency, reference, roi, chunk_size, stream_length)
    ])  # fmt: skip


def _curve_block(
    saliency: Array, reference: Array, roi: Array | None, name: str, taus: np.ndarray,
    sign: str, chunk_size: int, stream_length: int | None, *, offset: int,
) -> np.ndarray:
    """:func:`compute_curve` on one block of images (``offset``: number of its first)."""
    # As in ``compute``: the aligned copies reuse earlier calls' buffers, and no array
    # that wraps them leaves the block.
    with reused_buffers():
        sal, ref, roi_arr = standard_arrays(saliency, reference, roi, offset=offset)
        check_reference(ref, [name], [METRICS[name]], offset)
        n_images = sal.shape[0]
        out = np.empty((n_images, taus.size), np.float64)
        if n_images == 0:
            return out
        shapes = (tuple(sal.shape[1:]), tuple(ref.shape[1:]))
        kernel = _curve_kernel(*shapes, name, int(taus.size))
        chunk = chunk_length(n_images, int(chunk_size), stream_length)
        taus_arg, sign_code = jnp.asarray(taus), jnp.int32(SIGNS.index(sign))
        for start, stop, args in chunks((sal, ref, roi_arr), n_images, chunk):
            values = kernel(*args, taus_arg, sign_code)
            out[start:stop] = np.asarray(values, dtype=np.float64)[: stop - start]
        del sal, ref, roi_arr, args, values
    return out


def _curve_iv(metric: str, thresholds: Sequence[float] | np.ndarray) -> tuple[str, np.ndarray]:
    """The metric name and the taus as float32 (what ``compute`` uses for ``@tau``)."""
    if metric not in REGION_METRICS:
        raise ValueError(
            f"`metric` must be one of {', '.join(REGION_METRICS)} (without '@threshold'); "
            f"got {metric!r}"
        )
    grid = _as_grid(thresholds, "thresholds")
    return metric, grid.astype(np.float32)


def _as_grid(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    try:
        grid = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        grid = np.full(0, np.nan)
    if grid.ndim != 1 or grid.size == 0 or not np.all((grid >= 0) & (grid <= 1)):
        raise ValueError(
            f"`{what}` must be a non-empty 1-D sequence of numbers in [0, 1] (fixed "
            f"thresholds on the min-max normalised map); got {values!r}"
        )
    return grid


@dataclass(frozen=True)
class TuneResult:
    """The outcome of :func:`tune_threshold`.

    Attributes
    ----------
    threshold : float
        The chosen tau, an element of ``grid``; pass it on as ``f"{metric}@{threshold!r}"``.
    grid : numpy.ndarray, shape (T,), float64
        The candidate taus, as given (read-only).
    mean_scores : numpy.ndarray, shape (T,), float64
        Mean over images of the metric at each tau, NaN images left out; NaN where every
        image is NaN (read-only).
    metric : str
        The metric that was optimised.
    n_images : int
        Images with a finite score at the chosen tau (those its mean averages).
    """

    threshold: float
    grid: np.ndarray
    mean_scores: np.ndarray
    metric: str
    n_images: int


def tune_threshold(
    saliency: Array,
    reference: Array,
    *,
    grid: Sequence[float] | np.ndarray | None = None,
    metric: str = "iou",
    sign: str = "positive",
    roi: Array | None = None,
    seed: int = 0,
) -> TuneResult:
    """Choose the fixed threshold of a grid that scores best on average (``@tuned``).

    Run it on the validation split of one model x method, then freeze the result and
    score the test split with ``compute(..., [f"{metric}@{result.threshold!r}"])``.

    Parameters
    ----------
    saliency, reference, sign, roi, seed
        As in :func:`compute_curve` (binary reference).
    grid : sequence of float, shape (T,), optional
        Candidate taus in [0, 1]; default ``DEFAULT_GRID`` (0.05, 0.10, ..., 0.95).
    metric : str, default "iou"
        One of the region metrics (METRICS.md tunes on IoU).

    Returns
    -------
    TuneResult

    Raises
    ------
    ValueError
        Invalid arguments, or no finite score at any tau (e.g. every reference empty).

    Notes
    -----
    Best means the highest mean for metrics where higher is better and the lowest for
    ``irrelevant_fraction``. Images that are NaN at a tau (empty G; empty A for
    precision) are left out of that tau's mean. Ties between taus (exactly equal means)
    go to the smallest tau.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.arange(16.0).reshape(1, 4, 4)
    >>> g = (s >= 8).astype(float)
    >>> tune_threshold(s, g).threshold
    0.5
    """
    values = DEFAULT_GRID if grid is None else _as_grid(grid, "grid")
    scores = compute_curve(saliency, reference, metric, values, sign=sign, roi=roi, seed=seed)
    finite = np.isfinite(scores)
    n_finite = finite.sum(axis=0)
    if not n_finite.any():
        raise ValueError(
            f"cannot tune a threshold: {metric} is NaN for all {scores.shape[0]} images at "
            "every threshold of the grid (empty references?); check the reference masks "
            "of the tuning split"
        )
    with np.errstate(invalid="ignore", divide="ignore"):  # all-NaN taus -> NaN means
        means = np.where(finite, scores, 0.0).sum(axis=0) / n_finite
    # Best first; among equal means the smallest tau (lexsort: last key is primary).
    objective = -means if METRICS[metric].direction == "higher" else means
    candidates = np.flatnonzero(np.isfinite(means))
    best = candidates[np.lexsort((values[candidates], objective[candidates]))[0]]
    grid_out, means_out = values.copy(), means
    grid_out.setflags(write=False)
    means_out.setflags(write=False)
    return TuneResult(
        threshold=float(values[best]),
        grid=grid_out,
        mean_scores=means_out,
        metric=metric,
        n_images=int(n_finite[best]),
    )
