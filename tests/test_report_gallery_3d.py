"""The gallery on 3D volumes: which slice it shows, what is drawn on it, the PNGs.

A small synthetic run directory of CT volumes (N, D, H, W) is written here (the approach
of ``report_fixtures.make_run``, with volumes and scores from the real metric kernels).
The expected slice is the argmax over z of the consensus area, computed here from the
annotator masks without the dataset's helpers.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import report_fixtures
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from benchmark.data.dataset import Dataset
from benchmark.metrics import compute
from benchmark.report import resolve_context
from benchmark.report.gallery import (
    _Gallery,
    attention_region,
    axial_slice,
    gallery_section,
    normalise,
    resize_bilinear,
)
from benchmark.store import (
    CONFIG,
    MAPS,
    SCORES,
    SCORES_COLUMNS,
    SUMMARY,
    SUMMARY_COLUMNS,
    Run,
    save_maps,
    write_json,
    write_table,
    write_yaml,
)

D, H, W = 6, 16, 24  # non-square slices, so a wrong axis or aspect shows
SPACING = (2.5, 0.7, 0.5)  # mm; a pixel is 1.4 times as high as it is wide
N_CASES, PER_CASE, N_ANN = 6, 2, 3
MODELS = ["clean", "shortcut"]
METHODS = ["gradcam", "saliency", "random"]
CAM_GRID = (3, 8, 12)  # Grad-CAM maps are coarser than the volume
METRIC, REFERENCE, SPLIT = "irrelevant_fraction@top15", "consensus", "test"


def make_volumes(seed: int = 0) -> Dataset:
    """Air volumes (-1000 HU: black in the CT window) with annotated boxes.

    Each positive volume has a finding on four consecutive slices, its size changing
    from slice to slice (the largest slice differs between volumes); three annotators
    mark it with shifted edges, so the consensus is smaller than the union.
    """
    rng = np.random.default_rng(seed)
    rows, images, masks = [], [], []
    for c in range(N_CASES):
        label = int(c % 2 == 0)
        for k in range(PER_CASE):
            img = np.full((D, H, W), -1000.0, np.float32)
            ann = np.zeros((N_ANN, D, H, W), bool)
            if label:
                z0 = int(rng.integers(0, D - 3))
                # distinct sizes: one largest slice per volume; sizes vary between volumes
                sides = rng.permutation(4) + int(rng.integers(2, 6))
                for t, side in enumerate(sides):
                    y0 = int(rng.integers(1, H - side - 1))
                    x0 = int(rng.integers(1, W - side - 2))
                    for a in range(N_ANN):  # annotators disagree by a voxel at the edges
                        ann[a, z0 + t, y0 + a % 2: y0 + side + 1, x0: x0 + side + a] = True
            rows.append({"case_id": f"c{c}", "image_id": f"c{c}-v{k}", "split": SPLIT,
                         "label": label})
            images.append(img)
            masks.append(ann)
    return Dataset(name="ct-volumes", index=pd.DataFrame(rows), image_array=np.stack(images),
                   masks=np.stack(masks), annotators=[f"a{i}" for i in range(N_ANN)],
                   spacing=SPACING)


def _maps(dataset: Dataset, model: str, method: str, rng: np.random.Generator) -> np.ndarray:
    """Positive maps near the findings (clean) or near the couch (shortcut)."""
    graded = dataset.masks.mean(axis=1, dtype=np.float32)
    couch = np.zeros((D, H, W), np.float32)
    couch[:, -3:, :] = 1.0
    near = graded if model == "clean" else 0.3 * graded + couch
    maps = 0.2 + near + 0.3 * rng.random(graded.shape, dtype=np.float32)
    if method == "random":
        return rng.random(graded.shape, dtype=np.float32)
    if method == "gradcam":
        t = F.interpolate(torch.from_numpy(maps)[:, None], size=CAM_GRID, mode="area")
        return t[:, 0].numpy()
    return maps.astype(np.float32)


def make_volume_run(root: Path) -> tuple[Run, Dataset]:
    """A run directory with config, scores (from ``compute``), summary and maps."""
    dataset = make_volumes()
    rng = np.random.default_rng(1)
    ids = dataset.index["image_id"].to_numpy()
    consensus = (dataset.masks.sum(axis=1) * 2 >= N_ANN).astype(np.float32)
    scores, keys = [], {}
    for model in MODELS:
        for method in METHODS:
            maps = _maps(dataset, model, method, rng)
            key = f"{model}-{method}-key"
            save_maps(root, key, ids, maps)
            keys[f"{model}/{method}"] = key
            values = compute(maps, consensus, [METRIC])[METRIC]
            for rec, v in zip(dataset.index.to_dict("records"), values, strict=True):
                scores.append([model, SPLIT, method, rec["case_id"], rec["image_id"],
                               REFERENCE, METRIC, float(v)])
    scores_df = pd.DataFrame(scores, columns=SCORES_COLUMNS)
    write_table(scores_df, root / SCORES)
    summary = []
    for (model, method), group in scores_df.groupby(["model", "method"], sort=False):
        est = float(group.groupby("case_id")["value"].mean().mean())
        summary.append([model, SPLIT, method, REFERENCE, METRIC, est, est - 0.05, est + 0.05,
                        "bca", N_CASES // 2, int(group["value"].notna().sum()),
                        int(group["value"].isna().sum())])
    write_table(pd.DataFrame(summary, columns=SUMMARY_COLUMNS), root / SUMMARY)
    write_json(keys, root / MAPS / "index.json")
    write_yaml({"dataset": dataset.name, "models": MODELS, "methods": METHODS,
                "metrics": [METRIC], "references": [REFERENCE], "splits": [SPLIT],
                "seed": 0, "sign": "positive", "headline_metric": METRIC,
                "headline_reference": REFERENCE}, root / CONFIG)
    return Run.open(root), dataset


class _Figures(HTMLParser):
    """Figures of the gallery: attributes, slice attributes of case spans, captions, PNGs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: list[dict[str, Any]] = []
        self._caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "figure":
            self.figures.append({**a, "spans": [], "caption": "", "png": b""})
        elif tag == "img" and self.figures:
            self.figures[-1]["png"] = base64.b64decode(a["src"].split(",", 1)[1])
        elif tag == "span" and "gallery-case" in a.get("class", ""):
            self.figures[-1]["spans"].append(a)
        elif tag == "figcaption":
            self._caption = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption":
            self._caption = False

    def handle_data(self, data: str) -> None:
        if self._caption:
            self.figures[-1]["caption"] += data


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Dataset, str]:
    run, dataset = make_volume_run(tmp_path_factory.mktemp("run3d"))
    return run, dataset, gallery_section(run, dataset, resolve_context(run))


