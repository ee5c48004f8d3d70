"""Nothing gets in: checkpoints never run code, runs never touch the network, and any
manifest yields a dataset or a one-line error."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.demo.cnn import build
from benchmark.errors import BenchError
from benchmark.manifest import ManifestError, load_manifest
from benchmark.models import CheckpointError, load_checkpoint

MARKER_ENV = "SALIENCY_BENCH_PWNED"


class _Payload:
    """Unpickling this calls ``os.system``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _malicious(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Payload(marker)}, fh)
    return path, marker


def test_a_malicious_pickle_is_not_executed(tmp_path: Path) -> None:
    path, marker = _malicious(tmp_path)
    with pytest.raises(CheckpointError, match="not loadable as weights only.*--trust-checkpoint"):
        load_checkpoint(path, name="evil", sha256="x", factory="benchmark.demo.cnn:build")
    assert not marker.exists()


def test_a_malicious_torch_save_archive_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weights": _Payload(marker)}, path)  # the zip format torch.save writes
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(path, name="evil", sha256="x", factory="benchmark.demo.cnn:build")
    assert not marker.exists()


def test_a_full_model_loads_only_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(build(width=4), path)
    with pytest.raises(CheckpointError, match="pass --trust-checkpoint"):
        load_checkpoint(path, name="m", sha256="x")
    lm = load_checkpoint(path, name="m", sha256="x", trust=True)
    assert isinstance(lm.module, torch.nn.Module)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """Every attempt to open a network connection is recorded and refused."""
    attempts: list[tuple[object, ...]] = []
    real = socket.socket

    class Guarded(real):  # type: ignore[misc, valid-type]
        def connect(self, address: object) -> None:
            attempts.append(("connect", address))
            raise OSError("network disabled by the test")

        def connect_ex(self, address: object) -> int:
            attempts.append(("connect_ex", address))
            raise OSError("network disabled by the test")

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(("create_connection", args))
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "socket", Guarded)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_a_run_and_its_report_need_no_network(tmp_path: Path, no_network: list) -> None:
    import benchmark

    run = benchmark.run(
        manifest=None, models=["clean"], methods=["gradcam", "random"], splits=["test"],
        metrics=["iou@top15"], references=["consensus"], n_boot=200,
        out=str(tmp_path / "run"), report=True, engine="pandoc",
    )
    assert run.report_html.exists()
    assert no_network == []


# --- fuzzing the manifest loader --------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300),
                     st.floats(allow_nan=True), st.text(max_size=12))
_keys = st.sampled_from([
    "name", "kind", "root", "index", "annotations", "graded", "roi", "classes",
    "positive_class", "preprocessing", "sha256", "models", "generator", "splits", "path",
    "factory", "window_hu", "resize", "normalise", "n_cases", "confounder", "schema_version",
    "datasets", "seed", "image_size", "annotaions", "x",
])
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=20,
)
_entries = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8),
     "kind": st.sampled_from(["files", "phantom", "other"])},
    optional={k: _values for k in ("root", "index", "annotations", "classes", "preprocessing",
                                   "sha256", "models", "generator", "positive_class")},
)
_manifests = st.one_of(
    _values,
    st.fixed_dictionaries({"schema_version": st.sampled_from([1, 2, "1"]),
                           "datasets": st.lists(_entries, max_size=3)}),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_manifests)
def test_any_manifest_validates_or_fails_in_one_line(doc: object, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_manifest(path)
    except ManifestError as err:
        assert "\n" not in str(err) and str(err).startswith(str(path))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_text_as_a_manifest_fails_in_one_line(text: str, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        load_manifest(path)
    except BenchError as err:
        assert "\n" not in str(err)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.text(alphabet="abc01,\n\"./{}_-x ", max_size=160),
       header=st.sampled_from(["", "case_id,image_id,image,label,split\n",
                               "case_id,image_id,image,label,split,spacing\n"]))
def test_any_index_table_gives_a_dataset_or_one_line(index: str, header: str,
                                                    tmp_path: Path) -> None:
    """Fuzz the files loader through its index table: a Dataset or a one-line error."""
    from benchmark.data.dataset import Dataset
    from benchmark.data.files import load_files_dataset
    from benchmark.manifest import FilesDataset

    root = tmp_path / "root"
    (root / "img").mkdir(parents=True, exist_ok=True)
    np.save(root / "img" / "a.npy", np.zeros((4, 4), np.float32))
    (root / "index.csv").write_text(header + index)
    entry = FilesDataset.model_validate({
        "name": "f", "kind": "files", "root": str(root), "index": "index.csv",
        "annotations": {"r1": "img/{image_id}.npy"}, "classes": ["0", "1"]})
    try:
        ds = load_files_dataset(entry, tmp_path)
    except BenchError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(ds, Dataset) and len(ds.index) > 0
