"""RISE, randomised input sampling (Petsiuk et al. 2018): a black-box perturbation method.
Captum has no RISE, so it is written here in torch, for ``(N, C, H, W)`` slices and
``(N, C, D, H, W)`` volumes."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.explainers.base import Explainer
from benchmark.explainers.perturbation import eval_elements
from benchmark.methods import METHODS

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


class MaskSource:
    """The RISE masks of one input grid, drawn once from a seed.

    Parameters
    ----------
    spatial : tuple of int
        The input grid, ``(H, W)`` or ``(D, H, W)``.
    n_masks, cell, p_keep, seed
        As in :class:`RISE`.

    Notes
    -----
    Per axis of length ``n`` the coarse grid has ``s = min(cell, n)`` cells of
    ``c = ceil(n / s)`` voxels. Each mask is a binary ``s x ... x s`` grid (cells kept with
    probability ``p_keep``), upsampled (bilinear / trilinear, ``align_corners=False``) to
    ``(s + 1) c`` per axis and cropped to ``n`` at a random shift in ``[0, c)``, so cell
    edges fall anywhere (the paper's construction). Only the coarse grids and shifts are
    stored: a volume's full-resolution masks are built ``batch`` at a time, never all.
    """

    def __init__(
        self, spatial: tuple[int, ...], n_masks: int, cell: int, p_keep: float, seed: int
    ) -> None:
        self.spatial = spatial
        cells = tuple(min(cell, n) for n in spatial)
        self.cell_size = tuple(math.ceil(n / s) for n, s in zip(spatial, cells, strict=True))
        self.up_size = tuple((s + 1) * c for s, c in zip(cells, self.cell_size, strict=True))
        gen = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand((n_masks, 1, *cells), generator=gen) < p_keep).float()
        self.shifts = torch.stack(
            [torch.randint(0, c, (n_masks,), generator=gen) for c in self.cell_size], dim=1
        )

    def __len__(self) -> int:
        return len(self.grids)

    def masks(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Masks ``start`` to ``stop - 1``: Tensor (stop - start, *spatial), in [0, 1]."""
        up = F.interpolate(
            self.grids[start:stop].to(device), size=self.up_size,
            mode=_INTERPOLATION[len(self.spatial)], align_corners=False,
        )[:, 0]
        crops = []
        for mask, shift in zip(up, self.shifts[start:stop].tolist(), strict=True):
            window = tuple(slice(o, o + n) for o, n in zip(shift, self.spatial, strict=True))
            crops.append(mask[window])
        return torch.stack(crops)


class RISE(Explainer):
    """RISE (Petsiuk et al. 2018): the mean of random smooth masks, each weighted by the
    model's score for the input seen through it; maps ``(N, *spatial)`` on the input grid.

    ``saliency = sum_m P(target | x * M_m) M_m / (n_masks * p_keep)``: the expected score
    given that a voxel is visible.

    Parameters
    ----------
    n_masks : int, default 500
        Number of masks; each is one forward pass per image. The paper used 4000 for
        ImageNet models; the Monte Carlo error of a map falls as ``1 / sqrt(n_masks)``.
    cell : int, default 8
        Cells of the coarse random grid per axis (the paper's ``s``; 8 gives 8-pixel cells
        on the 64 x 64 demo); on an axis shorter than ``cell`` (a thin volume's depth)
        there is one cell per voxel.
    p_keep : float, default 0.5
        Probability that a cell is visible, in (0, 1].
    seed : int, default 0
        Seeds the masks. They are drawn once per input grid (on the CPU), so every image
        of a dataset, on any device and in any batch, is probed with the same masks.
    score : {"probability", "logit"}, default "probability"
        ``probability``: the sigmoid of the target logit for a one-logit model, the
        softmax over the outputs otherwise (the paper's class probability);
        ``logit``: the target logit itself.
    batch_masks : int, default 64
        Masks per forward pass, each applied to every image of the batch (lowered so that
        a pass holds at most 2**24 input elements, which matters for volumes). Changes
        speed and memory, not the maps (up to float rounding), so it is not part of the
        cache key.

    Notes
    -----
    Cost: ``n_masks`` forward passes per image, no backward pass, in
    ``ceil(n_masks / batch_masks)`` passes of ``batch_masks x N`` masked images.
    Masked-out voxels are set to 0 (air after the demo's intensity scaling).

    References
    ----------
    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018.
    """

    info = METHODS["rise"]
    defaults: ClassVar[dict[str, Any]] = {
        "n_masks": 500, "cell": 8, "p_keep": 0.5, "seed": 0, "score": "probability",
        "batch_masks": 64,
    }

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        o = self.options
        for name in ("n_masks", "cell", "batch_masks"):
            v = o[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"method 'rise': `{name}` must be a positive integer, got {v!r}")
        if not isinstance(o["p_keep"], (int, float)) or not 0 < o["p_keep"] <= 1:
            raise ValueError(f"method 'rise': `p_keep` must be in (0, 1], got {o['p_keep']!r}")
        if o["score"] not in ("probability", "logit"):
            raise ValueError(
                f"method 'rise': `score` must be 'probability' or 'logit', got {o['score']!r}"
            )
        self._sources: dict[tuple[int, ...], MaskSource] = {}

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in super().config().items() if k != "batch_masks"}

    def mask_source(self, spatial: tuple[int, ...]) -> MaskSource:
        """The masks of an input grid (drawn on first use, then reused)."""
        if spatial not in self._sources:
            o = self.options
            self._sources[spatial] = MaskSource(
                spatial, int(o["n_masks"]), int(o["cell"]), float(o["p_keep"]), int(o["seed"])
            )
        return self._sources[spatial]

    def _score(self, logits: torch.Tensor, target: int) -> torch.Tensor:
        if self.options["score"] == "logit":
            return logits[:, target]
        if logits.shape[1] == 1:
            return torch.sigmoid(logits[:, target])
        return torch.softmax(logits, dim=1)[:, target]

    @torch.no_grad()
    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        n, spatial = len(inputs), tuple(inputs.shape[2:])
        source = self.mask_source(spatial)
        per_pass = eval_elements(inputs.device) // inputs.numel()
        per_pass = min(int(self.options["batch_masks"]), per_pass)
        per_pass = max(1, per_pass)
        saliency = torch.zeros((n, *spatial), dtype=torch.float32, device=inputs.device)
        for start in range(0, len(source), per_pass):
            masks = source.masks(start, min(start + per_pass, len(source)), inputs.device)
            masked = inputs[:, None] * masks[None, :, None].to(inputs.dtype)  # (N, m, C, ...)
            scores = self._score(self.model(masked.flatten(0, 1)), target).reshape(n, -1)
            saliency += torch.tensordot(scores.float(), masks, dims=1)
        return saliency / (len(source) * float(self.options["p_keep"]))