@pytest.fixture(scope="module")
def figures(volume_run: tuple[Run, Dataset, str]) -> list[dict[str, Any]]:
    parser = _Figures()
    parser.feed(volume_run[2])
    return parser.figures


def _expected_slice(dataset: Dataset, image_id: str) -> int:
    """Argmax over z of the consensus area (>= half of the annotators), first on ties."""
    i = int(np.flatnonzero(dataset.index["image_id"].to_numpy() == image_id)[0])
    votes = dataset.masks[i].astype(int).sum(axis=0)  # (D, H, W)
    area = [(int((votes[z] * 2 >= N_ANN).sum()), -z) for z in range(D)]
    return -max(area)[1]


def test_every_figure_shows_the_slice_with_the_largest_consensus_area(
    volume_run: tuple[Run, Dataset, str], figures: list[dict[str, Any]],
) -> None:
    _, dataset, text = volume_run
    by_method = [f for f in figures if "data-method" in f]
    disagreement = [f for f in figures if "gallery-disagreement" in f["class"]]
    # explainers only (random is a null baseline), one figure per model
    assert {(f["data-model"], f["data-method"]) for f in by_method} == {
        (m, e) for m in MODELS for e in ("gradcam", "saliency")}
    assert disagreement
    shown = [(s["data-image"], s) for f in by_method for s in f["spans"]]
    shown += [(f["data-image"], f) for f in disagreement]
    assert len(shown) > len(by_method)
    slices = set()
    for image_id, attrs in shown:
        k = _expected_slice(dataset, image_id)
        assert (int(attrs["data-slice"]), int(attrs["data-depth"])) == (k, D), image_id
        slices.add(k)
    assert len(slices) > 1  # the choice is per image, not one fixed slice
    for f in by_method:  # the caption says which slice, per case
        for s in f["spans"]:
            assert f"slice z = {s['data-slice']} of {D}" in f["caption"]
    for f in disagreement:
        assert f"(image {f['data-image']}, slice z = {f['data-slice']} of {D})" in f["caption"]
    assert "The images are 3D volumes" in text


