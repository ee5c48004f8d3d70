"""Perturbation methods, from Captum."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr import Occlusion as _Occlusion

from benchmark.explainers.base import Explainer, MethodInfo


class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus 2014): drop in the target logit when a patch is set to
    ``baseline``. ``window`` and ``stride`` are in pixels (voxels) per spatial axis."""

    info = MethodInfo("occlusion", "perturbation", "zeiler2014", "logit drop under a sliding patch")
    defaults: ClassVar[dict[str, Any]] = {"window": 16, "stride": 8, "baseline": 0.0}

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        n_spatial = inputs.ndim - 2
        channels = inputs.shape[1]
        attr = _Occlusion(self.model).attribute(
            inputs,
            sliding_window_shapes=(channels,) + (int(self.options["window"]),) * n_spatial,
            strides=(channels,) + (int(self.options["stride"]),) * n_spatial,
            baselines=float(self.options["baseline"]),
            target=target,
            perturbations_per_eval=64,
        )
        return attr.sum(dim=1)
