"""A user mistake gives one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from benchmark.cli import EXIT_USER, app

GOOD_MANIFEST = """\
schema_version: 1
datasets:
  - name: tiny
    kind: phantom
    generator:
      splits:
        test: {n_cases: 4, confounder: 0.9}
    models:
      - name: clean
        path: demo:clean.pt
        factory: benchmark.demo.cnn:build
        sha256: "0000000000000000000000000000000000000000000000000000000000000000"
"""


def _write(tmp_path, text, name="m.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


CASES = [
    (["run", "--method", "gradcm"], "unknown method 'gradcm'; valid methods: saliency"),
    (["run", "--metric", "iou@bogus"], "iou@bogus"),
    (["run", "--metric", "nope@top15"], "nope"),
    (["run", "--reference", "majority"], "unknown reference 'majority'; valid references"),
    (["run", "--model", "resnet"], "unknown model 'resnet'"),
    (["run", "--split", "holdout"], "has no split 'holdout'"),
    (["run", "--n-boot", "5"], "n_boot"),
    (["run", "--level", "1.5"], "level"),
    (["run", "--ci-method", "bootstrap-t"], "ci_method"),
    (["run", "--manifest", "does-not-exist.yaml"], "cannot read manifest"),
    (["report", "no-such-run-dir"], "not a run directory"),
]


@pytest.mark.parametrize(("argv", "fragment"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_exits_2_with_one_line(argv, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the built-in demo manifest; nothing written in the repo
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == EXIT_USER, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, "schema_version: 1\ndatasets: [\n  - name: x\n")
    result = CliRunner().invoke(app, ["validate", path])
    assert result.exit_code == EXIT_USER
    assert path in result.output and "malformed YAML" in result.output


def test_misspelled_manifest_field_suggests_the_right_one(tmp_path):
    path = _write(tmp_path, GOOD_MANIFEST.replace("generator:", "generater:"))
    result = CliRunner().invoke(app, ["validate", path])
    assert result.exit_code == EXIT_USER
    assert "did you mean 'generator'" in result.output


def test_wrong_type_names_the_field(tmp_path):
    path = _write(tmp_path, GOOD_MANIFEST.replace("n_cases: 4", "n_cases: four"))
    result = CliRunner().invoke(app, ["validate", path])
    assert result.exit_code == EXIT_USER
    assert "datasets.0.generator.splits.test.n_cases" in result.output


def test_checksum_mismatch_is_refused(tmp_path):
    path = _write(tmp_path, GOOD_MANIFEST)
    result = CliRunner().invoke(app, ["validate", path])
    assert result.exit_code == EXIT_USER
    assert "checksum mismatch" in result.output and "clean" in result.output


def test_misspelled_config_field_suggests_the_right_one(tmp_path):
    cfg = _write(tmp_path, "n_bot: 100\n", "run.yaml")
    result = CliRunner().invoke(app, ["run", "--config", cfg])
    assert result.exit_code == EXIT_USER
    assert "did you mean 'n_boot'" in result.output


def test_validate_accepts_the_shipped_manifest():
    result = CliRunner().invoke(app, ["validate", "data_manifest.yaml"])
    assert result.exit_code == 0, result.output
    assert "pmct-phantom" in result.output and "clean (sha256 ok)" in result.output
    assert "│ test    │    60 │    360 │" in result.output
