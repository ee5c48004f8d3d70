"""Bad input, table-driven, through the CLI: each case gives one clear line naming what is
wrong and the documented exit status (README, "Exit status"), never a traceback.

Every case starts from a small valid dataset of files on disk (``.npy`` images and masks
of two annotators, a state-dict checkpoint) and breaks one thing.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import EXIT_USER, app
from benchmark.demo.cnn import build
from benchmark.store import sha256_file

MANIFEST = """\
schema_version: 1
datasets:
  - name: d
    kind: files
    root: data
    index: index.csv
    annotations:
      r1: masks/r1/{image_id}.npy
      r2: masks/r2/{image_id}.npy
    classes: [other, drowning]
    models:
      - name: cnn
        path: cnn.pt
        factory: benchmark.demo.cnn:build
        factory_kwargs: {width: 4}
"""
RUN = ["run", "--manifest", "m.yaml", "--method", "saliency", "--metric", "iou@top15",
       "--reference", "consensus", "--n-boot", "100", "--no-report", "--out", "out"]


def _build(base: Path) -> None:
    rng = np.random.default_rng(0)
    data = base / "data"
    for sub in ("img", "masks/r1", "masks/r2"):
        (data / sub).mkdir(parents=True)
    rows = []
    for c in range(6):
        label = c % 2
        for k in range(2):
            iid = f"i{c}{k}"
            img = rng.normal(-600, 50, (16, 16)).astype(np.float32)
            m = np.zeros((16, 16), np.uint8)
            if label:
                m[5:9, 6:10] = 1
                img[m == 1] = 30
            np.save(data / "img" / f"{iid}.npy", img)
            np.save(data / "masks" / "r1" / f"{iid}.npy", m)
            np.save(data / "masks" / "r2" / f"{iid}.npy", m)
            rows.append({"case_id": f"c{c}", "image_id": iid, "image": f"img/{iid}.npy",
                         "label": "drowning" if label else "other",
                         "split": "train" if c < 2 else "test"})
    pd.DataFrame(rows).to_csv(data / "index.csv", index=False)
    (base / "m.yaml").write_text(MANIFEST)
    torch.manual_seed(0)
    torch.save(build(width=4).state_dict(), base / "cnn.pt")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("template")
    _build(base)
    return base


def _index(base: Path, edit: Callable[[pd.DataFrame], None]) -> None:
    idx = pd.read_csv(base / "data" / "index.csv")
    edit(idx)
    idx.to_csv(base / "data" / "index.csv", index=False)


def _manifest(base: Path, old: str, new: str) -> None:
    text = (base / "m.yaml").read_text()
    assert old in text
    (base / "m.yaml").write_text(text.replace(old, new))


def _set(column: str, row: int, value: object) -> Callable[[Path], None]:
    def edit(base: Path) -> None:
        _index(base, lambda idx: idx.__setitem__(column, idx[column].astype(object))
               or idx.loc.__setitem__((row, column), value))
    return edit


def _save(rel: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda base: np.save(base / "data" / rel, array)


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda base: (base / "data" / rel).write_bytes(data)


def _symlink_out(base: Path) -> None:
    (base / "data" / "link").symlink_to(base)
    _set("image", 4, "link/m.yaml")(base)


def _pickled_model(base: Path) -> None:
    torch.save(build(width=4), base / "full.pt")


def _not_a_checkpoint(base: Path) -> None:
    (base / "junk.pt").write_bytes(os.urandom(256))


def _evil(base: Path) -> None:
    with open(base / "evil.pt", "wb") as fh:
        pickle.dump({"x": 1}, fh)


def _index_sha(base: Path) -> None:
    _manifest(base, "    classes:", '    sha256: {index.csv: "' + "0" * 64 + '"}\n    classes:')


def _model_sha(base: Path) -> None:
    _manifest(base, "        factory_kwargs: {width: 4}",
              '        factory_kwargs: {width: 4}\n        sha256: "' + "1" * 64 + '"')


def _one_class(base: Path) -> None:
    _index(base, lambda idx: idx.__setitem__("label", "drowning"))
    for iid in pd.read_csv(base / "data" / "index.csv")["image_id"]:
        m = np.zeros((16, 16), np.uint8)
        m[2:5, 2:5] = 1
        for a in ("r1", "r2"):
            np.save(base / "data" / "masks" / a / f"{iid}.npy", m)


def _blocked_out(base: Path) -> None:
    (base / "blocker").write_text("a file, not a folder")


def _config(text: str) -> Callable[[Path], None]:
    return lambda base: (base / "c.yaml").write_text(text)


def _copy_weights(base: Path) -> None:
    shutil.copy(base / "cnn.pt", base / "w.pt")


def _nothing(base: Path) -> None:
    return None


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], None]
    argv: list[str]
    fragment: str
    status: int = EXIT_USER


FACTORY = ["--factory", "benchmark.demo.cnn:build", "--factory-kwarg", "width=4"]
CASES = [
    Case("malformed YAML", lambda b: (b / "m.yaml").write_text("datasets: [\n  - name: x\n"),
         RUN, "malformed YAML"),
    Case("misspelled manifest field", lambda b: _manifest(b, "annotations:", "anotations:"),
         RUN, "(did you mean 'annotations'?)"),
    Case("wrong type in the manifest", lambda b: _manifest(b, "classes: [other, drowning]",
                                                            "classes: drowning"),
         RUN, "datasets.0.classes: Input should be a valid list"),
    Case("wrong type in the config", _config("n_boot: many\n"), ["run", "--config", "c.yaml"],
         "config field n_boot: Input should be a valid integer"),
    Case("misspelled config field", _config("nboot: 200\n"), ["run", "--config", "c.yaml"],
         "(did you mean 'n_boot'?)"),
    Case("missing manifest", _nothing, ["run", "--manifest", "nope.yaml"],
         "nope.yaml: cannot read manifest"),
    Case("missing index table", lambda b: (b / "data" / "index.csv").unlink(), RUN,
         "index table not found"),
    Case("missing image file", lambda b: (b / "data" / "img" / "i20.npy").unlink(), RUN,
         "i20.npy: no such file or directory"),
    Case("path escaping the root with ..", _set("image", 4, "../cnn.pt"), RUN,
         "image 'i20': path '../cnn.pt' leaves the dataset root"),
    Case("absolute path", _set("image", 4, "/etc/hostname"), RUN,
         "path '/etc/hostname' is absolute"),
    Case("symlink out of the root", _symlink_out, RUN, "leaves the dataset root"),
    Case("image and mask of different shape", _save("masks/r1/i30.npy",
                                                     np.zeros((8, 8), np.uint8)),
         RUN, "image 'i30': mask of annotator 'r1'"),
    Case("mask with values other than 0/1", _save("masks/r2/i30.npy",
                                                   np.full((16, 16), 2, np.uint8)),
         RUN, "has values other than 0/1: e.g. 2"),
    Case("image with NaN", _save("img/i21.npy", np.full((16, 16), np.nan, np.float32)),
         RUN, "image contains NaN or inf"),
    Case("image with inf", _save("img/i21.npy", np.full((16, 16), np.inf, np.float32)),
         RUN, "image contains NaN or inf"),
    Case("empty dataset", lambda b: _index(b, lambda idx: idx.drop(idx.index, inplace=True)),
         RUN, "the index table has no rows"),
    Case("unknown split", _nothing, [*RUN, "--split", "holdout"],
         "dataset 'd' has no split 'holdout'; splits: train, test"),
    Case("label that is not a class", _set("label", 3, "maybe"), RUN,
         "label 'maybe' is not a class; use 'other'/'drowning' or 0/1"),
    Case("case in two splits", _set("split", 5, "train"), RUN,
         "case 'c2' has images in more than one split"),
    Case("unknown model", _nothing, [*RUN, "--model", "resnet"],
         "unknown model 'resnet' for dataset 'd'; known: cnn"),
    Case("unknown method", _nothing, [*RUN, "--method", "gradcm"],
         "unknown method 'gradcm'; valid methods: saliency"),
    Case("unknown metric", _nothing, [*RUN, "--metric", "iuo@top15"], "iuo@top15"),
    Case("unknown reference", _nothing, [*RUN, "--reference", "majority"],
         "unknown reference 'majority'; valid references: consensus, union"),
    Case("unknown threshold", _nothing, [*RUN, "--metric", "iou@top150"], "iou@top150"),
    Case("corrupt NIfTI", lambda b: (_write("img/x.nii.gz", b"not a nifti")(b),
                                     _set("image", 4, "img/x.nii.gz")(b)),
         RUN, "x.nii.gz: not a readable NIfTI file"),
    Case("corrupt DICOM", lambda b: (_write("img/x.dcm", b"DICM" + bytes(300))(b),
                                     _set("image", 4, "img/x.dcm")(b)),
         RUN, "x.dcm: "),
    Case("corrupt PNG", lambda b: (_write("img/x.png", b"\x89PNG\r\n\x1a\nbroken")(b),
                                   _set("image", 4, "img/x.png")(b)),
         RUN, "x.png: not a readable image"),
    Case("checkpoint that is not a checkpoint", _not_a_checkpoint,
         [*RUN, "--model", "junk.pt", *FACTORY], "junk.pt: not loadable as weights only"),
    Case("pickled full model without --trust-checkpoint", _pickled_model,
         [*RUN, "--model", "full.pt"], "pass --trust-checkpoint"),
    Case("plain pickle without --trust-checkpoint", _evil, [*RUN, "--model", "evil.pt"],
         "evil.pt: not loadable as weights only"),
    Case("output shape that does not fit the task", lambda b: torch.save({}, b / "id.pt"),
         [*RUN, "--model", "id.pt", "--factory", "torch.nn:Identity"],
         "model 'id': output must be (N, classes) for input of 2 images, got (2, 1, 16, 16)"),
    Case("target unit the model lacks", _nothing, [*RUN, "--target", "3"],
         "target unit 3 does not exist; the model has 1 output(s)"),
    Case("wrong target layer", _nothing,
         [*RUN, "--method", "gradcam", "--target-layer", "features.9"],
         "no layer 'features.9'; convolutional layers: features.0, features.3, features.6"),
    Case("factory that cannot be imported", _copy_weights,
         [*RUN, "--model", "w.pt", "--factory", "nopkg.models:net"],
         "factory 'nopkg.models:net' cannot be imported"),
    Case("factory keyword argument not KEY=VALUE", _copy_weights,
         [*RUN, "--model", "w.pt", "--factory", "benchmark.demo.cnn:build",
          "--factory-kwarg", "width"], "--factory-kwarg 'width' must look like KEY=VALUE"),
    Case("checksum mismatch of a data file", _index_sha, RUN,
         "index.csv: checksum mismatch (manifest 000000000000..."),
    Case("checksum mismatch of a checkpoint", _model_sha, RUN,
         "model 'cnn': checksum mismatch"),
    Case("unwritable output directory", _blocked_out, [*RUN[:-1], "blocker/run"],
         "cannot create the run directory blocker/run"),
    Case("B out of range", _nothing, [*RUN, "--n-boot", "5"],
         "config field n_boot: Input should be greater than or equal to 100"),
    Case("level out of range", _nothing, [*RUN, "--level", "1.5"],
         "config field level: Input should be less than 1"),
    Case("resume of a folder that is not a run", _nothing, ["run", "--resume", "data"],
         "--resume data: no config.yaml there; not a run directory"),
    Case("gate without a baseline", _nothing, [*RUN, "--fail-if-worse", "iou@top15"],
         "fail_if_worse needs a baseline run directory"),
    Case("baseline that is not a run", _nothing,
         [*RUN, "--baseline", "data", "--fail-if-worse", "iou@top15"],
         "--baseline data: no scores.parquet there; not a finished run directory"),
    Case("report of a folder that is not a run", _nothing, ["report", "data"],
         "not a run directory"),
    Case("compare with a missing run", _nothing, ["compare", "nope-a", "nope-b"], "nope-a"),
    Case("validate an unknown dataset", _nothing, ["validate", "m.yaml", "--dataset", "e"],
         "unknown dataset 'e'; known: d"),
    Case("split with one class only", _one_class, RUN,
         "split 'test' has only 'drowning' images: AUROC, accuracy and specificity are "
         "undefined there", status=0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, template: Path, tmp_path: Path) -> None:
    base = tmp_path / "b"
    shutil.copytree(template, base, symlinks=True)
    case.setup(base)
    cwd = os.getcwd()
    os.chdir(base)
    try:
        result = CliRunner().invoke(app, case.argv)
    finally:
        os.chdir(cwd)
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unhandled {type(result.exception).__name__}: {text}") \
            from result.exception
    assert result.exit_code == case.status, text
    assert case.fragment in text, text
    assert "Traceback" not in text
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == (1 if case.status == EXIT_USER else 0), text


def test_the_table_covers_at_least_30_bad_inputs() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


def test_index_checksum_fixture_is_real(template: Path) -> None:
    # The checksum case must fail because of the value, not because the file is absent.
    assert len(sha256_file(template / "data" / "index.csv")) == 64
