"""Saliency methods behind one registry (Captum where Captum has the method).

>>> from benchmark.explainers import get_explainer
>>> explainer = get_explainer("gradcam", model, layer=model.features[6])
>>> maps = explainer.attribute(images, target=0)      # (N, h, w) or (N, d, h, w)
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from torch import nn

from benchmark.explainers.attribution import DeepLift, GradientShap
from benchmark.explainers.base import Explainer, MethodInfo
from benchmark.explainers.baselines import AverageMask, CenterPrior, RandomMap
from benchmark.explainers.cam import GradCAM
from benchmark.explainers.cam_variants import (
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
)
from benchmark.explainers.gradient import (
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from benchmark.explainers.perturbation import Occlusion
from benchmark.explainers.rise import RISE

EXPLAINERS: dict[str, type[Explainer]] = {
    cls.info.name: cls
    for cls in (
        Saliency, InputXGradient, IntegratedGradients, SmoothGrad, GradCAM, Occlusion,
        RandomMap, CenterPrior, AverageMask,
        GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, GuidedGradCAM, GradientShap, DeepLift,
        RISE,
    )
}


def default_methods() -> list[str]:
    """Methods a run uses when the configuration names none: all but the costly ones
    (``MethodInfo.default``); ``--method NAME`` or ``methods: all`` adds the others."""
    return [n for n, c in EXPLAINERS.items() if c.info.default]


def needs_hooks(name: str) -> bool:
    """Whether a method hooks module passes (CAM layers, DeepLIFT, guided backprop)."""
    info = EXPLAINERS[name].info
    return info.needs_layer or info.uses_hooks


def check_methods(names: list[str]) -> list[str]:
    """Validate method names (``all``: every registered method); ValueError lists the
    valid ones."""
    if "all" in names:
        names = [*dict.fromkeys([*names[:names.index("all")], *EXPLAINERS])]
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
    """One row per registered method: name, family, baseline, needs_layer, default (runs
    when no method is named), options, citation, description."""
    return pd.DataFrame(
        [
            {
                "name": c.info.name, "family": c.info.family, "baseline": c.info.is_baseline,
                "needs_layer": c.info.needs_layer, "default": c.info.default,
                "options": dict(c.defaults),
                "citation": c.info.citation, "description": c.info.description,
            }
            for c in EXPLAINERS.values()
        ]
    )


__all__ = [
    "EXPLAINERS", "Explainer", "MethodInfo", "check_methods", "default_methods",
    "get_explainer", "list_methods", "needs_hooks",
]
