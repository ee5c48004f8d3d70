"""Deletion and insertion curves against a brute-force loop on an additive model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.faithfulness import (
    area,
    baseline_images,
    deletion_insertion,
    output_fn,
    perturbation_curves,
    pixel_order,
)

SIDE, N, STEPS = 8, 5, 8


@pytest.fixture(scope="module")
def linear() -> tuple[nn.Module, torch.Tensor, np.ndarray, float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 1)).eval()
    x = torch.rand(N, 1, SIDE, SIDE)
    w = model[1].weight.detach().numpy().reshape(SIDE, SIDE)
    return model, x, w, float(model[1].bias.detach())


def test_curves_equal_a_brute_force_loop(linear) -> None:
    model, x, w, b = linear
    base = baseline_images(x, "mean")
    s = (x.numpy()[:, 0] * w)
    order = pixel_order(s, seed=1)
    np.testing.assert_array_equal(order, np.argsort(-s.reshape(N, -1), axis=1, kind="stable"))
    f = output_fn(model, output="logit")
    for mode in ("deletion", "insertion"):
        got = perturbation_curves(f, x, order, base, mode=mode, steps=STEPS)
        xs, bs = x.numpy().reshape(N, -1), base.numpy().reshape(N, -1)
        for i in range(N):
            for k in range(STEPS + 1):
                first = set(order[i, : round(k / STEPS * SIDE * SIDE)].tolist())
                img = [(bs if (j in first) == (mode == "deletion") else xs)[i, j]
                       for j in range(SIDE * SIDE)]
                want = b + float(np.dot(w.ravel(), img))
                assert got[i, k] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("steps_per_pass", [1, 2, 4, 100])
def test_steps_share_forward_passes_without_changing_the_curves(
    linear, monkeypatch, steps_per_pass
) -> None:
    _, x, w, _ = linear
    base = baseline_images(x, "mean")
    order = pixel_order(x.numpy()[:, 0] * w, seed=1)
    w64 = w.ravel().astype(np.float64)

    def f(batch: torch.Tensor) -> np.ndarray:  # row by row: no batch-size rounding
        return np.array([float(np.dot(w64, row)) for row in batch.numpy().reshape(
            batch.shape[0], -1).astype(np.float64)])

    want = {m: perturbation_curves(f, x, order, base, mode=m, steps=STEPS)
            for m in ("deletion", "insertion")}
    sizes: list[int] = []

    def counting(batch: torch.Tensor) -> np.ndarray:
        sizes.append(batch.shape[0])
        return f(batch)

    cap = steps_per_pass * x[:1].numel() * N  # room for that many steps of N images
    monkeypatch.setattr("benchmark.faithfulness.eval_elements", lambda device: cap)
    for mode in ("deletion", "insertion"):
        sizes.clear()
        got = perturbation_curves(counting, x, order, base, mode=mode, steps=STEPS)
        np.testing.assert_array_equal(got, want[mode])
        per_pass = min(steps_per_pass, STEPS + 1)
        assert sizes == [N * min(per_pass, STEPS + 1 - i) for i in range(0, STEPS + 1, per_pass)]


def test_area_is_the_trapezoid_over_the_fraction() -> None:
    curves = np.random.default_rng(0).random((3, 9))
    np.testing.assert_allclose(area(curves), np.trapezoid(curves, np.linspace(0, 1, 9), axis=1))


def test_the_true_contributions_beat_random_and_their_negation_loses(linear) -> None:
    model, x, w, _ = linear
    base = baseline_images(x, "mean")
    contribution = ((x - base).numpy()[:, 0] * w)  # exact, for an additive model
    good = deletion_insertion(model, x, contribution, baseline="mean", output="logit",
                              steps=STEPS, sign="signed")
    # Deleting in decreasing contribution is the lowest curve there is (greedy optimum).
    assert (good["faithful_deletion"] > 0).all() and (good["faithful_insertion"] > 0).all()
    bad = deletion_insertion(model, x, -contribution, baseline="mean", output="logit",
                             steps=STEPS, sign="signed")
    assert (bad["faithful_deletion"] < 0).all() and (bad["faithful_insertion"] < 0).all()
    again = deletion_insertion(model, x, contribution, baseline="mean", output="logit",
                               steps=STEPS, sign="signed")
    assert again.equals(good)  # deterministic


def test_coarse_maps_are_upsampled_and_3d_works() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Flatten(),
                          nn.Linear(2 * 4 * 8 * 8, 1)).eval()
    x = torch.rand(2, 1, 4, 8, 8)
    res = deletion_insertion(model, x, np.random.default_rng(0).random((2, 2, 4, 4)),
                             steps=4, blur_sigma=1.0)
    assert res.shape == (2, 6) and np.isfinite(res.to_numpy()).all()
    with pytest.raises(ValueError, match="baseline must be one of blur, mean"):
        baseline_images(x, "zero")
