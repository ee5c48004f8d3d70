"""The report: report.qmd is valid Quarto markdown, report.html is one offline file.

One synthetic run (tests/report_fixtures.py) is rendered once per module with pandoc;
each test checks one promise of DESIGN.md "Report" against it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import plotly
import plotly.offline
import pytest
import yaml
from report_fixtures import METHODS, MODELS, N_BOOT, SEED, make_run

from benchmark.metrics import topk_count
from benchmark.report import build_report, resolve_context
from benchmark.report.document import ASSETS_DIR, FOREST_DIV_ID, SECTIONS, build_document
from benchmark.report.escape import md, pipe_table
from benchmark.report.gallery import (
    N_DISAGREE,
    attention_region,
    resize_bilinear,
    select_cases,
)
from benchmark.report.narrative import BCA, CAPTUM, CITATIONS, JIIM
from benchmark.store import Run

REPO = Path(__file__).resolve().parents[1]
EVIL_MODEL = '<script>alert("model")</script>'
EVIL_DATASET = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    run, dataset = make_run(tmp_path_factory.mktemp("run"))
    return run, build_report(run, dataset, engine="pandoc")


@pytest.fixture(scope="module")
def report_html(built: tuple[Run, Path]) -> str:
    return built[1].read_text(encoding="utf-8")


class _Tags(HTMLParser):
    """Start tags with their attributes; script and style bodies are not parsed as tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _parse(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    return parser


def _plain_text(text: str) -> str:
    return " ".join(" ".join(_parse(text).text).split())


def _forest_data(text: str) -> list[dict]:
    start = text.index(f'Plotly.newPlot(                        "{FOREST_DIV_ID}"')
    start = text.index("[", start)
    data, _ = json.JSONDecoder().raw_decode(text, start)
    return data


# --- report.qmd ------------------------------------------------------------------------


def test_qmd_has_quarto_front_matter(built: tuple[Run, Path]) -> None:
    qmd = (built[0].path / "report.qmd").read_text(encoding="utf-8")
    assert qmd.startswith("---\n")
    meta = yaml.safe_load(qmd.split("---\n", 2)[1])
    assert meta["title"].startswith("Saliency benchmark")
    assert meta["format"]["html"]["embed-resources"] is True
    assert meta["format"]["html"]["toc"] is True
    assert (built[0].path / meta["bibliography"]).exists()
    assert (built[0].path / meta["format"]["html"]["css"]).exists()


def test_qmd_has_every_section_with_its_anchor(built: tuple[Run, Path]) -> None:
    qmd = (built[0].path / "report.qmd").read_text(encoding="utf-8")
    for anchor, title in SECTIONS:
        assert f"\n## {title} {{#{anchor}}}\n" in qmd


def test_qmd_needs_no_kernel_and_inlines_figures_as_raw_html(built: tuple[Run, Path]) -> None:
    qmd = (built[0].path / "report.qmd").read_text(encoding="utf-8")
    assert "```{python" not in qmd and "```{r" not in qmd
    assert qmd.count("```{=html}") >= 3  # plotly.js, forest plot, gallery


def test_element_ids_are_unique(report_html: str) -> None:
    ids = [a["id"] for _, a in _parse(report_html).tags if "id" in a]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_toc_links_every_section(report_html: str) -> None:
    hrefs = {a.get("href") for tag, a in _parse(report_html).tags if tag == "a"}
    assert {f"#{anchor}" for anchor, _ in SECTIONS} <= hrefs


# --- report.html: self-contained ---------------------------------------------------------


def test_html_loads_nothing_from_the_network(report_html: str) -> None:
    external = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
    for tag, attrs in _parse(report_html).tags:
        for name in ("src", "href", "data", "srcset", "poster"):
            value = attrs.get(name, "")
            if tag == "a" and name == "href":
                continue  # a plain hyperlink (DOI) loads nothing
            assert not external.match(value), f"<{tag} {name}={value!r}> reaches the network"
    styles = re.findall(r"<style[^>]*>(.*?)</style>", report_html, flags=re.S)
    assert not any(re.search(r"url\(\s*['\"]?(https?:)?//|@import", s) for s in styles)


def test_plotlyjs_is_inlined_exactly_once(report_html: str) -> None:
    bundle = plotly.offline.get_plotlyjs()
    assert report_html.count(bundle) == 1
    assert report_html.count("Copyright 2012-") == 1  # the bundle's licence header
    assert "cdn.plot.ly" not in " ".join(
        a.get("src", "") for tag, a in _parse(report_html).tags if tag == "script")


def test_forest_plot_has_every_model_and_method(report_html: str) -> None:
    points = set()
    for trace in _forest_data(report_html):
        if "hovertext" not in trace:
            continue  # the legend-only entry explaining the baseline marker
        for text, x in zip(trace["hovertext"], trace["x"], strict=True):
            model, method = text.split("<br>")[0].split(" \u00b7 ")[:2]
            assert x is not None
            points.add((model, method))
    assert points == {(model, method) for model in MODELS for method in METHODS}


def test_forest_plot_draws_baselines_as_open_markers(report_html: str) -> None:
    for trace in _forest_data(report_html):
        if "hovertext" not in trace:
            continue
        for text, symbol in zip(trace["hovertext"], trace["marker"]["symbol"], strict=True):
            method = text.split("<br>")[0].split(" \u00b7 ")[1]
            is_baseline = method in ("random", "center_prior")
            assert (symbol == "diamond-open") == is_baseline


def test_gallery_embeds_one_png_per_model_and_explainer_and_disagreement_case(
    report_html: str,
) -> None:
    imgs = [a for tag, a in _parse(report_html).tags if tag == "img"]
    pngs = [a["src"] for a in imgs if a.get("src", "").startswith("data:image/png;base64,")]
    explainers = [m for m in METHODS if m not in ("random", "center_prior")]
    assert len(pngs) == len(MODELS) * len(explainers) + N_DISAGREE
    head = base64.b64decode(pngs[0].split(",", 1)[1])[:8]
    assert head == b"\x89PNG\r\n\x1a\n"
    assert all(a.get("alt") for a in imgs)


def test_methods_text_states_b_seed_and_resampling_unit(report_html: str) -> None:
    text = _plain_text(report_html)
    assert f"B = {N_BOOT} bootstrap replicates" in text
    assert f"seeded with {SEED}" in text
    assert "resampling unit is the case" in text
    assert "BCa" in text and "95 %" in text


def test_citations_resolve_to_the_bibliography(report_html: str) -> None:
    text = _plain_text(report_html)
    for author in ("Selvaraju", "Sundararajan", "Smilkov", "Simonyan", "Shrikumar",
                   "Zeiler", "Efron", "Kokhlikyan", "Zeng"):
        assert author in text, f"reference by {author} missing"
    assert "???" not in text  # pandoc's mark for an unresolved citation
    assert "10.1007/s10278-024-00974-6" in report_html


def test_summary_names_the_best_and_the_misaligned_model(report_html: str) -> None:
    text = _plain_text(report_html)
    assert re.search(r"lowest irrelevant_fraction@top15 .* for model clean", text)
    assert "Model shortcut classifies well on test" in text


# --- escaping ---------------------------------------------------------------------------


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    run, dataset = make_run(tmp_path, models=["clean", EVIL_MODEL], dataset_name=EVIL_DATASET)
    text = build_report(run, dataset, engine="pandoc").read_text(encoding="utf-8")
    assert "<script>alert(" not in text
    assert "<img src=x" not in text
    assert html.escape(EVIL_MODEL) in text  # shown, as text
    tags = _parse(text).tags
    scripts = [a for tag, a in tags if tag == "script"]
    figures = [a for tag, a in tags if "plotly-graph-div" in a.get("class", "")]
    # forest plot, every-metric forest plot, distributions, critical-difference diagram
    assert len(figures) == 4
    assert len(scripts) == 1 + len(figures)  # plotly.js and one per figure, nothing injected


def test_markdown_escape_round_trips_through_pandoc() -> None:
    import pypandoc

    tricky = "a|b *c* _d_ @e $f$ <g> [h](i) `j` \\k"
    out = pypandoc.convert_text(pipe_table(["x"], [[md(tricky)]]), "plain", format="markdown")
    assert tricky in " ".join(out.split())


# --- gallery logic ----------------------------------------------------------------------


def test_select_cases_picks_best_median_worst_positive_cases() -> None:
    case_means = {"c1": 0.2, "c2": 0.5, "c3": 0.9, "c4": 0.7, "n1": 0.0}  # n1 negative
    rows, labels = [], []
    for case, mean in case_means.items():
        for k, delta in enumerate((-0.05, 0.0, 0.1)):
            rows.append(["m", "test", "gradcam", case, f"{case}-{k}", "consensus",
                         "irrelevant_fraction@top15", mean + delta - 0.05 / 3])
            labels.append([f"{case}-{k}", case, int(case != "n1")])
    scores = pd.DataFrame(rows, columns=["model", "split", "method", "case_id", "image_id",
                                         "reference", "metric", "value"])
    lab = pd.DataFrame(labels, columns=["image_id", "case_id", "label"])
    picked = select_cases(scores, lab, model="m", split="test", method="gradcam",
                          metric="irrelevant_fraction@top15", reference="consensus",
                          available=set(lab["image_id"]))
    # lower is better: best c1 (0.2), median of [c1, c2, c4, c3] at index 1 = c2, worst c3
    assert [(c.rank, c.case_id) for c in picked] == [("best", "c1"), ("median", "c2"),
                                                      ("worst", "c3")]
    assert [c.image_id for c in picked] == ["c1-1", "c2-1", "c3-1"]  # closest to the mean
    assert picked[0].value == pytest.approx(0.2)


def test_resize_bilinear_uses_half_pixel_centres() -> None:
    out = resize_bilinear(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])
    assert resize_bilinear(np.full((4, 4), 3.0), (16, 16)) == pytest.approx(3.0)


