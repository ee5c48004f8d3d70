"""Explainers on 3D volumes: (N, 1, D, H, W) inputs to a Conv3d classifier.

Every registered method must give finite float32 maps (N, D, H, W) (Grad-CAM: the target
layer's grid), the same map for an image whether it is explained alone or in a batch,
and the metrics stage must upsample coarse 3D maps the way torch's trilinear
``interpolate`` does. Independent computations use plain torch autograd, not Captum.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.explainers import EXPLAINERS, get_explainer
from benchmark.explainers.perturbation import occlusion_geometry
from benchmark.metrics import compute

#: Methods whose maps are on the target layer's grid (the metrics upsample them).
LAYER_GRID_METHODS = {"gradcam", "gradcam_plusplus", "hirescam", "layercam", "scorecam"}

SHAPE = (8, 16, 16)  # (D, H, W): thinner than occlusion's default window of 16
LAYER_GRID = (4, 8, 8)  # the stride-2 second convolution halves every axis
# The random map draws from one generator per explainer: an image's map depends on its
# place in the batch sequence by design (benchmark.explainers.baselines.RandomMap).
BATCH_DEPENDENT = {"random"}


class TinyCNN3d(nn.Module):
    """Two Conv3d layers, global average pooling, a linear head with two logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
            nn.Conv3d(4, 6, 3, padding=1, stride=2), nn.ReLU(),
        )
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


@pytest.fixture(scope="module")
def model() -> TinyCNN3d:
    torch.manual_seed(0)
    return TinyCNN3d().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, *SHAPE, generator=gen)
    x[1] *= 3.0  # images with different intensity ranges (SmoothGrad's noise scale)
    return x


PRIOR = np.linspace(0, 1, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)


def make(name: str, model: nn.Module, **options: object):
    if EXPLAINERS[name].info.needs_prior:
        options.setdefault("prior", PRIOR)
    return get_explainer(name, model, layer=model.features[3], **options)


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_every_method_returns_finite_float32_volumes(name, model, x) -> None:
    out = make(name, model).attribute(x, target=1)
    assert tuple(out.shape) == (3, *(LAYER_GRID if name in LAYER_GRID_METHODS else SHAPE))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in EXPLAINERS if n not in BATCH_DEPENDENT])
def test_a_batch_gives_each_image_its_own_map(name, model, x) -> None:
    batched = make(name, model).attribute(x, target=1)
    alone = torch.cat([make(name, model).attribute(x[i : i + 1], target=1)
                       for i in range(len(x))])
    scale = float(batched.abs().max())
    assert scale > 0
    # relative to the map's scale: gradients of this model are ~1e-3
    assert float((batched - alone).abs().max()) <= 1e-5 * max(scale, 1.0)


