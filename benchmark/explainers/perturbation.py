"""Perturbation methods, from Captum."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr import Occlusion as _Occlusion

from benchmark.explainers.base import Explainer
from benchmark.methods import METHODS

#: Most input elements one forward pass of occlusion (and of RISE and Score-CAM) may see
#: (perturbed copies x batch x voxels), per device type. Captum stacks
#: ``perturbations_per_eval`` perturbed copies of the whole batch into one forward pass.
#: On a CPU the activations of a pass should stay in cache: the demo CNN runs 2,234
#: images/s in batches of 64 and 1,039 in batches of 4,096 (its first activation is then
#: 1 GB), so 2**18 (one copy of a 64-image batch of 64 x 64 slices) made occlusion 1.85x
#: faster with identical maps. A GPU wants large passes; 2**24 bounds their memory
#: (64 copies of a CT batch would be tens of GB). The count changes speed, not the maps.
MAX_EVAL_ELEMENTS = {"cpu": 2**18, "other": 2**24}
MAX_PERTURBATIONS_PER_EVAL = 64


def eval_elements(device: torch.device) -> int:
    """Input elements per forward pass of the perturbation loops on ``device``."""
    return MAX_EVAL_ELEMENTS["cpu" if device.type == "cpu" else "other"]


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

    info = METHODS["occlusion"]
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
        per_eval = eval_elements(inputs.device) // inputs.numel()
        per_eval = max(1, min(MAX_PERTURBATIONS_PER_EVAL, per_eval))
        attr = _Occlusion(self.model).attribute(
            inputs,
            sliding_window_shapes=(channels, *windows),
            strides=(channels, *strides),
            baselines=float(self.options["baseline"]),
            target=target,
            perturbations_per_eval=per_eval,
        )
        return attr.sum(dim=1)
