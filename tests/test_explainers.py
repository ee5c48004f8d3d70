"""Explainers: one call shape for all, Captum underneath, deterministic baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerGradCam, Saliency

from benchmark.demo.cnn import build
from benchmark.explainers import EXPLAINERS, get_explainer, list_methods

#: Methods whose maps are on the target layer's grid (the metrics upsample them).
LAYER_GRID_METHODS = {"gradcam", "gradcam_plusplus", "hirescam", "layercam", "scorecam"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build(width=4).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))


PRIOR = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)


def make(name, model, **options):
    """Every method on the test model, with the dataset prior where it needs one."""
    if EXPLAINERS[name].info.needs_prior:
        options.setdefault("prior", PRIOR)
    return get_explainer(name, model, layer=model.features[6], **options)


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_every_method_returns_one_map_per_image(name, model, x):
    e = make(name, model)
    out = e.attribute(x, target=0)
    expected = (3, 8, 8) if name in LAYER_GRID_METHODS else (3, 32, 32)
    assert tuple(out.shape) == expected
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_every_method_is_deterministic(name, model, x):
    a = make(name, model).attribute(x, target=0)
    b = make(name, model).attribute(x, target=0)
    assert torch.equal(a, b)


def test_saliency_is_the_signed_gradient(model, x):
    xi = x.clone().requires_grad_(True)
    model(xi)[:, 0].sum().backward()
    ours = get_explainer("saliency", model).attribute(x)
    assert torch.allclose(ours, xi.grad[:, 0], atol=1e-6)
    assert (ours < 0).any()  # the sign is kept: Captum's abs is off


def test_input_x_gradient_is_input_times_gradient(model, x):
    grad = Saliency(model).attribute(x.clone().requires_grad_(True), target=0, abs=False)
    ours = get_explainer("input_x_gradient", model).attribute(x)
    assert torch.allclose(ours, (x * grad)[:, 0], atol=1e-6)


def test_integrated_gradients_matches_captum_and_completeness(model, x):
    ours = get_explainer("integrated_gradients", model, n_steps=64).attribute(x)
    ref = CaptumIG(model).attribute(x, baselines=0.0, target=0, n_steps=64)[:, 0]
    assert torch.allclose(ours, ref, atol=1e-6)
    # completeness: the attributions sum to f(x) - f(baseline), up to the Riemann error
    with torch.no_grad():
        delta = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    assert torch.allclose(ours.sum(dim=(1, 2)), delta, rtol=0.05, atol=1e-3)


def test_gradcam_matches_captum_without_relu(model, x):
    ours = get_explainer("gradcam", model, layer=model.features[6]).attribute(x)
    ref = LayerGradCam(model, model.features[6]).attribute(x, target=0)[:, 0]
    assert torch.allclose(ours, ref, atol=1e-6)


def test_occlusion_of_a_linear_model_is_the_patch_sum():
    # For f(x) = sum(w * x), occluding a patch with 0 drops the logit by the patch's w*x;
    # with window = stride every pixel is in one patch: attribution = patch sum of w*x.
    w = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))

    class Linear(torch.nn.Module):
        def forward(self, inp):
            return (inp * w).sum(dim=(1, 2, 3))[:, None]

    x = torch.rand(2, 1, 16, 16)
    out = get_explainer("occlusion", Linear(), window=4, stride=4).attribute(x)
    patch = torch.nn.functional.avg_pool2d(x * w, 4) * 16
    expected = patch.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)[:, 0]
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["occlusion", "scorecam", "rise"])
def test_the_pass_size_changes_speed_not_maps(name, model, x, monkeypatch):
    """CPU passes are capped at a few input elements (cache-resident activations); one
    perturbed copy per pass and many copies per pass give the same maps up to float32
    rounding (the convolution's kernels depend on the batch size)."""
    from benchmark.explainers import perturbation

    assert perturbation.eval_elements(torch.device("cpu")) == 2**18
    assert perturbation.eval_elements(torch.device("meta")) == 2**24
    options = {"n_masks": 40, "batch_masks": 40} if name == "rise" else {}
    small = {"cpu": x.numel(), "other": x.numel()}  # one copy (one channel) per pass
    monkeypatch.setattr(perturbation, "MAX_EVAL_ELEMENTS", small)
    one = make(name, model, **options).attribute(x)
    monkeypatch.setattr(perturbation, "MAX_EVAL_ELEMENTS", {"cpu": 2**24, "other": 2**24})
    many = make(name, model, **options).attribute(x)
    torch.testing.assert_close(one, many, rtol=0, atol=1e-5 * float(many.abs().max()))


def test_center_prior_is_a_centred_gaussian(model):
    x = torch.zeros(1, 1, 33, 33)
    out = get_explainer("center_prior", model, sigma=0.25).attribute(x)[0].numpy()
    assert np.unravel_index(out.argmax(), out.shape) == (16, 16)
    r2 = ((np.arange(33) - 16) / 33) ** 2
    expected = np.exp(-(r2[:, None] + r2[None, :]) / (2 * 0.25**2))
    assert np.allclose(out, expected, atol=1e-6)


def test_random_map_depends_on_seed(model, x):
    a = get_explainer("random", model, seed=0).attribute(x)
    b = get_explainer("random", model, seed=1).attribute(x)
    assert not torch.equal(a, b) and float(a.min()) >= 0 and float(a.max()) < 1


def test_unknown_method_and_option_are_named(model):
    with pytest.raises(ValueError, match="unknown method 'gradcampp'; valid methods: saliency"):
        get_explainer("gradcampp", model)
    with pytest.raises(ValueError, match="unknown option"):
        get_explainer("occlusion", model, windw=3)


def test_listing_has_every_method_and_flags_baselines():
    table = list_methods()
    assert list(table.name) == list(EXPLAINERS)
    assert set(table[table.baseline].name) == {"random", "center_prior", "average_mask"}


def test_average_mask_is_the_prior_for_every_image_and_keys_the_cache_by_it(model, x):
    out = make("average_mask", model).attribute(x)
    assert torch.equal(out, torch.from_numpy(PRIOR).expand(3, 32, 32))
    other = make("average_mask", model, prior=PRIOR[::-1].copy())
    assert other.config()["prior_sha256"] != make("average_mask", model).config()["prior_sha256"]
    with pytest.raises(ValueError, match="needs `prior`"):
        get_explainer("average_mask", model)
    with pytest.raises(ValueError, match=r"prior has shape \(32, 32\), images have \(8, 8\)"):
        make("average_mask", model).attribute(torch.zeros(1, 1, 8, 8))


def test_every_explainer_takes_its_info_from_the_torch_free_catalogue():
    from benchmark.methods import METHODS

    assert list(EXPLAINERS) == list(METHODS)
    for name, cls in EXPLAINERS.items():
        assert cls.info is METHODS[name] and cls.info.name == name


def test_describing_a_run_imports_no_torch():
    # `bench report` resolves the dataset and builds the report without loading a model:
    # torch and Captum (about 3 s of imports) must stay out of that path.
    import subprocess
    import sys

    code = ("import sys, benchmark.cli, benchmark.report, benchmark.resolve, benchmark.methods; "
            "print(sorted(m for m in ('torch', 'captum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
