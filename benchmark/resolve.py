"""Resolve a manifest entry into what a run uses: the dataset, the model input transform
and the checkpoints (checked against their sha256).

Two kinds of entry arrive here: the embedded phantom (generated in memory) and datasets
of files on disk (:mod:`benchmark.data.files`). Later stages see only
:class:`ResolvedDataset` and the :class:`~benchmark.data.dataset.Dataset` it loads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.config import ConfigError
from benchmark.data.dataset import Dataset, reference_names
from benchmark.data.files import input_transform, load_files_dataset
from benchmark.demo.phantom import ANNOTATORS, generate
from benchmark.demo.window import HU_HIGH, HU_LOW, scale_hu
from benchmark.manifest import (
    FilesDataset,
    Manifest,
    ManifestError,
    ModelEntry,
    PhantomDataset,
    load_manifest,
    verify_checkpoint,
)
from benchmark.store import sha256_file

if TYPE_CHECKING:  # torch loads on first use: `bench report` resolves data, no model
    import torch

    from benchmark.models import LoadedModel

#: Split the ``average_mask`` baseline is averaged over (STATISTICS.md, "Baselines").
PRIOR_SPLIT = "train"
#: Splits evaluated when the configuration names none, those the dataset has.
DEFAULT_SPLITS = ("test", "shifted")


@dataclass(frozen=True)
class ModelOptions:
    """Checkpoint settings given on the command line (or in the run config).

    ``factory``/``factory_kwargs`` build the module of a state dict given by path;
    ``target_layer``, ``output`` and ``target`` override every model's manifest entry.
    """

    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    target_layer: str | None = None
    output: str | None = None
    target: int | None = None
    trust_checkpoint: bool = False


@dataclass
class ResolvedDataset:
    manifest: Manifest
    entry: PhantomDataset | FilesDataset
    splits: list[str]
    options: ModelOptions = field(default_factory=ModelOptions)
    _dataset: Dataset | None = field(default=None, repr=False)
    _adhoc: dict[str, ModelEntry] = field(default_factory=dict, repr=False)

    @property
    def manifest_path(self) -> Path | None:
        return self.manifest.path

    @property
    def trust_checkpoint(self) -> bool:
        return self.options.trust_checkpoint

    @property
    def annotators(self) -> list[str]:
        if isinstance(self.entry, FilesDataset):
            return list(self.entry.annotations)
        return list(ANNOTATORS)

    @property
    def references(self) -> list[str]:
        return reference_names(self.annotators)

    @property
    def input_config(self) -> dict[str, Any]:
        """What turns stored intensities into network input (part of the map cache key)."""
        if isinstance(self.entry, FilesDataset):
            return {"transform": "files", **self.entry.preprocessing.model_dump()}
        return {"transform": "scale_hu", "window_hu": [HU_LOW, HU_HIGH]}

    def _load(self, splits: list[str], progress: Callable[[int, int], None] | None = None
              ) -> Dataset:
        if isinstance(self.entry, FilesDataset):
            return load_files_dataset(self.entry, self.manifest.base, splits, progress=progress)
        return generate(self.entry.generator.to_spec(), splits=splits)

    def load(self, progress: Callable[[int, int], None] | None = None) -> Dataset:
        if self._dataset is None:
            self._dataset = self._load(self.splits, progress)
            for split in self.splits:
                labels = self._dataset.split(split)["label"]
                if len(labels) == 0:
                    raise ConfigError(f"split {split!r} of {self.entry.name!r} has no images")
        return self._dataset

    @property
    def dataset(self) -> Dataset:
        return self.load()

    @property
    def split_names(self) -> list[str]:
        """Every split of the dataset (reads only the index table for files on disk)."""
        if isinstance(self.entry, FilesDataset):
            return split_names(self.entry, self.manifest.base)
        return self.entry.split_names

    @property
    def prior_split(self) -> str:
        """Split whose masks give the ``average_mask`` baseline: ``train`` if the dataset
        has one, else the first split that is not evaluated (never the evaluated data)."""
        names = self.split_names
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
        ds = self.dataset if split in self.splits else self._load([split])
        pos = np.flatnonzero(((ds.index["split"] == split) & (ds.index["label"] == 1)).to_numpy())
        if pos.size == 0:
            raise ConfigError(
                f"method 'average_mask': split {split!r} of {self.entry.name!r} has no "
                "positive images to average"
            )
        return ds.reference(pos, reference).mean(axis=0, dtype=np.float64).astype(np.float32)

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """Stored images (k, *spatial) -> network input (k, 1, *spatial), float32."""
        import torch

        if isinstance(self.entry, FilesDataset):
            return torch.from_numpy(input_transform(self.entry.preprocessing)(images))[:, None]
        return torch.from_numpy(scale_hu(images))[:, None]

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.entry.models]

    def add_checkpoint(self, path: str) -> str:
        """Register a checkpoint given by path (``--model PATH``); returns its model name
        (the file name without suffixes)."""
        p = Path(path).expanduser()
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", p.name.split(".")[0]) or "model"
        if stem in self.model_names or (stem in self._adhoc
                                        and self._adhoc[stem].path != str(p.resolve())):
            raise ConfigError(
                f"checkpoint {path}: its name {stem!r} is already a model of this run; "
                "rename the file"
            )
        o = self.options
        self._adhoc[stem] = ModelEntry(
            name=stem, path=str(p.resolve()), factory=o.factory, factory_kwargs=o.factory_kwargs,
            target_layer=o.target_layer,
        )
        return stem

    def model_entry(self, name: str) -> ModelEntry:
        if name in self._adhoc:
            return self._adhoc[name]
        for m in self.entry.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.entry.models) or "none"
        raise ConfigError(f"unknown model {name!r}; known: {known} (or give a checkpoint path)")

    def load_model(self, name: str) -> LoadedModel:
        from benchmark.models import load_checkpoint

        entry = self.model_entry(name)
        path = verify_checkpoint(entry, self.manifest.base)
        o = self.options
        return load_checkpoint(
            path, name=name, sha256=entry.sha256 or sha256_file(path),
            factory=entry.factory or o.factory,
            factory_kwargs=entry.factory_kwargs or o.factory_kwargs,
            target_layer=o.target_layer or entry.target_layer,
            trust=o.trust_checkpoint,
            output=o.output or entry.output,
            target=o.target if o.target is not None else entry.target,
        )


def split_names(entry: FilesDataset, base: Path) -> list[str]:
    """The splits of a files dataset, in the order they first appear in its index."""
    from benchmark.data.files import read_index

    index = read_index(entry, entry.root_path(base))
    return list(dict.fromkeys(index["split"]))


def resolve_dataset(
    manifest: str | None, dataset: str | None, splits: list[str] | None,
    options: ModelOptions | None = None,
) -> ResolvedDataset:
    """Load the manifest, pick the dataset and check the splits exist.

    ``splits=None`` takes those of ``test``/``shifted`` the dataset has (the defaults).
    """
    m = load_manifest(manifest)
    entry = m.dataset(dataset)
    resolved = ResolvedDataset(m, entry, [], options or ModelOptions())
    known = resolved.split_names
    if splits is None:
        splits = [s for s in DEFAULT_SPLITS if s in known]
        if not splits:
            raise ManifestError(
                f"dataset {entry.name!r} has neither a 'test' nor a 'shifted' split; choose "
                f"with --split from: {', '.join(known)}"
            )
    for s in splits:
        if s not in known:
            raise ManifestError(
                f"dataset {entry.name!r} has no split {s!r}; splits: {', '.join(known)}"
            )
    resolved.splits = list(splits)
    return resolved
