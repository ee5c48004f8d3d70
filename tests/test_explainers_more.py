"""The explainers of issue 9: Grad-CAM++, HiResCAM, LayerCAM, Score-CAM, Guided Grad-CAM,
GradientSHAP, DeepLIFT and RISE.

Every one returns finite float32 maps, the same on a second call and the same for an image
alone or in a batch, on slices and volumes. Expected values come from plain torch autograd
(retained layer gradients) or from closed forms on linear models, not from Captum.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.demo.cnn import build
from benchmark.explainers import EXPLAINERS, get_explainer
from benchmark.explainers.attribution import gaussian_blur

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {
    "gradcam_plusplus": "cam", "hirescam": "cam", "layercam": "cam", "scorecam": "cam",
    "guided_gradcam": "cam", "gradient_shap": "path", "deeplift": "gradient",
    "rise": "perturbation",
}
NEW = list(FAMILIES)
ON_LAYER_GRID = {"gradcam_plusplus", "hirescam", "layercam", "scorecam"}
# Fewer samples than the defaults where a method's cost is samples x forward passes: the
# properties tested do not depend on the count.
FAST = {"rise": {"n_masks": 48, "batch_masks": 16}, "gradient_shap": {"n_samples": 4}}
SHAPES = {2: (3, 1, 16, 16), 3: (2, 1, 6, 12, 12)}
LAYER_GRIDS = {2: (4, 4), 3: (1, 3, 3)}  # features.6 after two 2x poolings


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def case(request):
    """(dims, model, inputs): the demo CNN (nn.ReLU and max-pool modules), random weights."""
    dims = request.param
    torch.manual_seed(0)  # a seed whose Grad-CAM (ReLU'd in Guided Grad-CAM) is not all 0
    model = build(width=4 if dims == 2 else 2, dims=dims, outputs=2).eval()
    x = torch.rand(*SHAPES[dims], generator=torch.Generator().manual_seed(1))
    x[1] *= 3.0  # batch mates with different intensity ranges
    return dims, model, x


def make(name, model, **options):
    return get_explainer(name, model, layer=model.features[6], **{**FAST.get(name, {}), **options})


@pytest.mark.parametrize("name", NEW)
def test_maps_have_one_finite_float32_map_per_image(name, case):
    dims, model, x = case
    out = make(name, model).attribute(x, target=1)
    grid = LAYER_GRIDS[dims] if name in ON_LAYER_GRID else x.shape[2:]
    assert tuple(out.shape) == (len(x), *grid)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not out.requires_grad


@pytest.mark.parametrize("name", NEW)
def test_a_second_call_gives_the_same_maps(name, case):
    _, model, x = case
    assert torch.equal(make(name, model).attribute(x, target=1),
                       make(name, model).attribute(x, target=1))


@pytest.mark.parametrize("name", NEW)
def test_an_image_gets_the_same_map_alone_and_in_a_batch(name, case):
    _, model, x = case
    batched = make(name, model).attribute(x, target=1)
    alone = torch.cat([make(name, model).attribute(x[i : i + 1], target=1)
                       for i in range(len(x))])
    scale = float(batched.abs().max())
    assert scale > 0
    assert float((batched - alone).abs().max()) <= 1e-5 * scale


# ---------------------------------------------------------------- CAM references


def layer_gradient(model, layer, x, target, score=lambda s: s):
    """d score(S_target) / d layer output, the layer output and S_target, by plain autograd."""
    saved = {}

    def keep(_module, _inp, out):
        out.retain_grad()
        saved["act"] = out

    handle = layer.register_forward_hook(keep)
    try:
        logits = model(x.clone())[:, target]
        score(logits).sum().backward()
    finally:
        handle.remove()
    act = saved["act"]
    return act.grad.detach(), act.detach(), logits.detach()


def close(ours, expected):
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_hirescam_is_gradient_times_activation_summed_over_channels(case):
    _, model, x = case
    grad, act, _ = layer_gradient(model, model.features[6], x, 1)
    close(make("hirescam", model).attribute(x, target=1), (grad * act).sum(dim=1))


def test_layercam_is_positive_gradient_times_activation(case):
    _, model, x = case
    grad, act, _ = layer_gradient(model, model.features[6], x, 1)
    close(make("layercam", model).attribute(x, target=1), (grad.clamp(min=0) * act).sum(dim=1))


def test_gradcam_plusplus_is_the_papers_formula_on_exp_scores(case):
    # The paper differentiates Y = exp(S): with G = dY/dA, the 2nd and 3rd derivatives of
    # a piecewise-linear network are G^2 / Y and G^3 / Y^2. Our map leaves out the
    # per-image factor exp(S) of the paper's weights (float32 overflow), so map * exp(S)
    # must equal the paper's.
    _, model, x = case
    big_g, act, logit = layer_gradient(model, model.features[6], x, 1, score=torch.exp)
    axes = tuple(range(2, act.ndim))
    y = torch.exp(logit).reshape(-1, *(1,) * (act.ndim - 1))
    d2, d3 = big_g**2 / y, big_g**3 / y**2
    denominator = 2 * d2 + act.sum(dim=axes, keepdim=True) * d3
    alpha = torch.where(denominator != 0, d2 / denominator, torch.zeros_like(d2))
    weights = (alpha * big_g.clamp(min=0)).sum(dim=axes, keepdim=True)
    expected = (weights * act).sum(dim=1)
    ours = make("gradcam_plusplus", model).attribute(x, target=1)
    close(ours * torch.exp(logit).reshape(-1, *(1,) * (ours.ndim - 1)), expected)


@pytest.mark.parametrize("name", sorted(ON_LAYER_GRID | {"guided_gradcam"}))
def test_a_non_spatial_layer_is_named(name):
    torch.manual_seed(0)
    model = build(width=2, outputs=2).eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with pytest.raises(RuntimeError, match="is the target layer a spatial one"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum's own note on the failed resize
        get_explainer(name, model, layer=model.head).attribute(x, target=1)


# ---------------------------------------------------------------- linear models


def smooth_field(shape, seed=0):
    """A smooth signed weight field (1, 1, *shape): two Gaussian bumps of opposite sign."""
    gen = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    field = torch.zeros(shape)
    for sign in (1.0, -0.6):
        centre = [float(torch.rand(1, generator=gen)) * (n - 1) for n in shape]
        r2 = sum((a - c) ** 2 for a, c in zip(axes, centre, strict=True))
        field += sign * torch.exp(-r2 / (2 * (0.2 * max(shape)) ** 2))
    return field[None, None]


class Linear(nn.Module):
    """S(x) = sum(w * x), one output."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(dim=1, keepdim=True)


