"""The run directory: tidy tables, cached maps and provenance (DESIGN.md, "Contracts").

Every file is written atomically (temporary file in the same folder, then ``os.replace``),
so a run killed at any point leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import yaml

from benchmark.errors import BenchError

PREDICTIONS_COLUMNS = ["model", "split", "case_id", "image_id", "label", "score"]
SCORES_COLUMNS = [
    "model", "split", "method", "case_id", "image_id", "reference", "metric", "value",
]
SUMMARY_COLUMNS = [
    "model", "split", "method", "reference", "metric", "estimate", "ci_low", "ci_high",
    "ci_method", "n_cases", "n_images", "n_nan",
]
#: Appended to summary.parquet: the best null baseline of the cell and whether the
#: explainer beats it (paired interval of the difference excludes 0), NA for baselines.
BASELINE_COLUMNS = ["best_baseline", "beats_baseline"]
CLASSIFICATION_COLUMNS = [
    "model", "split", "level", "metric", "estimate", "ci_low", "ci_high", "ci_method",
    "n_cases", "n_images",
]
COMPARISONS_COLUMNS = [
    "family", "split", "reference", "metric", "a", "b", "diff", "ci_low", "ci_high", "p",
    "p_adj", "adj_method",
]

CURVE_POINTS_COLUMNS = [
    "model", "split", "method", "case_id", "image_id", "reference", "metric", "threshold",
    "value",
]

THRESHOLDS_COLUMNS = [
    "model", "method", "split", "reference", "metric", "threshold", "mean_score", "n_images",
]

CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
PREDICTIONS = "predictions.parquet"
SCORES = "scores.parquet"
SUMMARY = "summary.parquet"
SUMMARY_CSV = "summary.csv"
CLASSIFICATION = "classification.parquet"
COMPARISONS = "comparisons.parquet"
THRESHOLDS = "thresholds.parquet"
OMNIBUS = "omnibus.parquet"
HUMAN_SCORES = "human_scores.parquet"
HUMAN = "human.parquet"
MIXED = "mixed.parquet"
CURVE_POINTS = "curve_points.parquet"
CURVES = "curves.parquet"
CORRELATION = "correlation.parquet"
SANITY = "sanity.parquet"
SANITY_VERDICTS = "sanity_verdicts.parquet"
FAITHFULNESS = "faithfulness.parquet"
FAITHFULNESS_SUMMARY = "faithfulness_summary.parquet"
REGION_DELETION = "region_deletion.parquet"
REGION_DELETION_SUMMARY = "region_deletion_summary.parquet"
REGRESSION = "regression.parquet"
REGRESSION_JSON = "regression.json"
REPORT_QMD = "report.qmd"
REPORT_HTML = "report.html"
MAPS = "maps"


def _umask_mode() -> int:
    # mkstemp creates 0600 files; give results the mode a plain open() would.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and rename the result over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as parquet (or CSV when ``path`` ends in ``.csv``), atomically."""
    if Path(path).suffix == ".csv":
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(obj: Any, path: Path) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)


