"""Resolve a manifest entry into what a run uses: the dataset, the model input transform
and the checkpoints (checked against their sha256)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import ConfigError
from benchmark.data.dataset import Dataset, reference_names
from benchmark.demo.cnn import HU_HIGH, HU_LOW, scale_hu
from benchmark.demo.phantom import ANNOTATORS, generate
from benchmark.manifest import (
    Manifest,
    ManifestError,
    ModelEntry,
    PhantomDataset,
    load_manifest,
    verify_checkpoint,
)
from benchmark.models import LoadedModel, load_checkpoint
from benchmark.store import sha256_file

#: Split the ``average_mask`` baseline is averaged over (STATISTICS.md, "Baselines").
PRIOR_SPLIT = "train"


@dataclass
class ResolvedDataset:
    manifest: Manifest
    entry: PhantomDataset
    splits: list[str]
    trust_checkpoint: bool = False
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def manifest_path(self) -> Path | None:
        return self.manifest.path

    @property
    def references(self) -> list[str]:
        return reference_names(list(ANNOTATORS))

    @property
    def target(self) -> int:
        """Output unit explained: the positive class of a single-logit model."""
        return 0

    @property
    def input_config(self) -> dict[str, Any]:
        return {"transform": "scale_hu", "window_hu": [HU_LOW, HU_HIGH]}

    def load(self) -> Dataset:
        if self._dataset is None:
            self._dataset = generate(self.entry.generator.to_spec(), splits=self.splits)
            for split in self.splits:
                labels = self._dataset.split(split)["label"]
                if len(labels) == 0:
                    raise ConfigError(f"split {split!r} of {self.entry.name!r} has no images")
        return self._dataset

    @property
    def dataset(self) -> Dataset:
        return self.load()

    @property
    def prior_split(self) -> str:
        """Split whose masks give the ``average_mask`` baseline: ``train`` if the dataset
        has one, else the first split that is not evaluated (never the evaluated data)."""
        names = list(self.entry.generator.splits)
        if PRIOR_SPLIT in names:
            return PRIOR_SPLIT
        spare = [s for s in names if s not in self.splits]
        if not spare:
            raise ConfigError(
                f"method 'average_mask' needs a split of {self.entry.name!r} that is not "
                f"evaluated (e.g. {PRIOR_SPLIT!r}); splits: {', '.join(names)}"
            )
        return spare[0]

    def mean_mask(self, reference: str = "consensus") -> np.ndarray:
        """Mean ``reference`` mask over the positive images of :attr:`prior_split`:
        (*spatial,) float32, the ``average_mask`` baseline's map."""
        split = self.prior_split
        ds = (self.dataset if split in self.splits
              else generate(self.entry.generator.to_spec(), splits=[split]))
        pos = np.flatnonzero(((ds.index["split"] == split) & (ds.index["label"] == 1)).to_numpy())
        if pos.size == 0:
            raise ConfigError(
                f"method 'average_mask': split {split!r} of {self.entry.name!r} has no "
                "positive images to average"
            )
        return ds.reference(pos, reference).mean(axis=0, dtype=np.float64).astype(np.float32)

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """HU images (k, *spatial) -> network input (k, 1, *spatial)."""
        return torch.from_numpy(scale_hu(images))[:, None]

    def model_entry(self, name: str) -> ModelEntry:
        for m in self.entry.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.entry.models)
        raise ConfigError(f"unknown model {name!r}; known: {known}")

    def load_model(self, name: str) -> LoadedModel:
        entry = self.model_entry(name)
        path = verify_checkpoint(entry, self.manifest.base)
        return load_checkpoint(
            path, name=name, sha256=entry.sha256 or sha256_file(path), factory=entry.factory,
            factory_kwargs=entry.factory_kwargs, target_layer=entry.target_layer,
            trust=self.trust_checkpoint,
        )


def resolve_dataset(
    manifest: str | None, dataset: str | None, splits: list[str]
) -> ResolvedDataset:
    m = load_manifest(manifest)
    entry = m.dataset(dataset)
    for s in splits:
        if s not in entry.generator.splits:
            raise ManifestError(
                f"dataset {entry.name!r} has no split {s!r}; splits: "
                f"{', '.join(entry.generator.splits)}"
            )
    return ResolvedDataset(m, entry, list(splits))
