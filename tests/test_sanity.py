"""Cascading randomisation: a method that ignores the model fails, a gradient method passes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.explainers import EXPLAINERS
from benchmark.explainers.base import Explainer, MethodInfo
from benchmark.resolve import resolve_dataset
from benchmark.sanity import (
    cascading_randomisation,
    method_maps,
    parameter_layers,
    randomise,
    similarity,
)


class EdgeDetector(Explainer):
    """Sobel gradient magnitude of the input: a 'saliency map' that never asks the model."""

    info = MethodInfo("edges", "baseline", "none", "Sobel edges of the image")
    defaults: ClassVar[dict[str, object]] = {}

    def _attribute(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        k = torch.stack([kx, kx.T])[:, None]
        g = F.conv2d(inputs.sum(dim=1, keepdim=True), k, padding=1)
        return g.pow(2).sum(dim=1).sqrt()


@pytest.fixture(scope="module")
def demo() -> tuple[torch.nn.Module, torch.Tensor, np.ndarray]:
    data = resolve_dataset(None, None, ["test"])
    ds = data.dataset
    rows = np.flatnonzero((ds.index["label"] == 1).to_numpy())[:36]
    model = data.load_model("clean").module
    return model, data.to_input(ds.images(rows)), ds.index["case_id"].to_numpy()[rows]


def test_layers_are_found_and_randomised_from_the_output(demo) -> None:
    model, x, _ = demo
    layers = parameter_layers(model)
    assert layers == ["features.0", "features.3", "features.6", "head"]
    r = randomise(model, ["head"], seed=1)
    assert not torch.equal(r.head.weight, model.head.weight)
    assert torch.equal(r.features[6].weight, model.features[6].weight)  # not yet
    assert torch.equal(randomise(model, ["head"], seed=1).head.weight, r.head.weight)


def test_identical_maps_are_fully_similar() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((3, 16, 16)).astype(np.float32)
    sim = similarity(maps, maps)
    np.testing.assert_allclose(sim["spearman_abs"], 1.0, atol=1e-6)
    np.testing.assert_allclose(sim["ssim"], 1.0, atol=1e-4)


def test_edge_detector_fails_and_gradients_pass(demo, monkeypatch) -> None:
    monkeypatch.setitem(EXPLAINERS, "edges", EdgeDetector)
    model, x, cases = demo
    res = cascading_randomisation(model, ["saliency", "edges"], x, cases, n_boot=500, seed=3)
    v = res.verdicts.set_index(["method", "metric"])
    assert not v.loc[("edges", "spearman_abs"), "passed"]
    assert not v.loc[("edges", "ssim"), "passed"]
    assert v.loc[("saliency", "spearman_abs"), "passed"]
    assert v.loc[("saliency", "ssim"), "passed"]
    edges = res.curves[res.curves.method == "edges"]
    assert (edges["estimate"] > 0.999).all()  # the edges never change
    sal = res.curves[(res.curves.method == "saliency") & (res.curves.metric == "spearman_abs")]
    assert sal.sort_values("step")["estimate"].iloc[-1] < sal["estimate"].max()
    # The trained model's maps come back for reuse (the faithfulness check), unchanged
    # by the randomised copies.
    assert sorted(res.originals) == ["edges", "saliency"]
    np.testing.assert_array_equal(res.originals["saliency"], method_maps(model, "saliency", x))


def test_ssim_is_left_out_on_grids_smaller_than_its_window() -> None:
    rng = np.random.default_rng(1)
    maps = rng.random((3, 2, 4, 4)).astype(np.float32)  # a coarse CAM of a small volume
    sim = similarity(maps, maps[::-1].copy())
    assert set(sim) == {"spearman_abs"}
    assert set(similarity(maps[:, 0].repeat(2, 1).repeat(2, 2)[:, :8, :8],
                          maps[:, 1].repeat(2, 1).repeat(2, 2)[:, :8, :8])) == {
        "ssim", "spearman_abs"}
