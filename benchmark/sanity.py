"""Is the map about the model? Cascading model-parameter randomisation (Adebayo et al. 2018).

The layers of a trained model are re-initialised from the output backwards, one more at
each step, and the maps are computed again. A method whose maps depend on what the model
learned loses its similarity to the original maps as the cascade proceeds; a method that
only looks at the image (an edge detector) keeps it. Following Arun et al. (2021), a method
passes when the similarity at the last step falls below the similarity of maps of random
pairs of different images from the trained model, the floor of two maps that share
nothing but the method: the upper end of the final step's case-bootstrap interval must
be below the floor's estimate.

Similarity is ``ssim`` and ``spearman_abs`` of METRICS.md, with the original map's
absolute value, min-max normalised per image, as the graded reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.explainers import EXPLAINERS, get_explainer
from benchmark.metrics import compute
from benchmark.metrics.similarity import ssim_fits
from benchmark.stats import summarize
from benchmark.threads import GLOBAL_RNG, model_passes

SIMILARITY = ("ssim", "spearman_abs")
_SPLIT = "sanity"


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, in definition order (input to output)."""
    return [name for name, m in model.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))]


def randomise(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    """A copy of ``model`` whose ``layers`` are re-initialised (``reset_parameters``, or a
    normal draw with the parameter's own standard deviation where a module has none)."""
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    with GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in layers:
            m = modules[name]
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            with torch.no_grad():
                for p in m.parameters(recurse=False):
                    p.normal_(0.0, float(p.std()) if p.numel() > 1 else 1.0)
    return out.eval()


def _graded(maps: np.ndarray) -> np.ndarray:
    """|S| min-max normalised per image into [0, 1] (constant maps give zeros)."""
    a = np.abs(maps.reshape(len(maps), -1)).astype(np.float64)
    lo, hi = a.min(axis=1, keepdims=True), a.max(axis=1, keepdims=True)
    out = np.where(hi > lo, (a - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    return out.reshape(maps.shape).astype(np.float32)


def similarity(original: np.ndarray, maps: np.ndarray) -> dict[str, np.ndarray]:
    """``ssim`` and ``spearman_abs`` of ``maps`` against ``original`` per image.

    Parameters
    ----------
    original, maps : ndarray, shape (N, *spatial)
        Maps of the same images; ``maps`` may be on a coarser grid (it is resized).

    Returns
    -------
    dict of str to ndarray, shape (N,); NaN where a map is constant. ``ssim`` is left
    out on grids with an axis shorter than its window (a coarse CAM of a small volume).
    """
    names = [m for m in SIMILARITY if m != "ssim" or ssim_fits(tuple(original.shape[1:]))]
    return compute(maps, _graded(original), names, sign="abs")


def method_maps(model: nn.Module, method: str, inputs: torch.Tensor, target: int = 0,
                layer: str | None = None, options: dict[str, Any] | None = None
                ) -> np.ndarray:
    """Maps ``(N, *spatial_out)`` of one registered method on ``model`` (the CAM layer is
    looked up by name, so it works on randomised copies too)."""
    needs = EXPLAINERS[method].info.needs_layer
    module = dict(model.named_modules())[layer] if needs and layer else None
    explainer = get_explainer(method, model, layer=module, **(options or {}))
    return explainer.attribute(inputs, target=target).numpy()


def methods_maps(model: nn.Module, methods: list[str], inputs: torch.Tensor, target: int = 0,
                 layer: str | None = None, options: dict[str, dict[str, Any]] | None = None,
                 workers: int = 1) -> dict[str, np.ndarray]:
    """:func:`method_maps` of each method, ``method -> (N, *spatial_out)``; with
    ``workers > 1`` side by side (:func:`benchmark.threads.model_passes`), each on its own
    copy of ``model`` (one method's hooks must not see another's passes), or one after
    another on ``model`` when it cannot be copied."""
    options = options or {}
    if len(methods) < 2:
        workers = 1
    elif workers > 1:
        try:
            copy.deepcopy(model)
        except Exception:  # noqa: BLE001 - many types; the maps are the same on one thread
            workers = 1

    def maps(method: str) -> np.ndarray:
        own = copy.deepcopy(model) if workers > 1 else model
        return method_maps(own, method, inputs, target, layer, options.get(method, {}))

    return dict(zip(methods, model_passes([partial(maps, m) for m in methods], workers),
                    strict=True))


@dataclass(frozen=True)
class SanityResult:
    """Result of :func:`cascading_randomisation`.

    Attributes
    ----------
    curves : DataFrame
        ``method, step, layer, metric, estimate, ci_low, ci_high, n_cases``: the mean
        similarity to the original maps after randomising the last ``step`` layers
        (``layer``: the one added at that step), case-bootstrap interval.
    floor : DataFrame
        ``method, metric, estimate, ci_low, ci_high``: similarity of maps of random pairs
        of different images, trained model.
    verdicts : DataFrame
        ``method, metric, final_high, floor, passed``: passed when the final step's upper
        interval end is below the floor's estimate.
    settings : dict
    originals : dict of str to ndarray
        ``method -> (N, *spatial_out)`` maps of the trained model (step 0), for callers
        that need them too (the faithfulness check).
    """

    curves: pd.DataFrame
    floor: pd.DataFrame
    verdicts: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def cascading_randomisation(
    model: nn.Module,
    methods: list[str],
    inputs: torch.Tensor,
    case_ids: list[str] | np.ndarray,
    *,
    target: int = 0,
    layer: str | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
    workers: int = 1,
) -> SanityResult:
    """Run the cascade for each method on ``inputs``.

    Parameters
    ----------
    model : nn.Module
        The trained model (not modified).
    methods : list of str
        Registered method names (:data:`benchmark.explainers.EXPLAINERS`).
    inputs : Tensor, shape (N, C, *spatial)
        Network inputs of N >= 2 images.
    case_ids : sequence of str, length N
        Case of each image: the bootstrap resamples cases.
    target : int, default 0
        Output unit explained.
    layer : str, optional
        Target layer name for CAM methods (looked up again in every randomised copy).
    options : dict, optional
        ``method -> options`` passed to :func:`~benchmark.explainers.get_explainer`.
    seed : int, default 0
        Seed of the re-initialisations, the random pairs and the bootstrap.
    n_boot, level
        Case bootstrap (percentile interval, as the similarities are bounded).
    workers : int, default 1
        Randomised models explained side by side (:func:`benchmark.threads.model_passes`);
        the results do not depend on it.
    """
    options = options or {}
    case_ids = np.asarray(case_ids).astype(str)
    n = len(case_ids)
    if n < 2 or inputs.shape[0] != n:
        raise ValueError(f"need >= 2 images with one case id each; got {inputs.shape[0]} "
                         f"images and {n} case ids")
    layers = parameter_layers(model)
    cascade = layers[::-1]  # output first
    rows, floor_rows = [], []
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n)  # a derangement: image i is paired with i + shift
    partner = (np.arange(n) + shift) % n
    originals = methods_maps(model, methods, inputs, target, layer, options, workers)
    for method, original in originals.items():
        pair = similarity(original[partner], original)
        floor_rows.append(_tidy(pair, case_ids, method=method, step=-1, layer="random pairs"))

    def cascade_step(method: str, step: int) -> dict[str, np.ndarray]:
        # Each step explains its own randomised copy; only similarities are kept, so
        # memory does not grow with steps x methods.
        randomised = randomise(model, cascade[:step], seed + step)
        maps = method_maps(randomised, method, inputs, target, layer, options.get(method, {}))
        return similarity(originals[method], maps)

    todo = [(method, step) for method in methods for step in range(1, len(cascade) + 1)]
    steps = model_passes([partial(cascade_step, m, s) for m, s in todo], workers)
    for (method, step), values in zip(todo, steps, strict=True):
        rows.append(_tidy(values, case_ids, method=method, step=step, layer=cascade[step - 1]))
    boot: dict[str, Any] = dict(n_boot=n_boot, level=level, method="percentile", seed=seed)
    by = ["split", "method", "step", "layer", "metric"]
    curves = summarize(pd.concat(rows, ignore_index=True), by=by, **boot)
    floor = summarize(pd.concat(floor_rows, ignore_index=True), by=by, **boot)
    curves = curves[["method", "step", "layer", "metric", "estimate", "ci_low", "ci_high",
                     "n_cases"]]
    floor = floor[["method", "metric", "estimate", "ci_low", "ci_high"]]
    last = curves[curves["step"] == len(cascade)].merge(floor, on=["method", "metric"],
                                                        suffixes=("", "_floor"))
    verdicts = pd.DataFrame({
        "method": last["method"], "metric": last["metric"], "final_high": last["ci_high"],
        "floor": last["estimate_floor"],
        "passed": (last["ci_high"] < last["estimate_floor"]).to_numpy(),
    })
    settings = {"layers": cascade, "seed": seed, "n_boot": n_boot, "level": level,
                "pair_shift": int(shift), "similarity": list(SIMILARITY)}
    return SanityResult(curves.reset_index(drop=True), floor.reset_index(drop=True),
                        verdicts.reset_index(drop=True), settings, originals)


def _tidy(values: dict[str, np.ndarray], case_ids: np.ndarray, **cols: Any) -> pd.DataFrame:
    frames = []
    for metric, v in values.items():
        frames.append(pd.DataFrame({
            "split": _SPLIT, **cols, "metric": metric, "case_id": case_ids,
            "image_id": np.arange(len(case_ids)), "value": np.asarray(v, dtype=np.float64),
        }))
    return pd.concat(frames, ignore_index=True)
