"""Input checks shared by :func:`~benchmark.metrics.compute` and the curve functions.

Each public entry point has one ``_<name>_iv`` function that calls these helpers once,
at the edge, and every message names the argument and what to do instead.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmark.metrics.counting import count
from benchmark.metrics.preprocess import SIGNS
from benchmark.metrics.registry import MetricSpec

Array = Any  # numpy.ndarray | jax.Array | torch.Tensor


def to_jax(x: Array, dtype: Any) -> jax.Array:
    """numpy / torch / JAX -> JAX array of ``dtype``; torch goes through DLPack or numpy."""
    if _is_torch(x):
        x = x.detach()
        if x.device.type != "cpu":
            try:  # zero-copy onto an accelerator JAX can see
                return jnp.asarray(jax.dlpack.from_dlpack(x), dtype=dtype)
            except Exception:  # any DLPack failure (no GPU JAX, dtype) falls back to a copy
                x = x.cpu()
        x = x.numpy()
    if isinstance(x, jax.Array):
        return x.astype(dtype)
    return jax.device_put(aligned(x, dtype))


def _is_torch(x: Array) -> bool:
    # By module name: importing torch to test isinstance would load it for numpy input.
    return type(x).__module__.split(".")[0] == "torch"


# XLA:CPU wraps a C-contiguous host buffer aligned to this many bytes without a copy.
_ALIGN = 64


def aligned(x: Array, dtype: Any) -> np.ndarray:
    """``x`` as a C-contiguous numpy array of ``dtype`` starting on a 64-byte boundary.

    ``jax.device_put`` on CPU wraps such a buffer as it is; anything else it copies with
    a slower, single-threaded copy (51 MB: about 32 ms against numpy's 13 ms here). So
    ``x`` itself is returned when it already qualifies, else numpy converts it once
    into an aligned buffer (the copy ``np.asarray(x, dtype)`` would make anyway), one
    of an earlier call's inside a :func:`reused_buffers` block.
    """
    x = np.asarray(x)
    dtype = np.dtype(dtype)
    if x.dtype == dtype and x.flags.c_contiguous and x.ctypes.data % _ALIGN == 0:
        return x
    out = aligned_empty(x.shape, dtype)
    np.copyto(out, x, casting="unsafe")
    return out


def aligned_empty(shape: tuple[int, ...], dtype: Any, *, reuse: bool = True) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` starting on a 64-byte boundary:
    a buffer of an earlier call inside a :func:`reused_buffers` block when ``reuse``,
    else a new one."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = _pool.take(nbytes + _ALIGN) if reuse else np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


#: Largest buffer kept between calls, and how many of them (per thread).
_KEEP_BYTES = 1 << 26
_KEEP_BUFFERS = 4


def largest_kept_buffer() -> int:
    """Bytes of the largest aligned buffer a :func:`reused_buffers` block keeps; larger
    copies go to fresh pages on every call."""
    return _KEEP_BYTES


class _Pool(threading.local):
    """Aligned buffers of this thread: ``free`` between calls, ``lease`` during one."""

    def __init__(self) -> None:
        self.free: list[np.ndarray] = []
        self.lease: list[np.ndarray] | None = None

    def take(self, nbytes: int) -> np.ndarray:
        """A raw uint8 buffer of at least ``nbytes``: a free one during a lease, else new."""
        if self.lease is None or nbytes > _KEEP_BYTES:
            return np.empty(nbytes, np.uint8)
        fits = [i for i, b in enumerate(self.free) if b.size >= nbytes]
        if fits:
            raw = self.free.pop(min(fits, key=lambda i: self.free[i].size))
        else:
            raw = np.empty(nbytes, np.uint8)
        self.lease.append(raw)
        return raw


_pool = _Pool()


@contextmanager
def reused_buffers() -> Iterator[None]:
    """Let :func:`aligned` reuse the buffers of earlier blocks of this thread.

    A copy into fresh pages costs the kernel's zeroing of every page (51 MB: about 17 of
    its 20 ms here); a buffer used before is only written. The JAX arrays of a block wrap
    its buffers without a copy, so they go back to the pool only when the block ends
    without an exception (a traceback may still hold those arrays); the caller must not
    keep any past the block. Nested blocks share the outermost block's lease.
    """
    if _pool.lease is not None:
        yield
        return
    _pool.lease = []
    try:
        yield
    except BaseException:
        _pool.lease = None
        raise
    kept = sorted(_pool.lease + _pool.free, key=lambda b: -b.size)[:_KEEP_BUFFERS]
    _pool.free, _pool.lease = kept, None


def check_options(sign: str, seed: int, chunk_size: int) -> None:
    """``sign`` in SIGNS, ``seed`` in [0, 2**32), ``chunk_size`` a positive integer."""
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


def standard_arrays(
    saliency: Array, reference: Array, roi: Array | None, *, finite: bool = True,
    offset: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Saliency and reference as float32, roi as bool (all True when None), all checked
    (finiteness only with ``finite``: a caller may check it inside its own kernel;
    images are numbered from ``offset`` in its message).

    Raises
    ------
    ValueError
        Mismatched shapes, non-finite saliency (naming the image), a non-boolean roi.
    """
    sal, ref = standard_maps(saliency, reference, finite=finite, offset=offset)
    if roi is None:
        return sal, ref, jnp.ones(ref.shape, bool)
    roi_arr = to_jax(roi, jnp.float32)
    _check_roi(roi_arr.shape, ref.shape)
    if not bool(jnp.all((roi_arr == 0) | (roi_arr == 1))):
        raise ValueError(_ROI_VALUES)
    return sal, ref, roi_arr.astype(bool)