def write_yaml(obj: Any, path: Path) -> None:
    with atomic_open(path) as fh:
        yaml.safe_dump(obj, fh, sort_keys=False)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; BenchError naming the file when it is not valid YAML."""
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise BenchError(f"{path}: malformed YAML ({' '.join(str(err).split())})") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def map_key(checkpoint_sha: str, method_config: dict[str, Any], data_sha: str) -> str:
    """Cache key of one model x method x dataset: checkpoint hash + method config + data hash."""
    return sha256_json({"checkpoint": checkpoint_sha, "method": method_config, "data": data_sha})[
        :24
    ]


def save_maps(root: Path, key: str, image_ids: np.ndarray, maps: np.ndarray) -> Path:
    """Cache saliency maps ``(N, *spatial)`` (float32) with their image ids under ``maps/``."""
    path = Path(root) / MAPS / f"{key}.npz"
    atomic_write(
        path,
        lambda tmp: _savez(tmp, image_ids=np.asarray(image_ids, dtype=str), maps=maps),
    )
    return path


def _savez(tmp: Path, image_ids: np.ndarray, maps: np.ndarray) -> None:
    # np.savez appends ".npz" to names without it; write through a handle to keep our name.
    with open(tmp, "wb") as fh:
        np.savez(fh, image_ids=image_ids, maps=maps)


#: Images per map shard: the unit the explain stage writes and the score stage streams
#: (the metric kernels' default chunk), so memory does not grow with the dataset.
SHARD_SIZE = 256
_DONE = "complete.json"


def _shard_dir(root: Path, key: str) -> Path:
    return Path(root) / MAPS / key


def shard_path(root: Path, key: str, index: int) -> Path:
    return _shard_dir(root, key) / f"shard-{index:05d}.npz"


def save_map_shard(root: Path, key: str, index: int, image_ids: np.ndarray,
                   maps: np.ndarray) -> Path:
    """Cache shard ``index`` of an entry: maps ``(k, *spatial)`` float32 of ``image_ids``.

    Shards are written atomically as they are computed, so a run killed mid-method keeps
    its finished shards; :func:`finish_maps` marks the entry complete.
    """
    path = shard_path(root, key, index)
    atomic_write(path, lambda tmp: _savez(tmp, image_ids=np.asarray(image_ids, dtype=str),
                                          maps=maps))
    return path


def load_map_shard(root: Path, key: str, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    path = shard_path(root, key, index)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return data["image_ids"], data["maps"]


def finish_maps(root: Path, key: str, n_shards: int, n_images: int) -> None:
    write_json({"n_shards": n_shards, "n_images": n_images}, _shard_dir(root, key) / _DONE)


def maps_complete(root: Path, key: str) -> bool:
    """Whether an entry is fully cached (one file, or shards marked complete)."""
    return (Path(root) / MAPS / f"{key}.npz").exists() or (_shard_dir(root, key) / _DONE).exists()


def iter_maps(root: Path, key: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image_ids, maps)`` of a complete entry, one shard at a time."""
    single = Path(root) / MAPS / f"{key}.npz"
    if single.exists():
        with np.load(single, allow_pickle=False) as data:
            yield data["image_ids"], data["maps"]
        return
    for i in range(_n_shards(root, key)):
        shard = load_map_shard(root, key, i)
        if shard is None:
            raise BenchError(f"map cache {key}: shard {i} is missing; rerun to recompute it")
        yield shard


def iter_map_ids(root: Path, key: str) -> Iterator[np.ndarray]:
    """The image ids of a complete entry, shard by shard, without reading the maps (an
    ``.npz`` member is read only when accessed)."""
    single = Path(root) / MAPS / f"{key}.npz"
    paths = [single] if single.exists() else [
        shard_path(root, key, i) for i in range(_n_shards(root, key))]
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            yield data["image_ids"]


def _n_shards(root: Path, key: str) -> int:
    with open(_shard_dir(root, key) / _DONE) as fh:
        return int(json.load(fh)["n_shards"])


