"""``data_manifest.yaml``: the datasets known to the tool (schema version 1), validated.

The first entry is the embedded demo (``kind: phantom``): it says how to generate the
synthetic post-mortem CT phantom and lists the demo checkpoints with their sha256.
Datasets of files on disk are ``kind: files`` entries (:class:`FilesDataset`): a root
folder, an index table, mask path patterns per annotator, preprocessing, checkpoints.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from benchmark.demo.phantom import AIR, LUNG, PhantomSpec, SplitSpec
from benchmark.errors import BenchError
from benchmark.store import sha256_file

DEMO_CHECKPOINTS = Path(__file__).parent / "demo" / "checkpoints"
DEFAULT_MANIFEST = "data_manifest.yaml"
#: Confounder-label correlation of each demo model's training split.
DEMO_TRAIN_CONFOUNDER = {"clean": 0.5, "partial": 0.8, "shortcut": 1.0}


class ManifestError(BenchError):
    """A manifest that cannot be read or does not validate; the message is one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitEntry(_Strict):
    n_cases: Annotated[int, Field(ge=2)]
    confounder: Annotated[float, Field(ge=0.0, le=1.0)]


class GeneratorEntry(_Strict):
    seed: int = 2024
    image_size: Annotated[int, Field(ge=32, le=512)] = 64
    slices_per_case: Annotated[int, Field(ge=1, le=64)] = 6
    prevalence: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    hard_negative_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    pixel_spacing_mm: Annotated[float, Field(gt=0.0)] = 5.5
    splits: dict[str, SplitEntry]

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, v: dict[str, SplitEntry]) -> dict[str, SplitEntry]:
        allowed = ("train", "val", "test", "shifted")
        for name in v:
            if name not in allowed:
                raise ValueError(f"unknown split {name!r}; allowed: {', '.join(allowed)}")
        return v

    def to_spec(self) -> PhantomSpec:
        return PhantomSpec(
            seed=self.seed,
            image_size=self.image_size,
            slices_per_case=self.slices_per_case,
            prevalence=self.prevalence,
            hard_negative_fraction=self.hard_negative_fraction,
            pixel_spacing_mm=self.pixel_spacing_mm,
            splits=tuple((k, SplitSpec(s.n_cases, s.confounder)) for k, s in self.splits.items()),
        )


class ModelEntry(_Strict):
    """A checkpoint known to the manifest."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    path: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    factory: str | None = None
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)
    target_layer: str | None = None
    train_confounder: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    output: Literal["logits", "probabilities"] = "logits"
    target: Annotated[int, Field(ge=0)] | None = None
    description: str = ""

    def resolve_path(self, base: Path) -> Path:
        """``demo:NAME`` is a checkpoint shipped in the package; other paths are relative
        to the manifest's folder."""
        if self.path.startswith("demo:"):
            return DEMO_CHECKPOINTS / self.path.removeprefix("demo:")
        p = Path(self.path)
        return p if p.is_absolute() else base / p


#: What a deleted region becomes in the model-or-explainer check (``region_deletion``): a
#: value in the images' units, or ``mean`` / ``blur`` of the image.
RegionFills = dict[Literal["findings", "outside"], float | Literal["mean", "blur"]]


_PHANTOM_FILLS: RegionFills = {"findings": LUNG, "outside": AIR}


class PhantomDataset(_Strict):
    name: str
    kind: Literal["phantom"]
    description: str = ""
    generator: GeneratorEntry
    models: list[ModelEntry] = Field(default_factory=list)
    # Deleted findings become aerated lung, the outside of the body becomes air.
    deletion_fill: RegionFills = Field(default_factory=lambda: _PHANTOM_FILLS.copy())

    @property
    def split_names(self) -> list[str]:
        return list(self.generator.splits)