def standard_maps(saliency: Array, reference: Array, *, finite: bool = True, offset: int = 0
                  ) -> tuple[jax.Array, jax.Array]:
    """Saliency and reference as float32, shapes and (with ``finite``) finiteness checked
    (no roi; images numbered from ``offset``)."""
    sal = to_jax(saliency, jnp.float32)
    ref = to_jax(reference, jnp.float32)
    check_shapes(sal.shape, ref.shape)
    if finite:
        check_finite(sal, offset)
    return sal, ref


def check_shapes(sal: tuple[int, ...], ref: tuple[int, ...]) -> None:
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


def standard_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """``spacing`` as ``ndim`` positive floats (mm per axis); 1.0 each when None."""
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.full(0, np.nan)
    if values.shape != (ndim,) or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(
            f"`spacing` must be {ndim} positive finite numbers (mm per spatial axis); "
            f"got {spacing!r}"
        )
    return tuple(float(v) for v in values)


@jax.jit
def _finite_per_image(x: jax.Array) -> jax.Array:
    """Whether each image of ``x`` is finite: one fused pass (not one per operation)."""
    return jnp.all(jnp.isfinite(x.reshape(x.shape[0], math.prod(x.shape[1:]))), axis=1)


@partial(jax.jit, static_argnames="binary")
def _reference_ok(ref: jax.Array, binary: bool) -> jax.Array:
    """Per image (N,) bool: only 0/1 values when ``binary``, else all values in [0, 1]
    (False for NaN). One fused pass: int8 block counts of the offending pixels, which
    XLA:CPU vectorises (``jnp.all`` over a fused predicate it does not)."""
    r = ref.reshape(ref.shape[0], math.prod(ref.shape[1:]))  # N may be 0

    def ok(x: jax.Array) -> jax.Array:
        if binary:
            return count(~((x == 0) | (x == 1))) == 0
        return count(~((x >= 0) & (x <= 1))) == 0

    return jax.vmap(ok)(r)


def check_finite(sal: jax.Array, offset: int = 0) -> None:
    raise_non_finite(np.asarray(_finite_per_image(sal)), offset)


def raise_non_finite(finite: np.ndarray, offset: int = 0) -> None:
    """ValueError naming the first images whose flag in ``finite`` (N,) is False
    (numbered from ``offset``: ``finite`` may cover a block of a larger batch)."""
    bad = np.flatnonzero(~np.asarray(finite, dtype=bool)) + offset
    if bad.size:
        more = f" (and {bad.size - 1} more: {bad[1:6].tolist()})" if bad.size > 1 else ""
        raise ValueError(
            f"saliency image {int(bad[0])} contains NaN or inf{more}; such maps are "
            "rejected, fix or drop them upstream"
        )


def check_reference(
    ref: jax.Array, names: Sequence[str], specs: Sequence[MetricSpec], offset: int = 0
) -> None:
    """Binary metrics need a 0/1 reference, every metric one in [0, 1] (named on error).

    One pass either way: a 0/1 reference is also in [0, 1], so with a binary metric
    only the 0/1 check runs (its message comes first, as it would). ``offset`` is added
    to the image numbers of the messages (``ref`` may be a block of a larger batch).
    """
    kinds = {spec.reference_kind for spec in specs}
    if not kinds:
        return
    binary = "binary" in kinds
    bad = np.flatnonzero(~np.asarray(_reference_ok(ref, binary))) + offset
    if bad.size and binary:
        name = next(n for n, s in zip(names, specs, strict=True)
                    if s.reference_kind == "binary")  # fmt: skip
        raise ValueError(binary_reference_message(name, int(bad[0])))
    if bad.size:
        raise ValueError(
            f"reference image {int(bad[0])} has values outside [0, 1] (or NaN); graded "
            "references must be importance maps in [0, 1]"
        )


def binary_reference_message(name: str, image: int) -> str:
    """The error of a binary metric ``name`` given a reference ``image`` not only 0/1."""
    return (
        f"metric {name!r} needs a binary reference (only 0/1) but reference image "
        f"{image} has other values; binarise it (e.g. consensus) or use a graded metric "
        "such as weighted_mass"
    )


def host_array(x: Array, dtype: Any) -> np.ndarray:
    """numpy / torch / JAX -> a C-contiguous numpy array in host memory, converted to
    ``dtype`` as :func:`to_jax` would (None keeps the dtype); no copy when it already is
    one."""
    if _is_torch(x):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x) if dtype is None else np.asarray(x, dtype))


def host_roi(roi: Array, shape: tuple[int, ...]) -> np.ndarray:
    """``roi`` as a uint8 0/1 numpy array of ``shape`` (the reference's), checked as
    :func:`standard_arrays` checks it (the same messages)."""
    r = host_array(roi, None)
    _check_roi(r.shape, shape)
    if r.dtype == np.bool_:
        return r.view(np.uint8)
    r = np.asarray(r, np.float32)  # as to_jax would, before the check
    if not np.all((r == 0) | (r == 1)):
        raise ValueError(_ROI_VALUES)
    return r.astype(np.uint8)


_ROI_VALUES = "`roi` must be boolean (only 0/1 values)"


def _check_roi(shape: tuple[int, ...], reference: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(reference):
        raise ValueError(
            f"`roi` shape {tuple(shape)} must equal the reference shape {tuple(reference)}"
        )