def _ct_panel(png: bytes) -> tuple[int, int]:
    """Height and width in pixels of the first CT panel: the leftmost large black block
    (the CT is air, -1000 HU, the black end of the fixed window)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    dark = (rgb < 40).all(axis=2)
    labels, n = ndimage.label(dark)
    boxes = [b for b in ndimage.find_objects(labels) if b is not None
             and (b[0].stop - b[0].start) * (b[1].stop - b[1].start) > 2000]
    assert boxes, "no panel found"
    first = min(boxes, key=lambda b: (b[1].start, b[0].start))
    return first[0].stop - first[0].start, first[1].stop - first[1].start


def test_pngs_decode_and_keep_the_slice_proportions(figures: list[dict[str, Any]]) -> None:
    assert figures
    expected = H * SPACING[1] / (W * SPACING[2])  # panel height / width, in mm
    for f in figures:
        image = Image.open(io.BytesIO(f["png"]))
        image.load()
        assert image.format == "PNG" and image.mode == "RGB"
        h_px, w_px = _ct_panel(f["png"])
        assert abs(h_px / w_px - expected) < 0.03, (h_px, w_px)
        # every row of the figure is one panel high: rows are stacked (H, W) slices
        n_rows = len(f["spans"]) or len(MODELS)
        assert image.height > n_rows * h_px


def test_a_row_is_the_volume_map_cut_at_the_slice(volume_run: tuple[Run, Dataset, str]) -> None:
    run, dataset, _ = volume_run
    ctx = resolve_context(run)
    gallery = _Gallery(run, dataset, ctx)
    ids, maps = run.maps("clean", "gradcam")
    image_id = str(ids[0])
    row, label = gallery.row("clean", "gradcam", image_id, label="x", metric_title="m")
    k = _expected_slice(dataset, image_id)
    assert (row.z, row.depth, row.slice_text) == (k, D, f"slice z = {k} of {D}")
    assert f"z = {k} of {D}" in row.image_title
    # resized (trilinear, half-pixel centres, like the metrics), normalised over the
    # whole volume, then sliced
    up = F.interpolate(torch.from_numpy(maps[:1])[:, None], size=(D, H, W),
                       mode="trilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(resize_bilinear(maps[0], (D, H, W)), up, atol=1e-6)
    volume = normalise(up, "positive")
    np.testing.assert_allclose(row.saliency, volume[k], atol=1e-6)
    # the attention region is the metric's top-15 % of the volume, cut at the slice
    region, region_label = attention_region(volume, METRIC, seed=0)
    assert label == region_label == "top 15 %"
    np.testing.assert_array_equal(row.attention, region[k])
    i = int(np.flatnonzero(dataset.index["image_id"].to_numpy() == image_id)[0])
    votes = dataset.masks[i].sum(axis=0)
    np.testing.assert_array_equal(row.consensus, votes[k] * 2 >= N_ANN)
    np.testing.assert_array_equal(row.ct, dataset.image_array[i, k])
    assert row.ct.shape == row.saliency.shape == row.graded.shape == (H, W)


def test_3d_attention_region_is_the_metric_kernels_top_k_region() -> None:
    # Maps with ties (constant, coarsely rounded) and without, as volumes.
    rng = np.random.default_rng(0)
    maps = np.stack([np.zeros((D, H, W)), np.round(rng.random((D, H, W)), 1),
                     rng.random((D, H, W))]).astype(np.float32)
    regions = np.stack([attention_region(normalise(m, "positive"), METRIC, 7)[0] for m in maps])
    iou = compute(maps, regions.astype(np.float32), ["iou@top15"], seed=7)["iou@top15"]
    np.testing.assert_array_equal(iou, 1.0)


def test_axial_slice_falls_back_when_the_consensus_is_empty() -> None:
    empty = np.zeros((D, H, W), bool)
    graded = np.zeros((D, H, W), np.float32)
    graded[4, 2:5, 2:5] = 1 / 3  # one annotator only: no consensus
    saliency = np.zeros((D, H, W), np.float32)
    saliency[1, 3, 3] = 1.0
    assert axial_slice(empty, graded, saliency) == 4
    assert axial_slice(empty, np.zeros_like(graded), saliency) == 1
    cons = empty.copy()
    cons[2, :3, :3] = cons[5, :3, :3] = True  # a tie: the first slice
    assert axial_slice(cons, graded, saliency) == 2


def test_2d_captions_have_no_slice(tmp_path: Path) -> None:
    # The 3D wording must not leak into 2D reports.
    run, dataset = report_fixtures.make_run(tmp_path, models=["clean"])
    text = gallery_section(run, dataset, replace(resolve_context(run), methods=["gradcam"]))
    assert "data-slice" not in text and not re.search(r"slice z = \d+ of", text)
    assert "3D volumes" not in text
