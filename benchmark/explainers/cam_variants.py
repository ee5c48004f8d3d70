"""Class activation map variants on Captum's layer hooks: Grad-CAM++, HiResCAM, LayerCAM,
Score-CAM (Captum lacks them; the layer's activations and gradients come from Captum, the
formulas are written here in torch) and Guided Grad-CAM (Captum's).

All take the target layer at construction (``needs_layer``) and work on ``(N, C, H, W)``
slices and ``(N, C, D, H, W)`` volumes alike: "spatial" below means every axis after the
channel axis. Maps of the first four are on the layer's grid, ``(N, *layer_grid)``, like
:class:`benchmark.explainers.cam.GradCAM`; the metrics stage resizes them. Like Grad-CAM
there, none applies the papers' final ReLU: the metrics' sign option (``positive`` by
default) does, so ``abs``/``signed`` analyses stay possible.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import GuidedGradCam as _GuidedGradCam
from captum.attr import LayerActivation, LayerGradientXActivation
from torch import nn

from benchmark.explainers.base import Explainer, without_warning
from benchmark.explainers.perturbation import eval_elements
from benchmark.methods import METHODS

#: Upsampling of a layer grid to the input grid, by number of spatial axes; the metrics
#: stage resizes maps the same way.
_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _positive_int(method: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"method {method!r}: `{name}` must be a positive integer, got {value!r}")
    return value


def _spatial_axes(t: torch.Tensor) -> tuple[int, ...]:
    """Axes 2.. of a layer output; an error (as the base class words it) when there are none,
    since ``sum(dim=())`` would silently reduce over every axis."""
    if t.ndim < 3:
        raise RuntimeError(
            f"the target layer's output has shape {tuple(t.shape)}, without spatial axes "
            "(is the target layer a spatial one?)"
        )
    return tuple(range(2, t.ndim))


def layer_gradients_and_activations(
    model: nn.Module, layer: nn.Module, inputs: torch.Tensor, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the target logit with respect to the layer's output, and that output.

    Parameters
    ----------
    model, layer : nn.Module
    inputs : Tensor (N, C, *spatial)
    target : int

    Returns
    -------
    (gradients, activations) : Tensors (N, K, *layer_grid), detached
        One backward pass for the batch: the summed target logits are differentiated, and
        image ``i``'s logit depends only on image ``i`` (eval mode), so each image gets its
        own gradient.
    """
    grads, acts = compute_layer_gradients_and_eval(model, layer, (inputs,), target)
    return grads[0].detach(), acts[0].detach()


class GradCAMPlusPlus(Explainer):
    """Grad-CAM++ (Chattopadhay et al. 2018) at the target layer's resolution.

    Notes
    -----
    With ``g = dS/dA`` the gradient of the target logit ``S`` at the layer output ``A``
    (channel ``k``, position ``i``), the paper's pixel weights for the exponential score
    ``Y = exp(S)`` are::

        alpha_ki = g_ki**2 / (2 g_ki**2 + sum_j A_kj g_ki**3)        (0 where 0 / 0)
        w_k      = sum_i alpha_ki relu(g_ki)
        map_i    = sum_k w_k A_ki

    (the higher derivatives of ``exp(S)`` are ``exp(S) g**2`` and ``exp(S) g**3`` for a
    piecewise-linear network, and ``exp(S)`` cancels in ``alpha``). The paper's ``w_k``
    carries one more factor ``exp(S)``, positive and the same for every pixel of an
    image: it is left out, because it does not change the map's shape and overflows
    float32 for logits above ~88 (or zeroes the map below ~-87).

    Cost: one forward and one backward pass per batch.

    References
    ----------
    Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Generalized
    Gradient-Based Visual Explanations for Deep Convolutional Networks", WACV 2018.
    """

    info = METHODS["gradcam_plusplus"]

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        assert self.layer is not None
        grads, acts = layer_gradients_and_activations(self.model, self.layer, inputs, target)
        axes = _spatial_axes(acts)
        g2 = grads**2
        denominator = 2 * g2 + acts.sum(dim=axes, keepdim=True) * g2 * grads
        nonzero = denominator != 0
        alpha = torch.where(nonzero, g2 / torch.where(nonzero, denominator, 1.0), 0.0)
        weights = (alpha * F.relu(grads)).sum(dim=axes, keepdim=True)
        return (weights * acts).sum(dim=1)


class HiResCAM(Explainer):
    """HiResCAM (Draelos & Carin 2020): gradient times activation, summed over the layer's
    channels, ``map_i = sum_k g_ki A_ki`` (Grad-CAM without its spatial averaging of the
    gradient), at the target layer's resolution. This is Captum's
    ``LayerGradientXActivation`` summed over channels.

    Cost: one forward and one backward pass per batch.

    References
    ----------
    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv:2011.08891, 2020.
    """

    info = METHODS["hirescam"]

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        assert self.layer is not None
        attr = LayerGradientXActivation(self.model, self.layer).attribute(inputs, target=target)
        assert isinstance(attr, torch.Tensor)
        _spatial_axes(attr)
        return attr.detach().sum(dim=1)


class LayerCAM(Explainer):
    """LayerCAM (Jiang et al. 2021) at the target layer's resolution:
    ``map_i = sum_k relu(g_ki) A_ki``, each activation weighted by its own positive
    gradient. Made for shallow layers too (finer grids than the last convolution); the
    paper's fusion of several layers is not done here (one layer per method).

    Cost: one forward and one backward pass per batch.

    References
    ----------
    Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class Activation
    Maps for Localization", IEEE Transactions on Image Processing 30, 2021.
    """

    info = METHODS["layercam"]

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        assert self.layer is not None
        grads, acts = layer_gradients_and_activations(self.model, self.layer, inputs, target)
        _spatial_axes(acts)
        return (F.relu(grads) * acts).sum(dim=1)


