"""Class activation maps on a target layer (Captum's layer hooks)."""

from __future__ import annotations

import torch
from captum.attr import LayerGradCam

from benchmark.explainers.base import Explainer
from benchmark.methods import METHODS


class GradCAM(Explainer):
    """Grad-CAM (Selvaraju et al. 2017) at the target layer's resolution.

    Channel weights are the layer gradients averaged over all of the layer's spatial
    axes (``(h, w)``, or ``(d, h, w)`` in a Conv3d network); the map is the weighted sum
    of the activations, ``(N, *layer_grid)``. The metrics stage upsamples it to the
    reference grid (bilinear / trilinear).

    The ReLU of the original paper is not applied here: the metrics' sign option
    (``positive`` by default) does it, so ``abs``/``signed`` analyses stay possible.
    """

    info = METHODS["gradcam"]

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        assert self.layer is not None
        attr = LayerGradCam(self.model, self.layer).attribute(
            inputs, target=target, relu_attributions=False
        )
        return attr.sum(dim=1)
