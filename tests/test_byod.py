"""Bring your own data: a dataset of files on disk, checkpoints by path, through the CLI.

The test writes a small 3D dataset (NIfTI volumes, masks of two annotators), a 2D dataset
of DICOM slices with PNG masks, a TorchScript and a state-dict checkpoint, then runs
``bench validate``, ``bench run`` (2D and 3D, with ``--resume``) and checks the numbers
against what the files say (spacing, labels, graded maps).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_readers import write_dicom
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.data.files import DataError, input_transform, load_files_dataset
from benchmark.demo.cnn import build
from benchmark.manifest import FilesDataset, Preprocessing, load_manifest
from benchmark.store import Run, sha256_file

runner = CliRunner()
SPACING_3D = (2.5, 0.7, 0.7)  # (z, y, x) mm
N_CASES_3D, N_CASES_2D = 10, 10


def _finding(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, bool)
    centre = [int(rng.integers(2, n - 3)) for n in shape]
    m[tuple(slice(c - 1, c + 2) for c in centre)] = True
    return m


def write_3d(root: Path, seed: int = 0) -> None:
    """NIfTI volumes (8, 16, 16) in (z, y, x), two per case; findings bright; r2 shifted."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(N_CASES_3D):
        split = "train" if c < 2 else "test"
        label = int(c % 2 == 1)
        for k in range(2):
            iid = f"v{c}_{k}"
            vol = rng.normal(-700, 40, (8, 16, 16)).astype(np.float32)
            m = _finding(rng, (8, 16, 16)) if label else np.zeros((8, 16, 16), bool)
            vol[m] = 40.0
            # nibabel stores (x, y, z); the reader gives back (z, y, x) with RAS+ canonical.
            aff = np.diag([SPACING_3D[2], SPACING_3D[1], SPACING_3D[0], 1.0])
            for sub, arr in (("img", vol), ("masks/r1", m), ("masks/r2", np.roll(m, 1, axis=2))):
                (root / sub).mkdir(parents=True, exist_ok=True)
                if sub != "img" and not label:
                    continue  # negatives without mask files: empty masks
                data = arr.transpose(2, 1, 0).astype(np.float32 if sub == "img" else np.uint8)
                nib.save(nib.Nifti1Image(data, aff), root / sub / f"{iid}.nii.gz")
            rows.append({"case_id": f"case{c}", "image_id": iid, "image": f"img/{iid}.nii.gz",
                         "label": "drowning" if label else "other", "split": split})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)


def write_2d(root: Path, seed: int = 1) -> None:
    """DICOM slices (24, 24) with PNG masks (0/255) of two annotators and graded maps."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(N_CASES_2D):
        split = "val" if c < 2 else "test"
        label = c % 2
        for k in range(2):
            iid = f"s{c}_{k}"
            img = rng.normal(-700, 40, (24, 24))
            m = _finding(rng, (24, 24)) if label else np.zeros((24, 24), bool)
            img[m] = 30
            (root / "dcm").mkdir(parents=True, exist_ok=True)
            # stored = HU + 1024, so the reader must apply the rescale intercept
            write_dicom(root / "dcm" / f"{iid}.dcm", (img + 1024).astype(np.int16),
                        spacing=(0.8, 0.8), intercept=-1024.0)
            for a, mask in (("r1", m), ("r2", np.roll(m, 1, axis=0))):
                (root / "masks" / a).mkdir(parents=True, exist_ok=True)
                png = Image.fromarray((mask * 255).astype(np.uint8))
                png.save(root / "masks" / a / f"{iid}.png")
            (root / "graded").mkdir(exist_ok=True)
            np.save(root / "graded" / f"{iid}.npy", (m * 0.75).astype(np.float32))
            rows.append({"case_id": f"p{c}", "image_id": iid, "image": f"dcm/{iid}.dcm",
                         "label": label, "split": split})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)


MANIFEST = """\
schema_version: 1
datasets:
  - name: vol3d
    kind: files
    root: vol3d
    index: index.csv
    annotations:
      r1: masks/r1/{{image_id}}.nii.gz
      r2: masks/r2/{{image_id}}.nii.gz
    classes: [other, drowning]
    positive_class: drowning
    preprocessing: {{window_hu: [-1000, 200]}}
    sha256: {{index.csv: "{sha}"}}
  - name: slices2d
    kind: files
    root: slices2d
    index: index.csv
    annotations:
      r1: masks/r1/{{image_id}}.png
      r2: masks/r2/{{image_id}}.png
    graded: graded/{{image_id}}.npy
    preprocessing: {{window_hu: [-1000, 200], normalise: zscore}}
    models:
      - name: cnn2d
        path: cnn2d.pt
        factory: benchmark.demo.cnn:build
        factory_kwargs: {{width: 4}}
