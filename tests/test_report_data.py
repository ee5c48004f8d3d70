"""The report's "Data and models" section, checked against the run's own tables.

Every expected number is counted here directly from ``predictions.parquet``, the dataset's
masks or ``provenance.json``, by plain loops, never through the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_fixtures import MODELS, SPLITS, make_run

from benchmark.report import resolve_context
from benchmark.report.data_section import data_section
from benchmark.report.document import SECTIONS, build_document
from benchmark.report.escape import md
from benchmark.store import PREDICTIONS, PROVENANCE, Run, write_json, write_table

EVIL_MODEL = "<script>x</script>"


def _table_after(text: str, heading: str) -> list[list[str]]:
    """Rows (cells stripped) of the first pipe table after ``heading``."""
    block = text.split(heading, 1)[1]
    lines = [ln for ln in block.split("\n### ", 1)[0].splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


def _section(run: Run, dataset) -> str:
    ctx = resolve_context(run)
    return data_section(ctx, run, dataset, run.classification)


@pytest.fixture(scope="module")
def run_and_dataset(tmp_path_factory: pytest.TempPathFactory):
    return make_run(tmp_path_factory.mktemp("data"))


def _copy(run: Run, tmp_path: Path) -> Run:
    """A private copy of the module's run, for a test that edits its files."""
    return Run.open(shutil.copytree(run.path, tmp_path / "run"))


def _expected_counts(predictions) -> dict[str, list[int]]:
    """split -> [cases, pos cases, neg cases, images, pos images, neg images], by loops
    over the first model's rows (a case is positive when any of its images is)."""
    first = predictions["model"].iloc[0]
    out = {}
    for split in predictions["split"].unique():
        case_label: dict[str, int] = {}
        image_label: dict[str, int] = {}
        for rec in predictions.to_dict("records"):
            if rec["model"] != first or rec["split"] != split:
                continue
            image_label[rec["image_id"]] = int(rec["label"])
            case_label[rec["case_id"]] = max(case_label.get(rec["case_id"], 0),
                                             int(rec["label"]))
        pos_cases, pos_images = sum(case_label.values()), sum(image_label.values())
        out[str(split)] = [len(case_label), pos_cases, len(case_label) - pos_cases,
                           len(image_label), pos_images, len(image_label) - pos_images]
    return out


def test_split_counts_equal_counts_from_the_predictions(run_and_dataset, tmp_path: Path) -> None:
    run, dataset = run_and_dataset
    run = _copy(run, tmp_path)
    preds = run.predictions.copy()
    # One image of a negative case turns positive: the case now counts as positive
    # although most of its images are negative.
    neg = preds[(preds["label"] == 0) & (preds["split"] == "test")]["case_id"].iloc[0]
    first_image = preds.loc[preds["case_id"] == neg, "image_id"].iloc[0]
    preds.loc[preds["image_id"] == first_image, "label"] = 1
    write_table(preds, run.path / PREDICTIONS)
    run = Run.open(run.path)

    rows = _table_after(_section(run, dataset), "{#sec-data-splits}")
    expected = _expected_counts(preds)
    assert [r[0] for r in rows] == SPLITS
    for row in rows:
        assert [int(c) for c in row[1:7]] == expected[row[0]], row[0]
    test = expected["test"]
    assert rows[0][7] == f"{100 * test[1] / test[0]:.0f} %"


def test_counts_do_not_add_up_the_models(run_and_dataset) -> None:
    run, dataset = run_and_dataset
    rows = _table_after(_section(run, dataset), "{#sec-data-splits}")
    n_images = {s: (run.predictions["split"] == s).sum() // len(MODELS) for s in SPLITS}
    assert {r[0]: int(r[4]) for r in rows} == n_images


def test_checkpoints_table_shows_every_sha256_and_target_layer(run_and_dataset,
                                                               tmp_path: Path) -> None:
    run, dataset = run_and_dataset
    run = _copy(run, tmp_path)
    prov = json.loads((run.path / PROVENANCE).read_text())
    prov["target_layers"] = {m: f"features.{i}" for i, m in enumerate(MODELS)}
    write_json(prov, run.path / PROVENANCE)
    rows = _table_after(_section(run, dataset), "{#sec-checkpoints}")
    assert [r[0] for r in rows] == MODELS
    for row in rows:
        assert row[1] == f"`{prov['checkpoints'][row[0]]}`"
        assert row[2] == f"`{prov['target_layers'][row[0]]}`"


def test_checkpoints_without_target_layers_have_no_layer_column(run_and_dataset) -> None:
    run, dataset = run_and_dataset
    text = _section(run, dataset)
    assert "Target layer" not in text
    for sha in run.provenance["checkpoints"].values():
        assert f"`{sha}`" in text


def test_annotator_table_counts_marked_images_and_pixels(run_and_dataset) -> None:
    run, dataset = run_and_dataset
    rows = _table_after(_section(run, dataset), "{#sec-annotators}")
    positive = [i for i, lab in enumerate(dataset.index["label"]) if lab == 1]
    assert [r[0] for r in rows] == dataset.annotators
    for a, row in enumerate(rows):
        marked = sum(bool(dataset.masks[i, a].any()) for i in positive)
        share = sum(float(dataset.masks[i, a].mean()) for i in positive) / len(positive)
        assert row[1] == f"{marked} of {len(positive)}"
        assert row[2] == f"{100 * share:.1f} %"


def test_without_dataset_annotators_come_from_the_human_table(run_and_dataset) -> None:
    run, _ = run_and_dataset
    part = _section(run, None).split("{#sec-annotators}", 1)[1].split("\n### ", 1)[0]
    assert "::: {.callout-note}" in part
    assert "Annotators: a1, a2, a3." in part


def test_section_has_its_anchor_and_classification_for_every_split(run_and_dataset) -> None:
    run, dataset = run_and_dataset
    assert ("sec-data", "Data and models") in SECTIONS
    assert "sec-classification" not in dict(SECTIONS)
    doc = build_document(run, dataset, resolve_context(run))
    assert "\n## Data and models {#sec-data}\n" in doc
    section = doc.split("{#sec-data}", 1)[1].split("\n## ", 1)[0]
    rows = _table_after(section, "{#sec-classification}")
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (m, s, lvl) for m in MODELS for s in SPLITS for lvl in ("image", "case")}
    shortcut = [r for r in rows if r[:3] == ["shortcut", "shifted", "image"]][0]
    assert shortcut[3].startswith("0.58 [")  # the fixture's collapsed AUROC


def test_user_strings_in_the_section_are_escaped(run_and_dataset, tmp_path: Path) -> None:
    run, dataset = run_and_dataset
    run = _copy(run, tmp_path)
    prov = json.loads((run.path / PROVENANCE).read_text())
    prov["checkpoints"][EVIL_MODEL] = "ab" * 32
    prov["data_sha256"] = "`<b>`"
    write_json(prov, run.path / PROVENANCE)
    text = _section(run, dataset)
    assert "<script>" not in text
    assert md(EVIL_MODEL) in text  # shown as text
    assert "`` `<b>` ``" in text  # a code span whose fence outlasts the backticks inside
