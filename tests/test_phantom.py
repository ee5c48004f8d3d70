"""The embedded phantom: deterministic, with the confounder, findings and annotators that
DESIGN.md describes."""

import numpy as np
import pytest

from benchmark.demo.phantom import ANNOTATORS, PhantomSpec, SplitSpec, generate

SMALL = PhantomSpec(
    splits=(("train", SplitSpec(40, 0.9)), ("test", SplitSpec(30, 0.9)),
            ("shifted", SplitSpec(30, 0.1))),
)


@pytest.fixture(scope="module")
def ds():
    return generate(SMALL)


def test_same_seed_gives_identical_arrays(ds):
    again = generate(SMALL)
    assert np.array_equal(ds.image_array, again.image_array)
    assert np.array_equal(ds.masks, again.masks)
    assert ds.sha256 == again.sha256


def test_other_seed_gives_other_images(ds):
    other = generate(PhantomSpec(seed=SMALL.seed + 1, splits=SMALL.splits))
    assert not np.array_equal(ds.image_array, other.image_array)


def test_a_subset_of_splits_is_identical_to_the_full_set(ds):
    sub = generate(SMALL, splits=["test"])
    rows = np.flatnonzero(ds.index["split"] == "test")
    assert np.array_equal(sub.image_array, ds.image_array[rows])


def test_shapes_hounsfield_range_and_cases(ds):
    n = len(ds.index)
    assert ds.image_array.shape == (n, 64, 64)
    assert ds.masks.shape == (n, len(ANNOTATORS), 64, 64)
    assert -1300 < ds.image_array.min() < -900 and 500 < ds.image_array.max() < 1000
    per_case = ds.index.groupby("case_id").size()
    assert (per_case == SMALL.slices_per_case).all()
    # labels are constant within a case
    assert (ds.index.groupby("case_id")["label"].nunique() == 1).all()


def test_confounder_follows_the_split_strength():
    big = generate(PhantomSpec(splits=(("test", SplitSpec(400, 0.9)),
                                       ("shifted", SplitSpec(400, 0.1)))))
    cases = big.index.drop_duplicates("case_id")
    for split, c in (("test", 0.9), ("shifted", 0.1)):
        sub = cases[cases.split == split]
        agree = ((sub.scanner == "B") == (sub.label == 1)).mean()
        assert abs(agree - c) < 4 * np.sqrt(c * (1 - c) / len(sub))


def test_findings_only_in_positive_images_and_cover_about_a_tenth(ds):
    pos = np.flatnonzero(ds.index["label"] == 1)
    neg = np.flatnonzero(ds.index["label"] == 0)
    assert not ds.masks[neg].any()
    frac = ds.reference(pos, "consensus").mean()
    assert 0.08 < frac < 0.18


def test_annotators_disagree_realistically(ds):
    pos = np.flatnonzero(ds.index["label"] == 1)
    m = ds.masks[pos]
    areas = m.reshape(len(pos), 4, -1).sum(-1).mean(0)
    # r3 over-segments; the others are close to each other
    assert areas[2] > 1.25 * max(areas[0], areas[1], areas[3])
    # r1 and r4 have boundary jitter: they differ from each other
    assert (m[:, 0] != m[:, 3]).mean() > 0.002
    # r2 misses a lesion in some images: pixels that r1, r3 and r4 mark and r2 does not
    missed = m[:, 0] & m[:, 2] & m[:, 3] & ~m[:, 1]
    assert missed.reshape(len(pos), -1).any(axis=1).mean() > 0.2


def test_graded_is_the_mean_and_consensus_at_least_half(ds):
    idx = np.flatnonzero(ds.index["label"] == 1)[:20]
    m = ds.masks[idx].astype(np.float32)
    assert np.allclose(ds.reference(idx, "graded"), m.mean(axis=1))
    assert np.array_equal(ds.reference(idx, "consensus"), (m.sum(axis=1) >= 2).astype(np.float32))
    assert np.array_equal(ds.reference(idx, "union"), m.max(axis=1))
    assert np.array_equal(ds.reference(idx, "intersection"), m.min(axis=1))
    assert np.array_equal(ds.reference(idx, "annotator:r3"), m[:, 2])


def test_body_mask_contains_every_finding(ds):
    assert ds.roi_array is not None
    assert not (ds.masks.any(axis=1) & ~ds.roi_array).any()


def test_unknown_reference_lists_the_valid_ones(ds):
    with pytest.raises(ValueError, match="valid references: consensus"):
        ds.reference(np.array([0]), "majority")
