"""Saliency methods behind one registry (Captum where Captum has the method).

>>> from benchmark.explainers import get_explainer
>>> explainer = get_explainer("gradcam", model, layer=model.features[6])
>>> maps = explainer.attribute(images, target=0)      # (N, h, w) or (N, d, h, w)
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from torch import nn

from benchmark.explainers.base import Explainer, MethodInfo
from benchmark.explainers.baselines import AverageMask, CenterPrior, RandomMap
from benchmark.explainers.cam import GradCAM
from benchmark.explainers.gradient import (
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from benchmark.explainers.perturbation import Occlusion

EXPLAINERS: dict[str, type[Explainer]] = {
    cls.info.name: cls
    for cls in (
        Saliency, InputXGradient, IntegratedGradients, SmoothGrad, GradCAM, Occlusion,
        RandomMap, CenterPrior, AverageMask,
    )
}


def check_methods(names: list[str]) -> list[str]:
    """Validate method names; ValueError lists the valid ones."""
    for n in names:
        if n not in EXPLAINERS:
            raise ValueError(f"unknown method {n!r}; valid methods: {', '.join(EXPLAINERS)}")
    return list(names)


def get_explainer(
    name: str, model: nn.Module, *, layer: nn.Module | None = None, **options: Any
) -> Explainer:
    """Instantiate method ``name`` on ``model`` (``layer`` for CAM methods)."""
    check_methods([name])
    cls = EXPLAINERS[name]
    return cls(model, layer if cls.info.needs_layer else None, **options)


def list_methods() -> pd.DataFrame:
    """One row per registered method: name, family, baseline, needs_layer, options, citation."""
    return pd.DataFrame(
        [
            {
                "name": c.info.name, "family": c.info.family, "baseline": c.info.is_baseline,
                "needs_layer": c.info.needs_layer, "options": dict(c.defaults),
                "citation": c.info.citation, "description": c.info.description,
            }
            for c in EXPLAINERS.values()
        ]
    )


__all__ = [
    "EXPLAINERS", "Explainer", "MethodInfo", "check_methods", "get_explainer", "list_methods",
]
