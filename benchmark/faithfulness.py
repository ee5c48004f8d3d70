"""Does the map show what the model uses? Deletion and insertion curves (Petsiuk et al. 2018).

Pixels are removed from the image (deletion) or added to a baseline image (insertion) in
the order of the map, most salient first, and the model's output is recorded after each
step. A faithful map makes the probability fall fast under deletion (small area under the
curve) and rise fast under insertion (large area). The same curves with the pixels in a
random order are the reference: a map is faithful only if it beats them.

Removed pixels take the value of a baseline image: the input blurred (``blur``, a Gaussian
of ``blur_sigma`` pixels) or its mean (``mean``), so the perturbation stays close to the
data rather than introducing sharp artificial edges.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from benchmark.explainers.perturbation import eval_elements

MODES = ("deletion", "insertion")
BASELINES = ("blur", "mean")


def baseline_images(inputs: torch.Tensor, kind: str = "blur", blur_sigma: float = 4.0
                    ) -> torch.Tensor:
    """The image each removed pixel is replaced from, shape of ``inputs`` (N, C, *spatial)."""
    if kind == "mean":
        axes = tuple(range(2, inputs.ndim))
        return inputs.mean(dim=axes, keepdim=True).expand_as(inputs).clone()
    if kind == "blur":
        sigma = (0.0, 0.0) + (float(blur_sigma),) * (inputs.ndim - 2)
        return torch.from_numpy(gaussian_filter(inputs.numpy(), sigma=sigma)).to(inputs.dtype)
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, not {kind!r}")


def pixel_order(maps: np.ndarray, seed: int = 0, random: bool = False) -> np.ndarray:
    """Pixel indices per image, most salient first (ties in a seeded random order).

    Parameters
    ----------
    maps : ndarray, shape (N, *spatial)
    seed : int
    random : bool
        Ignore the maps: a random order per image (the reference curve).

    Returns
    -------
    ndarray of int64, shape (N, n_pixels)
    """
    flat = maps.reshape(len(maps), -1)
    keys = np.random.default_rng(seed).random(flat.shape)
    if random:
        return np.argsort(keys, axis=1, kind="stable")
    return np.lexsort((keys, -flat), axis=-1)


def output_fn(model: nn.Module, target: int = 0, output: str = "probability"
              ) -> Callable[[torch.Tensor], np.ndarray]:
    """``x -> (N,)``: the probability of ``target`` (sigmoid of one unit, else softmax) or
    the raw logit of ``target`` (``output="logit"``)."""

    def f(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = model(x)
        if output == "logit":
            return out[:, target].double().numpy()
        if out.shape[1] == 1:
            return torch.sigmoid(out[:, 0]).double().numpy()
        return torch.softmax(out, dim=1)[:, target].double().numpy()

    return f


def _to_input_grid(maps: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    if tuple(maps.shape[1:]) == spatial:
        return maps
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    up = torch.nn.functional.interpolate(t, size=spatial, mode=mode, align_corners=False)
    return up[:, 0].numpy()


def perturbation_curves(
    f: Callable[[torch.Tensor], np.ndarray], inputs: torch.Tensor, order: np.ndarray,
    baseline: torch.Tensor, *, mode: str, steps: int = 16,
) -> np.ndarray:
    """The model output after removing (deletion) or adding (insertion) the first
    ``round(k / steps * n_pixels)`` pixels of ``order``, k = 0..steps.

    Parameters
    ----------
    f : callable, (N, C, *spatial) -> (N,)
    inputs, baseline : Tensor, shape (N, C, *spatial)
    order : ndarray of int, shape (N, n_pixels)
    mode : {"deletion", "insertion"}
    steps : int, default 16

    Returns
    -------
    ndarray of float64, shape (N, steps + 1)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    n, n_pix = order.shape
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(n_pix)[None, :]  # position of each pixel
    rank_t = torch.from_numpy(rank.reshape(n, 1, *inputs.shape[2:]))
    # Several steps share one forward pass, up to the perturbation loops' pass size: the
    # 17 steps of 16 demo images in 5 passes instead of 17 took 1.6x less time, with the
    # same outputs (a model's sums may round differently with the batch size elsewhere).
    per_pass = max(1, eval_elements(inputs.device) // max(inputs.numel(), 1))
    # The first pixels of the order take the baseline (deletion) or the input (insertion).
    chosen_value, other = (baseline, inputs) if mode == "deletion" else (inputs, baseline)
    out = np.empty((n, steps + 1))
    for first in range(0, steps + 1, per_pass):
        ks = range(first, min(first + per_pass, steps + 1))
        xs = [torch.where(rank_t < round(k / steps * n_pix), chosen_value, other) for k in ks]
        out[:, first:first + len(ks)] = f(torch.cat(xs)).reshape(len(ks), n).T
    return out


def area(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each curve over the removed fraction in [0, 1]: (N,)."""
    steps = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(axis=1) / (2 * steps)


def deletion_insertion(
    model: nn.Module, inputs: torch.Tensor, maps: np.ndarray, *, target: int = 0,
    baseline: str = "blur", blur_sigma: float = 4.0, steps: int = 16,
    output: str = "probability", seed: int = 0, sign: str = "positive",
) -> pd.DataFrame:
    """Deletion and insertion areas per image, with the random-order reference.

    Parameters
    ----------
    model : nn.Module
    inputs : Tensor, shape (N, C, *spatial)
        Network inputs.
    maps : ndarray, shape (N, *spatial_s)
        Saliency maps; coarser maps (CAM) are upsampled to the input grid first.
    target : int, default 0
    baseline : {"blur", "mean"}, default "blur"
    blur_sigma : float, default 4.0
        Gaussian sigma in pixels of the ``blur`` baseline.
    steps : int, default 16
        Points of each curve beyond the start (2 x (steps + 1) x 2 forward passes).
    output : {"probability", "logit"}, default "probability"
    seed : int, default 0
        Tie-breaking and random-order seed.
    sign : {"positive", "abs", "signed"}, default "positive"
        Order by max(S, 0), |S| or S (as the metrics' sign option).

    Returns
    -------
    DataFrame, one row per image: ``deletion, insertion, deletion_random,
    insertion_random`` (areas) and ``faithful_deletion = deletion_random - deletion``,
    ``faithful_insertion = insertion - insertion_random`` (positive: better than random).
    """
    s = _to_input_grid(np.asarray(maps, dtype=np.float32), tuple(inputs.shape[2:]))
    s = {"positive": np.maximum(s, 0.0), "abs": np.abs(s), "signed": s}[sign]
    f = output_fn(model.eval(), target, output)
    base = baseline_images(inputs, baseline, blur_sigma)
    orders = {"": pixel_order(s, seed), "_random": pixel_order(s, seed, random=True)}
    out = {}
    for suffix, order in orders.items():
        for mode in MODES:
            out[f"{mode}{suffix}"] = area(perturbation_curves(f, inputs, order, base,
                                                              mode=mode, steps=steps))
    frame = pd.DataFrame(out)
    frame["faithful_deletion"] = frame["deletion_random"] - frame["deletion"]
    frame["faithful_insertion"] = frame["insertion"] - frame["insertion_random"]
    return frame


#: What a region's pixels become when it is deleted: a value in the image's own units
#: (for CT, Hounsfield units: -1000 air, about -860 aerated lung), or ``"mean"`` (the
#: image's mean) or ``"blur"`` (the image blurred with ``blur_sigma``).
Fill = float | str


def region_deletion(
    model: nn.Module, images: np.ndarray, regions: dict[str, np.ndarray],
    fills: dict[str, Fill], to_input: Callable[[np.ndarray], torch.Tensor], *,
    target: int = 0, output: str = "probability", blur_sigma: float = 4.0,
) -> pd.DataFrame:
    """The model's output before and after deleting each region of each image.

    No explainer is involved: this asks the model directly which evidence it needs, e.g.
    the annotated findings against everything outside the body (where a scanner confounder
    lives).

    Parameters
    ----------
    model : nn.Module
    images : ndarray, shape (N, *spatial)
        Images in their own units (before the network's preprocessing).
    regions : dict of str to ndarray of bool, shape (N, *spatial)
        The pixels deleted for each named region.
    fills : dict of str to float or {"mean", "blur"}
        What each region's pixels become (a region without an entry uses ``"mean"``).
    to_input : callable, (N, *spatial) -> Tensor (N, C, *spatial)
        The dataset's preprocessing into network inputs.
    target, output, blur_sigma
        As :func:`deletion_insertion`.

    Returns
    -------
    DataFrame, one row per image and region: ``row`` (position in ``images``), ``region``,
    ``before``, ``after``, ``drop = before - after``.
    """
    f = output_fn(model.eval(), target, output)
    images = np.asarray(images, dtype=np.float32)
    before = f(to_input(images))
    frames = []
    for name, mask in regions.items():
        fill = fills.get(name, "mean")
        if fill == "mean":
            values = images.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
        elif fill == "blur":
            values = gaussian_filter(images, sigma=(0.0,) + (blur_sigma,) * (images.ndim - 1))
        elif isinstance(fill, str):
            raise ValueError(f"fill of region {name!r} must be a number, 'mean' or 'blur', "
                             f"not {fill!r}")
        else:
            values = np.float32(fill)
        deleted = np.where(np.asarray(mask, dtype=bool), values, images).astype(np.float32)
        after = f(to_input(deleted))
        frames.append(pd.DataFrame({"row": np.arange(len(images)), "region": name,
                                    "before": before, "after": after, "drop": before - after}))
    return pd.concat(frames, ignore_index=True)
