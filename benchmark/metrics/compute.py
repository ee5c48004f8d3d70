"""``compute``: validate once at the edge, then score fixed-size chunks with one kernel."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmark.metrics.plan import Plan, Region, chunk_kernel
from benchmark.metrics.preprocess import SIGNS
from benchmark.metrics.registry import MetricSpec, ThresholdSpec, parse_metric
from benchmark.metrics.threshold import tiebreak_keys, topk_count

Array = Any  # numpy.ndarray | jax.Array | torch.Tensor


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
        ``log2(chunk_size) + 1`` times and results never depend on it.
    spacing : sequence of float, optional
        Voxel size in mm per spatial axis (for distance metrics); validated only.

    Returns
    -------
    dict of str to numpy.ndarray
        One float64 array of shape (N,) per requested name (keys as given), NaN where
        the metric is undefined (METRICS.md, "Edge cases").

    Raises
    ------
    ValueError
        Unknown or malformed metric names, ``@tuned``, mismatched shapes, non-finite
        saliency (naming the image), a reference of the wrong kind (naming the metric),
        or an invalid option.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.zeros((1, 4, 4)); s[0, 0, 0] = 1.0
    >>> g = np.zeros((1, 4, 4)); g[0, :2, :2] = 1
    >>> compute(s, g, ["pointing_game", "precision@top25"])["pointing_game"]
    array([1.])
    """
    iv = _compute_iv(saliency, reference, metrics, sign, roi, seed, chunk_size, spacing)
    n_images = iv.saliency.shape[0]
    if not iv.names or n_images == 0:
        return {name: np.zeros(n_images, np.float64) for name in iv.names}

    kernel = chunk_kernel(iv.plan)
    chunk = min(iv.chunk_size, 1 << (n_images - 1).bit_length())
    out = np.empty((n_images, len(iv.plan.metrics)), np.float64)
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        args = [_padded(x[start:stop], chunk) for x in (iv.saliency, iv.reference, iv.roi)]
        ks = _padded(iv.ks[start:stop], chunk)
        values = kernel(*args, ks, iv.taus, iv.keys, iv.sign_code)
        out[start:stop] = np.asarray(values, dtype=np.float64)[: stop - start]
    return {name: out[:, iv.columns[name]].copy() for name in iv.names}


@dataclass(frozen=True)
class _Inputs:
    """Validated, standardised arguments of :func:`compute`."""

    saliency: jax.Array  # (N, *spatial_s) float32
    reference: jax.Array  # (N, *spatial) float32
    roi: jax.Array  # (N, *spatial) bool
    ks: np.ndarray  # (N, n_top) int32, top-K sizes per image
    taus: jax.Array  # (n_fixed,) float32
    keys: jax.Array  # (P,) uint32
    sign_code: jax.Array  # int32 scalar, SIGNS.index(sign)
    plan: Plan
    names: tuple[str, ...]
    columns: dict[str, int]
    chunk_size: int


def _padded(x: Array, length: int) -> jax.Array:
    """Pad axis 0 with zeros to ``length`` (padded images are scored and dropped)."""
    x = jnp.asarray(x)
    missing = length - x.shape[0]
    if missing == 0:
        return x
    return jnp.concatenate([x, jnp.zeros((missing, *x.shape[1:]), x.dtype)])


def _to_jax(x: Array, dtype: Any) -> jax.Array:
    """numpy / torch / JAX -> JAX array of ``dtype``; torch goes through DLPack or numpy."""
    if type(x).__module__.split(".")[0] == "torch":
        x = x.detach()
        if x.device.type != "cpu":
            try:  # zero-copy onto an accelerator JAX can see
                return jnp.asarray(jax.dlpack.from_dlpack(x), dtype=dtype)
            except Exception:  # any DLPack failure (no GPU JAX, dtype) falls back to a copy
                x = x.cpu()
        x = x.numpy()
    if isinstance(x, jax.Array):
        return x.astype(dtype)
    return jnp.asarray(np.asarray(x, dtype=dtype))


