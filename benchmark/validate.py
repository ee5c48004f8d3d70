"""``bench validate``: check a manifest's datasets and checkpoints without running a model.

Problems (files that cannot be read, shapes that do not match, checksum mismatches) make
the check fail; warnings (a split with one class, an annotator who marks nothing) do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.data.dataset import Dataset
from benchmark.data.files import load_files_dataset
from benchmark.demo.phantom import generate
from benchmark.errors import BenchError
from benchmark.manifest import FilesDataset, Manifest, PhantomDataset, verify_checkpoint


@dataclass
class DatasetCheck:
    """What ``bench validate`` found for one dataset entry.

    ``splits`` maps split -> (cases, images, positive images); ``problems`` fail the
    check, ``warnings`` do not.
    """

    name: str
    kind: str
    splits: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    annotators: list[str] = field(default_factory=list)
    shape: tuple[int, ...] = ()
    spacing: str = ""
    models: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(
    manifest: Manifest, entry: PhantomDataset | FilesDataset,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetCheck:
    """Read every image and mask of ``entry`` and its checkpoints; collect what is wrong."""
    check = DatasetCheck(entry.name, entry.kind)
    ds: Dataset | None = None
    if isinstance(entry, FilesDataset):
        try:
            ds = load_files_dataset(entry, manifest.base, problems=check.problems,
                                    progress=progress)
        except BenchError as err:
            check.problems.append(str(err))
    else:
        ds = generate(entry.generator.to_spec())
    for m in entry.models:
        try:
            verify_checkpoint(m, manifest.base)
            check.models.append(f"{m.name} ({'sha256 ok' if m.sha256 else 'no sha256'})")
        except BenchError as err:
            check.problems.append(str(err))
            check.models.append(f"{m.name} (problem)")
    if ds is not None:
        _describe(check, ds)
    return check


def _describe(check: DatasetCheck, ds: Dataset) -> None:
    check.annotators = list(ds.annotators)
    check.shape = ds.spatial_shape
    if ds.spacing_array is not None and len(ds.spacing_array):
        lo, hi = ds.spacing_array.min(axis=0), ds.spacing_array.max(axis=0)
        check.spacing = " x ".join(
            f"{a:g}" if a == b else f"{a:g}-{b:g}" for a, b in zip(lo, hi, strict=True))
    else:
        check.spacing = " x ".join(f"{v:g}" for v in ds.spacing)
    idx = ds.index
    for split, rows in idx.groupby("split", sort=False):
        n_pos = int((rows["label"] == 1).sum())
        check.splits[str(split)] = (int(rows["case_id"].nunique()), len(rows), n_pos)
        if n_pos in (0, len(rows)):
            only = ds.class_names[1] if n_pos else ds.class_names[0]
            check.warnings.append(
                f"split {split!r} has only {only!r} images: AUROC is undefined there")
    pos = np.flatnonzero(idx["label"].to_numpy() == 1)
    if len(pos):
        marked = np.asarray(ds.masks[pos].reshape(len(pos), len(ds.annotators), -1).any(axis=2))
        for a, name in enumerate(ds.annotators):
            empty = int((~marked[:, a]).sum())
            if empty:
                check.warnings.append(
                    f"annotator {name!r} marks nothing on {empty} of {len(pos)} positive images")


def summary_rows(check: DatasetCheck) -> list[dict[str, Any]]:
    """One printable row per split of ``check``."""
    rows = []
    for split, (cases, images, pos) in check.splits.items():
        rows.append({"split": split, "cases": cases, "images": images,
                     "positive": pos, "negative": images - pos})
    return rows
