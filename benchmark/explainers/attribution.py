"""Reference-based attributions, from Captum: GradientSHAP and DeepLIFT. Both explain the
target logit's difference between the input and a baseline (reference) image; both work on
``(N, C, H, W)`` slices and ``(N, C, D, H, W)`` volumes."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import DeepLift as _DeepLift
from captum.attr import GradientShap as _GradientShap
from torch import nn
from torch.overrides import TorchFunctionMode

from benchmark.explainers.base import Explainer, without_warning
from benchmark.methods import METHODS
from benchmark.threads import GLOBAL_RNG

_BASELINE_SETS = ("zero", "zero+blur", "zero+noise")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur over every spatial axis.

    Parameters
    ----------
    x : Tensor (N, C, *spatial), 1 to 3 spatial axes
    sigma : float
        Standard deviation in pixels (voxels), the same on every axis; 0 returns a copy.

    Returns
    -------
    Tensor (N, C, *spatial)
        Edges are replicated (not reflected), so a kernel wider than a thin volume's depth
        still works; the kernel is truncated at 3 sigma and sums to 1. This is
        ``scipy.ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=3)`` per image
        and channel.
    """
    if sigma <= 0:
        return x.clone()
    radius = max(1, int(3 * sigma + 0.5))  # scipy.ndimage's truncation
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    dims = x.ndim - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    channels = x.shape[1]
    out = x
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = kernel.numel()
        weight = kernel.reshape(1, 1, *shape).repeat(channels, 1, *([1] * dims))
        pad = [0] * (2 * dims)  # F.pad lists the last axis first
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out


@contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed numpy's and torch's global generators, restoring both afterwards.

    Captum's GradientShap draws its baseline choices and path positions with
    ``np.random`` and its noise with ``torch.normal`` on the inputs' device, with no
    generator argument; this is the only way to make it reproducible. One thread at a
    time (:data:`benchmark.threads.GLOBAL_RNG`); no other method draws from them.
    """
    cuda = device.type == "cuda"
    index = 0
    if cuda:
        index = device.index if device.index is not None else torch.cuda.current_device()
    with GLOBAL_RNG:
        # Captum draws from numpy's legacy global generator: it is the one to seed.
        state = np.random.get_state()  # noqa: NPY002
        try:
            # Only the CPU generator and the inputs' GPU are seeded (and restored), so
            # other GPUs' streams are left alone.
            with torch.random.fork_rng(devices=[index] if cuda else []):
                np.random.seed(seed)  # noqa: NPY002
                torch.default_generator.manual_seed(seed)
                if cuda:
                    with torch.cuda.device(index):
                        torch.cuda.manual_seed(seed)
                yield
        finally:
            np.random.set_state(state)  # noqa: NPY002


class GradientShap(Explainer):
    """GradientSHAP (Lundberg & Lee 2017), Captum's ``GradientShap``: the expected value of
    ``(x + e - b) * grad S(b + t (x + e - b))`` over a baseline ``b`` drawn from a small
    set, a position ``t ~ U(0, 1)`` on the straight path and input noise ``e``; summed over
    input channels, maps ``(N, *spatial)``.

    Parameters
    ----------
    n_samples : int, default 16
        Samples (baseline, position, noise) per image; each is one forward and one
        backward pass.
    stdevs : float, default 0.0
        Standard deviation of the Gaussian input noise ``e``, as a fraction of each image's
        own intensity range (max - min), like SmoothGrad's ``noise``; 0 adds none.
    baselines : {"zero+blur", "zero", "zero+noise"}, default "zero+blur"
        The baseline set of each image, drawn from uniformly: the all-zero image (air
        after the demo's intensity scaling) and, with ``+blur``, the image itself blurred
        by a Gaussian of ``blur_sigma`` voxels (keeps the anatomy's mean intensity but
        not its detail), or, with ``+noise``, uniform noise between the image's minimum
        and maximum (one seeded draw, shared by all images).
    blur_sigma : float, default 4.0
        Standard deviation of the blur in pixels (voxels), the same on every axis.
    seed : int, default 0
        Seeds the draws. Each image is explained in its own Captum call with the global
        generators seeded to ``seed`` (and restored afterwards), so every image sees the
        same baseline choices and path positions whatever its batch mates (common random
        numbers, as in SmoothGrad). With ``stdevs > 0`` the noise is drawn by Captum on the
        inputs' device, so maps agree between runs on one device, not between CPU and GPU.

    Notes
    -----
    For a linear model ``S(x) = w . x`` the expectation is ``(x - mean(b)) * w``.
    Cost: ``n_samples`` forward and backward passes per image, one image per call (a
    batch of ``n_samples`` copies); memory is that of ``n_samples`` copies of one image.

    References
    ----------
    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017.
    """

    info = METHODS["gradient_shap"]
    defaults: ClassVar[dict[str, Any]] = {
        "n_samples": 16, "stdevs": 0.0, "baselines": "zero+blur", "blur_sigma": 4.0, "seed": 0,
    }

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        o = self.options
        n = o["n_samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"method 'gradient_shap': `n_samples` must be a positive integer, got {n!r}"
            )
        for name in ("stdevs", "blur_sigma"):
            if not isinstance(o[name], (int, float)) or not o[name] >= 0:
                raise ValueError(
                    f"method 'gradient_shap': `{name}` must be a number >= 0, got {o[name]!r}"
                )
        if o["baselines"] not in _BASELINE_SETS:
            raise ValueError(
                f"method 'gradient_shap': `baselines` must be one of {', '.join(_BASELINE_SETS)}"
                f"; got {o['baselines']!r}"
            )

    def baseline_set(self, image: torch.Tensor) -> torch.Tensor:
        """The baseline set of one image.

        Parameters
        ----------
        image : Tensor (1, C, *spatial)

        Returns
        -------
        Tensor (B, C, *spatial)
            ``B = 1`` (zeros) or 2 (zeros, then the blurred image or the noise image).
        """
        zero = torch.zeros_like(image)
        kind = self.options["baselines"]
        if kind == "zero":
            return zero
        if kind == "zero+blur":
            return torch.cat([zero, gaussian_blur(image, float(self.options["blur_sigma"]))])
        gen = torch.Generator().manual_seed(int(self.options["seed"]))
        u = torch.rand(image.shape[1:], generator=gen).to(image.device, image.dtype)
        low, high = image.min(), image.max()
        return torch.cat([zero, (low + (high - low) * u)[None]])

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        x = inputs.detach()
        shap = _GradientShap(self.model)
        n_samples, seed = int(self.options["n_samples"]), int(self.options["seed"])
        maps = []
        for i in range(len(x)):
            image = x[i : i + 1]
            span = float(image.max() - image.min())
            with _seeded_global_rng(seed, image.device):
                attr = shap.attribute(
                    image, baselines=self.baseline_set(image), n_samples=n_samples,
                    stdevs=float(self.options["stdevs"]) * span, target=target,
                )
            maps.append(attr.detach().sum(dim=1))
        return torch.cat(maps)


#: Module types whose forward DeepLIFT rewrites (Captum's ``SUPPORTED_NON_LINEAR``).
_DEEPLIFT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Softmax,
)
#: Names of torch functions that are nonlinear; called outside a module of the list above,
#: DeepLIFT sees them only through their plain gradient.
_NONLINEAR = frozenset({
    "relu", "relu_", "relu6", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish",
    "leaky_relu", "leaky_relu_", "hardtanh", "hardswish", "hardsigmoid", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "softplus", "softmax", "log_softmax", "max_pool1d",
    "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d",
})


def unhandled_nonlinearities(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Nonlinear torch functions that one forward pass calls outside the module types
    DeepLIFT rewrites: ``F.relu(x)`` in a ``forward``, or an ``nn.GELU`` module.

    Parameters
    ----------
    model : nn.Module
    inputs : Tensor (n, C, *spatial)
        A small batch (one image is enough).

    Returns
    -------
    list of str
        Sorted function names; empty when DeepLIFT's rules cover every nonlinearity.
    """
    depth = 0
    found: set[str] = set()

    def enter(*_: Any) -> None:
        nonlocal depth
        depth += 1

    def leave(*_: Any) -> None:
        nonlocal depth
        depth -= 1

    class _Spy(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            name = getattr(func, "__name__", "")
            if depth == 0 and name in _NONLINEAR:
                found.add(name)
            return func(*args, **(kwargs or {}))

    handles = []
    for m in model.modules():
        if type(m) in _DEEPLIFT_MODULES:
            handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    try:
        with torch.no_grad(), _Spy():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return sorted(found)


class DeepLift(Explainer):
    """DeepLIFT with the rescale rule (Shrikumar et al. 2017), Captum's ``DeepLift``,
    against a constant baseline; summed over input channels, maps ``(N, *spatial)``.

    Parameters
    ----------
    baseline : float, default 0.0
        The reference image's constant value (0 is air after the demo's scaling).

    Notes
    -----
    What the model must look like: every nonlinearity an ``nn.Module`` of a type Captum
    rewrites (``nn.ReLU``, ``ELU``, ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``Softplus``,
    ``Softmax``, ``MaxPool1d/2d/3d``), each instance used once per forward pass (Captum
    raises a ``RuntimeError`` on a reused module, which the pipeline reports). In-place
    ReLUs (``nn.ReLU(inplace=True)``) work with Captum 0.9. A nonlinearity applied as a
    function in ``forward`` (``F.relu``, ``torch.sigmoid``, ``x.relu()``), or a module
    type outside that list (``nn.GELU``, ``nn.SiLU``), runs with its plain gradient: the
    method still returns maps, but they are no longer DeepLIFT there. The first call
    checks this on one image and warns (``UserWarning``) naming the functions found.
    The demo CNN (``nn.ReLU`` and ``nn.MaxPool`` modules) meets the requirements.

    The rescale rule makes the map sum to ``S(x) - S(baseline)`` through ReLUs; Captum's
    max-pooling rule does not keep that sum exact (off by up to ~30 % on the random demo
    CNN), so completeness is not asserted here.

    Cost: one forward pass of ``2N`` images (inputs and baselines) and one backward pass
    per batch. TorchScript models have no module hooks, so DeepLIFT cannot run on them.

    References
    ----------
    Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating
    Activation Differences", ICML 2017.
    """

    info = METHODS["deeplift"]
    defaults: ClassVar[dict[str, Any]] = {"baseline": 0.0}

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        self._checked = False

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        if not self._checked:
            self._checked = True
            unhandled = unhandled_nonlinearities(self.model, inputs[:1].detach())
            if unhandled:
                warnings.warn(
                    f"method 'deeplift': the model calls {', '.join(unhandled)} outside "
                    "the nn modules DeepLIFT rewrites, so its maps use plain gradients "
                    "there; use nn.ReLU (etc.) modules in the model, or another method",
                    UserWarning, stacklevel=3,
                )
        x = inputs.clone().requires_grad_(True)
        # Captum announces its temporary hooks on every call; nothing to act on.
        with without_warning("Setting forward, backward hooks"):
            attr = _DeepLift(self.model).attribute(
                x, baselines=float(self.options["baseline"]), target=target
            )
        return attr.detach().sum(dim=1)
