"""A ``kind: files`` manifest entry -> :class:`~benchmark.data.dataset.Dataset`.

The index table (CSV or parquet) has one row per image: ``case_id, image_id, image,
label, split`` and optionally ``spacing`` (mm per axis, ``"0.7 0.7"`` or ``"2.5,0.7,0.7"``
in the array's axis order, overriding the file's own). Masks, graded maps and regions of
interest are found with path patterns such as ``masks/{annotator}/{image_id}.nii.gz``
whose ``{fields}`` are index columns. Every path must stay inside the dataset root, after
symbolic links are followed.

Masks are required for positive images; a negative image whose mask file is absent has
an empty mask (annotators mark findings, and negatives have none).

Problems are collected rather than raised when a ``problems`` list is passed, so that
``bench validate`` can list every broken file at once.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.data.dataset import Dataset
from benchmark.data.readers import ReaderError, Volume, read_image, read_mask
from benchmark.errors import BenchError
from benchmark.manifest import FilesDataset, Preprocessing
from benchmark.store import sha256_file

REQUIRED_COLUMNS = ("case_id", "image_id", "image", "label", "split")


class DataError(BenchError):
    """A dataset on disk that does not fit its manifest entry; one line naming the file."""


class _Problems:
    """Collect problems (``bench validate``) or raise the first (``bench run``)."""

    def __init__(self, sink: list[str] | None) -> None:
        self.sink = sink

    def add(self, message: str) -> None:
        if self.sink is None:
            raise DataError(message)
        self.sink.append(message)


def inside_root(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused when it leaves ``root`` (``..``, absolute, symlink)."""
    if Path(relative).is_absolute():
        raise DataError(
            f"{what}: path {relative!r} is absolute; paths are relative to the root {root}")
    path = root / relative
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(f"{what}: path {relative!r} leaves the dataset root {root}")
    return path


def pattern_fields(pattern: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(pattern) if f]


