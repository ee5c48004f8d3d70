"""The regression gate: ``compare_runs``, gates, ``bench compare`` and the report section.

Two synthetic run directories share most cases; the candidate is worse than the baseline
by exactly ``SHIFT`` in the case-mean estimand on ``irrelevant_fraction@top15`` (lower is
better: it rises) and on ``iou@top15`` (higher is better: it falls), and equal in
expectation on ``precision@top15``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_run
from typer.testing import CliRunner

from benchmark.cli import EXIT_USER, app
from benchmark.errors import BenchError
from benchmark.regression import (
    REGRESSION_COLUMNS,
    GateError,
    GateSpec,
    RegressionError,
    compare_runs,
    gate_exit,
    parse_gate,
    write_regression,
)
from benchmark.report import resolve_context
from benchmark.report.document import build_document, sections
from benchmark.store import (
    CONFIG,
    REGRESSION,
    REGRESSION_JSON,
    SCORES,
    SCORES_COLUMNS,
    Run,
    write_table,
    write_yaml,
)

WORSE_LOW, WORSE_HIGH, EQUAL = "irrelevant_fraction@top15", "iou@top15", "precision@top15"
METRICS = [WORSE_LOW, WORSE_HIGH, EQUAL]
METHODS = ["gradcam", "saliency"]
SHIFT = 0.05
N_CASES, PER_CASE, N_BOOT = 24, 3, 500
# Split -> (cases only the baseline has, cases only the candidate has).
DROPPED = {"test": (2, 3), "shifted": (0, 1)}
EVIL_MODEL = '<script>alert("model")</script>'


def _config(models: list[str]) -> dict:
    return {"models": models, "methods": METHODS, "metrics": METRICS,
            "references": ["consensus"], "splits": list(DROPPED), "n_boot": N_BOOT,
            "level": 0.95, "ci_method": "bca", "weighting": "case", "seed": 7,
            "headline_metric": WORSE_LOW, "headline_reference": "consensus"}


def _write_run(root: Path, frame: pd.DataFrame) -> Path:
    write_table(frame[SCORES_COLUMNS], root / SCORES)
    write_yaml(_config(list(dict.fromkeys(frame["model"]))), root / CONFIG)
    return root


def _scores(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline and candidate scores of model ``m``.

    Per shared case the candidate's case mean differs from the baseline's by ``SHIFT`` (in
    the worse direction) plus a case effect centred over the shared cases of the split, so
    the case-weighted difference is exactly ``SHIFT`` while its interval has a width.
    """
    rng = np.random.default_rng(seed)
    worse = {WORSE_LOW: SHIFT, WORSE_HIGH: -SHIFT, EQUAL: 0.0}
    base, cand = [], []
    for split, (only_b, only_c) in DROPPED.items():
        cases = [f"{split}-c{i}" for i in range(N_CASES + only_b + only_c)]
        b_cases, c_cases = cases[: N_CASES + only_b], cases[only_b:]
        shared = cases[only_b: N_CASES + only_b]
        for method in METHODS:
            for metric in METRICS:
                effect = rng.normal(0, 0.03, len(shared))
                effect_of = dict(zip(shared, effect - effect.mean(), strict=True))
                b_vals = {c: rng.uniform(0.2, 0.7, PER_CASE) for c in b_cases}
                c_vals = {}
                for case in c_cases:
                    v = rng.uniform(0.2, 0.7, PER_CASE)
                    if case in effect_of:
                        # Move the candidate's case mean onto the baseline's + shift + effect.
                        v += b_vals[case].mean() + worse[metric] + effect_of[case] - v.mean()
                    c_vals[case] = v
                if metric == EQUAL:
                    b_vals[shared[0]][:] = np.nan  # undefined in the baseline: not paired
                for rows, vals in ((base, b_vals), (cand, c_vals)):
                    rows += [["m", split, method, case, f"{case}-i{k}", "consensus", metric,
                              float(x)] for case, v in vals.items() for k, x in enumerate(v)]
    return (pd.DataFrame(base, columns=SCORES_COLUMNS),
            pd.DataFrame(cand, columns=SCORES_COLUMNS))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base, cand = _scores()
    root = tmp_path_factory.mktemp("runs")
    return _write_run(root / "baseline", base), _write_run(root / "candidate", cand)


