"""The one protocol every saliency method follows (Captum style).

``Explainer(model, **options).attribute(inputs, target=...)`` with ``inputs`` a float
tensor ``(N, C, *spatial)`` returns a float tensor ``(N, *spatial_out)``: the channel axis is
summed away and ``spatial_out`` is the input grid or, for CAM methods, the grid of the
target layer (the metrics stage resizes it to the reference grid). ``spatial`` is
``(H, W)`` for slices and ``(D, H, W)`` for volumes (Conv3d models); ``spatial_out`` has
the same number of axes.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.methods import MethodInfo

__all__ = ["Explainer", "MethodInfo", "without_warning"]

_FILTERS = threading.Lock()


@contextmanager
def without_warning(message: str) -> Iterator[None]:
    """Ignore warnings whose text starts with ``message`` inside the block.

    ``warnings.catch_warnings`` saves and restores the process's filter list, so two such
    blocks overlapping in two threads (explainers run side by side,
    :func:`benchmark.executor.run_threads`) could leave a filter on or take it away
    early: one block at a time.
    """
    with _FILTERS, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message)
        yield


class Explainer:
    """Base class: subclasses set ``info`` and implement :meth:`_attribute`.

    Parameters
    ----------
    model : nn.Module
        Maps ``(N, C, *spatial)`` to logits ``(N, n_outputs)``; put in eval mode here.
    layer : nn.Module, optional
        Target layer, for methods with ``info.needs_layer``.
    **options
        Method options (e.g. ``n_steps`` for integrated gradients); recorded in
        :meth:`config` so the map cache is keyed by them.
    """

    info: ClassVar[MethodInfo]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, **options: Any) -> None:
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"method {self.info.name!r}: unknown option(s) {sorted(unknown)}; "
                f"valid: {sorted(self.defaults) or 'none'}"
            )
        if self.info.needs_layer and layer is None:
            raise ValueError(f"method {self.info.name!r} needs a target layer")
        self.model = model.eval()
        self.layer = layer
        self.options = {**self.defaults, **options}

    def config(self) -> dict[str, Any]:
        """What determines this method's maps (part of the cache key)."""
        return {"method": self.info.name, **self.options}

    def attribute(self, inputs: torch.Tensor, target: int = 0) -> torch.Tensor:
        """Saliency of ``target`` for each input.

        Parameters
        ----------
        inputs : Tensor (N, C, *spatial), float
        target : int
            Index of the output unit explained (0 for a single-logit binary model).

        Returns
        -------
        Tensor (N, *spatial_out), float32, detached.
            ``spatial_out`` has as many axes as the input's spatial part: ``(H, W)`` or
            ``(D, H, W)``.

        Raises
        ------
        RuntimeError
            The method's maps do not have that form (e.g. a non-spatial CAM layer); the
            pipeline reports it with the model, method and image.
        """
        if inputs.ndim < 3:
            raise ValueError(f"inputs must be (N, C, *spatial), got shape {tuple(inputs.shape)}")
        with torch.enable_grad():
            out = self._attribute(inputs, target)
        # A CAM layer without the input's spatial axes (a layer after pooling, or a 2D
        # layer in a 3D network) gives maps the metrics cannot resize: say so here.
        if out.ndim != inputs.ndim - 1 or out.shape[0] != inputs.shape[0]:
            where = " (is the target layer a spatial one?)" if self.info.needs_layer else ""
            raise RuntimeError(
                f"method {self.info.name!r} returned maps of shape {tuple(out.shape)} for "
                f"inputs {tuple(inputs.shape)}; expected (N, *spatial) with "
                f"{inputs.ndim - 2} spatial axes{where}"
            )
        return out.detach().to(torch.float32)

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        raise NotImplementedError
