"""The Python API: benchmark.run / load_run on a small configuration, and training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import benchmark
from benchmark.config import ConfigError, RunConfig
from benchmark.demo.train import train_model
from benchmark.stats import bootstrap_ci


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return benchmark.run(
        models=["clean"], methods=["gradcam", "random"], splits=["test"], n_boot=500,
        metrics=["irrelevant_fraction@top15", "iou@otsu", "weighted_mass"], out=str(out),
        report=False,
    )


def test_run_returns_the_run_directory(small_run):
    again = benchmark.load_run(small_run.path)
    pd.testing.assert_frame_equal(again.summary, small_run.summary)
    assert set(small_run.summary.metric) == {"irrelevant_fraction@top15", "iou@otsu",
                                             "weighted_mass"}
    # weighted_mass is scored against the graded reference only
    wm = small_run.summary[small_run.summary.metric == "weighted_mass"]
    assert set(wm.reference) == {"graded"}
    assert not (small_run.path / "report.html").exists()


def test_summary_matches_bootstrap_ci_on_the_same_cell(small_run):
    sc = small_run.scores
    cell = sc[(sc.method == "gradcam") & (sc.metric == "iou@otsu")]
    res = bootstrap_ci(cell.value.to_numpy(), cell.case_id.to_numpy(), n_boot=500)
    row = small_run.summary[(small_run.summary.method == "gradcam")
                            & (small_run.summary.metric == "iou@otsu")].iloc[0]
    assert row.estimate == pytest.approx(res.estimate, rel=1e-12)
    assert row.n_cases == res.n_cases and row.n_images == res.n_images


def test_random_baseline_scores_near_chance(small_run):
    s = small_run.summary
    rnd = s[(s.method == "random") & (s.metric == "irrelevant_fraction@top15")].iloc[0]
    # a random top-15% region hits the findings at their area share (about 12% here)
    assert 0.84 < rnd.estimate < 0.92


def test_config_object_and_yaml_file_give_the_same_plan(tmp_path):
    from benchmark.pipeline import plan

    path = tmp_path / "run.yaml"
    path.write_text("n_boot: 300\nmethods: [gradcam]\n")
    a = plan(path).config
    b = plan(RunConfig(n_boot=300, methods=["gradcam"])).config
    assert a == b


def test_invalid_config_raises_a_config_error():
    with pytest.raises(ConfigError, match="n_boot"):
        benchmark.run(n_boot=3)


def test_training_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    images = rng.normal(-500, 300, (32, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 2, 32)
    a = train_model(images, labels, epochs=2, seed=3, width=4)
    b = train_model(images, labels, epochs=2, seed=3, width=4)
    c = train_model(images, labels, epochs=2, seed=4, width=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned") / "run"
    return benchmark.run(
        models=["clean"], methods=["gradcam"], splits=["test"], n_boot=200,
        metrics=["iou@tuned", "precision@tuned"], references=["consensus"], out=str(out),
    )


def test_tuned_threshold_is_chosen_on_val_and_frozen(tuned_run):
    from benchmark.metrics import compute, tune_threshold
    from benchmark.resolve import resolve_dataset

    th = tuned_run.thresholds
    assert len(th) == 1 and th.split.iloc[0] == "val" and th.metric.iloc[0] == "iou"
    tau = float(th.threshold.iloc[0])
    # the val images were explained only to tune: no val row in the scores
    assert set(tuned_run.scores.split) == {"test"}
    ids, maps = tuned_run.maps("clean", "gradcam")
    data = resolve_dataset(None, None, ["test", "val"])
    pos = data.dataset.positions(ids)
    split = data.dataset.index.split.to_numpy()[pos]
    ref = data.dataset.reference(pos, "consensus")
    val = split == "val"
    expected = tune_threshold(maps[val], ref[val], metric="iou")
    assert tau == pytest.approx(expected.threshold)
    test_iou = compute(maps[~val], ref[~val], [f"iou@{tau!r}"])[f"iou@{tau!r}"]
    sc = tuned_run.scores
    got = sc[sc.metric == "iou@tuned"].set_index("image_id").loc[ids[~val], "value"]
    assert np.allclose(got.to_numpy(), test_iou, equal_nan=True)


def test_tuned_threshold_is_shown_in_the_report(tuned_run):
    html = (tuned_run.path / "report.html").read_text()
    assert "Tuned thresholds" in html
    tau = float(tuned_run.thresholds.threshold.iloc[0])
    assert f"{tau:.2f}" in html


def test_comparisons_are_written_and_paired(small_run):
    from benchmark.store import COMPARISONS_COLUMNS

    comp = small_run.comparisons
    assert list(comp.columns[: len(COMPARISONS_COLUMNS)]) == COMPARISONS_COLUMNS
    # one model: only the methods family (gradcam vs random) exists
    assert set(comp.family) == {"methods"}
    # single annotators are scored too (headline metric only): pick the consensus
    row = comp[(comp.metric == "irrelevant_fraction@top15")
               & (comp.reference == "consensus")].iloc[0]
    s = small_run.summary
    est = s[(s.metric == "irrelevant_fraction@top15")
            & (s.reference == "consensus")].set_index("method")["estimate"]
    assert row["diff"] == pytest.approx(est[row.a] - est[row.b], rel=1e-9)
    assert row.ci_low <= row["diff"] <= row.ci_high and 0 < row.p <= 1
    assert row.adj_method == "holm"


def test_roi_option_restricts_the_metrics_to_the_body(tmp_path):
    from benchmark.metrics import compute
    from benchmark.resolve import resolve_dataset

    run = benchmark.run(models=["clean"], methods=["random"], splits=["test"], n_boot=200,
                        metrics=["irrelevant_fraction@top15"], references=["consensus"],
                        roi=True, out=str(tmp_path / "roi"), report=False)
    ids, maps = run.maps("clean", "random")
    ds = resolve_dataset(None, None, ["test"]).dataset
    pos = ds.positions(ids)
    want = compute(maps, ds.reference(pos, "consensus"), ["irrelevant_fraction@top15"],
                   roi=ds.roi(pos))["irrelevant_fraction@top15"]
    sc = run.scores[run.scores.reference == "consensus"]
    got = sc.set_index("image_id").loc[ids, "value"].to_numpy()
    assert np.allclose(got, want)
    assert run.config["roi"] is True


def test_omnibus_ranks_are_written(small_run):
    om = small_run.omnibus
    cell = om[(om.metric == "irrelevant_fraction@top15") & (om.split == "test")
              & (om.reference == "consensus")]
    assert set(cell.method) == {"gradcam", "random"}
    # two methods: mean ranks sum to k + 1 = 3, and no Friedman test
    assert cell.mean_rank.sum() == pytest.approx(3.0) and cell.statistic.isna().all()
    # irrelevant_fraction is lower-is-better: gradcam (lower) gets rank 1 more often
    assert cell.set_index("method").mean_rank["gradcam"] < 1.5