def test_attention_region_has_exactly_the_top_share() -> None:
    s = np.random.default_rng(0).random((64, 64))
    region, label = attention_region(s, "irrelevant_fraction@top15")
    assert region.sum() == topk_count(15, 64 * 64)  # the metric kernels' |A|
    assert s[region].min() >= s[~region].max()
    assert label == "top 15 %"


# --- engines, assets --------------------------------------------------------------------


def test_gallery_without_dataset_is_a_callout(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    doc = build_document(run, None, resolve_context(run))
    gallery = doc.split("{#sec-gallery}", 1)[1].split("\n## ", 1)[0]
    assert "::: {.callout-note}" in gallery and "data:image/png" not in gallery


def test_unknown_engine_is_refused(built: tuple[Run, Path]) -> None:
    with pytest.raises(ValueError, match="`engine` must be one of"):
        build_report(built[0], engine="latex")


def test_quarto_engine_without_quarto_says_what_to_do(
    built: tuple[Run, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="engine='pandoc'"):
        build_report(built[0], engine="quarto")


def test_auto_engine_runs_quarto_render_when_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "quarto"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$@" > quarto-args.txt\n'
        'while [ $# -gt 0 ]; do [ "$1" = --output ] && out="$2"; shift; done\n'
        'echo "<html>rendered by fake quarto</html>" > "$out"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    run, _ = make_run(tmp_path / "run")
    out = build_report(run, None, engine="auto")
    assert out.read_text().startswith("<html>rendered by fake quarto")
    args = (run.path / "quarto-args.txt").read_text().split()
    assert args[:4] == ["render", "report.qmd", "--to", "html"]
    assert not list(run.path.glob("*.rendering.html"))


def test_assets_are_shipped_in_the_package_and_match_reports_dir() -> None:
    for name in ("styles.css", "references.bib"):
        shipped = REPO / "benchmark" / "report" / "assets" / name
        assert shipped.read_text() == (REPO / "reports" / name).read_text(), name
    bib = (REPO / "reports" / "references.bib").read_text()
    for key in [*CITATIONS.values(), CAPTUM, BCA, JIIM]:
        assert f"{{{key}," in bib, key
    assert (REPO / "reports" / "_quarto.yml").exists()


def test_report_assets_are_written_beside_the_qmd(built: tuple[Run, Path]) -> None:
    assert (built[0].path / ASSETS_DIR / "references.bib").exists()
    assert (built[0].path / ASSETS_DIR / "styles.css").exists()
    assert plotly.__version__  # the bundle came from the installed package
