"""The in-memory dataset: images, labels, cases, splits, per-annotator masks and references.

A :class:`Dataset` holds one row per image in ``index`` (a pandas frame, in array order)
and the arrays that go with it. Every stage after loading sees this one shape, whatever
the source (the embedded phantom or files on disk).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

INDEX_COLUMNS = ["case_id", "image_id", "split", "label"]
SPLITS = ("train", "val", "test", "shifted")


def reference_names(annotators: list[str]) -> list[str]:
    """All reference names for a dataset with these annotators (METRICS.md)."""
    return ["consensus", "union", "intersection", "graded"] + [
        f"annotator:{a}" for a in annotators
    ]


def combine_masks(masks: np.ndarray, name: str, annotators: list[str]) -> np.ndarray:
    """The reference ``name`` from per-annotator masks (METRICS.md).

    Parameters
    ----------
    masks : ndarray, shape (k, A, *spatial), bool
        One binary mask per image and annotator.
    name : str
        ``consensus`` (at least half of the annotators), ``union``, ``intersection``,
        ``annotator:<id>`` or ``graded`` (mean of the annotator masks).
    annotators : list of str, length A

    Returns
    -------
    ndarray, shape (k, *spatial), float32; binary except ``graded``.
    """
    if name == "consensus":
        out = masks.sum(axis=1) * 2 >= masks.shape[1]
    elif name == "union":
        out = masks.any(axis=1)
    elif name == "intersection":
        out = masks.all(axis=1)
    elif name == "graded":
        return masks.mean(axis=1, dtype=np.float32)
    elif name.startswith("annotator:") and name.split(":", 1)[1] in annotators:
        out = masks[:, annotators.index(name.split(":", 1)[1])]
    else:
        raise ValueError(
            f"unknown reference {name!r}; valid references: "
            f"{', '.join(reference_names(annotators))}"
        )
    return out.astype(np.float32)


@dataclass
class Dataset:
    """Images with their labels and expert annotations.

    Attributes
    ----------
    name : str
    index : DataFrame, one row per image, columns ``case_id, image_id, split, label``
        (label 1 = positive class) plus any extra columns (e.g. ``scanner``).
    image_array : ndarray (N, *spatial), float32, Hounsfield-like units.
    masks : ndarray (N, A, *spatial), bool; one binary mask per annotator.
    annotators : list of str, length A.
    roi_array : ndarray (N, *spatial) bool or None; region of interest (body mask).
    graded_array : ndarray (N, *spatial) float32 in [0, 1] or None; a graded importance
        map given with the data. ``None``: the ``graded`` reference is the annotators' mean.
    spacing : tuple of float, one per spatial axis, in mm (the median over images when
        they differ).
    spacing_array : ndarray (N, ndim) float64 or None; each image's own spacing.
    class_names : tuple of str, (negative, positive).
    """

    name: str
    index: pd.DataFrame
    image_array: np.ndarray
    masks: np.ndarray
    annotators: list[str]
    roi_array: np.ndarray | None = None
    spacing: tuple[float, ...] = (1.0, 1.0)
    graded_array: np.ndarray | None = None
    spacing_array: np.ndarray | None = None
    class_names: tuple[str, str] = ("negative", "positive")
    _sha: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.index)
        if self.image_array.shape[0] != n or self.masks.shape[0] != n:
            raise ValueError(
                f"dataset {self.name!r}: index has {n} rows but images have "
                f"{self.image_array.shape[0]} and masks {self.masks.shape[0]}"
            )
        if self.masks.shape[1] != len(self.annotators):
            raise ValueError(
                f"dataset {self.name!r}: masks have {self.masks.shape[1]} annotators, "
                f"names given for {len(self.annotators)}"
            )
        self.index = self.index.reset_index(drop=True)
        self._pos = pd.Series(np.arange(n), index=self.index["image_id"].to_numpy())

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image_array.shape[1:])

    @property
    def references(self) -> list[str]:
        return reference_names(self.annotators)

    def positions(self, image_ids: np.ndarray | list[str]) -> np.ndarray:
        """Row positions of ``image_ids``; KeyError names the first unknown id."""
        try:
            return self._pos.loc[list(image_ids)].to_numpy()
        except KeyError as err:
            raise KeyError(f"dataset {self.name!r}: unknown image id {err}") from None

    def split(self, name: str) -> pd.DataFrame:
        """The index rows of split ``name``."""
        return self.index[self.index["split"] == name]

    def images(self, idx: np.ndarray) -> np.ndarray:
        """Images at row positions ``idx``: (k, *spatial) float32."""
        return self.image_array[idx]

    def roi(self, idx: np.ndarray) -> np.ndarray | None:
        return None if self.roi_array is None else self.roi_array[idx]

    def reference(self, idx: np.ndarray, name: str) -> np.ndarray:
        """Reference maps at ``idx``: (k, *spatial) float32, see :func:`combine_masks`;
        ``graded`` is :attr:`graded_array` when the data gives one."""
        if name == "graded" and self.graded_array is not None:
            return self.graded_array[idx].astype(np.float32, copy=False)
        return combine_masks(self.masks[idx], name, self.annotators)

    def spacing_groups(self, idx: np.ndarray) -> list[tuple[tuple[float, ...], np.ndarray]]:
        """Positions into ``idx`` grouped by voxel spacing: [(spacing, positions)], so that
        distance metrics use each image's own spacing. One group when spacing is uniform."""
        if self.spacing_array is None:
            return [(self.spacing, np.arange(len(idx)))]
        sp = self.spacing_array[idx]
        uniq, inverse = np.unique(sp, axis=0, return_inverse=True)
        return [(tuple(float(v) for v in u), np.flatnonzero(inverse.ravel() == j))
                for j, u in enumerate(uniq)]

    @property
    def sha256(self) -> str:
        """Content hash of images, masks and index (keys the saliency-map cache)."""
        if self._sha is None:
            h = hashlib.sha256()
            hashed = pd.util.hash_pandas_object(self.index[INDEX_COLUMNS], index=False)
            # memoryviews, not .tobytes(): hashing must not copy the dataset
            h.update(np.ascontiguousarray(hashed.to_numpy(dtype=np.uint64)).data.cast("B"))
            h.update(np.ascontiguousarray(self.image_array).data.cast("B"))
            h.update(np.packbits(self.masks).data)
            for extra in (self.graded_array, self.roi_array, self.spacing_array):
                if extra is not None:
                    h.update(np.ascontiguousarray(extra).data.cast("B"))
            self._sha = h.hexdigest()
        return self._sha
