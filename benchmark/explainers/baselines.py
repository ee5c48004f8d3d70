"""Null baselines: maps that know nothing about the model. An explainer that does not beat
them has not shown it localises anything."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import torch

from benchmark.explainers.base import Explainer
from benchmark.methods import METHODS


class RandomMap(Explainer):
    """Uniform noise in [0, 1), shape ``(N, *spatial)``, seeded.

    One generator per explainer, advanced by every call: a run (same seed, same batches)
    is deterministic, but an image's map depends on its place in the batch sequence, so
    it is not comparable between batchings. Drawn on the CPU (the same maps on any
    device), then moved to the inputs' device.
    """

    info = METHODS["random"]
    defaults: ClassVar[dict[str, Any]] = {"seed": 0}

    def __init__(self, model: Any, layer: Any = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        self._gen = torch.Generator().manual_seed(int(self.options["seed"]))

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        shape = (inputs.shape[0], *inputs.shape[2:])
        return torch.rand(shape, generator=self._gen).to(inputs.device)


class CenterPrior(Explainer):
    """A Gaussian centred on the image, shape ``(N, *spatial)``, the same for every image.

    Coordinates are fractions of each axis's length, so the Gaussian is isotropic in those
    units and ``sigma`` is a fraction of each axis: on a ``(D, H, W)`` volume it spans
    ``sigma * D`` slices along z and ``sigma * H`` rows along y, i.e. it fits the field of
    view however thin the volume is.
    """

    info = METHODS["center_prior"]
    defaults: ClassVar[dict[str, Any]] = {"sigma": 0.25}

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        spatial = inputs.shape[2:]
        axes = torch.meshgrid(
            *[(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) / n for n in spatial],
            indexing="ij",
        )
        r2 = torch.stack([a**2 for a in axes]).sum(dim=0)
        prior = torch.exp(-r2 / (2 * float(self.options["sigma"]) ** 2)).to(inputs.device)
        return prior.expand(inputs.shape[0], *spatial).clone()


class AverageMask(Explainer):
    """The mean expert mask of the training split: where findings usually are.

    It is the same map for every image, so it measures how much of an explainer's
    agreement a dataset-level prior already gives (STATISTICS.md, "Baselines").

    Parameters
    ----------
    prior : ndarray, shape (*spatial,)
        Mean reference mask over the positive training images, ``(H, W)`` or
        ``(D, H, W)``: exactly the inputs' grid (checked per call, no resizing); the
        pipeline computes it (:meth:`benchmark.resolve.ResolvedDataset.mean_mask`).
        Maps are ``(N, *spatial)``.
    """

    info = METHODS["average_mask"]
    defaults: ClassVar[dict[str, Any]] = {"prior": None}

    def __init__(self, model: Any, layer: Any = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        prior = self.options["prior"]
        if prior is None:
            raise ValueError("method 'average_mask' needs `prior`, the mean training mask")
        self._prior = torch.as_tensor(np.asarray(prior, dtype=np.float32))

    def config(self) -> dict[str, Any]:
        digest = hashlib.sha256(self._prior.numpy().tobytes()).hexdigest()
        return {"method": self.info.name, "prior_sha256": digest,
                "prior_shape": list(self._prior.shape)}

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        spatial = tuple(inputs.shape[2:])
        if tuple(self._prior.shape) != spatial:
            raise ValueError(
                f"method 'average_mask': prior has shape {tuple(self._prior.shape)}, "
                f"images have {spatial}"
            )
        return self._prior.to(inputs.device).expand(inputs.shape[0], *spatial).clone()
