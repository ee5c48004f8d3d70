"""Gradient and path methods, from Captum: saliency, input x gradient, integrated
gradients, SmoothGrad."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr import InputXGradient as _IXG
from captum.attr import IntegratedGradients as _IG
from captum.attr import NoiseTunnel
from captum.attr import Saliency as _Saliency

from benchmark.explainers.base import Explainer, MethodInfo


def _channel_sum(attr: torch.Tensor) -> torch.Tensor:
    return attr.sum(dim=1)


class Saliency(Explainer):
    """Signed input gradient (Simonyan et al. 2014); Captum's ``abs`` is off so the
    metrics' sign option decides."""

    info = MethodInfo("saliency", "gradient", "simonyan2014", "gradient of the target logit")

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        x = inputs.clone().requires_grad_(True)
        return _channel_sum(_Saliency(self.model).attribute(x, target=target, abs=False))


class InputXGradient(Explainer):
    """Input times gradient (Shrikumar et al. 2016)."""

    info = MethodInfo("input_x_gradient", "gradient", "shrikumar2016", "input x gradient")

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        x = inputs.clone().requires_grad_(True)
        return _channel_sum(_IXG(self.model).attribute(x, target=target))


class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al. 2017) from a constant baseline.

    The default baseline 0 is air after the demo's intensity scaling.
    """

    info = MethodInfo(
        "integrated_gradients", "path", "sundararajan2017", "path integral of gradients"
    )
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

    ``noise`` is the standard deviation as a fraction of each image's intensity range.
    Noise draws come from ``seed``, so maps are deterministic.
    """

    info = MethodInfo("smoothgrad", "gradient", "smilkov2017", "mean gradient under input noise")
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 16, "noise": 0.15, "seed": 0}

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        span = (inputs.amax(dim=tuple(range(1, inputs.ndim))) -
                inputs.amin(dim=tuple(range(1, inputs.ndim))))
        std = float(self.options["noise"]) * float(span.mean())
        x = inputs.clone().requires_grad_(True)
        with torch.random.fork_rng():
            torch.manual_seed(int(self.options["seed"]))
            attr = NoiseTunnel(_Saliency(self.model)).attribute(
                x, nt_type="smoothgrad", nt_samples=int(self.options["n_samples"]),
                nt_samples_batch_size=int(self.options["n_samples"]), stdevs=std,
                target=target, abs=False,
            )
        return _channel_sum(attr)
