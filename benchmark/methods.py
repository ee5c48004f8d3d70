"""What each saliency method is: name, family, citation and flags, without torch.

The explainer classes (:mod:`benchmark.explainers`) take their ``info`` from here, so
code that only describes methods (the report's citations and baseline flags) reads this
table instead of importing torch and Captum: about 3 s of every ``bench report``
(perf/RESULTS.md, section 4). ``bench methods`` still lists the classes, whose option
defaults live with the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str  # gradient | path | perturbation | cam | baseline
    citation: str  # key in benchmark/report/assets/references.bib
    description: str
    needs_layer: bool = False
    is_baseline: bool = False
    needs_prior: bool = False  # takes the dataset's mean training mask (``prior=``)
    uses_hooks: bool = False  # hooks modules' forward/backward passes (not on TorchScript)
    default: bool = True  # run when the configuration names no methods


_INFOS = (
    MethodInfo("saliency", "gradient", "simonyan2014deep", "gradient of the target logit"),
    MethodInfo("input_x_gradient", "gradient", "shrikumar2016not", "input x gradient"),
    MethodInfo("integrated_gradients", "path", "sundararajan2017axiomatic",
               "path integral of gradients"),
    MethodInfo("smoothgrad", "gradient", "smilkov2017smoothgrad",
               "mean gradient under input noise"),
    MethodInfo("gradcam", "cam", "selvaraju2017gradcam",
               "gradient-weighted activation map of a layer", needs_layer=True),
    MethodInfo("occlusion", "perturbation", "zeiler2014visualizing",
               "logit drop under a sliding patch"),
    MethodInfo("random", "baseline", "adebayo2018", "uniform random map", is_baseline=True),
    MethodInfo("center_prior", "baseline", "judd2009", "Gaussian centred on the image",
               is_baseline=True),
    MethodInfo("average_mask", "baseline", "zeng2024inconsistency",
               "mean expert mask of the training split", is_baseline=True, needs_prior=True),
    MethodInfo("gradcam_plusplus", "cam", "chattopadhay2018gradcampp",
               "activation map weighted by positive gradients (second-order pixel weights)",
               needs_layer=True, default=False),
    MethodInfo("hirescam", "cam", "draelos2020hirescam",
               "layer gradient x activation summed over channels", needs_layer=True,
               default=False),
    MethodInfo("layercam", "cam", "jiang2021layercam",
               "activations weighted by their positive gradients", needs_layer=True,
               default=False),
    MethodInfo("scorecam", "cam", "wang2020scorecam",
               "activations weighted by the target score of the input masked by each",
               needs_layer=True, default=False),
    MethodInfo("guided_gradcam", "cam", "selvaraju2017gradcam",
               "guided backpropagation x upsampled Grad-CAM", needs_layer=True, default=False),
    MethodInfo("gradient_shap", "path", "lundberg2017unified",
               "expected gradient x (input - baseline) over random baselines and path points",
               default=False),
    MethodInfo("deeplift", "gradient", "shrikumar2017learning",
               "DeepLIFT rescale rule against a constant baseline", default=False,
               uses_hooks=True),
    MethodInfo("rise", "perturbation", "petsiuk2018rise",
               "random masks weighted by the target probability of the masked input",
               default=False),
)

#: Every registered method's info, in registry order (the explainers' ``info``).
METHODS: dict[str, MethodInfo] = {info.name: info for info in _INFOS}
