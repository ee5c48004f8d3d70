"""Datasets: the embedded phantom and (later) files on disk, behind one :class:`Dataset`."""

from benchmark.data.dataset import INDEX_COLUMNS, SPLITS, Dataset, reference_names

__all__ = ["INDEX_COLUMNS", "SPLITS", "Dataset", "reference_names"]
