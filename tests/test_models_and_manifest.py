"""Checkpoint loading is safe and the manifest shipped with the repo is the built-in one."""

from __future__ import annotations

import pickle

import pytest
import torch
import yaml

from benchmark.demo.cnn import build
from benchmark.manifest import DEMO_CHECKPOINTS, default_manifest, load_manifest
from benchmark.models import CheckpointError, load_checkpoint, predict
from benchmark.store import sha256_file


def test_shipped_manifest_equals_the_built_in_default():
    shipped = load_manifest("data_manifest.yaml")
    built_in = default_manifest()
    a = shipped.model_dump(exclude={"path"})
    b = built_in.model_dump(exclude={"path"})
    for d in a["datasets"]:
        d.pop("description")
    for d in b["datasets"]:
        d.pop("description")
    assert a == b


def test_shipped_checksums_match_the_checkpoints():
    for entry in load_manifest("data_manifest.yaml").dataset().models:
        assert entry.sha256 == sha256_file(DEMO_CHECKPOINTS / f"{entry.name}.pt")


def test_state_dict_with_factory_loads_and_predicts(tmp_path):
    torch.manual_seed(0)
    model = build(width=4)
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(path, name="m", sha256="x", factory="benchmark.demo.cnn:build",
                             factory_kwargs={"width": 4})
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(predict(loaded.module, x), torch.sigmoid(model(x)[:, 0]))
    assert loaded.layer("features.6") is loaded.module.features[6]


def test_torchscript_loads_without_a_factory(tmp_path):
    model = build(width=4).eval()
    path = tmp_path / "m.ts"
    torch.jit.script(model).save(str(path))
    loaded = load_checkpoint(path, name="m", sha256="x")
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(loaded.module(x), model(x))


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/saliency-bench-pwned", "w"))


def test_pickled_objects_are_not_executed_without_trust(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(path, name="evil", sha256="x", factory="benchmark.demo.cnn:build")
    import os

    assert not os.path.exists("/tmp/saliency-bench-pwned")


def test_full_model_pickle_is_refused_without_trust(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(build(width=4), path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_checkpoint(path, name="full", sha256="x")
    loaded = load_checkpoint(path, name="full", sha256="x", trust=True)
    assert isinstance(loaded.module, torch.nn.Module)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(path, name="n", sha256="x", factory="benchmark.demo.cnn:build")


def test_state_dict_that_does_not_fit_the_factory(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(build(width=4).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, name="m", sha256="x", factory="benchmark.demo.cnn:build")


def test_wrong_target_layer_lists_the_convolutions(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(build(width=4).state_dict(), path)
    loaded = load_checkpoint(path, name="m", sha256="x", factory="benchmark.demo.cnn:build",
                             factory_kwargs={"width": 4})
    with pytest.raises(CheckpointError, match="features.0, features.3, features.6"):
        loaded.layer("features.9")


def test_manifest_yaml_is_schema_version_1():
    with open("data_manifest.yaml") as fh:
        raw = yaml.safe_load(fh)
    assert raw["schema_version"] == 1 and raw["datasets"][0]["name"] == "pmct-phantom"


def test_torch_export_archive_loads(tmp_path):
    model = build(width=4).eval()
    x = torch.rand(1, 1, 32, 32)
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    loaded = load_checkpoint(path, name="m", sha256="x")
    assert torch.allclose(loaded.module(x), model(x), atol=1e-6)
