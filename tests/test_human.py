"""The human benchmark: each annotator against the reference of the others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.data.dataset import Dataset
from benchmark.human import POOLED, human_scores


@pytest.fixture(scope="module")
def ds():
    rng = np.random.default_rng(0)
    n, annotators = 6, ["r1", "r2", "r3"]
    masks = rng.random((n, 3, 16, 16)) < 0.3
    index = pd.DataFrame({"case_id": [f"c{i // 2}" for i in range(n)],
                          "image_id": [f"i{i}" for i in range(n)],
                          "split": "test", "label": 1})
    return Dataset("toy", index, rng.normal(size=(n, 16, 16)).astype(np.float32), masks,
                   annotators)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_each_annotator_is_scored_against_the_others_consensus(ds):
    rows = np.arange(len(ds.index))
    out = human_scores(ds, rows, ["consensus"], ["iou@0.5"], [])
    assert set(out.annotator) == {"r1", "r2", "r3", POOLED}
    for i, a in enumerate(ds.annotators):
        others = np.delete(ds.masks, i, axis=1)
        # consensus of two others: at least half, i.e. at least one of them.
        expected = [iou(ds.masks[k, i], others[k].sum(0) * 2 >= 2) for k in rows]
        got = out[(out.annotator == a)].sort_values("image_id").value.to_numpy()
        assert np.allclose(got, expected)
    pooled = out[out.annotator == POOLED].sort_values("image_id").value.to_numpy()
    per = out[out.annotator != POOLED].pivot(index="image_id", columns="annotator",
                                              values="value")
    assert np.allclose(pooled, per.mean(axis=1).to_numpy())


def test_graded_reference_is_the_mean_of_the_others(ds):
    out = human_scores(ds, np.arange(2), ["graded"], [], ["cc"])
    got = out[(out.annotator == "r2")].sort_values("image_id").value.to_numpy()
    for k in range(2):
        s = ds.masks[k, 1].astype(float).ravel()
        w = ds.masks[k][[0, 2]].mean(0).ravel()
        assert got[k] == pytest.approx(np.corrcoef(s, w)[0, 1], abs=1e-5)


def test_single_annotator_reference_skips_that_annotator_and_tuned_is_the_mask(ds):
    out = human_scores(ds, np.arange(2), ["annotator:r1"], ["iou@tuned"], [])
    assert set(out.annotator) == {"r2", "r3", POOLED}
    assert set(out.metric) == {"iou@tuned"}
    got = out[out.annotator == "r3"].sort_values("image_id").value.to_numpy()
    assert np.allclose(got, [iou(ds.masks[k, 2], ds.masks[k, 0]) for k in range(2)])


def test_one_annotator_gives_an_empty_table(ds):
    one = Dataset("one", ds.index, ds.image_array, ds.masks[:, :1], ["r1"])
    out = human_scores(one, np.arange(6), ["consensus"], ["iou@0.5"], [])
    assert out.empty and list(out.columns)[:2] == ["annotator", "split"]