@pytest.fixture(scope="module")
def result(runs: tuple[Path, Path]):
    return compare_runs(*runs)


def _cells(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return table[table["metric"] == metric]


# --- compare_runs ---------------------------------------------------------------------


def test_table_has_the_contract_columns_and_one_row_per_cell(result) -> None:
    t = result.table
    assert list(t.columns[: len(REGRESSION_COLUMNS)]) == REGRESSION_COLUMNS
    assert len(t) == len(DROPPED) * len(METHODS) * len(METRICS)
    assert not t.duplicated(["baseline_model", "method", "split", "reference", "metric"]).any()
    assert set(t["adj_method"]) == {"holm"}
    assert result.settings["pairing"] == {"m": "m"}
    assert result.settings["pairing_rule"] == "name"
    assert result.settings["n_boot"] == N_BOOT and result.settings["seed"] == 7


def test_pairs_on_shared_cases_only_and_counts_the_dropped(result) -> None:
    t = result.table
    for split, (only_b, only_c) in DROPPED.items():
        rows = t[t["split"] == split]
        assert (rows["n_cases_dropped_baseline"] == only_b).all()
        assert (rows["n_cases_dropped_candidate"] == only_c).all()
        # precision: one shared case is all-NaN in the baseline, so it leaves the pair.
        expect = np.where(rows["metric"] == EQUAL, N_CASES - 1, N_CASES)
        assert (rows["n_cases"].to_numpy() == expect).all()


def test_diff_is_the_difference_of_case_means_on_shared_cases(runs, result) -> None:
    base, cand = (pd.read_parquet(r / SCORES) for r in runs)
    keys = ["method", "split", "reference", "metric", "case_id"]
    means = (base.groupby(keys)["value"].mean().rename("b").to_frame()
             .join(cand.groupby(keys)["value"].mean().rename("c"), how="inner").dropna())
    expect = means.assign(d=means["c"] - means["b"]).groupby(keys[:-1])["d"].mean()
    got = result.table.set_index(keys[:-1])
    np.testing.assert_allclose(got["diff"], expect.reindex(got.index), atol=1e-12)
    np.testing.assert_allclose(got["diff"], got["candidate_estimate"] - got["baseline_estimate"],
                               atol=1e-12)


def test_intervals_contain_the_true_shift_in_each_direction(result) -> None:
    t = result.table
    for metric, diff in ((WORSE_LOW, SHIFT), (WORSE_HIGH, -SHIFT), (EQUAL, 0.0)):
        rows = _cells(t, metric)
        assert ((rows["ci_low"] <= diff) & (diff <= rows["ci_high"])).all(), rows
        worse = SHIFT if metric != EQUAL else 0.0
        # worse_by is positive for a worse candidate whatever the metric's direction.
        assert ((rows["worse_ci_low"] <= worse) & (worse <= rows["worse_ci_high"])).all()
    np.testing.assert_allclose(_cells(t, WORSE_LOW)["worse_by"], SHIFT, atol=1e-12)
    np.testing.assert_allclose(_cells(t, WORSE_HIGH)["worse_by"], SHIFT, atol=1e-12)
    np.testing.assert_allclose(_cells(t, WORSE_HIGH)["diff"], -SHIFT, atol=1e-12)
    assert set(_cells(t, WORSE_LOW)["direction"]) == {"lower"}
    assert set(_cells(t, WORSE_HIGH)["direction"]) == {"higher"}


def test_p_adjusted_by_holm_over_each_split(result) -> None:
    from statsmodels.stats.multitest import multipletests

    for _, rows in result.table.groupby("split"):
        ok = rows["p"].notna()
        expect = multipletests(rows.loc[ok, "p"], method="holm")[1]
        np.testing.assert_allclose(rows.loc[ok, "p_adj"], expect)


def test_gate_fails_for_the_worse_metrics_and_passes_otherwise(result) -> None:
    assert len(result.failures(WORSE_LOW)) == len(DROPPED) * len(METHODS)
    assert len(result.failures(f"{WORSE_HIGH}:0")) == len(DROPPED) * len(METHODS)
    assert result.failures(f"{WORSE_LOW}:{2 * SHIFT}").empty  # margin above the shift
    assert result.failures(EQUAL).empty
    assert gate_exit(result, [EQUAL, f"{WORSE_HIGH}:0.1"]) == 0
    assert gate_exit(result, [EQUAL, WORSE_LOW]) == 1
    assert gate_exit(result, []) == 0


def test_a_better_candidate_passes(runs) -> None:
    swapped = compare_runs(runs[1], runs[0], metrics=[WORSE_LOW, WORSE_HIGH], n_boot=200)
    assert (swapped.table["worse_by"] < 0).all()
    assert gate_exit(swapped, [WORSE_LOW, WORSE_HIGH]) == 0
    assert set(swapped.table["metric"]) == {WORSE_LOW, WORSE_HIGH}


def test_single_models_with_different_names_are_paired(tmp_path: Path) -> None:
    base, cand = _scores(seed=1)
    b = _write_run(tmp_path / "b", base)
    c = _write_run(tmp_path / "c", cand.assign(model="m-v2"))
    res = compare_runs(b, c, metrics=[WORSE_LOW], n_boot=200)
    assert res.settings["pairing"] == {"m": "m-v2"}
    assert res.settings["pairing_rule"] == "single"
    assert set(res.table["candidate_model"]) == {"m-v2"}
    explicit = compare_runs(b, c, metrics=[WORSE_LOW], n_boot=200, pairs={"m": "m-v2"})
    assert explicit.settings["pairing_rule"] == "explicit"
    with pytest.raises(RegressionError, match="not in the run"):
        compare_runs(b, c, pairs={"m": "nope"})


def test_runs_without_shared_cases_or_models_are_user_errors(tmp_path: Path) -> None:
    base, cand = _scores(seed=2)
    b = _write_run(tmp_path / "b", base)
    renamed = _write_run(tmp_path / "r", cand.assign(case_id="x" + cand["case_id"]))
    with pytest.raises(RegressionError, match="share no scored case"):
        compare_runs(b, renamed, n_boot=200)
    two = pd.concat([cand.assign(model="p"), cand.assign(model="q")])
    with pytest.raises(RegressionError, match="no model name in common"):
        compare_runs(b, _write_run(tmp_path / "two", two), n_boot=200)
    with pytest.raises(RegressionError, match="not in the baseline"):
        compare_runs(b, b, metrics=["dice@0.5"])
    with pytest.raises(BenchError, match="not a run directory"):
        compare_runs(tmp_path / "missing", b)


# --- gates ----------------------------------------------------------------------------


def test_parse_gate() -> None:
    assert parse_gate("irrelevant_fraction@top15:0.02") == GateSpec(
        "irrelevant_fraction@top15", 0.02)
    assert parse_gate("iou@0.5") == GateSpec("iou@0.5", 0.0)
    assert parse_gate("mass_accuracy:0.1", reference="graded").reference == "graded"
    for bad, fragment in (("nope@top15", "unknown metric"), ("iou", "needs a threshold"),
                          ("iou@top15:abc", "not a number"), ("iou@top15:-1", ">= 0"),
                          ("iou@top15:nan", ">= 0"), ("", "METRIC[:MARGIN]")):
        with pytest.raises(GateError, match=re.escape(fragment)) as info:
            parse_gate(bad)
        assert isinstance(info.value, BenchError)
        assert "\n" not in str(info.value)


def test_a_gate_that_matches_no_cell_is_an_error_not_a_pass(result) -> None:
    with pytest.raises(GateError, match="no compared cell"):
        result.failures("dice@0.5")
    with pytest.raises(GateError, match="reference 'graded'"):
        result.failures(GateSpec(WORSE_LOW, 0.0, "graded"))


def test_write_regression_files(result, tmp_path: Path) -> None:
    write_yaml(_config(["m"]), tmp_path / CONFIG)
    write_regression(result, tmp_path, gates=[WORSE_LOW, EQUAL])
    table = Run.open(tmp_path).regression
    pd.testing.assert_frame_equal(table, result.table)
    doc = json.loads((tmp_path / REGRESSION_JSON).read_text())
    assert doc["settings"]["pairing"] == {"m": "m"}
    verdicts = {g["gate"]: g for g in doc["gates"]}
    assert verdicts[f"{WORSE_LOW}:0"]["passed"] is False
    assert verdicts[f"{WORSE_LOW}:0"]["n_failed"] == len(DROPPED) * len(METHODS)
    assert verdicts[f"{EQUAL}:0"]["passed"] is True
    assert Run(tmp_path / "elsewhere").regression.empty


# --- bench compare --------------------------------------------------------------------


def _bench(*argv: str):
    return CliRunner().invoke(app, ["compare", *map(str, argv)])


def test_cli_exits_1_when_a_gate_fails_and_names_the_cells(runs, tmp_path: Path) -> None:
    res = _bench(*runs, "--fail-if-worse", WORSE_LOW, "--fail-if-worse", EQUAL,
                 "--out", tmp_path, "--n-boot", 200)
    assert res.exit_code == 1, res.output
    fails = [line for line in res.output.splitlines() if line.startswith("FAIL")]
    assert len(fails) == len(DROPPED) * len(METHODS)
    assert all(WORSE_LOW in line for line in fails)
    assert (tmp_path / REGRESSION).exists() and (tmp_path / REGRESSION_JSON).exists()


def test_cli_exits_0_when_every_gate_passes(runs, tmp_path: Path) -> None:
    res = _bench(*runs, "--fail-if-worse", f"{WORSE_LOW}:0.1", "--out", tmp_path,
                 "--n-boot", 200, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["gates"][0]["passed"] is True
    assert len(doc["cells"]) == len(DROPPED) * len(METHODS) * len(METRICS)
    assert len(pd.read_parquet(tmp_path / REGRESSION)) == len(doc["cells"])


@pytest.mark.parametrize(("gate", "fragment"), [
    ("nope@top15", "unknown metric"),
    ("dice@0.5", "no compared cell"),
])
def test_cli_user_errors_exit_2_with_one_line(runs, tmp_path: Path, gate: str,
                                              fragment: str) -> None:
    res = _bench(*runs, "--fail-if-worse", gate, "--out", tmp_path, "--n-boot", 200)
    assert res.exit_code == EXIT_USER, res.output
    assert fragment in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / REGRESSION).exists()


def test_cli_missing_run_dir_and_no_shared_cases_exit_2(runs, tmp_path: Path) -> None:
    res = _bench(tmp_path / "missing", runs[1])
    assert res.exit_code == EXIT_USER and "not a run directory" in res.output
    cand = pd.read_parquet(runs[1] / SCORES)
    other = _write_run(tmp_path / "other", cand.assign(case_id="x" + cand["case_id"]))
    res = _bench(runs[0], other, "--n-boot", 200)
    assert res.exit_code == EXIT_USER and "share no scored case" in res.output
    assert len(res.output.strip().splitlines()) == 1


# --- report ---------------------------------------------------------------------------


def test_report_section_renders_with_escaped_names(tmp_path: Path) -> None:
    import pypandoc

    run, _ = make_run(tmp_path / "cand", models=["clean", EVIL_MODEL])
    assert "sec-regression" not in dict(sections(run))  # no regression.parquet yet
    scores = run.scores
    worse = scores["metric"] == "irrelevant_fraction@top15"
    base = scores.assign(value=np.where(worse, scores["value"] - SHIFT, scores["value"]))
    baseline = _write_run(tmp_path / "base", base)
    res = compare_runs(baseline, run, n_boot=200, metrics=["irrelevant_fraction@top15"])
    # Three positive cases per split: the interval clears 0.01, a permutation p cannot.
    write_regression(res, run.path, gates=["irrelevant_fraction@top15:0.2",
                                           "irrelevant_fraction@top15:0.01"])
    run = Run.open(run.path)
    anchors = [a for a, _ in sections(run)]
    assert anchors[anchors.index("sec-comparisons") + 1] == "sec-regression"

    doc = build_document(run, None, resolve_context(run))
    assert "\n## Regression against a baseline run {#sec-regression}\n" in doc
    section = doc.split("{#sec-regression}", 1)[1].split("\n## ", 1)[0]
    assert doc.index("{#sec-comparisons}") < doc.index("{#sec-regression}") < doc.index(
        "{#sec-gallery}")
    assert "margin 0.200, reference consensus): **passed**" in section
    assert "margin 0.010, reference consensus): **failed** in 32 of 32 cells" in section
    assert section.count("| **fails** |") == 32
    text = pypandoc.convert_text("## R {#sec-regression}" + section, "html", format="md")
    assert "<script>alert(" not in text
    assert html.escape(EVIL_MODEL, quote=False) in text
    assert "clean" in text and "gradcam" in text
