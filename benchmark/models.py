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
    """A checkpoint ready to explain.

    ``output`` says whether the module returns logits or probabilities; ``target`` is the
    output unit explained and turned into the positive-class probability (``None`` until
    :func:`check_output` has seen the output width: 0 for a single unit, else 1, the
    positive class of a two-class model).
    """

    name: str
    module: nn.Module
    sha256: str
    target_layer: str | None
    output: str = "logits"
    target: int | None = None

    def layer(self, name: str | None = None) -> nn.Module:
        """The module called ``name`` (default: the configured target layer, else the last
        convolution)."""
        if name is None and self.target_layer is None:
            convs = conv_layers(self.module)
            if not convs:
                raise CheckpointError(
                    f"model {self.name!r} has no convolutional layer to detect; name one with "
                    "--target-layer (layers: " + ", ".join(layer_names(self.module)[:20]) + ")"
                )
            self.target_layer = convs[-1]
        name = name or self.target_layer
        modules = dict(self.module.named_modules())
        if name not in modules:
            conv = conv_layers(self.module)
            listed = ", ".join(conv) if conv else ", ".join(layer_names(self.module)[:30])
            raise CheckpointError(
                f"model {self.name!r}: no layer {name!r}; "
                f"{'convolutional layers' if conv else 'layers'}: {listed}"
            )
        return modules[name]


_CONV_OPS = ("aten.conv2d", "aten.conv3d", "aten.convolution")


def _is_conv(module: nn.Module) -> bool:
    """A 2D/3D convolution, also inside TorchScript (``original_name``) and unflattened
    ``torch.export`` programs (a graph calling a convolution op)."""
    if isinstance(module, nn.Conv2d | nn.Conv3d):
        return True
    if getattr(module, "original_name", None) in ("Conv2d", "Conv3d"):
        return True
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes") or isinstance(module, torch.jit.ScriptModule):
        return False
    return any(n.op == "call_function" and str(n.target).startswith(_CONV_OPS)
               for n in graph.nodes)


def conv_layers(module: nn.Module) -> list[str]:
    """Names of the convolutional layers, in definition order."""
    return [n for n, m in module.named_modules() if n and _is_conv(m)]


def layer_names(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_modules() if n]


def last_conv_name(module: nn.Module) -> str:
    convs = conv_layers(module)
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
    trust: bool = False, output: str = "logits", target: int | None = None,
) -> LoadedModel:
    """Load ``path`` into an ``nn.Module`` in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model {name!r}: checkpoint file not found: {path}")
    lm = _load(path, name=name, sha256=sha256, factory=factory, factory_kwargs=factory_kwargs,
               target_layer=target_layer, trust=trust)
    lm.output, lm.target = output, target
    return lm


def _load(
    path: Path, *, name: str, sha256: str, factory: str | None,
    factory_kwargs: dict[str, Any] | None, target_layer: str | None, trust: bool,
) -> LoadedModel:
    module: nn.Module
    if path.suffix == ".pt2":
        try:
            # Unflattened, the program keeps its submodule names, so CAM methods can hook
            # a layer; .module() would inline every layer into one graph.
            module = torch.export.unflatten(torch.export.load(str(path)))
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
        try:
            module = import_factory(factory)(**(factory_kwargs or {}))
        except TypeError as err:
            raise CheckpointError(f"factory {factory!r} rejects its arguments ({err})") from None
        state = obj.get("state_dict", obj)
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise CheckpointError(f"{path}: state dict does not fit {factory} ({first})") from None
    else:
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__})")
    return LoadedModel(name, module.eval(), sha256, target_layer)


def _target_unit(lm: LoadedModel, units: int) -> int:
    """The configured unit, else 0 for a single output and 1 (the positive class) else."""
    return lm.target if lm.target is not None else (0 if units == 1 else 1)


def check_output(lm: LoadedModel, x: torch.Tensor) -> int:
    """Run ``lm`` on a sample batch, check the output fits a classification task and fix
    ``lm.target``; returns the number of output units.

    Raises
    ------
    CheckpointError
        The model fails on the input, its output is not (N, units), or ``target`` is not
        one of its units.
    """
    try:
        with torch.no_grad():
            out = lm.module(x)
    except Exception as err:  # noqa: BLE001 - any failure means the input does not fit
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"model {lm.name!r} fails on input of shape {tuple(x.shape)} ({first})"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(
            f"model {lm.name!r}: output must be (N, classes) for input of {x.shape[0]} images, "
            f"got {shape}"
        )
    if x.shape[0] > 1:
        try:
            with torch.no_grad():
                lm.module(x[:1])
        except Exception:  # noqa: BLE001
            raise CheckpointError(
                f"model {lm.name!r} runs on a batch of {x.shape[0]} images but not of 1: export "
                "it with a dynamic batch dimension (torch.export dynamic_shapes)"
            ) from None
    units = int(out.shape[1])
    target = _target_unit(lm, units)
    if not 0 <= target < units:
        raise CheckpointError(
            f"model {lm.name!r}: target unit {target} does not exist; "
            f"the model has {units} output(s)"
        )
    if lm.output == "probabilities" and units == 1 and target != 0:
        raise CheckpointError(f"model {lm.name!r}: a single probability output has only unit 0")
    lm.target = target
    return units


def predict(lm: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Probability of the positive class, shape (N,).

    Logits: sigmoid of a single unit, else softmax over units at ``lm.target``.
    Probabilities: the unit ``lm.target`` as returned.
    """
    with torch.no_grad():
        out = lm.module(x)
    if out.ndim != 2:
        raise CheckpointError(
            f"model {lm.name!r}: output must be (N, classes), got {tuple(out.shape)}")
    target = _target_unit(lm, int(out.shape[1]))
    if lm.output == "probabilities":
        return out[:, target].float()
    if out.shape[1] == 1:
        return torch.sigmoid(out[:, 0])
    return torch.softmax(out, dim=1)[:, target]
