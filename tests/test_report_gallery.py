"""The gallery: which cases it shows, for which methods, and that it escapes user strings.

The expected cases are computed by brute force from ``run.scores`` (plain Python loops,
no pandas grouping) and compared with what the HTML of the gallery section says it shows
(``data-*`` attributes of its figures).
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import report_fixtures
from report_fixtures import METHODS, MODELS, PER_CASE, make_run

from benchmark.data.dataset import Dataset
from benchmark.metrics import compute
from benchmark.report import resolve_context
from benchmark.report.gallery import N_DISAGREE, attention_region, gallery_section, normalise
from benchmark.store import SCORES, Run, load_maps, save_maps, write_table

BASELINES = {"random", "center_prior"}
EXPLAINERS = [m for m in METHODS if m not in BASELINES]
GALLERY_METHOD = "gradcam"
SPLIT, METRIC, REFERENCE = "test", "irrelevant_fraction@top15", "consensus"
# `$...$` would be parsed as mathtext by matplotlib (and `\frac` without arguments raises).
EVIL_CASE = '<script>alert("case $\\frac$")</script>'
EVIL_IMAGE = "<img src=x onerror=alert(1)> $\\frac$ "


class _Gallery(HTMLParser):
    """The method blocks, figures and case spans of the gallery HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[dict[str, str]] = []  # <details> attributes, in order
        self.figures: list[dict[str, Any]] = []  # attributes + "method" + "cases"
        self.scripts = 0
        self._method: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        elif tag == "details":
            self.blocks.append(a)
            self._method = a["data-method"]
        elif tag == "figure":
            self.figures.append({**a, "block": self._method, "cases": []})
        elif tag == "span" and "gallery-case" in a.get("class", ""):
            self.figures[-1]["cases"].append((a["data-rank"], a["data-case"], a["data-image"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self._method = None


def _parse(text: str) -> _Gallery:
    parser = _Gallery()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Dataset, _Gallery]:
    # 12 cases per split: 6 positive ones, so best, median and worst are 3 of 6 and the
    # median position ((n - 1) // 2 = 2) differs from n // 2.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_fixtures, "N_CASES", 12)
        run, dataset = make_run(tmp_path_factory.mktemp("run"))
    text = gallery_section(run, dataset, resolve_context(run))
    return run, dataset, _parse(text)


def _positive_values(
    run: Run, dataset: Dataset, model: str, method: str
) -> list[tuple[str, str, float]]:
    """``(case_id, image_id, value)`` of positive images with a finite value, in table order."""
    positive = {r["image_id"]: r["case_id"] for r in dataset.index.to_dict("records")
                if r["label"] == 1}
    out = []
    for r in run.scores.to_dict("records"):
        if (r["model"], r["split"], r["method"], r["metric"], r["reference"]) != (
                model, SPLIT, method, METRIC, REFERENCE):
            continue
        if r["image_id"] in positive and np.isfinite(r["value"]):
            out.append((positive[r["image_id"]], r["image_id"], float(r["value"])))
    return out


def _case_means(values: list[tuple[str, str, float]]) -> dict[str, float]:
    per_case: dict[str, list[float]] = defaultdict(list)
    for case, _, v in values:
        per_case[case].append(v)
    return {case: sum(vs) / len(vs) for case, vs in per_case.items()}


def _brute_best_median_worst(
    run: Run, dataset: Dataset, model: str, method: str
) -> list[tuple[str, str, str]]:
    values = _positive_values(run, dataset, model, method)
    means = _case_means(values)
    # irrelevant_fraction: lower is better, so the best case has the smallest mean
    order = sorted(means, key=lambda c: (means[c], c))
    picks = [("best", order[0]), ("median", order[(len(order) - 1) // 2]),
             ("worst", order[-1])]
    out = []
    for rank, case in picks:
        images = [(abs(v - means[case]), i) for c, i, v in values if c == case]
        closest = min(range(len(images)), key=lambda k: images[k][0])  # first on ties
        out.append((rank, case, images[closest][1]))
    return out


def test_best_median_worst_match_brute_force_for_every_model_and_method(
    gallery: tuple[Run, Dataset, _Gallery],
) -> None:
    run, dataset, parsed = gallery
    shown = {(f["data-model"], f["data-method"]): f["cases"] for f in parsed.figures
             if "data-method" in f}
    assert set(shown) == {(model, method) for model in MODELS for method in EXPLAINERS}
    for (model, method), cases in shown.items():
        assert cases == _brute_best_median_worst(run, dataset, model, method), (model, method)


def test_every_explainer_has_a_block_and_only_the_gallery_method_is_open(
    gallery: tuple[Run, Dataset, _Gallery],
) -> None:
    blocks = gallery[2].blocks
    assert [b["data-method"] for b in blocks] == [GALLERY_METHOD] + [
        m for m in EXPLAINERS if m != GALLERY_METHOD]
    assert ["open" in b for b in blocks] == [True] + [False] * (len(blocks) - 1)
    for block in blocks:  # every block holds one figure per model
        figures = [f for f in gallery[2].figures if f["block"] == block["data-method"]]
        assert [f["data-model"] for f in figures] == MODELS


def test_disagreement_cases_match_brute_force(gallery: tuple[Run, Dataset, _Gallery]) -> None:
    run, dataset, parsed = gallery
    values = {m: _positive_values(run, dataset, m, GALLERY_METHOD) for m in MODELS}
    means = {m: _case_means(v) for m, v in values.items()}
    by_image = {m: {i: v for _, i, v in vals} for m, vals in values.items()}
    common_cases = set.intersection(*(set(means[m]) for m in MODELS))
    spread = {c: max(means[m][c] for m in MODELS) - min(means[m][c] for m in MODELS)
              for c in common_cases}
    expected = []
    for case in sorted(spread, key=lambda c: (-spread[c], c))[:N_DISAGREE]:
        images = sorted(i for c, i, _ in values[MODELS[0]] if c == case
                        and all(i in by_image[m] for m in MODELS))
        ranges = [max(by_image[m][i] for m in MODELS) - min(by_image[m][i] for m in MODELS)
                  for i in images]
        expected.append((case, images[int(np.argmax(ranges))], spread[case]))

    shown = [f for f in parsed.figures if "gallery-disagreement" in f["class"]]
    assert [(f["data-case"], f["data-image"]) for f in shown] == [e[:2] for e in expected]
    assert [float(f["data-spread"]) for f in shown] == pytest.approx([e[2] for e in expected])
    assert all(f["block"] is None for f in shown)  # outside the collapsed method blocks


def _evil_run(root: Path) -> tuple[Run, Dataset]:
    """The fixture run with case ``test-c0`` and its images renamed to hostile ids."""
    run, dataset = make_run(root)
    case_map = {"test-c0": EVIL_CASE}
    image_map = {f"test-c0-i{k}": f"{EVIL_IMAGE}{k}" for k in range(PER_CASE)}
    scores = run.scores.assign(case_id=run.scores["case_id"].replace(case_map),
                               image_id=run.scores["image_id"].replace(image_map))
    write_table(scores, root / SCORES)
    for key in run.map_index.values():
        loaded = load_maps(root, key)
        assert loaded is not None
        ids, maps = loaded
        save_maps(root, key, np.array([image_map.get(str(i), str(i)) for i in ids]), maps)
    index = dataset.index.assign(case_id=dataset.index["case_id"].replace(case_map),
                                 image_id=dataset.index["image_id"].replace(image_map))
    evil = Dataset(name=dataset.name, index=pd.DataFrame(index),
                   image_array=dataset.image_array, masks=dataset.masks,
                   annotators=dataset.annotators)
    return Run.open(root), evil


def test_hostile_case_and_image_ids_are_escaped(tmp_path: Path) -> None:
    run, dataset = _evil_run(tmp_path)
    ctx = replace(resolve_context(run), methods=[GALLERY_METHOD])  # fewer figures: faster
    text = gallery_section(run, dataset, ctx)
    parsed = _parse(text)
    # test-c0 is one of only three positive test cases: every figure shows it
    by_method = [f for f in parsed.figures if "data-method" in f]
    assert len(by_method) == len(MODELS)
    assert all(EVIL_CASE in {c for _, c, _ in f["cases"]} for f in by_method)
    assert all(i.startswith(EVIL_IMAGE) for f in by_method for _, c, i in f["cases"]
               if c == EVIL_CASE)
    assert "<script" not in text and "<img src=x" not in text
    assert parsed.scripts == 0
    assert html.escape(EVIL_CASE) in text  # shown, as text


def test_attention_region_is_the_metric_kernels_top_k_region() -> None:
    # Maps with ties (constant, coarsely rounded) and without; the kernels break ties
    # with a seeded jitter, so the region drawn must do the same to show what was scored.
    rng = np.random.default_rng(0)
    maps = np.stack([np.zeros((64, 64)), np.round(rng.random((64, 64)), 1),
                     rng.random((64, 64))]).astype(np.float32)
    seed = 7
    regions = np.stack([attention_region(normalise(m, "positive"), METRIC, seed)[0]
                        for m in maps])
    iou = compute(maps, regions.astype(np.float32), ["iou@top15"], seed=seed)["iou@top15"]
    np.testing.assert_array_equal(iou, 1.0)


def test_colour_scale_footer_is_pasted_on_top_and_keeps_a_long_label_visible() -> None:
    """The footer is drawn once and copied into each figure: its pixels exactly, and a
    row label long enough to reach into the footer band is not erased around it."""
    import io

    from PIL import Image

    from benchmark.report import gallery

    rng = np.random.default_rng(0)
    side = 32
    cons = np.zeros((side, side), bool)
    cons[8:20, 8:20] = True
    sal = rng.random((side, side)).astype(np.float32)
    row = gallery._Row(rng.normal(-500, 300, (side, side)).astype(np.float32), sal,
                       rng.random((side, side)).astype(np.float32), cons, sal > 0.85,
                       "model " + "/very/long/checkpoint/path" * 6, "CT", "saliency", "0.5")
    image = np.asarray(Image.open(io.BytesIO(
        gallery.render_rows_png([row], title="t", region_label="top 15 %"))))
    footer = gallery._footer("top 15 %")
    band = image[-footer.shape[0]:]
    drawn = (footer != 255).any(axis=-1)
    np.testing.assert_array_equal(band[drawn], footer[drawn])
    left_margin = band[:, : int(gallery.LEFT * gallery.DPI) - 4]
    assert not drawn[:, : left_margin.shape[1]].any()  # the footer leaves it white
    assert (left_margin != 255).any(), "the long label was erased by the footer"