def load_maps(root: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(image_ids, maps)`` of a complete cached entry, or None when it is absent."""
    if not maps_complete(root, key):
        return None
    parts = list(iter_maps(root, key))
    return (np.concatenate([ids for ids, _ in parts]),
            np.concatenate([m for _, m in parts]))


@dataclass
class Run:
    """An opened run directory; tables are read lazily and cached."""

    path: Path
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: Any) -> Run:
        path = Path(path)
        if not (path / CONFIG).exists():
            raise BenchError(f"{path}: not a run directory (no {CONFIG})")
        return cls(path)

    def _table(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            self._cache[name] = pd.read_parquet(self.path / name)
        return self._cache[name]

    @property
    def config(self) -> dict[str, Any]:
        with open(self.path / CONFIG) as fh:
            return dict(yaml.safe_load(fh))

    @property
    def provenance(self) -> dict[str, Any]:
        with open(self.path / PROVENANCE) as fh:
            return dict(json.load(fh))

    @property
    def predictions(self) -> pd.DataFrame:
        return self._table(PREDICTIONS)

    @property
    def scores(self) -> pd.DataFrame:
        return self._table(SCORES)

    @property
    def summary(self) -> pd.DataFrame:
        return self._table(SUMMARY)

    @property
    def classification(self) -> pd.DataFrame:
        return self._table(CLASSIFICATION)

    @property
    def comparisons(self) -> pd.DataFrame:
        """Paired differences of methods within models and models within methods."""
        return self._table(COMPARISONS)

    @property
    def omnibus(self) -> pd.DataFrame:
        """Friedman test and Nemenyi critical difference over methods within each model."""
        return self._table(OMNIBUS)

    @property
    def human_scores(self) -> pd.DataFrame:
        """Each annotator's per-image scores against the others' reference."""
        return self._optional(HUMAN_SCORES)

    @property
    def human(self) -> pd.DataFrame:
        """The human benchmark: per annotator (and ``all``) estimates with intervals."""
        return self._optional(HUMAN)

    @property
    def mixed(self) -> pd.DataFrame:
        """Mixed-model sensitivity table: method effects with a random case intercept."""
        return self._optional(MIXED)

    @property
    def correlation(self) -> pd.DataFrame:
        """Spearman rho of model probability and each metric, with case-bootstrap interval."""
        return self._optional(CORRELATION)

    @property
    def curves(self) -> pd.DataFrame:
        """Threshold curves: median over cases at each threshold, with interval."""
        return self._optional(CURVES)

    @property
    def sanity(self) -> pd.DataFrame:
        """Cascading-randomisation curves per model x method, empty when not run."""
        return self._optional(SANITY)

    @property
    def sanity_verdicts(self) -> pd.DataFrame:
        """Randomisation-check verdicts per model x method x similarity."""
        return self._optional(SANITY_VERDICTS)

    @property
    def faithfulness_summary(self) -> pd.DataFrame:
        """Deletion/insertion areas and gains over random order, with intervals."""
        return self._optional(FAITHFULNESS_SUMMARY)

    @property
    def region_deletion_summary(self) -> pd.DataFrame:
        """The model's output drop when findings / outside are deleted, with intervals."""
        return self._optional(REGION_DELETION_SUMMARY)

    @property
    def regression(self) -> pd.DataFrame:
        """Paired comparison with a baseline run (``bench compare``), empty when absent."""
        return self._optional(REGRESSION)

    def _optional(self, name: str) -> pd.DataFrame:
        """A table that runs of older versions may lack: empty frame if absent."""
        if not (self.path / name).exists():
            return pd.DataFrame()
        return self._table(name)

    @property
    def thresholds(self) -> pd.DataFrame:
        """Tuned thresholds (``@tuned`` metrics), empty when the run used none."""
        if not (self.path / THRESHOLDS).exists():
            return pd.DataFrame(columns=THRESHOLDS_COLUMNS)
        return self._table(THRESHOLDS)

    @property
    def map_index(self) -> dict[str, str]:
        """``"model/method" -> cache key`` of the maps this run computed."""
        path = self.path / MAPS / "index.json"
        if not path.exists():
            return {}
        with open(path) as fh:
            return dict(json.load(fh))

    def maps(self, model: str, method: str) -> tuple[np.ndarray, np.ndarray]:
        """``(image_ids, maps)`` of one model x method, from the cache."""
        key = self.map_index.get(f"{model}/{method}")
        loaded = None if key is None else load_maps(self.path, key)
        if loaded is None:
            raise BenchError(
                f"no cached maps for model {model!r}, method {method!r} in {self.path}"
            )
        return loaded

    @property
    def report_html(self) -> Path:
        return self.path / REPORT_HTML
