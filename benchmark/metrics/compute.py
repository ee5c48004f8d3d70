"""``compute``: validate once at the edge, then score fixed-size chunks with one kernel."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmark.metrics import fused
from benchmark.metrics.distance import tolerance_hits
from benchmark.metrics.plan import Plan, chunk_kernel, region_slots, topk_sizes
from benchmark.metrics.preprocess import SIGNS
from benchmark.metrics.registry import parse_metric
from benchmark.metrics.similarity import SSIM_WIN, ssim_fits
from benchmark.metrics.threshold import tiebreak_ranks
from benchmark.metrics.validate import (
    Array,
    aligned_empty,
    check_options,
    check_reference,
    largest_kept_buffer,
    raise_non_finite,
    reused_buffers,
    standard_arrays,
    standard_maps,
    standard_spacing,
)


def compute(
    saliency: Array,
    reference: Array,
    metrics: Sequence[str],
    *,
    sign: str = "positive",
    roi: Array | None = None,
    seed: int = 0,
    chunk_size: int = 256,
    spacing: Sequence[float] | None = None,
    pointing_tolerance_mm: float = 0.0,
    stream_length: int | None = None,
) -> dict[str, np.ndarray]:
    """Score a batch of saliency maps against references.

    Parameters
    ----------
    saliency : array, shape (N, *spatial_s)
        numpy, torch or JAX; 2D or 3D spatial. If ``spatial_s`` is coarser than the
        reference grid (each axis <= the reference's), the maps are resized to it with
        bilinear / trilinear interpolation (``jax.image.resize``, half-pixel centres).
        Must be finite. Computed in float32.
    reference : array, shape (N, *spatial)
        Binary masks G (only 0/1) for binary-reference metrics, graded maps W (values in
        [0, 1]) for graded ones. Never resized.
    metrics : sequence of str
        ``name`` or ``name@threshold`` (``iou@top15``, ``dice@0.5``, ``recall@otsu``);
        see :data:`benchmark.metrics.METRICS`. ``@tuned`` must be resolved to a number
        by the caller first.
    sign : {"positive", "abs", "signed"}, default "positive"
        Use S⁺ = max(S, 0), |S| or S for every metric.
    roi : array of bool, shape (N, *spatial), optional
        Restricts Ω: pixels outside are ignored by every metric (G becomes G ∩ Ω,
        min-max normalisation, top-K percentages, maxima and ranks are taken over Ω).
    seed : int, default 0
        Seed of the tie-breaking jitter of top-K regions and ``rank_accuracy``, in
        [0, 2**32); see :func:`benchmark.metrics.threshold.tiebreak_keys`.
    chunk_size : int, default 256
        Images per kernel call. Batches are padded to a fixed chunk length,
        ``min(chunk_size, next power of two >= N)``, so one shape compiles at most
        ``log2(chunk_size) + 1`` times and results never depend on it. On CPU, metrics
        with host steps (``auroc``, ``auprc``, top-K regions, ``rank_accuracy``,
        Spearman, Otsu regions) also cap it at :data:`HOST_CHUNK_BYTES` of keys
        (:func:`host_chunk_cap`: 64 maps of 224 x 224).
    stream_length : int, optional
        Total images of a stream that arrives in blocks (the pipeline scores cached
        maps shard by shard): the chunk length is computed from it instead of from N, so
        every block reuses one compiled kernel. Results do not depend on it.
    spacing : sequence of float, optional
        Voxel size in mm per spatial axis of the reference grid, used by
        ``peak_distance`` and ``pointing_tolerance_mm``; 1.0 each when None.
    pointing_tolerance_mm : float, default 0
        Tolerance radius of ``pointing_game``: a maximal pixel is a hit when a pixel of
        G lies within this distance (mm, between pixel centres, inclusive); ties keep
        their fractional credit. 0 counts only maxima inside G. See
        :func:`benchmark.metrics.distance.tolerance_hits`.

    Returns
    -------
    dict of str to numpy.ndarray
        One float64 array of shape (N,) per requested name (keys as given), NaN where
        the metric is undefined (METRICS.md, "Edge cases").

    Raises
    ------
    ValueError
        Unknown or malformed metric names, ``@tuned`` (resolve it with
        :func:`benchmark.metrics.tune_threshold` first), mismatched shapes, non-finite
        saliency (naming the image), a reference of the wrong kind (naming the metric),
        ``ssim`` on a grid with an axis shorter than 7, or an invalid option.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.zeros((1, 4, 4)); s[0, 0, 0] = 1.0
    >>> g = np.zeros((1, 4, 4)); g[0, :2, :2] = 1
    >>> compute(s, g, ["pointing_game", "precision@top25"])["pointing_game"]
    array([1.])
    """
    fast = fused.routed(saliency, reference, metrics, pointing_tolerance_mm)
    if fast:
        return _compute_routed(saliency, reference, metrics, fast, sign=sign, roi=roi,
                               seed=seed, chunk_size=chunk_size, spacing=spacing,
                               pointing_tolerance_mm=pointing_tolerance_mm,
                               stream_length=stream_length)  # fmt: skip
    parts = [
        _compute_block(block.saliency, block.reference, block.roi, metrics, sign, seed,
                       chunk_size, spacing, pointing_tolerance_mm, block.stream_length,
                       offset=block.offset)
        for block in image_blocks(saliency, reference, roi, chunk_size, stream_length)
    ]  # fmt: skip
    finite = np.concatenate([flags for _, flags in parts])
    raise_non_finite(finite)  # the kernel's finiteness flag of each map
    return {name: np.concatenate([scores[name] for scores, _ in parts]) for name in parts[0][0]}


def _compute_routed(
    saliency: Array, reference: Array, metrics: Sequence[str], fast: list[str], *,
    sign: str, roi: Array | None, seed: int, chunk_size: int,
    spacing: Sequence[float] | None, pointing_tolerance_mm: float,
    stream_length: int | None,
) -> dict[str, np.ndarray]:
    """:func:`compute` with the region metrics ``fast`` on the fused CPU path
    (:mod:`.fused`) and any other names on the XLA kernel: the same values."""
    names = list(dict.fromkeys([metrics] if isinstance(metrics, str) else metrics))
    check_options(sign, seed, chunk_size)
    _check_tolerance(pointing_tolerance_mm)
    standard_spacing(spacing, len(getattr(reference, "shape", ())) - 1)
    first_binary = next(n for n in names if parse_metric(n)[0].reference_kind == "binary")
    out = fused.score(saliency, reference, fast, sign=sign, roi=roi, seed=seed,
                      first_binary=first_binary)  # fmt: skip
    rest = [n for n in names if n not in out]
    if rest:
        out |= compute(saliency, reference, rest, sign=sign, roi=roi, seed=seed,
                       chunk_size=chunk_size, spacing=spacing, stream_length=stream_length,
                       pointing_tolerance_mm=pointing_tolerance_mm)  # fmt: skip
    return {name: out[name] for name in names}


class Block(NamedTuple):
    """Images ``offset ..`` of a batch, scored as the whole batch would be
    (``stream_length`` keeps the batch's chunk length)."""

    saliency: Array
    reference: Array
    roi: Array | None
    stream_length: int | None
    offset: int


def image_blocks(
    saliency: Array, reference: Array, roi: Array | None, chunk_size: int,
    stream_length: int | None,
) -> Iterator[Block]:
    """The blocks of images to score one after the other (one block: the whole batch).

    numpy inputs are copied into aligned buffers that later calls reuse, up to
    :func:`.validate.largest_kept_buffer` (64 MB, 334 maps of 224 x 224); a larger copy
    lands in fresh pages every call (the kernel zeroes each page first: 1,000 such maps
    scored 1.5-2x slower per map than 256). So a large numpy batch goes in blocks of a
    power of two of images that fit, each a whole number of chunks, scored with the
    kernel the whole batch would use: the same values.
    """
    size = _block_size(saliency, reference, roi, chunk_size, stream_length)
    if size is None:
        yield Block(saliency, reference, roi, stream_length, 0)
        return
    n = len(saliency)
    stream = max(stream_length or 0, n)
    for start in range(0, n, size):
        part = slice(start, min(start + size, n))
        yield Block(saliency[part], reference[part], None if roi is None else roi[part],
                    stream, start)  # fmt: skip


def _block_size(
    saliency: Array, reference: Array, roi: Array | None, chunk_size: int,
    stream_length: int | None,
) -> int | None:
    """Images per block of :func:`image_blocks`, or None to score the batch at once."""
    arrays = [saliency, reference] + ([] if roi is None else [roi])
    if not all(isinstance(x, np.ndarray) and x.ndim >= 3 for x in arrays):
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) \
            or chunk_size < 1:
        return None  # named by the checks
    n = saliency.shape[0]
    if any(x.shape[0] != n for x in arrays):
        return None  # the checks name the mismatch
    per_image = 4 * max(math.prod(x.shape[1:]) for x in arrays)
    size = 1 << max(0, (largest_kept_buffer() // max(per_image, 1)).bit_length() - 1)
    if n <= size or size < chunk_length(n, chunk_size, stream_length):
        return None
    return size


def _compute_block(
    saliency: Array, reference: Array, roi: Array | None, metrics: Sequence[str],
    sign: str, seed: int, chunk_size: int, spacing: Sequence[float] | None,
    pointing_tolerance_mm: float, stream_length: int | None, *, offset: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`compute` on one block: the scores and each map's finiteness flag (N,)."""
    # The inputs' aligned copies reuse the buffers of earlier calls: every array that
    # wraps them stays inside this block (the results are numpy copies).
    with reused_buffers():
        iv = _compute_iv(
            saliency, reference, metrics, sign, roi, seed, chunk_size, spacing,
            pointing_tolerance_mm, offset,
        )
        n_images = iv.saliency.shape[0]
        if not iv.names or n_images == 0:
            empty = {name: np.zeros(n_images, np.float64) for name in iv.names}
            return empty, np.ones(n_images, bool)

        kernel = chunk_kernel(iv.plan)
        cap = min(iv.chunk_size, host_chunk_cap(iv.plan))
        chunk = chunk_length(n_images, cap, stream_length)
        out = np.empty((n_images, len(iv.plan.metrics) + 1), np.float64)
        per_image = (iv.saliency, iv.reference, iv.roi, iv.hit, iv.ks)
        for start, stop, args in chunks(per_image, n_images, chunk):
            values = kernel(*args, iv.taus, iv.keys, iv.sign_code, iv.spacing)
            out[start:stop] = np.asarray(values, dtype=np.float64)[: stop - start]
        columns = {name: iv.columns[name] for name in iv.names}
        del iv, args, values
    return {name: out[:, column].copy() for name, column in columns.items()}, out[:, -1] == 1.0


@dataclass(frozen=True)
class _Inputs:
    """Validated, standardised arguments of :func:`compute`."""

    saliency: jax.Array  # (N, *spatial_s) float32
    reference: jax.Array  # (N, *spatial) float32
    roi: jax.Array | np.ndarray  # (N, *spatial) bool, or (N, 1) unused without a roi
    hit: np.ndarray  # (N, P) bool hit regions of the pointing game, or (N, 1) unused
    ks: np.ndarray  # (N, n_top) int32, top-K sizes per image
    taus: jax.Array  # (n_fixed,) float32
    keys: jax.Array  # (P,) int32 tie-break ranks, or (1,) unused
    sign_code: jax.Array  # int32 scalar, SIGNS.index(sign)
    spacing: jax.Array  # (D,) float32, mm per spatial axis
    plan: Plan
    names: tuple[str, ...]
    columns: dict[str, int]
    chunk_size: int


def compute_by_spacing(
    groups: Sequence[tuple[Sequence[float], np.ndarray]], saliency: np.ndarray,
    reference: np.ndarray, metrics: Sequence[str], *, roi: np.ndarray | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """:func:`compute` per group of images that share a voxel spacing.

    Parameters
    ----------
    groups : sequence of (spacing, positions)
        Positions (into axis 0 of the arrays) of the images with each spacing, e.g. from
        :meth:`benchmark.data.Dataset.spacing_groups`; together they cover every image.
    saliency, reference, metrics, roi, **options
        As for :func:`compute` (``spacing`` comes from the groups).

    Returns
    -------
    dict of str to ndarray, shape (N,), in the order of ``saliency``.
    """
    if len(groups) == 1:
        return compute(saliency, reference, metrics, roi=roi, spacing=groups[0][0], **options)
    out = {m: np.full(len(saliency), np.nan) for m in dict.fromkeys(metrics)}
    for spacing, at in groups:
        vals = compute(saliency[at], reference[at], metrics, spacing=spacing,
                       roi=None if roi is None else roi[at], **options)
        for m in out:
            out[m][at] = vals[m]
    return out


#: Bytes of order keys (4 per pixel) a chunk hands to the host steps of the kernel.
#: Callback buffers above glibc's largest mmap threshold (32 MB) are fresh pages on
#: every call; below it they are reused: 256 maps of 224 x 224 (51 MB) score ``auroc``,
#: ``rank_accuracy`` and top-K regions about 20 % slower than chunks of 64 (13 MB).
#: Otsu's histogram hands over one byte per pixel, yet its plans also ran about 15 %
#: faster in chunks of 64 than of 256 (smaller intermediates of the fused passes).
HOST_CHUNK_BYTES = 1 << 24


def host_chunk_cap(plan: Plan) -> int:
    """Largest chunk length for ``plan`` on this backend (a power of two).

    Plans with host steps on CPU (``auroc`` / ``auprc`` counts, top-K regions,
    ``rank_accuracy``, Spearman's ranks, Otsu's histogram: numpy callbacks) keep a
    chunk's keys within :data:`HOST_CHUNK_BYTES`; other plans and backends are not
    capped. Results do not depend on the chunk length.
    """
    if not plan.needs_host or jax.default_backend() != "cpu":
        return 1 << 62
    per_image = 4 * math.prod(plan.reference_shape)
    return 1 << max(0, (HOST_CHUNK_BYTES // per_image).bit_length() - 1)


def chunk_length(n_images: int, chunk_size: int, stream_length: int | None = None) -> int:
    """Images per kernel call: ``min(chunk_size, next power of two >= n)`` with ``n`` the
    larger of ``n_images`` and ``stream_length``."""
    n = max(int(n_images), int(stream_length or 0), 1)
    return min(int(chunk_size), 1 << (n - 1).bit_length())


def chunks(
    arrays: Sequence[Array], n_images: int, chunk: int
) -> Iterator[tuple[int, int, list[jax.Array]]]:
    """``(start, stop, slices)`` per chunk: images ``start:stop`` of each array, padded.

    Arrays on the CPU are sliced as numpy views of their buffers, which JAX wraps
    without a copy; slicing the ``jax.Array`` runs an XLA copy per array and chunk (256
    maps of 224 x 224 and their references in chunks of 64: 11 ms).
    """
    views = [_host_view(x) for x in arrays]
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        yield start, stop, [padded(x[start:stop], chunk) for x in views]


def _host_view(x: Array) -> Array:
    if isinstance(x, jax.Array) and all(d.platform == "cpu" for d in x.devices()):
        return np.asarray(x)  # the same buffer, read-only
    return x


def padded(x: Array, length: int) -> jax.Array:
    """Pad axis 0 with zeros to ``length`` (padded images are scored and dropped).

    numpy input goes to JAX without a copy when it is already ``length`` long and
    64-byte aligned; a short one is padded into a new aligned buffer (only the last
    chunk of a call is short).
    """
    missing = length - x.shape[0]
    if isinstance(x, np.ndarray):
        if missing:
            out = aligned_empty((length, *x.shape[1:]), x.dtype, reuse=False)
            out[: x.shape[0]] = x
            out[x.shape[0] :] = 0
            x = out
        return jax.device_put(x)
    x = jnp.asarray(x)
    if missing == 0:
        return x
    return jnp.concatenate([x, jnp.zeros((missing, *x.shape[1:]), x.dtype)])


def _compute_iv(
    saliency: Array,
    reference: Array,
    metrics: Sequence[str],
    sign: str,
    roi: Array | None,
    seed: int,
    chunk_size: int,
    spacing: Sequence[float] | None,
    pointing_tolerance_mm: float,
    offset: int = 0,
) -> _Inputs:
    """Input validation of :func:`compute`: every check, every message, in one place
    (``offset``: number of the first image, for the messages)."""
    if isinstance(metrics, str):
        metrics = [metrics]
    names = tuple(dict.fromkeys(metrics))  # unique, in order
    parsed = [parse_metric(name) for name in names]
    for name, (_, thr) in zip(names, parsed, strict=True):
        if thr is not None and thr.kind == "tuned":
            raise ValueError(
                f"metric {name!r}: the 'tuned' threshold must be resolved to a number "
                "before compute(): choose it on the validation split with "
                f"benchmark.metrics.tune_threshold(..., metric={name.split('@')[0]!r}), "
                f"then pass e.g. '{name.split('@')[0]}@0.35'"
            )
    check_options(sign, seed, chunk_size)
    tolerance = _check_tolerance(pointing_tolerance_mm)
    # Without a roi, Ω is every pixel: no all-True array is built, read or sent.
    if roi is None:
        sal, ref = standard_maps(saliency, reference, finite=False)
        roi_arr: jax.Array | None = None
    else:
        sal, ref, roi_arr = standard_arrays(saliency, reference, roi, finite=False)
    spatial = tuple(int(d) for d in ref.shape[1:])
    mm = standard_spacing(spacing, len(spatial))
    check_reference(ref, names, [spec for spec, _ in parsed], offset)
    if "ssim" in [spec.name for spec, _ in parsed] and not ssim_fits(spatial):
        raise ValueError(
            f"metric 'ssim' needs every spatial axis >= {SSIM_WIN} (its window); the "
            f"reference grid is {spatial}; drop ssim for such small images"
        )

    regions, taus, percents = region_slots([thr for _, thr in parsed if thr is not None])
    order = list(regions)
    entries = [(spec.name, -1 if thr is None else order.index(thr)) for spec, thr in parsed]

    n_images, n_pixels = sal.shape[0], math.prod(spatial)
    if roi_arr is None:
        n_omega = np.full(n_images, n_pixels, np.int64)
    else:
        n_omega = np.asarray(jnp.sum(roi_arr.reshape(-1, n_pixels), axis=1, dtype=jnp.int32))
    ks = topk_sizes(percents, n_omega)
    # The hit regions only exist when they differ from G: tolerance 0 keeps the plan
    # (and the compiled kernel) of a call without the option.
    with_hits = tolerance > 0 and "pointing_game" in [name for name, _ in entries]
    if with_hits:
        g = np.asarray(ref > 0.5 if roi_arr is None else (ref > 0.5) & roi_arr)
        hit = tolerance_hits(g, mm, tolerance).reshape(n_images, n_pixels)
    else:
        hit = np.zeros((n_images, 1), bool)
    plan = Plan(
        saliency_shape=tuple(int(d) for d in sal.shape[1:]),
        reference_shape=spatial,
        metrics=tuple(entries),
        regions=tuple(regions.values()),
        pointing_tolerance=with_hits,
        has_roi=roi_arr is not None,
    )
    keys = tiebreak_ranks(int(seed), n_pixels) if plan.needs_ranks else np.zeros(1, np.int32)
    return _Inputs(
        saliency=sal,
        reference=ref,
        roi=np.zeros((n_images, 1), bool) if roi_arr is None else roi_arr,
        hit=hit,
        ks=ks,
        taus=jnp.asarray(np.array(taus, np.float32)),
        keys=jnp.asarray(keys),
        sign_code=jnp.int32(SIGNS.index(sign)),
        spacing=jnp.asarray(np.array(mm, np.float32)),
        plan=plan,
        names=names,
        columns={name: i for i, name in enumerate(names)},
        chunk_size=int(chunk_size),
    )


def _check_tolerance(tolerance: float) -> float:
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(tolerance, bool) or not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"`pointing_tolerance_mm` must be a finite number >= 0 (mm); got {tolerance!r}"
        )
    return value