class ScoreCAM(Explainer):
    """Score-CAM (Wang et al. 2020): channels weighted by how much the target logit rises
    when the input is masked by them; gradient-free. Map at the target layer's resolution.

    For each layer channel ``k``: the activation ``A_k`` is upsampled to the input grid
    (bilinear, trilinear for volumes), min-max normalised to ``H_k`` in [0, 1] (a constant
    channel gives ``H_k = 0``), and the model scores the masked input ``x * H_k``.
    ``c_k = S(x * H_k) - S(0)`` is the increase of the target logit over the all-zero
    baseline, and ``map = sum_k w_k A_k``.

    Parameters
    ----------
    weights : {"softmax", "increase"}, default "softmax"
        ``softmax``: ``w = softmax_k(c_k)``, the paper's Algorithm 1 (the baseline term is
        the same for every channel and cancels). ``increase``: ``w_k = c_k``, the raw
        increase of confidence (one more forward pass, of the baseline).
    batch_channels : int, default 32
        Masked copies per image in one forward pass (lowered so that a pass holds at most
        2**24 input elements, which matters for volumes). Changes speed and memory, not
        the maps (up to float rounding), so it is not part of the cache key.

    Notes
    -----
    Cost: ``K`` forward passes per image, ``K`` the layer's channels (64 for the demo
    CNN's ``features.6``), in batches of ``batch_channels``, plus one forward pass for the
    activations (and one for the baseline with ``weights="increase"``); no backward pass.
    Memory per pass: ``batch_channels x N`` copies of the inputs.

    References
    ----------
    Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, "Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks", CVPR Workshops 2020.
    """

    info = METHODS["scorecam"]
    defaults: ClassVar[dict[str, Any]] = {"weights": "softmax", "batch_channels": 32}

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        if self.options["weights"] not in ("softmax", "increase"):
            raise ValueError(
                "method 'scorecam': `weights` must be 'softmax' or 'increase', "
                f"got {self.options['weights']!r}"
            )
        self._batch = _positive_int("scorecam", "batch_channels", self.options["batch_channels"])

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in super().config().items() if k != "batch_channels"}

    @torch.no_grad()
    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        assert self.layer is not None
        acts = LayerActivation(self.model, self.layer).attribute(inputs)
        assert isinstance(acts, torch.Tensor)
        axes = _spatial_axes(acts)
        n, channels = acts.shape[:2]
        spatial = tuple(inputs.shape[2:])
        mode = _INTERPOLATION[len(spatial)]
        per_pass = max(1, min(self._batch, eval_elements(inputs.device) // inputs.numel()))
        scores = []
        for k in range(0, channels, per_pass):
            up = F.interpolate(acts[:, k : k + per_pass], size=spatial, mode=mode,
                               align_corners=False)  # (N, kc, *spatial)
            low = up.amin(dim=axes, keepdim=True)
            span = up.amax(dim=axes, keepdim=True) - low
            masks = torch.where(span > 0, (up - low) / torch.where(span > 0, span, 1.0), 0.0)
            masked = inputs[:, None] * masks[:, :, None]  # (N, kc, C, *spatial)
            logits = self.model(masked.flatten(0, 1))[:, target]
            scores.append(logits.reshape(n, -1))
        score = torch.cat(scores, dim=1)  # (N, K)
        if self.options["weights"] == "softmax":
            w = torch.softmax(score, dim=1)
        else:
            w = score - self.model(torch.zeros_like(inputs))[:, target, None]
        return (w.reshape(n, channels, *(1,) * len(axes)) * acts).sum(dim=1)


class GuidedGradCAM(Explainer):
    """Guided Grad-CAM (Selvaraju et al. 2017), Captum's ``GuidedGradCam``: guided
    backpropagation times the Grad-CAM map upsampled to the input grid (bilinear, or
    trilinear for volumes), summed over input channels; maps ``(N, *spatial)`` on the
    input grid.

    Captum applies the paper's ReLU to the Grad-CAM factor here, so the sign of a map is
    the sign of the guided gradient. Guided backpropagation replaces the backward pass of
    ``nn.ReLU`` modules; a ReLU applied as a function (``F.relu``, ``torch.relu``) in
    ``forward`` keeps its plain gradient, so on such a model the guided factor is the
    ordinary gradient there.

    Cost: two forward and two backward passes per batch (Grad-CAM, guided backprop).

    References
    ----------
    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-Based Localization", ICCV 2017.
    """

    info = METHODS["guided_gradcam"]

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        assert self.layer is not None
        mode = _INTERPOLATION.get(inputs.ndim - 2, "nearest")
        x = inputs.clone().requires_grad_(True)
        # Captum announces its temporary ReLU hooks on every call; nothing to act on.
        with without_warning("Setting backward hooks on ReLU"):
            attr = _GuidedGradCam(self.model, self.layer).attribute(
                x, target=target, interpolate_mode=mode
            )
        if attr.shape != inputs.shape:
            # Captum returns an empty tensor (and a warning) when the layer's map cannot
            # be resized to the input grid.
            raise RuntimeError(
                f"Guided Grad-CAM could not upsample the layer's map to the input grid "
                f"{tuple(inputs.shape[2:])} (is the target layer a spatial one?)"
            )
        return attr.detach().sum(dim=1)
