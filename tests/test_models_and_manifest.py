"""Checkpoint loading is safe and the manifest shipped with the repo is the built-in one."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.demo.cnn import build
from benchmark.manifest import DEMO_CHECKPOINTS, ManifestError, default_manifest, load_manifest
from benchmark.models import (
    CheckpointError,
    LoadedModel,
    check_output,
    conv_layers,
    load_checkpoint,
    predict,
)
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
    assert torch.allclose(predict(loaded, x), torch.sigmoid(model(x)[:, 0]))
    assert loaded.layer("features.6") is loaded.module.features[6]


def test_demo_factory_loads_channels_last_and_agrees_with_nchw():
    # The shipped checkpoints load into channels-last weights (the fast CPU max-pool);
    # the outputs and input gradients are those of the plain NCHW module.
    state = torch.load(DEMO_CHECKPOINTS / "partial.pt", weights_only=True)
    fast = build()
    fast.load_state_dict(state)
    plain = build().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    plain.load_state_dict(state)
    conv = fast.features[3].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.features[3].weight.is_contiguous()
    x = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    grads = []
    for model in (fast, plain):
        xx = x.clone().requires_grad_(True)
        out = model.eval()(xx)
        grads.append((out, torch.autograd.grad(out.sum(), xx)[0]))
    (out_fast, g_fast), (out_plain, g_plain) = grads
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-7)
    assert g_plain.abs().max() > 1e-4  # a real gradient, not zeros on both sides


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


# --- model output: logits or probabilities, one or several units ------------------------


class _TwoUnits(torch.nn.Module):
    def __init__(self, probabilities: bool) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.probabilities = probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x).mean(dim=(2, 3))
        return torch.softmax(out, dim=1) if self.probabilities else out


def _loaded(module: torch.nn.Module, **kw: object) -> LoadedModel:
    return LoadedModel("m", module.eval(), "x", None, **kw)  # type: ignore[arg-type]


def test_two_logits_default_to_the_softmax_of_unit_1() -> None:
    torch.manual_seed(0)
    net, x = _TwoUnits(False), torch.rand(4, 1, 8, 8)
    lm = _loaded(net)
    assert check_output(lm, x) == 2 and lm.target == 1
    assert torch.allclose(predict(lm, x), torch.softmax(net(x), dim=1)[:, 1])


def test_probability_outputs_are_taken_as_they_are() -> None:
    torch.manual_seed(0)
    net, x = _TwoUnits(True), torch.rand(4, 1, 8, 8)
    lm = _loaded(net, output="probabilities", target=0)
    check_output(lm, x)
    assert torch.allclose(predict(lm, x), net(x)[:, 0])


def test_a_target_unit_the_model_lacks_is_refused() -> None:
    with pytest.raises(CheckpointError, match="target unit 2 does not exist; the model has 2"):
        check_output(_loaded(_TwoUnits(False), target=2), torch.rand(2, 1, 8, 8))


def test_an_output_that_is_not_n_by_classes_is_refused() -> None:
    net = torch.nn.Conv2d(1, 1, 3)
    with pytest.raises(CheckpointError, match=r"output must be \(N, classes\).*got \(2, 1, 6, 6\)"):
        check_output(_loaded(net), torch.rand(2, 1, 8, 8))


def test_a_model_that_fails_on_the_input_says_so() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 1))
    with pytest.raises(CheckpointError, match=r"fails on input of shape \(2, 1, 8, 8\)"):
        check_output(_loaded(net), torch.rand(2, 1, 8, 8))


def test_torch_export_archive_keeps_its_layers_for_cam(tmp_path) -> None:
    from torch.export import Dim

    torch.manual_seed(0)
    model = build(width=4).eval()
    x = torch.rand(3, 1, 32, 32)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: Dim("batch")},))
    path = tmp_path / "m.pt2"
    torch.export.save(ep, str(path))
    lm = load_checkpoint(path, name="m", sha256="x")
    assert check_output(lm, x) == 1
    assert torch.allclose(predict(lm, x), torch.sigmoid(model(x)[:, 0]), atol=1e-6)
    assert conv_layers(lm.module) == ["features.0", "features.3", "features.6"]
    lm.layer()  # detected: the last convolution
    assert lm.target_layer == "features.6"
    from benchmark.explainers import get_explainer

    got = get_explainer("gradcam", lm.module, layer=lm.layer()).attribute(x)
    want = get_explainer("gradcam", model, layer=model.features[6]).attribute(x)
    assert torch.allclose(got, want, atol=1e-5)


def test_torch_export_with_a_static_batch_is_explained(tmp_path) -> None:
    model = build(width=4).eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(2, 1, 32, 32),)), str(path))
    lm = load_checkpoint(path, name="m", sha256="x")
    with pytest.raises(CheckpointError, match="not of 1: export it with a dynamic batch"):
        check_output(lm, torch.rand(2, 1, 32, 32))


def test_torchscript_layers_are_found() -> None:
    scripted = torch.jit.script(build(width=4).eval())
    assert conv_layers(scripted) == ["features.0", "features.3", "features.6"]


# --- files datasets in the manifest ---------------------------------------------------


def _files_manifest(tmp_path, **fields: object) -> str:
    import yaml

    entry = {"name": "d", "kind": "files", "root": ".", "index": "index.csv",
             "annotations": {"r1": "m/{image_id}.png"}, **fields}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "datasets": [entry]}))
    return str(path)


@pytest.mark.parametrize(("fields", "message"), [
    ({"annotation": {"r1": "x"}},
     "datasets.0.annotation: Extra inputs are not permitted (did you mean 'annotations'?)"),
    ({"positive_class": "yes", "classes": ["no", "drowning"]},
     "positive_class 'yes' is not one of"),
    ({"preprocessing": {"normalise": "fixed"}}, "normalise: fixed needs mean and std"),
    ({"preprocessing": {"window_hu": [200, -1000]}}, "low < high"),
    ({"preprocessing": {"resize": [64]}}, "preprocessing.resize"),
    ({"sha256": {"index.csv": "abc"}}, "sha256.index.csv"),
])
def test_files_entry_errors_name_the_field(tmp_path, fields, message) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        load_manifest(_files_manifest(tmp_path, **fields))


def test_the_commented_files_example_in_the_shipped_manifest_validates(tmp_path) -> None:
    text = Path("data_manifest.yaml").read_text()
    example = text[text.index("#  - name: my-pmct"):]
    example = example.replace('"..."', '"' + "0" * 64 + '"')  # placeholder checksums
    lines = [ln[1:] for ln in example.splitlines() if ln.startswith("#")]
    entry = yaml.safe_load("\n".join(lines))[0]
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "datasets": [entry]}))
    d = load_manifest(path).dataset("my-pmct")
    assert d.kind == "files" and d.positive == "drowning"
    assert d.models[0].output == "logits" and d.models[0].target == 1