def test_gradcam_3d_matches_plain_autograd(model, x) -> None:
    layer = model.features[3]
    saved: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inp: object, out: torch.Tensor) -> None:
        out.retain_grad()
        saved["act"] = out

    handle = layer.register_forward_hook(keep)
    try:
        model(x.clone())[:, 1].sum().backward()
    finally:
        handle.remove()
    act = saved["act"]
    assert act.grad is not None
    weights = act.grad.mean(dim=(2, 3, 4), keepdim=True)  # one weight per channel
    expected = (weights * act).sum(dim=1).detach()  # no ReLU: the metrics' sign option
    ours = get_explainer("gradcam", model, layer=layer).attribute(x, target=1)
    assert tuple(ours.shape) == (3, *LAYER_GRID)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_smoothgrad_noise_does_not_depend_on_the_batch_mates(model, x) -> None:
    # The noise scale is each image's own range: a batch mate with a 10 x larger range
    # (a scaled copy) must not change the first image's map, as a batch-wide scale did.
    e = make("smoothgrad", model, n_samples=4)
    a = e.attribute(x[:1], target=1)
    b = e.attribute(torch.cat([x[:1], 10 * x[:1]]), target=1)[:1]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_occlusion_default_window_on_a_thin_volume_is_a_slab() -> None:
    # f(x) = sum(w * x): occluding a patch with 0 drops the logit by the patch's sum of
    # w * x. Default window 16 on a depth of 8 is clipped to the whole depth, and on a
    # 16 x 16 plane it is the whole plane: one patch, so every voxel gets the total.
    w = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(2))

    class Linear(nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return (inp * w).sum(dim=(1, 2, 3, 4))[:, None]

    x = torch.rand(2, 1, *SHAPE, generator=torch.Generator().manual_seed(3))
    out = get_explainer("occlusion", Linear()).attribute(x)
    total = (x * w).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(out, total[:, None, None, None].expand(2, *SHAPE))
    assert occlusion_geometry(SHAPE, 16, 8) == ((8, 16, 16), (8, 8, 8))
    assert occlusion_geometry((5, 64, 64), 16, 8) == ((5, 16, 16), (5, 8, 8))


def test_occlusion_patches_in_3d_are_patch_sums() -> None:
    w = torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(4))

    class Linear(nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return (inp * w).sum(dim=(1, 2, 3, 4))[:, None]

    x = torch.rand(2, 1, *SHAPE, generator=torch.Generator().manual_seed(5))
    out = get_explainer("occlusion", Linear(), window=4, stride=4).attribute(x)
    patch = F.avg_pool3d(x * w, 4) * 4**3
    expected = patch
    for dim in (2, 3, 4):
        expected = expected.repeat_interleave(4, dim=dim)
    torch.testing.assert_close(out, expected[:, 0], rtol=1e-5, atol=1e-5)


def test_occlusion_on_a_thin_volume_and_bad_options_are_named(model, x) -> None:
    out = get_explainer("occlusion", model).attribute(x, target=1)
    assert tuple(out.shape) == (3, *SHAPE) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"`stride` \(8\) must not exceed `window` \(4\)"):
        get_explainer("occlusion", model, window=4)
    with pytest.raises(ValueError, match="`window` must be a positive integer"):
        get_explainer("occlusion", model, window=0)


def test_a_non_spatial_cam_layer_is_named(model, x) -> None:
    with pytest.raises(RuntimeError, match="is the target layer a spatial one"):
        get_explainer("gradcam", model, layer=model.head).attribute(x, target=1)


def _blobs(n: int, seed: int) -> np.ndarray:
    """Binary (n, D, H, W) masks: a random box per volume."""
    rng = np.random.default_rng(seed)
    g = np.zeros((n, *SHAPE), np.float32)
    for i in range(n):
        z, y, x0 = rng.integers(0, 4), rng.integers(0, 8), rng.integers(0, 8)
        g[i, z : z + 4, y : y + 7, x0 : x0 + 6] = 1
    return g


@pytest.mark.parametrize("source", ["gradcam", "odd grid"])
def test_compute_upsamples_3d_maps_like_torch_trilinear(source, model, x) -> None:
    if source == "gradcam":  # the real case: a CAM at the layer grid, (3, 4, 8, 8)
        maps = get_explainer("gradcam", model, layer=model.features[3]).attribute(x, target=1)
    else:  # a grid that does not divide the reference grid
        maps = torch.rand(3, 3, 5, 7, generator=torch.Generator().manual_seed(6)) - 0.3
    up = F.interpolate(maps[:, None], size=SHAPE, mode="trilinear", align_corners=False)[:, 0]
    reference = _blobs(3, seed=7)
    # A box around the upsampled peak of image 0, so the pointing game scores a hit
    # there (and 0 elsewhere): it checks where the resized map peaks, not only its mass.
    z, y, x0 = np.unravel_index(int(up[0].argmax()), SHAPE)
    reference[0, max(z - 1, 0) : z + 2, max(y - 1, 0) : y + 2, max(x0 - 1, 0) : x0 + 2] = 1
    names = ["iou@top15", "mass_accuracy", "pointing_game"]
    coarse = compute(maps.numpy(), reference, names)
    fine = compute(up.numpy(), reference, names)
    for name in names:
        assert np.isfinite(coarse[name]).all(), name
        np.testing.assert_allclose(coarse[name], fine[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert coarse["pointing_game"][0] == 1.0
