"""Gradient and path methods, from Captum: saliency, input x gradient, integrated
gradients, SmoothGrad (Captum's gradient under our own seeded noise). All work on any
number of spatial axes: ``(N, C, H, W)`` slices or ``(N, C, D, H, W)`` volumes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr import InputXGradient as _IXG
from captum.attr import IntegratedGradients as _IG
from captum.attr import Saliency as _Saliency

from benchmark.explainers.base import Explainer
from benchmark.methods import METHODS


def _channel_sum(attr: torch.Tensor) -> torch.Tensor:
    return attr.sum(dim=1)


class Saliency(Explainer):
    """Signed input gradient (Simonyan et al. 2014); Captum's ``abs`` is off so the
    metrics' sign option decides."""

    info = METHODS["saliency"]

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        x = inputs.clone().requires_grad_(True)
        return _channel_sum(_Saliency(self.model).attribute(x, target=target, abs=False))


class InputXGradient(Explainer):
    """Input times gradient (Shrikumar et al. 2016)."""

    info = METHODS["input_x_gradient"]

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        x = inputs.clone().requires_grad_(True)
        return _channel_sum(_IXG(self.model).attribute(x, target=target))


class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al. 2017) from a constant baseline.

    The default baseline 0 is air after the demo's intensity scaling.
    """

    info = METHODS["integrated_gradients"]
    defaults: ClassVar[dict[str, Any]] = {"n_steps": 32, "baseline": 0.0}

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        ig = _IG(self.model)
        attr = ig.attribute(
            inputs, baselines=float(self.options["baseline"]), target=target,
            n_steps=int(self.options["n_steps"]), internal_batch_size=len(inputs),
        )
        return _channel_sum(attr)


class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies.

    ``noise`` is the standard deviation as a fraction of each image's own intensity range
    (max - min over its channels and voxels). The ``n_samples`` noise fields (one per
    sample, shape ``(C, *spatial)``) are drawn on the CPU from a generator seeded with
    ``seed`` and shared by every image: an image's map does not depend on the batch it is
    explained in (nor on the device), and every model sees the same noise (common random
    numbers, so model differences are not noise differences). Samples are taken one at a
    time, so memory is that of one gradient of the batch, not ``n_samples`` of them
    (which matters for volumes).
    """

    info = METHODS["smoothgrad"]
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 16, "noise": 0.15, "seed": 0}

    def config(self) -> dict[str, Any]:
        # Maps of earlier versions (noise scaled by the batch's mean range and drawn per
        # batch position) must not be reused from a cache: the scale rule is in the key.
        return {**super().config(), "noise_scale": "per image, shared draws"}

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        x = inputs.detach()
        axes = tuple(range(1, x.ndim))
        span = x.amax(dim=axes) - x.amin(dim=axes)  # (N,)
        std = (float(self.options["noise"]) * span).reshape(-1, *(1,) * (x.ndim - 1))
        n_samples = int(self.options["n_samples"])
        gen = torch.Generator().manual_seed(int(self.options["seed"]))
        saliency = _Saliency(self.model)
        total = torch.zeros_like(x)
        for _ in range(n_samples):
            eps = torch.randn(x.shape[1:], generator=gen).to(x.device, x.dtype)
            noisy = (x + std * eps).requires_grad_(True)  # eps broadcast over the batch
            total += saliency.attribute(noisy, target=target, abs=False)
        return _channel_sum(total / n_samples)
