"""Model or explainer? Region deletion against a closed form, the reading rule, and the
demo's shortcut model told apart from its clean sibling without any explainer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.checks import check_rows, diagnosed_methods, run_checks
from benchmark.config import make_config
from benchmark.faithfulness import region_deletion
from benchmark.report.diagnosis import reading
from benchmark.resolve import resolve_dataset


class Linear(nn.Module):
    """logit = sum(w * x): deleting a region changes it by sum over the region of w (x - v)."""

    def __init__(self, w: np.ndarray) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.from_numpy(w.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] * self.w).sum(dim=(1, 2))[:, None]


def test_region_deletion_matches_the_closed_form() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 7))
    images = rng.normal(size=(4, 6, 7)).astype(np.float32)
    inside = rng.random((4, 6, 7)) < 0.3
    model = Linear(w)
    to_input = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))[:, None]  # noqa: E731
    got = region_deletion(model, images, {"findings": inside, "outside": ~inside},
                          {"findings": -2.0}, to_input, output="logit")
    x = images.astype(np.float64)
    want_f = ((x + 2.0) * w * inside).sum(axis=(1, 2))
    mean = x.mean(axis=(1, 2), keepdims=True)  # "outside" has no fill: the image mean
    want_o = ((x - mean) * w * ~inside).sum(axis=(1, 2))
    f = got[got["region"] == "findings"].sort_values("row")
    o = got[got["region"] == "outside"].sort_values("row")
    np.testing.assert_allclose(f["drop"], want_f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(o["drop"], want_o, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f["before"], (x * w).sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)


def test_region_deletion_rejects_an_unknown_fill() -> None:
    model = Linear(np.ones((2, 2)))
    images = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="fill of region 'findings'"):
        region_deletion(model, images, {"findings": np.ones((1, 2, 2), bool)},
                        {"findings": "median"}, lambda a: torch.from_numpy(a)[:, None])


@pytest.mark.parametrize(("sane", "faithful", "chance", "want"), [
    (False, True, True, "explainer"),  # a failed sanity check overrides everything
    (True, False, True, "not faithful"),
    (True, True, False, "other evidence"),
    (True, True, True, "marked evidence"),
])
def test_reading_rule(sane: bool, faithful: bool, chance: bool, want: str) -> None:
    assert want in reading(sane, faithful, chance)


def test_check_sample_is_seeded_positive_and_within_the_split() -> None:
    data = resolve_dataset(None, None, ["test"])
    idx = data.dataset.index
    a = check_rows(data, "test", 20, seed=1)
    assert len(a) == 20 and np.all(np.diff(a) > 0)
    assert (idx["label"].to_numpy()[a] == 1).all() and (idx["split"].to_numpy()[a] == "test").all()
    assert np.array_equal(a, check_rows(data, "test", 20, seed=1))
    assert not np.array_equal(a, check_rows(data, "test", 20, seed=2))
    assert diagnosed_methods(["gradcam", "random", "center_prior", "saliency"]) == [
        "gradcam", "saliency"]


@pytest.fixture(scope="module")
def demo_checks() -> dict[str, pd.DataFrame]:
    data = resolve_dataset(None, None, ["test"])
    loaded = {n: data.load_model(n) for n in ("clean", "shortcut")}
    for lm in loaded.values():
        lm.layer()
    cfg = make_config(None, n_boot=1000, check_images=24, seed=0)
    return run_checks(data, loaded, ["gradcam", "random"], cfg, "test", "consensus")


def _estimate(table: pd.DataFrame, model: str, region: str) -> pd.Series:
    row = table[(table["model"] == model) & (table["region"] == region)]
    assert len(row) == 1
    return row.iloc[0]


@pytest.mark.slow
def test_shortcut_needs_the_outside_and_clean_the_findings(demo_checks) -> None:
    t = demo_checks["region_deletion_summary.parquet"]
    s_f, s_o = _estimate(t, "shortcut", "findings"), _estimate(t, "shortcut", "outside")
    c_f, c_o = _estimate(t, "clean", "findings"), _estimate(t, "clean", "outside")
    # Deleting the confounder region costs the shortcut model far more than deleting the
    # findings; the clean model shows the reverse.
    assert s_o["estimate"] > 2 * s_f["estimate"]
    assert _estimate(t, "shortcut", "outside - findings")["ci_low"] > 0
    assert c_f["estimate"] > 4 * c_o["estimate"]
    assert _estimate(t, "clean", "outside - findings")["ci_high"] < 0


@pytest.mark.slow
def test_gradcam_is_sane_and_faithful_on_both_demo_models(demo_checks) -> None:
    v = demo_checks["sanity_verdicts.parquet"]
    assert set(v["method"]) == {"gradcam"}  # the random baseline is not checked
    assert v["passed"].all()
    f = demo_checks["faithfulness_summary.parquet"]
    gain = f[f["metric"] == "faithful_deletion"]
    assert set(gain["model"]) == {"clean", "shortcut"}
    assert (gain["ci_low"] > 0).all()
    curves = demo_checks["sanity.parquet"]
    assert curves.groupby("model")["step"].max().eq(4).all()  # four layers with parameters
