"""Checkpoint loading: state dict + factory, TorchScript, ``torch.export`` archives.

Loading never executes code from the checkpoint file: state dicts go through
``torch.load(weights_only=True)``; TorchScript and ``torch.export`` archives are loaded by
their own loaders. A pickled full ``nn.Module`` is refused unless ``trust=True``
(``--trust-checkpoint``), because unpickling runs arbitrary code.
"""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.errors import BenchError


class CheckpointError(BenchError):
    """A checkpoint that cannot be loaded; the message is one line naming the file."""


@dataclass
class LoadedModel:
    name: str
    module: nn.Module
    sha256: str
    target_layer: str | None

    def layer(self, name: str | None = None) -> nn.Module:
        """The module called ``name`` (default: the configured target layer, else the last
        convolution)."""
        name = name or self.target_layer or last_conv_name(self.module)
        modules = dict(self.module.named_modules())
        if name not in modules:
            conv = [n for n, m in modules.items() if isinstance(m, nn.Conv2d | nn.Conv3d)]
            raise CheckpointError(
                f"model {self.name!r}: no layer {name!r}; convolutional layers: {', '.join(conv)}"
            )
        return modules[name]


def last_conv_name(module: nn.Module) -> str:
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    if not convs:
        raise CheckpointError("model has no convolutional layer; pass a target layer")
    return convs[-1]


def import_factory(spec: str) -> Any:
    """``package.module:function`` -> the function."""
    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise CheckpointError(f"factory {spec!r} must look like package.module:function")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"factory {spec!r} cannot be imported ({err})") from None


def load_checkpoint(
    path: Path, *, name: str, sha256: str, factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None, target_layer: str | None = None,
    trust: bool = False,
) -> LoadedModel:
    """Load ``path`` into an ``nn.Module`` in eval mode on the CPU."""
    path = Path(path)
    module: nn.Module
    if path.suffix == ".pt2":
        try:
            module = torch.export.load(str(path)).module()
        except Exception as err:  # noqa: BLE001 - any loader failure is a bad checkpoint
            raise CheckpointError(f"{path}: not a torch.export archive ({err})") from None
        return LoadedModel(name, module, sha256, target_layer)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            is_script = any(n.endswith("constants.pkl") for n in zf.namelist())
        if is_script:
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as err:  # noqa: BLE001
                raise CheckpointError(f"{path}: not a TorchScript file ({err})") from None
            return LoadedModel(name, module.eval(), sha256, target_layer)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        if not trust:
            reason = str(err).splitlines()[0][:160]
            raise CheckpointError(
                f"{path}: not loadable as weights only ({reason}); if it is a pickled full "
                "model you trust, pass --trust-checkpoint"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        module = obj
    elif isinstance(obj, dict):
        if factory is None:
            raise CheckpointError(
                f"{path}: a state dict needs a factory (--factory package.module:function)"
            )
        module = import_factory(factory)(**(factory_kwargs or {}))
        state = obj.get("state_dict", obj)
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise CheckpointError(f"{path}: state dict does not fit {factory} ({first})") from None
    else:
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__})")
    return LoadedModel(name, module.eval(), sha256, target_layer)


def predict(module: nn.Module, x: torch.Tensor, target: int = 0) -> torch.Tensor:
    """Probability of the positive class: sigmoid of a single logit, else softmax[target]."""
    with torch.no_grad():
        out = module(x)
    if out.ndim != 2:
        raise CheckpointError(f"model output must be (N, classes), got {tuple(out.shape)}")
    if out.shape[1] == 1:
        return torch.sigmoid(out[:, 0])
    return torch.softmax(out, dim=1)[:, target]