def _compute_iv(
    saliency: Array,
    reference: Array,
    metrics: Sequence[str],
    sign: str,
    roi: Array | None,
    seed: int,
    chunk_size: int,
    spacing: Sequence[float] | None,
) -> _Inputs:
    """Input validation of :func:`compute`: every check, every message, in one place."""
    if isinstance(metrics, str):
        metrics = [metrics]
    names = tuple(dict.fromkeys(metrics))  # unique, in order
    parsed = [parse_metric(name) for name in names]
    for name, (_, thr) in zip(names, parsed, strict=True):
        if thr is not None and thr.kind == "tuned":
            raise ValueError(
                f"metric {name!r}: the 'tuned' threshold must be resolved to a number "
                "(tuned on the validation split) before compute(); pass e.g. "
                f"'{name.split('@')[0]}@0.35'"
            )
    if sign not in SIGNS:
        raise ValueError(f"`sign` must be one of {', '.join(SIGNS)}; got {sign!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not (0 <= seed < 2**32):
        raise ValueError(f"`seed` must be an integer in [0, 2**32); got {seed!r}")
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or (chunk_size < 1)
    ):
        raise ValueError(f"`chunk_size` must be a positive integer; got {chunk_size!r}")

    sal = _to_jax(saliency, jnp.float32)
    ref = _to_jax(reference, jnp.float32)
    _check_shapes(sal.shape, ref.shape)
    spatial = tuple(int(d) for d in ref.shape[1:])
    _check_spacing(spacing, len(spatial))
    _check_finite(sal)
    if roi is None:
        roi_arr = jnp.ones(ref.shape, bool)
    else:
        roi_arr = _to_jax(roi, jnp.float32)
        if roi_arr.shape != ref.shape:
            raise ValueError(
                f"`roi` shape {tuple(roi_arr.shape)} must equal the reference shape "
                f"{tuple(ref.shape)}"
            )
        if not bool(jnp.all((roi_arr == 0) | (roi_arr == 1))):
            raise ValueError("`roi` must be boolean (only 0/1 values)")
        roi_arr = roi_arr.astype(bool)
    _check_reference(ref, names, parsed)

    regions: dict[ThresholdSpec, Region] = {}
    taus: list[float] = []
    percents: list[float] = []
    entries: list[tuple[str, int]] = []
    for spec, thr in parsed:
        if thr is None:
            entries.append((spec.name, -1))
            continue
        if thr not in regions:
            if thr.kind == "fixed":
                regions[thr] = Region("fixed", len(taus))
                taus.append(float(thr.value or 0.0))
            elif thr.kind == "top":
                regions[thr] = Region("top", len(percents))
                percents.append(float(thr.value or 0.0))
            else:
                regions[thr] = Region("otsu")
        entries.append((spec.name, list(regions).index(thr)))

    n_pixels = math.prod(spatial)
    n_omega = np.asarray(jnp.sum(roi_arr.reshape(-1, n_pixels), axis=1, dtype=jnp.int32))
    ks = np.array([[topk_count(p, int(n)) for p in percents] for n in n_omega], np.int32)
    plan = Plan(
        saliency_shape=tuple(int(d) for d in sal.shape[1:]),
        reference_shape=spatial,
        metrics=tuple(entries),
        regions=tuple(regions.values()),
    )
    keys = tiebreak_keys(int(seed), n_pixels) if plan.needs_ranks else np.zeros(1, np.uint32)
    return _Inputs(
        saliency=sal,
        reference=ref,
        roi=roi_arr,
        ks=ks.reshape(sal.shape[0], len(percents)),
        taus=jnp.asarray(np.array(taus, np.float32)),
        keys=jnp.asarray(keys),
        sign_code=jnp.int32(SIGNS.index(sign)),
        plan=plan,
        names=names,
        columns={name: i for i, name in enumerate(names)},
        chunk_size=int(chunk_size),
    )


def _check_shapes(sal: tuple[int, ...], ref: tuple[int, ...]) -> None:
    what = f"saliency shape {tuple(sal)} vs reference shape {tuple(ref)}"
    if len(ref) not in (3, 4):
        raise ValueError(f"expected (N, H, W) or (N, D, H, W) arrays; got {what}")
    if len(sal) != len(ref) or sal[0] != ref[0]:
        raise ValueError(f"saliency and reference must have the same N and rank; got {what}")
    if any(s > r for s, r in zip(sal[1:], ref[1:], strict=True)):
        raise ValueError(
            f"saliency may be coarser than the reference (it is resized up) but not finer "
            f"along any axis; got {what} (are the axes in the same order?)"
        )
    if any(s < 1 for s in sal[1:]) or any(r < 1 for r in ref[1:]):
        raise ValueError(f"spatial axes must be non-empty; got {what}")


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> None:
    if spacing is None:
        return
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (ndim,) or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(
            f"`spacing` must be {ndim} positive finite numbers (mm per spatial axis); "
            f"got {spacing!r}"
        )


def _check_finite(sal: jax.Array) -> None:
    axes = tuple(range(1, sal.ndim))
    bad = np.flatnonzero(~np.asarray(jnp.all(jnp.isfinite(sal), axis=axes)))
    if bad.size:
        more = f" (and {bad.size - 1} more: {bad[1:6].tolist()})" if bad.size > 1 else ""
        raise ValueError(
            f"saliency image {int(bad[0])} contains NaN or inf{more}; such maps are "
            "rejected, fix or drop them upstream"
        )


def _check_reference(
    ref: jax.Array, names: tuple[str, ...], parsed: list[tuple[MetricSpec, Any]]
) -> None:
    kinds = {spec.reference_kind for spec, _ in parsed}
    if not kinds:
        return
    axes = tuple(range(1, ref.ndim))
    if "binary" in kinds:
        bad = np.flatnonzero(~np.asarray(jnp.all((ref == 0) | (ref == 1), axis=axes)))
        if bad.size:
            name = next(n for n, (s, _) in zip(names, parsed, strict=True)
                        if s.reference_kind == "binary")  # fmt: skip
            raise ValueError(
                f"metric {name!r} needs a binary reference (only 0/1) but reference image "
                f"{int(bad[0])} has other values; binarise it (e.g. consensus) or use a "
                "graded metric such as weighted_mass"
            )
    bad = np.flatnonzero(~np.asarray(jnp.all((ref >= 0) & (ref <= 1), axis=axes)))
    if bad.size:
        raise ValueError(
            f"reference image {int(bad[0])} has values outside [0, 1] (or NaN); graded "
            "references must be importance maps in [0, 1]"
        )
