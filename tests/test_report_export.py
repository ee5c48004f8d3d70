"""Tables for a paper: RUN/tables/*.csv (tidy, unrounded) and *.tex (booktabs), and
``bench report --format``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import METRICS, make_run
from typer.testing import CliRunner

import benchmark.report as report
from benchmark.cli import app
from benchmark.report.export import TABLES_DIR, export_tables, tex, tex_ci
from benchmark.store import Run

ODD_MODEL = "a_b&c%"
KEYS = ["model", "split", "method", "reference", "metric"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, list[Path]]:
    run, _ = make_run(tmp_path_factory.mktemp("export"), models=["clean", ODD_MODEL])
    return run, export_tables(run)


def _copy(run: Run, tmp_path: Path) -> Run:
    """A private copy of the module's run without its exported tables."""
    path = shutil.copytree(run.path, tmp_path / "run", ignore=shutil.ignore_patterns(TABLES_DIR))
    return Run.open(path)


def test_every_table_is_written_as_csv_and_tex_under_tables(exported) -> None:
    run, paths = exported
    names = {p.stem for p in paths}
    assert {"headline", "summary", "classification", "data", "checkpoints", "comparisons",
            "human"} <= names
    # The fixture has no mixed-model or correlation table: skipped, not written empty.
    assert not {"mixed", "correlation"} & names
    assert {p.parent for p in paths} == {run.path / TABLES_DIR}
    for name in names:
        assert (run.path / TABLES_DIR / f"{name}.csv").exists()
        assert (run.path / TABLES_DIR / f"{name}.tex").exists()


def test_latex_uses_booktabs_rules(exported) -> None:
    _, paths = exported
    for path in (p for p in paths if p.suffix == ".tex"):
        text = path.read_text(encoding="utf-8")
        n = text.count(r"\begin{tabular}")
        assert n >= 1, path.name
        for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"):
            assert text.count(rule) == n, (path.name, rule)
        assert r"\hline" not in text


def test_latex_escapes_user_strings(exported) -> None:
    run, _ = exported
    text = (run.path / TABLES_DIR / "headline.tex").read_text(encoding="utf-8")
    body = text.split(r"\begin{tabular}", 1)[1]
    assert r"a\_b\&c\%" in body
    assert ODD_MODEL not in body  # no unescaped copy: & would split the row, % end it
    rows = [ln for ln in body.splitlines() if ln.startswith(r"a\_b")]
    header_cells = body.split(r"\toprule", 1)[1].split(r"\\", 1)[0].count(" & ") + 1
    assert rows and all(r.count(" & ") + 1 == header_cells for r in rows)


def test_tex_escapes_each_special_character_once() -> None:
    specials = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "\\": r"\textbackslash{}"}
    for char, expected in specials.items():
        assert tex(f"x{char}y") == f"x{expected}y", char
    assert tex("a\\_b") == r"a\textbackslash{}\_b"  # the inserted backslash is not re-escaped


def test_latex_cells_read_estimate_and_interval() -> None:
    assert tex_ci(0.5912, 0.5649, 0.6201) == "0.59 [0.56, 0.62]"
    assert tex_ci(-0.25, -0.3, 0.01) == "$-$0.25 [$-$0.30, 0.01]"
    assert tex_ci(0.5, np.nan, 0.6) == "0.50"
    assert tex_ci(np.nan, 0.1, 0.2) == "---"


def test_summary_csv_round_trips_to_the_summary_numbers(exported) -> None:
    run, _ = exported
    back = pd.read_csv(run.path / TABLES_DIR / "summary.csv", keep_default_na=False,
                       na_values=[""])
    orig = run.summary
    assert len(back) == len(orig)
    merged = orig.merge(back.astype({k: str for k in KEYS}), on=KEYS, suffixes=("", "_csv"),
                        validate="one_to_one")
    assert len(merged) == len(orig)
    for col in ("estimate", "ci_low", "ci_high"):
        np.testing.assert_array_equal(merged[f"{col}_csv"].to_numpy(float),
                                      merged[col].to_numpy(float), err_msg=col)
    assert (merged["n_cases_csv"] == merged["n_cases"]).all()


def test_headline_csv_is_the_headline_metric_and_reference(exported) -> None:
    run, _ = exported
    back = pd.read_csv(run.path / TABLES_DIR / "headline.csv")
    assert set(back["metric"]) == {METRICS[0]} and set(back["reference"]) == {"consensus"}
    s = run.summary
    assert len(back) == ((s["metric"] == METRICS[0]) & (s["reference"] == "consensus")).sum()


def test_build_report_also_exports_the_tables(exported, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run = _copy(exported[0], tmp_path)
    assert not (run.path / TABLES_DIR).exists()
    monkeypatch.setattr(report, "render", lambda qmd, **kw: qmd.with_suffix(".html"))
    report.build_report(run, None, engine="pandoc")
    assert (run.path / TABLES_DIR / "headline.tex").exists()
    assert (run.path / TABLES_DIR / "summary.csv").exists()


# --- bench report --format -----------------------------------------------------------


def test_cli_latex_tables_writes_tables_and_no_html(exported, tmp_path: Path) -> None:
    run = _copy(exported[0], tmp_path)
    result = CliRunner().invoke(app, ["report", str(run.path), "--format", "latex-tables"])
    assert result.exit_code == 0, result.output
    assert not (run.path / "report.html").exists()
    assert not (run.path / "report.qmd").exists()
    printed = result.stdout.split()
    for name in ("headline", "summary", "classification"):
        for ext in ("csv", "tex"):
            path = run.path / TABLES_DIR / f"{name}.{ext}"
            assert path.exists()
            assert str(path) in printed


def test_cli_refuses_an_unknown_format_in_one_line(exported, tmp_path: Path) -> None:
    run = _copy(exported[0], tmp_path)
    result = CliRunner().invoke(app, ["report", str(run.path), "--format", "docx"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--format" in lines[0] and "'docx'" in lines[0]
    assert not (run.path / TABLES_DIR).exists()


def test_cli_latex_tables_on_a_non_run_directory_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--format", "latex-tables"])
    assert result.exit_code == 2
    assert "not a run directory" in result.stderr


def test_own_assets_folder_styles_the_report(exported, tmp_path: Path) -> None:
    from benchmark.report import build_report
    from benchmark.report.document import ASSETS_DIR

    run = _copy(exported[0], tmp_path)
    mine = tmp_path / "my-reports"
    mine.mkdir()
    (mine / "styles.css").write_text("body { color: #123456; }\n", encoding="utf-8")
    shutil.copy(Path(__file__).parents[1] / "reports" / "references.bib", mine)
    html = build_report(run, engine="pandoc", assets=mine).read_text(encoding="utf-8")
    assert "#123456" in html
    assert (run.path / ASSETS_DIR / "styles.css").read_text() == "body { color: #123456; }\n"


def test_assets_folder_without_the_files_is_a_one_line_error(exported, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from benchmark.cli import app

    run = _copy(exported[0], tmp_path)
    result = CliRunner().invoke(app, ["report", str(run.path), "--engine", "pandoc",
                                      "--assets", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "styles.css" in result.output and "Traceback" not in result.output