def read_index(entry: FilesDataset, root: Path) -> pd.DataFrame:
    """The index table, validated: required columns, unique image ids, known labels and
    splits, each case in one split. Labels become 0/1 (1 = ``entry.positive``)."""
    path = inside_root(root, entry.index, f"dataset {entry.name!r} index")
    if not path.is_file():
        raise DataError(f"dataset {entry.name!r}: index table not found: {path}")
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - any parser failure is a bad index file
        detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable index table ({detail})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        )
    if frame.empty:
        raise DataError(f"{path}: the index table has no rows")
    for col in ("case_id", "image_id", "image", "split"):
        frame[col] = frame[col].astype(str)
    dup = frame["image_id"][frame["image_id"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: image_id {dup.iloc[0]!r} appears more than once")
    frame["label"] = _labels(frame["label"], entry, path)
    splits_per_case = frame.groupby("case_id")["split"].nunique()
    leaky = splits_per_case[splits_per_case > 1]
    if len(leaky):
        raise DataError(
            f"{path}: case {leaky.index[0]!r} has images in more than one split; "
            "a case must stay in one split (images of a case are not independent)"
        )
    return frame.reset_index(drop=True)


def _labels(labels: pd.Series, entry: FilesDataset, path: Path) -> pd.Series:
    """Class names or 0/1 -> 0/1 with 1 = the positive class."""
    text = labels.astype(str).str.strip()
    negative = next(c for c in entry.classes if c != entry.positive)
    lookup = {entry.positive: 1, negative: 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}
    bad = text[~text.isin(list(lookup))]
    if len(bad):
        raise DataError(
            f"{path}: label {bad.iloc[0]!r} is not a class; "
            f"use {negative!r}/{entry.positive!r} or 0/1"
        )
    return text.map(lookup).astype(np.int64)


def parse_spacing(value: Any, where: str) -> tuple[float, ...] | None:
    """``"0.7 0.7"``, ``"2.5,0.7,0.7"`` or ``"2.5x0.7x0.7"`` -> floats; empty -> None."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    parts = [p for p in re.split(r"[\s,x;]+", str(value).strip()) if p]
    try:
        out = tuple(float(p) for p in parts)
    except ValueError:
        raise DataError(f"{where}: spacing {value!r} is not numbers like '0.7 0.7'") from None
    if not out or not all(np.isfinite(v) and v > 0 for v in out):
        raise DataError(f"{where}: spacing {value!r} must be positive numbers")
    return out


def check_checksums(entry: FilesDataset, root: Path, problems: list[str] | None = None) -> None:
    """Compare every file named in ``entry.sha256`` with its checksum."""
    report = _Problems(problems)
    for rel, want in entry.sha256.items():
        try:
            path = inside_root(root, rel, f"dataset {entry.name!r} sha256")
        except DataError as err:
            report.add(str(err))
            continue
        if not path.exists():
            report.add(f"dataset {entry.name!r}: checksummed file not found: {path}")
            continue
        got = sha256_file(path)
        if got != want:
            report.add(f"{path}: checksum mismatch (manifest {want[:12]}..., file {got[:12]}...)")


def _resample(array: np.ndarray, shape: tuple[int, ...], nearest: bool) -> np.ndarray:
    """Linear (images) or nearest (masks) resampling to ``shape``, half-pixel centres."""
    if array.shape == shape:
        return array
    import torch  # on first use: describing a run (`bench report`) needs no torch

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    mode = "nearest-exact" if nearest else ("bilinear" if len(shape) == 2 else "trilinear")
    kwargs: dict[str, Any] = {} if nearest else {"align_corners": False}
    out = torch.nn.functional.interpolate(t, size=shape, mode=mode, **kwargs)[0, 0].numpy()
    return out > 0.5 if nearest else out


class _Stack:
    """Equal-shape arrays written in place into one preallocated block, so loading never
    holds the dataset twice (a list of arrays and their stacked copy)."""

    def __init__(self, capacity: int, dtype: Any) -> None:
        self.capacity, self.dtype = capacity, dtype
        self.array: np.ndarray | None = None
        self.n = 0

    def fits(self, a: np.ndarray) -> bool:
        return self.array is None or a.shape == self.array.shape[1:]

    def add(self, a: np.ndarray) -> None:
        if self.array is None:  # untouched rows of np.empty are never resident
            self.array = np.empty((self.capacity, *a.shape), self.dtype)
        self.array[self.n] = a
        self.n += 1

    def result(self) -> np.ndarray:
        assert self.array is not None
        return self.array[: self.n]


class _Reader:
    """Reads the files of one image (image, masks, graded, roi) onto the common grid."""

    def __init__(self, entry: FilesDataset, root: Path, shape: tuple[int, ...] | None) -> None:
        self.entry, self.root, self.shape = entry, root, shape

    def path(self, pattern: str, row: pd.Series, what: str, **extra: str) -> Path:
        fields: dict[str, Any] = {str(k): v for k, v in row.items()}
        fields.update(extra)
        try:
            rel = pattern.format(**fields)
        except (KeyError, IndexError, AttributeError) as err:
            raise DataError(
                f"dataset {self.entry.name!r} {what}: pattern {pattern!r} names {err} which is "
                "not an index column"
            ) from None
        except ValueError as err:
            raise DataError(
                f"dataset {self.entry.name!r} {what}: pattern {pattern!r} is malformed ({err})"
            ) from None
        return inside_root(self.root, rel, f"image {row['image_id']!r} {what}")

    def fit(self, vol: Volume, image_shape: tuple[int, ...], what: str,
            image_id: str) -> np.ndarray:
        if vol.array.shape != image_shape:
            raise DataError(
                f"image {image_id!r}: {what} {vol.source} has shape {vol.array.shape}, "
                f"the image {image_shape}"
            )
        return vol.array

    def mask(self, pattern: str, row: pd.Series, image_shape: tuple[int, ...], what: str,
             *, required: bool, **extra: str) -> np.ndarray:
        path = self.path(pattern, row, what, **extra)
        if not path.exists() and not required:
            return np.zeros(image_shape, bool)
        return self.fit(read_mask(path), image_shape, what, str(row["image_id"]))


def load_files_dataset(
    entry: FilesDataset, base: Path, splits: list[str] | None = None,
    problems: list[str] | None = None, progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Read the images of ``splits`` (default: all) of a ``kind: files`` entry.

    Parameters
    ----------
    entry : FilesDataset
    base : Path
        Folder of the manifest (``entry.root`` is relative to it).
    splits : list of str, optional
        Splits to read; others are skipped (their files are not opened).
    problems : list of str, optional
        When given, problems with single images are appended here and those images are
        left out, instead of raising :class:`DataError` at the first one.
    progress : callable (done, total), optional

    Returns
    -------
    Dataset
        ``image_array`` (N, *grid) float32 in stored units (HU for CT), ``masks``
        (N, A, *grid) bool, ``graded_array`` and ``roi_array`` when the entry names them,
        per-image spacing in ``spacing_array`` (N, ndim).
    """
    root = entry.root_path(base)
    if not root.is_dir():
        raise DataError(f"dataset {entry.name!r}: root folder not found: {root}")
    check_checksums(entry, root, problems)
    index = read_index(entry, root)
    if splits is not None:
        known = sorted(set(index["split"]))
        for s in splits:
            if s not in known:
                raise DataError(
                    f"dataset {entry.name!r} has no split {s!r}; splits: {', '.join(known)}"
                )
        index = index[index["split"].isin(splits)].reset_index(drop=True)
    pre = entry.preprocessing
    grid = tuple(pre.resize) if pre.resize is not None else None
    reader = _Reader(entry, root, grid)
    annotators = list(entry.annotations)
    report = _Problems(problems)
    kept: list[int] = []
    spacings: list[tuple[float, ...]] = []
    shapes: set[tuple[int, ...]] = set()
    images, masks = _Stack(len(index), np.float32), _Stack(len(index), np.bool_)
    graded, rois = _Stack(len(index), np.float32), _Stack(len(index), np.bool_)
    for i in range(len(index)):
        row = index.iloc[i]
        image_id = str(row["image_id"])
        try:
            img = read_image(inside_root(root, row["image"], f"image {image_id!r}"))
            shape = img.array.shape
            given = parse_spacing(row.get("spacing"), f"image {image_id!r}")
            spacing = given if given is not None else img.spacing
            if len(spacing) != len(shape):
                raise DataError(
                    f"image {image_id!r}: spacing {spacing} has {len(spacing)} values for "
                    f"an image of shape {shape}"
                )
            positive = row["label"] == 1
            m = np.stack([
                reader.mask(pat, row, shape, f"mask of annotator {a!r}", required=positive,
                            annotator=a)
                for a, pat in entry.annotations.items()
            ])
            g = None
            if entry.graded is not None:
                gpath = reader.path(entry.graded, row, "graded map")
                if gpath.exists() or positive:
                    gv = reader.fit(read_image(gpath), shape, "graded map", image_id)
                    if gv.min() < 0 or gv.max() > 1:
                        raise DataError(
                            f"image {image_id!r}: graded map {gpath} has values outside [0, 1] "
                            f"({gv.min():g} .. {gv.max():g})"
                        )
                else:
                    gv = np.zeros(shape, np.float32)
                g = gv
            r = None
            if entry.roi is not None:
                r = reader.mask(entry.roi, row, shape, "region of interest", required=True)
        except (DataError, ReaderError) as err:
            report.add(str(err))
            continue
        if grid is not None:
            if len(grid) != len(shape):
                report.add(
                    f"image {image_id!r}: preprocessing.resize {list(grid)} has {len(grid)} axes, "
                    f"the image {len(shape)} (shape {shape})"
                )
                continue
            spacing = tuple(s * n / k for s, n, k in zip(spacing, shape, grid, strict=True))
            img = Volume(_resample(img.array, grid, nearest=False), spacing, img.source)
            m = np.stack([_resample(a, grid, nearest=True) for a in m])
            g = None if g is None else _resample(g, grid, nearest=False).clip(0, 1)
            r = None if r is None else _resample(r, grid, nearest=True)
        shapes.add(img.array.shape)
        if not images.fits(img.array):
            continue  # reported below, with every shape seen
        kept.append(i)
        images.add(img.array)
        masks.add(m)
        spacings.append(tuple(float(s) for s in spacing))
        if g is not None:
            graded.add(g)
        if r is not None:
            rois.add(r)
        if progress is not None:
            progress(len(kept), len(index))
    if not kept:
        raise DataError(f"dataset {entry.name!r}: no image could be read"
                        + (f" ({problems[-1]})" if problems else ""))
    if len(shapes) > 1:
        listed = sorted(shapes, key=str)
        raise DataError(
            f"dataset {entry.name!r}: images have different shapes "
            f"({', '.join(map(str, listed[:3]))}"
            f"{', ...' if len(listed) > 3 else ''}); set preprocessing.resize to a common grid"
        )
    sp = np.asarray(spacings, dtype=np.float64)
    index = index.iloc[kept].reset_index(drop=True)
    return Dataset(
        name=entry.name,
        index=index,
        image_array=images.result(),
        masks=masks.result(),
        annotators=annotators,
        roi_array=rois.result() if entry.roi is not None else None,
        graded_array=graded.result() if entry.graded is not None else None,
        spacing=tuple(float(v) for v in np.median(sp, axis=0)),
        spacing_array=sp,
        class_names=(next(c for c in entry.classes if c != entry.positive), entry.positive),
    )


def input_transform(pre: Preprocessing) -> Callable[[np.ndarray], np.ndarray]:
    """Stored intensities (k, *grid) -> network input values (k, *grid), float32."""

    def transform(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32, copy=True)
        axes = tuple(range(1, x.ndim))
        if pre.window_hu is not None:
            lo, hi = pre.window_hu
            x = (np.clip(x, lo, hi) - lo) / (hi - lo)
        if pre.normalise == "minmax":
            lo_, hi_ = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
            x = (x - lo_) / np.where(hi_ > lo_, hi_ - lo_, 1.0)
        elif pre.normalise == "zscore":
            mu, sd = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
            x = (x - mu) / np.where(sd > 0, sd, 1.0)
        elif pre.normalise == "fixed":
            assert pre.mean is not None and pre.std is not None
            x = (x - pre.mean) / pre.std
        return x.astype(np.float32)

    return transform