class LinearConv(nn.Module):
    """A stride-2 convolution without bias (the CAM layer), then a fixed linear read-out:
    linear in the input, so every masked score has a closed form w . (x * mask)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(1, 3, 3, stride=2, padding=1, bias=False)
        self.register_buffer("readout", torch.randn(3, 8, 8, generator=torch.Generator()
                                                    .manual_seed(6)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) * self.readout).flatten(1).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("weights", ["increase", "softmax"])
def test_scorecam_on_a_linear_model_is_the_closed_form(weights):
    model = LinearConv().eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    xi = torch.zeros(1, 1, 16, 16, requires_grad=True)
    w = torch.autograd.grad(model(xi).sum(), xi)[0]  # S(x) = sum(w * x), S(0) = 0
    acts = F.conv2d(x, model.conv.weight, stride=2, padding=1).detach()  # (2, 3, 8, 8)
    up = F.interpolate(acts, size=(16, 16), mode="bilinear", align_corners=False)
    low = up.amin(dim=(2, 3), keepdim=True)
    masks = (up - low) / (up.amax(dim=(2, 3), keepdim=True) - low)
    increase = (w * x * masks).sum(dim=(2, 3))  # (2, 3): S(x * H_k) - S(0)
    coef = increase if weights == "increase" else torch.softmax(increase, dim=1)
    expected = (coef[:, :, None, None] * acts).sum(dim=1)
    ours = get_explainer("scorecam", model, layer=model.conv, weights=weights,
                         batch_channels=2).attribute(x)
    close(ours, expected)


def test_rise_on_a_linear_model_follows_the_weights():
    # E[S(x * M) M_p] = sum_q w_q x_q E[M_q M_p]: with x = 1 that is w smoothed by the
    # masks' autocorrelation (plus a constant), so the map correlates with a smooth w.
    w = smooth_field((24, 24))
    x = torch.ones(1, 1, 24, 24)
    out = get_explainer("rise", Linear(w), n_masks=1000, cell=6, score="logit",
                        batch_masks=250).attribute(x)
    r = np.corrcoef(out.flatten().numpy(), w.flatten().numpy())[0, 1]
    assert r > 0.9


def test_rise_masks_keep_p_keep_of_the_image_and_do_not_depend_on_the_batching():
    e = get_explainer("rise", Linear(torch.ones(1, 1, 6, 12, 12)), n_masks=64, cell=4, p_keep=0.3)
    masks = e.mask_source((6, 12, 12)).masks(0, 64, torch.device("cpu"))
    assert tuple(masks.shape) == (64, 6, 12, 12)
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.05
    x = torch.rand(2, 1, 6, 12, 12, generator=torch.Generator().manual_seed(8))
    other = get_explainer("rise", e.model, n_masks=64, cell=4, p_keep=0.3, batch_masks=5)
    torch.testing.assert_close(e.attribute(x), other.attribute(x))
    assert e.config() == other.config()  # the speed option is not in the cache key


@pytest.mark.parametrize("baseline", [0.0, 0.5])
def test_deeplift_on_a_linear_model_is_weight_times_input_difference(baseline):
    w = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(9))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(10))
    out = get_explainer("deeplift", Linear(w), baseline=baseline).attribute(x)
    torch.testing.assert_close(out, ((x - baseline) * w)[:, 0], rtol=1e-5, atol=1e-6)


def test_gradient_shap_on_a_linear_model_with_a_zero_baseline_is_weight_times_input():
    w = torch.randn(1, 1, 6, 12, 12, generator=torch.Generator().manual_seed(11))
    x = torch.rand(2, 1, 6, 12, 12, generator=torch.Generator().manual_seed(12))
    out = get_explainer("gradient_shap", Linear(w), baselines="zero").attribute(x)
    torch.testing.assert_close(out, (x * w)[:, 0], rtol=1e-5, atol=1e-6)


def test_gradient_shap_on_a_linear_model_is_input_minus_mean_baseline_in_expectation():
    w = smooth_field((16, 16))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(13))
    e = get_explainer("gradient_shap", Linear(w), n_samples=400, stdevs=0.1)
    out = e.attribute(x)
    mean_baseline = torch.stack([e.baseline_set(x[i : i + 1]).mean(dim=0) for i in range(2)])
    expected = ((x - mean_baseline) * w)[:, 0]
    # Monte Carlo: the share of blurred baselines (sd 0.025) and the noise (sd 0.005).
    assert float((out - expected).abs().max()) < 0.1 * float(expected.abs().max())


def test_gradient_shap_blur_baseline_is_scipys_gaussian_filter():
    x = torch.rand(1, 2, 5, 9, 11, generator=torch.Generator().manual_seed(14))
    ours = gaussian_blur(x, 1.5)[0].numpy()
    for c in range(2):
        expected = ndimage.gaussian_filter(x[0, c].numpy(), 1.5, mode="nearest", truncate=3.0)
        np.testing.assert_allclose(ours[c], expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- DeepLIFT requirements


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))


def test_deeplift_warns_about_functional_nonlinearities_and_still_runs():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(15))
    with pytest.warns(UserWarning, match="calls relu outside the nn modules"):
        out = get_explainer("deeplift", FunctionalReLU().eval()).attribute(x)
    assert tuple(out.shape) == (2, 16, 16) and torch.isfinite(out).all()


def test_deeplift_runs_silently_on_the_demo_cnn():
    torch.manual_seed(0)
    model = build(width=4).eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = get_explainer("deeplift", model).attribute(x)
    assert not [w for w in caught if "deeplift" in str(w.message).lower()
                or "hooks" in str(w.message)]
    assert torch.isfinite(out).all() and float(out.abs().max()) > 0


# ---------------------------------------------------------------- options, registry, CLI


def test_speed_options_leave_maps_and_cache_key_alone(case):
    _, model, x = case
    a = make("scorecam", model, batch_channels=1)
    b = make("scorecam", model, batch_channels=64)
    close(a.attribute(x, target=1), b.attribute(x, target=1))
    assert a.config() == b.config() and "batch_channels" not in a.config()


@pytest.mark.parametrize(("name", "options", "message"), [
    ("scorecam", {"weights": "mean"}, "`weights` must be 'softmax' or 'increase'"),
    ("scorecam", {"batch_channels": 0}, "`batch_channels` must be a positive integer"),
    ("rise", {"p_keep": 0.0}, r"`p_keep` must be in \(0, 1\]"),
    ("rise", {"n_masks": 2.5}, "`n_masks` must be a positive integer"),
    ("rise", {"score": "prob"}, "`score` must be 'probability' or 'logit'"),
    ("gradient_shap", {"baselines": "blur"}, "`baselines` must be one of zero, zero"),
    ("gradient_shap", {"stdevs": -1}, "`stdevs` must be a number >= 0"),
])
def test_bad_options_are_named(name, options, message):
    model = build(width=2)
    with pytest.raises(ValueError, match=message):
        get_explainer(name, model, layer=model.features[6], **options)


def test_registry_keeps_the_old_order_and_appends_the_new_methods():
    names = list(EXPLAINERS)
    assert names[:9] == ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
                         "gradcam", "occlusion", "random", "center_prior", "average_mask"]
    assert names[9:] == NEW
    for name in NEW:
        info = EXPLAINERS[name].info
        assert info.needs_layer == (info.family == "cam"), name


def test_bench_methods_json_lists_the_new_methods_with_their_families():
    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name, family in FAMILIES.items():
        assert rows[name]["family"] == family, name
        assert rows[name]["needs_layer"] == (family == "cam"), name
    assert rows["rise"]["options"]["n_masks"] == 500


def test_every_new_citation_is_in_both_bibliographies():
    shipped = (REPO / "benchmark" / "report" / "assets" / "references.bib").read_text()
    assert shipped == (REPO / "reports" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", shipped, flags=re.MULTILINE))
    for name in NEW:
        assert EXPLAINERS[name].info.citation in keys, name
