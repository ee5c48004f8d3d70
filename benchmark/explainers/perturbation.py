"""Perturbation methods, from Captum."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr import Occlusion as _Occlusion

from benchmark.explainers.base import Explainer, MethodInfo

#: Most input elements one forward pass of occlusion may see (perturbed copies x batch x
#: voxels). Captum stacks ``perturbations_per_eval`` perturbed copies of the whole batch
#: into one forward pass; 64 copies of a 2D batch are cheap, 64 copies of a batch of CT
#: volumes are tens of GB. 2**24 keeps the 2D demo at 64 copies (64 x 64 x 64 x 64) and
#: only lowers the count for volumes; the count changes the speed, never the maps.
MAX_EVAL_ELEMENTS = 2**24
MAX_PERTURBATIONS_PER_EVAL = 64


def _positive_int(name: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n != value or n < 1:
        raise ValueError(f"method 'occlusion': `{name}` must be a positive integer, got {value!r}")
    return n


def occlusion_geometry(
    spatial: tuple[int, ...], window: int, stride: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Window and stride per spatial axis, clipped to the axis.

    Parameters
    ----------
    spatial : tuple of int
        The input grid, ``(H, W)`` or ``(D, H, W)``.
    window, stride : int
        The requested patch side and step, the same for every axis (``stride <= window``).

    Returns
    -------
    (window per axis, stride per axis)
        ``min(window, n)`` and ``min(stride, min(window, n))`` for each axis length ``n``.
        A CT volume is often thinner than the window (8 slices against 16 voxels): Captum
        refuses a window larger than the input, so the patch spans that whole axis instead
        (a slab through the volume, one position along it). Axes at least as long as the
        window keep the requested values, so 2D maps are unchanged.
    """
    windows = tuple(min(window, n) for n in spatial)
    strides = tuple(min(stride, w) for w in windows)  # Captum needs stride <= window
    return windows, strides


class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus 2014): drop in the target logit when a patch is set to
    ``baseline``.

    ``window`` and ``stride`` are in pixels (voxels), the same on every spatial axis,
    ``1 <= stride <= window``. On an axis shorter than ``window`` (the depth of a thin
    volume) both are clipped to the axis length, see :func:`occlusion_geometry`. Voxels
    covered by several patches get the mean drop of those patches (Captum); a last,
    partial patch covers the end of an axis the stride does not reach.
    """

    info = MethodInfo(
        "occlusion", "perturbation", "zeiler2014visualizing", "logit drop under a sliding patch"
    )
    defaults: ClassVar[dict[str, Any]] = {"window": 16, "stride": 8, "baseline": 0.0}

    def __init__(self, model: Any, layer: Any = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        window = _positive_int("window", self.options["window"])
        stride = _positive_int("stride", self.options["stride"])
        if stride > window:
            # Captum asserts this; a stride past the window would leave voxels unoccluded.
            raise ValueError(
                f"method 'occlusion': `stride` ({stride}) must not exceed `window` ({window})"
            )
        self._window, self._stride = window, stride

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        channels = inputs.shape[1]
        windows, strides = occlusion_geometry(
            tuple(int(n) for n in inputs.shape[2:]), self._window, self._stride
        )
        per_eval = max(1, min(MAX_PERTURBATIONS_PER_EVAL, MAX_EVAL_ELEMENTS // inputs.numel()))
        attr = _Occlusion(self.model).attribute(
            inputs,
            sliding_window_shapes=(channels, *windows),
            strides=(channels, *strides),
            baselines=float(self.options["baseline"]),
            target=target,
            perturbations_per_eval=per_eval,
        )
        return attr.sum(dim=1)