class Preprocessing(_Strict):
    """How stored intensities become the network input, and the common grid.

    ``window_hu`` clips to [low, high] and scales to [0, 1]; ``normalise`` then applies
    ``minmax`` (per image to [0, 1]), ``zscore`` (per image), ``fixed`` (``(x - mean) /
    std``) or ``none``. ``resize`` resamples every image (linear) and mask (nearest) to
    one grid, (H, W) or (D, H, W), and scales the spacing to match.
    """

    window_hu: tuple[float, float] | None = None
    normalise: Literal["none", "minmax", "zscore", "fixed"] = "none"
    mean: float | None = None
    std: Annotated[float, Field(gt=0.0)] | None = None
    resize: Annotated[list[Annotated[int, Field(ge=2, le=4096)]],
                      Field(min_length=2, max_length=3)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Preprocessing:
        if self.window_hu is not None and not self.window_hu[0] < self.window_hu[1]:
            raise ValueError(
                f"window_hu must be [low, high] with low < high, not {list(self.window_hu)}")
        if self.normalise == "fixed" and (self.mean is None or self.std is None):
            raise ValueError("normalise: fixed needs mean and std")
        return self


class FilesDataset(_Strict):
    """A dataset of image and mask files under ``root`` (see the README, "Bring your own
    data"). Paths in ``index`` and the patterns are relative to ``root`` and may not leave
    it; ``root`` itself is relative to the manifest's folder."""

    name: str
    kind: Literal["files"]
    description: str = ""
    root: str
    index: str
    annotations: Annotated[dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")], str],
                           Field(min_length=1)]
    graded: str | None = None
    roi: str | None = None
    classes: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: ["negative", "positive"])
    positive_class: str | None = None
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    deletion_fill: RegionFills = Field(default_factory=dict)
    sha256: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=dict)
    models: list[ModelEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _positive_known(self) -> FilesDataset:
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(
                f"positive_class {self.positive_class!r} is not one of classes {self.classes}")
        if len(set(self.classes)) != 2:
            raise ValueError(f"classes must be two different names, not {self.classes}")
        return self

    @property
    def positive(self) -> str:
        """The positive class name (default: the second of ``classes``)."""
        return self.positive_class or self.classes[1]

    def root_path(self, base: Path) -> Path:
        p = Path(self.root).expanduser()
        return p if p.is_absolute() else base / p


DatasetEntry = Annotated[PhantomDataset | FilesDataset, Field(discriminator="kind")]


class Manifest(_Strict):
    schema_version: Literal[1]
    datasets: Annotated[list[DatasetEntry], Field(min_length=1)]
    path: Path | None = None

    def dataset(self, name: str | None = None) -> PhantomDataset | FilesDataset:
        """The dataset called ``name`` (default: the first)."""
        if name is None:
            return self.datasets[0]
        for d in self.datasets:
            if d.name == name:
                return d
        names = [d.name for d in self.datasets]
        raise ManifestError(f"{self.path}: unknown dataset {name!r}; known: {', '.join(names)}")

    @property
    def base(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("phantom", "files"))


def _suggest(loc: tuple[int | str, ...]) -> str:
    """'did you mean' for a misspelled field, from the fields of the model at ``loc``."""
    key = str(loc[-1])
    fields: set[str] = set()
    for m in (Manifest, PhantomDataset, GeneratorEntry, ModelEntry, SplitEntry, FilesDataset,
              Preprocessing):
        fields |= set(m.model_fields)
    close = difflib.get_close_matches(key, sorted(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read and validate a manifest; ``None`` reads ``./data_manifest.yaml`` when present,
    else the built-in default (the demo phantom only).

    Raises
    ------
    ManifestError
        One line naming the file and the field that is wrong.
    """
    if path is None:
        if not Path(DEFAULT_MANIFEST).exists():
            return default_manifest()
        path = DEFAULT_MANIFEST
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ManifestError(f"{path}: cannot read manifest ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", err)
        problem = " ".join(str(problem).split())  # the YAML reader's messages span lines
        raise ManifestError(f"{path}:{where} malformed YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a mapping with schema_version and datasets")
    try:
        return Manifest.model_validate({**raw, "path": path})
    except ValidationError as err:
        # A misspelled field also shows up as a missing one; name the misspelling first.
        errors = sorted(err.errors(), key=lambda x: x["type"] != "extra_forbidden")
        e = errors[0]
        loc = tuple(e["loc"])
        hint = _suggest(loc) if e["type"] == "extra_forbidden" else ""
        raise ManifestError(f"{path}: {_field_path(loc)}: {e['msg']}{hint}") from None


def default_manifest() -> Manifest:
    """The demo entry built from the defaults in code (same content as the shipped file)."""
    spec = PhantomSpec()
    shas = {}
    sums = DEMO_CHECKPOINTS / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text().splitlines():
            sha, name = line.split()
            shas[name] = sha
    models = [
        ModelEntry(
            name=n, path=f"demo:{n}.pt", sha256=shas.get(f"{n}.pt"),
            factory="benchmark.demo.cnn:build", target_layer="features.6", train_confounder=c,
        )
        for n, c in DEMO_TRAIN_CONFOUNDER.items()
    ]
    gen = GeneratorEntry(
        seed=spec.seed, image_size=spec.image_size, slices_per_case=spec.slices_per_case,
        prevalence=spec.prevalence, hard_negative_fraction=spec.hard_negative_fraction,
        pixel_spacing_mm=spec.pixel_spacing_mm,
        splits={k: SplitEntry(n_cases=s.n_cases, confounder=s.confounder) for k, s in spec.splits},
    )
    return Manifest(
        schema_version=1,
        datasets=[
            PhantomDataset(name="pmct-phantom", kind="phantom", generator=gen, models=models)
        ],
    )


def verify_checkpoint(entry: ModelEntry, base: Path) -> Path:
    """Resolve a model entry's path and check its sha256 when the manifest gives one."""
    path = entry.resolve_path(base)
    if not path.exists():
        raise ManifestError(f"model {entry.name!r}: checkpoint file not found: {path}")
    if entry.sha256 is not None:
        got = sha256_file(path)
        if got != entry.sha256:
            raise ManifestError(
                f"model {entry.name!r}: checksum mismatch for {path} "
                f"(manifest {entry.sha256[:12]}..., file {got[:12]}...)"
            )
    return path