"""


@pytest.fixture(scope="module")
def byod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("byod")
    write_3d(base / "vol3d")
    write_2d(base / "slices2d")
    torch.manual_seed(0)
    torch.jit.script(build(width=4, dims=3).eval()).save(str(base / "net3d.ts"))
    torch.save(build(width=4, dims=3).state_dict(), base / "net3d_sd.pt")
    torch.save(build(width=4).state_dict(), base / "cnn2d.pt")
    (base / "manifest.yaml").write_text(
        MANIFEST.format(sha=sha256_file(base / "vol3d" / "index.csv")))
    return base


def invoke(base: Path, *args: str) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(base)
    try:
        res = runner.invoke(app, list(args))
    finally:
        os.chdir(cwd)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def test_validate_summarises_both_datasets(byod: Path) -> None:
    code, text = invoke(byod, "validate", "manifest.yaml")
    assert code == 0, text
    # vol3d: 8 test cases x 2 volumes, half positive; grid and spacing from the NIfTI header
    assert "│ test  │     8 │     16 │        8 │        8 │" in text
    assert "grid (8, 16, 16); spacing 2.5 x 0.7 x 0.7 mm" in text
    assert "grid (24, 24); spacing 0.8 x 0.8 mm" in text
    assert "cnn2d (no sha256)" in text
    assert text.count(": ok") == 2


def test_validate_lists_every_problem_and_fails(byod: Path, tmp_path: Path) -> None:
    import shutil

    base = tmp_path / "b"
    shutil.copytree(byod, base)
    (base / "vol3d" / "masks" / "r2" / "v1_0.nii.gz").unlink()  # positive: required
    (base / "vol3d" / "img" / "v3_1.nii.gz").write_bytes(b"not a nifti")
    with open(base / "vol3d" / "index.csv", "a") as fh:
        fh.write("case9,extra,img/v9_0.nii.gz,other,test\n")  # checksum now differs
    code, text = invoke(base, "validate", "manifest.yaml", "--dataset", "vol3d")
    assert code == 2
    assert "v1_0.nii.gz: no such file or directory" in text
    assert "v3_1.nii.gz: not a readable NIfTI file" in text
    assert "index.csv: checksum mismatch" in text
    assert "vol3d: 3 problem(s)" in text


def test_files_dataset_arrays_match_the_files(byod: Path) -> None:
    m = load_manifest(byod / "manifest.yaml")
    ds = load_files_dataset(m.dataset("vol3d"), m.base)
    assert ds.image_array.shape == (2 * N_CASES_3D, 8, 16, 16)
    assert ds.masks.shape == (2 * N_CASES_3D, 2, 8, 16, 16)
    assert ds.spacing == pytest.approx(SPACING_3D)  # NIfTI zooms are float32
    labels = ds.index.set_index("image_id")["label"]
    assert labels["v1_0"] == 1 and labels["v0_0"] == 0  # class names mapped, drowning = 1
    neg = ds.positions(["v0_0"])
    assert not ds.masks[neg].any()  # no mask file for a negative: empty
    pos = ds.positions(["v1_1"])[0]
    # the finding was written at 40 HU inside r1's mask
    assert np.allclose(ds.image_array[pos][ds.masks[pos, 0]], 40.0)
    two = load_files_dataset(m.dataset("slices2d"), m.base)
    p = two.positions(["s1_0"])[0]
    assert np.allclose(two.image_array[p][two.masks[p, 0]], 30.0)  # DICOM rescale applied
    assert np.array_equal(two.reference(np.array([p]), "graded")[0], 0.75 * two.masks[p, 0])


def test_input_transform_matches_closed_forms() -> None:
    x = np.random.default_rng(0).normal(-300, 500, (3, 5, 6)).astype(np.float32)
    w = np.clip((x + 1000) / 1200, 0, 1)
    got = input_transform(Preprocessing(window_hu=(-1000, 200)))(x)
    np.testing.assert_allclose(got, w, rtol=1e-6)
    z = input_transform(Preprocessing(window_hu=(-1000, 200), normalise="zscore"))(x)
    ref = (w - w.mean(axis=(1, 2), keepdims=True)) / w.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-5)
    mm = input_transform(Preprocessing(normalise="minmax"))(x)
    assert np.allclose(mm.min(axis=(1, 2)), 0) and np.allclose(mm.max(axis=(1, 2)), 1)
    f = input_transform(Preprocessing(normalise="fixed", mean=10.0, std=4.0))(x)
    np.testing.assert_allclose(f, (x - 10) / 4, rtol=1e-5)


def test_resize_scales_spacing_and_keeps_masks_binary(byod: Path) -> None:
    m = load_manifest(byod / "manifest.yaml")
    entry = m.dataset("vol3d").model_copy(update={
        "preprocessing": Preprocessing(window_hu=(-1000, 200), resize=[4, 32, 32])})
    ds = load_files_dataset(entry, m.base, ["test"])
    assert ds.image_array.shape[1:] == (4, 32, 32) and ds.masks.dtype == bool
    assert ds.spacing == pytest.approx((5.0, 0.35, 0.35))
    assert ds.masks.any()


@pytest.mark.parametrize("image", ["../outside.nii.gz", "/etc/passwd", "link/v0_0.nii.gz"])
def test_paths_stay_inside_the_root(byod: Path, tmp_path: Path, image: str) -> None:
    import shutil

    root = tmp_path / "vol3d"
    shutil.copytree(byod / "vol3d", root)
    (root / "link").symlink_to(tmp_path)  # a symlink out of the root
    idx = pd.read_csv(root / "index.csv")
    idx.loc[0, "image"] = image
    idx.to_csv(root / "index.csv", index=False)
    entry = load_manifest(byod / "manifest.yaml").dataset("vol3d")
    entry = entry.model_copy(update={"sha256": {}})
    with pytest.raises(DataError, match="leaves the dataset root|is absolute"):
        load_files_dataset(entry, tmp_path)


def test_a_case_in_two_splits_is_refused(byod: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "vol3d"
    shutil.copytree(byod / "vol3d", root)
    idx = pd.read_csv(root / "index.csv")
    idx.loc[1, "split"] = "test"  # v0_1 of case0, whose v0_0 stays in train
    idx.to_csv(root / "index.csv", index=False)
    entry = FilesDataset.model_validate({
        "name": "x", "kind": "files", "root": str(root), "index": "index.csv",
        "annotations": {"r1": "masks/r1/{image_id}.nii.gz"}, "classes": ["other", "drowning"]})
    with pytest.raises(DataError, match="case 'case0' has images in more than one split"):
        load_files_dataset(entry, tmp_path)


RUN_3D = ["--manifest", "manifest.yaml", "--dataset", "vol3d", "--n-boot", "200",
          "--metric", "iou@top15", "--metric", "peak_distance", "--reference", "consensus",
          "--reference", "graded",
          "--no-report"]


@pytest.fixture(scope="module")
def run3d(byod: Path) -> Path:
    code, text = invoke(byod, "run", *RUN_3D, "--model", "net3d_sd.pt", "--factory",
                        "benchmark.demo.cnn:build", "--factory-kwarg", "width=4",
                        "--factory-kwarg", "dims=3", "--method", "gradcam",
                        "--method", "saliency", "--method", "random", "--out", "run3d")
    assert code == 0, text
    assert "net3d_sd" in text
    return byod / "run3d"


def test_3d_run_end_to_end_with_a_state_dict(run3d: Path) -> None:
    run = Run.open(run3d)
    assert set(run.summary["method"]) == {"gradcam", "saliency", "random"}
    assert run.config["checkpoints"]["net3d_sd"].endswith("net3d_sd.pt")
    ids, maps = run.maps("net3d_sd", "gradcam")
    assert maps.shape[1:] == (2, 4, 4)  # the last conv's grid: 8x16x16 pooled twice
    ids, maps = run.maps("net3d_sd", "saliency")
    assert maps.shape == (8, 8, 16, 16)  # the 8 positive test volumes, input grid
    assert run.provenance["target_layers"]["net3d_sd"] == "features.6"
    s = run.summary
    iou = s[(s.metric == "iou@top15") & (s.method == "saliency")]["estimate"].iloc[0]
    assert 0 <= iou <= 1


def test_peak_distance_is_in_mm_of_the_files_spacing(byod: Path, run3d: Path) -> None:
    """Doubling every spacing in the index doubles every peak distance."""
    import shutil

    other = byod.parent / "byod_x2"
    if not other.exists():
        shutil.copytree(byod, other, ignore=shutil.ignore_patterns("run*"))
        idx = pd.read_csv(other / "vol3d" / "index.csv")
        idx["spacing"] = " ".join(str(2 * v) for v in SPACING_3D)
        idx.to_csv(other / "vol3d" / "index.csv", index=False)
        text = (other / "manifest.yaml").read_text()
        (other / "manifest.yaml").write_text(text.replace(
            sha256_file(byod / "vol3d" / "index.csv"), sha256_file(other / "vol3d" / "index.csv")))
    code, text = invoke(other, "run", *RUN_3D, "--model", "net3d.ts", "--method", "saliency",
                        "--out", "runx2")
    assert code == 0, text
    code, text = invoke(byod, "run", *RUN_3D, "--model", "net3d.ts", "--method", "saliency",
                        "--out", "runx1")
    assert code == 0, text

    def peaks(run_dir: Path) -> pd.Series:
        sc = Run.open(run_dir).scores
        return sc[sc.metric == "peak_distance"].set_index("image_id")["value"].sort_index()

    one, two = peaks(byod / "runx1"), peaks(other / "runx2")
    assert (one > 0).any()
    np.testing.assert_allclose(two.to_numpy(), 2 * one.to_numpy(), rtol=1e-5)


def test_torchscript_with_a_cam_method_is_refused_in_one_line(byod: Path) -> None:
    code, text = invoke(byod, "run", *RUN_3D, "--model", "net3d.ts", "--method", "gradcam",
                        "--out", "bad")
    assert code == 2
    assert "is TorchScript, which has no module hooks for gradcam" in text


def test_wrong_target_layer_lists_the_layers(byod: Path) -> None:
    code, text = invoke(byod, "run", *RUN_3D, "--model", "net3d_sd.pt", "--factory",
                        "benchmark.demo.cnn:build", "--factory-kwarg", "width=4",
                        "--factory-kwarg", "dims=3", "--method", "gradcam",
                        "--target-layer", "features.9", "--out", "bad")
    assert code == 2
    assert "no layer 'features.9'; convolutional layers: features.0, features.3, features.6" in text


def test_2d_dicom_run_with_manifest_model_and_resume(byod: Path) -> None:
    args = ["run", "--manifest", "manifest.yaml", "--dataset", "slices2d", "--n-boot", "200",
            "--method", "gradcam", "--method", "saliency", "--metric", "iou@top15",
            "--metric", "weighted_mass", "--no-report", "--out", "run2d"]
    code, text = invoke(byod, *args)
    assert code == 0, text
    run = Run.open(byod / "run2d")
    assert run.config["splits"] == ["test"]  # the dataset has no 'shifted' split
    summary = run.summary.copy()
    maps = sorted((byod / "run2d" / "maps").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in maps]
    (byod / "run2d" / "summary.parquet").unlink()
    code, text = invoke(byod, "run", "--resume", "run2d", "--no-report")
    assert code == 0, text
    assert [p.stat().st_mtime_ns for p in maps] == stamps  # cached maps reused, not rewritten
    pd.testing.assert_frame_equal(Run.open(byod / "run2d").summary, summary)


def test_run_with_a_checkpoint_path_resumes_with_the_path(byod: Path, run3d: Path) -> None:
    code, text = invoke(byod, "run", "--resume", "run3d", "--no-report")
    assert code == 0, text
    assert "net3d_sd" in text


def test_compare_and_the_baseline_gate_through_the_cli(byod: Path) -> None:
    args = ["run", "--manifest", "manifest.yaml", "--dataset", "slices2d", "--n-boot", "200",
            "--method", "saliency", "--metric", "iou@top15", "--reference", "consensus",
            "--no-report"]
    code, text = invoke(byod, *args, "--out", "base2d")
    assert code == 0, text
    # The same checkpoint again: nothing changes, the gate passes.
    code, text = invoke(byod, *args, "--out", "same2d", "--baseline", "base2d",
                        "--fail-if-worse", "iou@top15")
    assert code == 0, text
    assert "gate iou@top15:0 (consensus): pass" in text
    reg = Run.open(byod / "same2d").regression
    assert len(reg) == 1 and reg["diff"].iloc[0] == 0.0
    assert reg["n_cases"].iloc[0] == 4  # the test cases with positive images
    code, text = invoke(byod, "compare", "base2d", "same2d", "--fail-if-worse", "iou@top15")
    assert code == 0, text
    # A baseline whose maps hit every finding: the candidate is now clearly worse.
    scores = pd.read_parquet(byod / "base2d" / "scores.parquet")
    scores["value"] = 1.0
    scores.to_parquet(byod / "base2d" / "scores.parquet")
    code, text = invoke(byod, *args, "--out", "worse2d", "--baseline", "base2d",
                        "--fail-if-worse", "iou@top15:0.05")
    assert code == 1, text
    assert "FAIL iou@top15:0.05 (consensus): cnn2d → cnn2d / saliency on test" in text
    code, text = invoke(byod, "compare", "base2d", "worse2d", "--fail-if-worse",
                        "iou@top15:0.05")
    assert code == 1, text
    code, text = invoke(byod, *args, "--out", "bad", "--baseline", "base2d",
                        "--fail-if-worse", "iou@top99x")
    assert code == 2 and "iou@top99x" in text
