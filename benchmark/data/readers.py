"""Readers: image and mask files on disk -> numpy arrays with voxel spacing.

One reader per format, chosen by suffix (or by ``kind``), behind :func:`read_image` and
:func:`read_mask`. Every problem with a file is a :class:`ReaderError` whose message is
one line naming the file and what is wrong.

Axis conventions (``Volume.array`` and ``Volume.spacing`` share them):

- 2D arrays are ``(H, W)`` = (rows, columns); 3D arrays are ``(D, H, W)``.
- ``.npy``, PNG, JPEG: the array as stored, spacing 1.0 per axis (the files carry none).
- NIfTI: reoriented to the closest canonical RAS+ orientation
  (:func:`nibabel.as_closest_canonical`), then transposed so that the axes are
  ``(D, H, W) = (z, y, x)``: slice index increases inferior -> superior, row index
  posterior -> anterior, column index patient left -> right. Spacing is the header's
  zooms in the same ``(z, y, x)`` order. Length-1 axes are dropped, so a 2D NIfTI or a
  3D one with a single slice gives a 2D array.
- DICOM: pixels in stored order (rows, columns), spacing from PixelSpacing (row, column).
  A directory is one series: slices sorted along the slice normal (ImagePositionPatient
  projected on the cross product of the ImageOrientationPatient row and column
  directions, increasing), spacing ``(slice gap, row, column)``.

A NIfTI and a DICOM copy of the same axial scan therefore differ by a flip of H and W
(canonical RAS+ versus the DICOM pixel grid, usually patient LPS): give an image and its
masks in the same format.
"""

from __future__ import annotations

import re
import struct
import tokenize
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import OrientationError
from nibabel.spatialimages import HeaderDataError
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import apply_modality_lut

from benchmark.errors import BenchError

#: File suffix (lower case) -> reader kind. A directory is read as a DICOM series.
SUFFIXES = {
    ".npy": "npy",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".dcm": "dicom",
}
KINDS = ("npy", "png", "jpeg", "nifti", "dicom")
#: Largest relative deviation of a DICOM series' slice gaps from their mean.
SLICE_GAP_RTOL = 0.01
_NPY_MAGIC = b"\x93NUMPY"
_MAX_DETAIL = 160

# What each library raises for a file it cannot parse: its own classes, and the standard
# library's errors through which truncated or damaged files surface.
_DAMAGED = (OSError, ValueError, EOFError, OverflowError, struct.error, zlib.error)
_NPY_ERRORS = (SyntaxError, tokenize.TokenError, *_DAMAGED)  # header parsed as a literal
_PIL_ERRORS = (UnidentifiedImageError, SyntaxError, Image.DecompressionBombError, *_DAMAGED)
_NIFTI_ERRORS = (ImageFileError, HeaderDataError, *_DAMAGED)
_DICOM_ERRORS = (
    InvalidDicomError, BytesLengthException, KeyError, IndexError, TypeError, AttributeError,
    NotImplementedError, RuntimeError, *_DAMAGED,
)  # fmt: skip


class ReaderError(BenchError):
    """A file that cannot be read as an image or mask; the message is one line naming it."""


@dataclass(frozen=True)
class Volume:
    """An image or mask read from disk.

    Attributes
    ----------
    array : ndarray, shape (H, W) or (D, H, W)
        float32 for images (:func:`read_image`), bool for masks (:func:`read_mask`).
    spacing : tuple of float, length ``array.ndim``
        Voxel size in mm along each array axis, in the array's axis order.
    source : str
        The path read, for messages.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    source: str


def read_image(path: str | Path, *, kind: str | None = None) -> Volume:
    """Read a 2D or 3D greyscale image.

    Parameters
    ----------
    path : str or Path
        A ``.npy``, ``.png``, ``.jpg``/``.jpeg``, ``.nii``/``.nii.gz`` or ``.dcm`` file
        (suffixes in any case), or a directory holding one DICOM series.
    kind : {"npy", "png", "jpeg", "nifti", "dicom"}, optional
        Reader to use instead of the one the suffix names (e.g. for DICOM files without
        ``.dcm``). NIfTI files still need a ``.nii`` or ``.nii.gz`` name.

    Returns
    -------
    Volume
        ``array`` float32, shape (H, W) or (D, H, W) (axis conventions: module docstring).
        DICOM values are modality values (HU for CT); 16-bit PNG keeps its integer values.

    Raises
    ------
    ReaderError
        Missing or unreadable file, unknown suffix or kind, colour image, NaN or inf,
        empty array, not 2 or 3 dimensions.
    """
    raw, _ = _read(path, kind)
    image = raw.array.astype(np.float32)
    n_bad = image.size - np.count_nonzero(np.isfinite(image))
    if n_bad:
        raise _error(raw.source, f"image contains NaN or inf ({n_bad} of {image.size} voxels)")
    return Volume(image, raw.spacing, raw.source)


def read_mask(path: str | Path, *, kind: str | None = None) -> Volume:
    """Read a 2D or 3D binary mask.

    Parameters
    ----------
    path : str or Path
        As for :func:`read_image`.
    kind : str, optional
        As for :func:`read_image`.

    Returns
    -------
    Volume
        ``array`` bool, shape (H, W) or (D, H, W).

    Raises
    ------
    ReaderError
        As for :func:`read_image`, and when a value is not 0 or 1 (8-bit PNG and JPEG
        masks may use 0 and 255 instead).
    """
    raw, kind = _read(path, kind)
    values = raw.array
    if kind in ("png", "jpeg") and values.dtype == np.uint8 and _only(values, (0, 255)):
        values = values == 255
    if not _only(values, (0, 1)):
        bad = np.setdiff1d(np.unique(values), [0, 1])[0]
        hint = "; JPEG is lossy, save masks as PNG" if kind == "jpeg" else ""
        raise _error(None, f"mask {raw.source} has values other than 0/1: e.g. {bad:g}{hint}")
    return Volume(values.astype(bool), raw.spacing, raw.source)


def _read(path: str | Path, kind: str | None) -> tuple[Volume, str]:
    """The file's array in its stored dtype with its spacing, checked; and the kind used."""
    path = Path(path)
    if not path.exists():
        raise _error(path, "no such file or directory")
    kind = _resolve_kind(path, kind)
    if path.is_dir() and kind != "dicom":
        raise _error(path, f"is a directory; only a DICOM series is read from one, not {kind!r}")
    volume = _read_dicom_series(path) if path.is_dir() else _READERS[kind](path)
    return _checked(volume), kind


def _resolve_kind(path: Path, kind: str | None) -> str:
    """``kind`` if given (and valid), else the kind its suffix names ('dicom' for a directory)."""
    if kind is not None:
        if kind not in KINDS:
            raise _error(path, f"unknown reader kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        return kind
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    suffix = "".join(path.suffixes) or "(none)"
    raise _error(
        path,
        f"unknown file type {suffix}; supported: {', '.join(sorted(SUFFIXES))} "
        "or a directory of DICOM files (or pass kind=)",
    )


def _checked(volume: Volume) -> Volume:
    """``volume`` if its array is a non-empty 2D or 3D array of numbers with valid spacing."""
    array, source = volume.array, volume.source
    if array.ndim not in (2, 3):
        raise _error(
            source,
            f"has {array.ndim} dimensions (shape {array.shape}); expected 2 (H, W) or 3 (D, H, W)",
        )
    if array.size == 0:
        raise _error(source, f"is empty (shape {array.shape})")
    if array.dtype.kind not in "buif":
        raise _error(source, f"has values of type {array.dtype}; expected real numbers")
    spacing = np.asarray(volume.spacing, dtype=float)
    if len(spacing) != array.ndim or not (np.isfinite(spacing) & (spacing > 0)).all():
        raise _error(source, f"has invalid voxel spacing {volume.spacing} for shape {array.shape}")
    return volume


# --- one reader per kind -------------------------------------------------------------


def _read_npy(path: Path) -> Volume:
    """A ``.npy`` array as stored; spacing 1.0 per axis."""
    with path.open("rb") as f:
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise _error(path, "not a .npy file (no NUMPY header)")
    try:  # memory-mapped first, so a damaged header cannot ask for a huge allocation
        array = np.array(np.load(path, mmap_mode="r", allow_pickle=False))
    except _NPY_ERRORS as err:
        raise _error(path, f"not a readable .npy file ({_detail(err)})") from None
    return Volume(array, (1.0,) * array.ndim, str(path))


def _read_raster(path: Path) -> Volume:
    """A PNG or JPEG as a greyscale (H, W) array; spacing (1.0, 1.0).

    8-bit images give uint8, 16-bit PNG uint16, 1-bit bool. RGB(A) and palette images are
    accepted when red, green and blue are equal everywhere (alpha is ignored).
    """
    try:
        with Image.open(path) as img:
            img.load()
            array = _greyscale(img, path)
    except ReaderError:
        raise
    except _PIL_ERRORS as err:
        raise _error(path, f"not a readable image ({_detail(err)})") from None
    return Volume(array, (1.0, 1.0), str(path))


def _greyscale(img: Image.Image, path: Path) -> np.ndarray:
    """The single greyscale channel of ``img``, shape (H, W); ReaderError for colour."""
    if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
        return np.asarray(img)
    if img.mode == "LA":
        return np.asarray(img.getchannel("L"))
    rgb = np.asarray(img.convert("RGB"))
    if (rgb[..., 1:] != rgb[..., :1]).any():
        raise _error(path, f"colour image (mode {img.mode}, channels differ); save it as greyscale")
    return rgb[..., 0]


def _read_nifti(path: Path) -> Volume:
    """A NIfTI image in canonical RAS+ orientation, axes (z, y, x); see the module docstring."""
    try:
        image = nib.as_closest_canonical(nib.load(path))
        data = image.get_fdata(dtype=np.float32)
        zooms = tuple(float(z) for z in image.header.get_zooms())
    except OrientationError:
        raise _error(path, "NIfTI affine is degenerate; cannot reorient to RAS+") from None
    except _NIFTI_ERRORS as err:
        raise _error(path, f"not a readable NIfTI file ({_detail(err)})") from None
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])  # e.g. (x, y, z, 1) from some converters
    if data.ndim not in (2, 3) or len(zooms) < data.ndim:
        return Volume(data, zooms, str(path))  # _checked names the problem
    array, spacing = data.T, zooms[: data.ndim][::-1]  # (x, y[, z]) -> ([z,] y, x)
    keep = [n != 1 for n in array.shape] if array.ndim == 3 else [True, True]
    shape = [n for n, k in zip(array.shape, keep, strict=True) if k]
    spacing = tuple(s for s, k in zip(spacing, keep, strict=True) if k)
    return Volume(np.ascontiguousarray(array.reshape(shape)), spacing, str(path))


def _read_dicom_file(path: Path) -> Volume:
    """One single-frame DICOM image: (rows, columns) in modality units, spacing (row, col)."""
    ds = _dcmread(path)
    return Volume(_dicom_pixels(ds, path), _slice_info(ds, path).spacing, str(path))


_READERS: dict[str, Callable[[Path], Volume]] = {
    "npy": _read_npy,
    "png": _read_raster,
    "jpeg": _read_raster,
    "nifti": _read_nifti,
    "dicom": _read_dicom_file,
}


# --- DICOM ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _SliceInfo:
    """The header fields of one DICOM slice that placing it in a series needs."""

    path: Path
    series: str
    shape: tuple[int, int]  # (Rows, Columns)
    spacing: tuple[float, float]  # (row, column) mm
    position: np.ndarray | None  # ImagePositionPatient, shape (3,)
    orientation: np.ndarray | None  # ImageOrientationPatient, shape (6,)
    instance: int | None
    thickness: float | None  # SpacingBetweenSlices, else SliceThickness


def _dcmread(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:  # pydicom's message suggests a force=True we do not offer
        raise _error(path, "not a DICOM file (no header with the 'DICM' prefix)") from None
    except _DICOM_ERRORS as err:
        raise _error(path, f"not a readable DICOM file ({_detail(err)})") from None


def _dicom_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """The pixel data of a single-frame greyscale dataset, modality LUT applied; (rows, cols)."""
    try:
        frames, samples = int(ds.get("NumberOfFrames") or 1), int(ds.get("SamplesPerPixel") or 1)
        if frames == 1 and samples == 1:
            return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    except _DICOM_ERRORS as err:
        raise _error(path, f"DICOM pixel data cannot be decoded ({_detail(err)})") from None
    if frames > 1:
        raise _error(path, f"multi-frame DICOM ({frames} frames) is not supported yet")
    raise _error(path, f"colour image (SamplesPerPixel {samples}); expected greyscale")


def _slice_info(ds: Dataset, path: Path) -> _SliceInfo:
    """The fields of :class:`_SliceInfo`; pixel spacing (1.0, 1.0) when the file has none."""

    def numbers(*keywords: str) -> np.ndarray | None:
        for keyword in keywords:
            value = ds.get(keyword)
            if value not in (None, ""):
                return np.atleast_1d(np.asarray(value, dtype=float))
        return None

    try:
        spacing = numbers("PixelSpacing", "ImagerPixelSpacing")
        thickness = numbers("SpacingBetweenSlices", "SliceThickness")
        info = _SliceInfo(
            path=path,
            series=str(ds.get("SeriesInstanceUID", "")),
            shape=(int(ds.Rows), int(ds.Columns)),
            spacing=(1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1])),
            position=numbers("ImagePositionPatient"),
            orientation=numbers("ImageOrientationPatient"),
            instance=None if ds.get("InstanceNumber") in (None, "") else int(ds.InstanceNumber),
            thickness=None if thickness is None else float(thickness[0]),
        )
    except _DICOM_ERRORS as err:
        raise _error(path, f"invalid DICOM header ({_detail(err)})") from None
    for name, value, n in (("ImagePositionPatient", info.position, 3),
                           ("ImageOrientationPatient", info.orientation, 6)):  # fmt: skip
        if value is not None and value.shape != (n,):
            raise _error(path, f"DICOM {name} has {value.size} values; expected {n}")
    return info


def _read_dicom_series(directory: Path) -> Volume:
    """The DICOM series in ``directory``: (D, H, W), spacing (slice gap, row, column).

    The series is the directory's ``.dcm`` files, or all its visible files (but DICOMDIR)
    when none ends in ``.dcm``. A series of one slice gives a 2D (H, W) volume.
    """
    files = sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )  # fmt: skip
    files = [p for p in files if p.suffix.lower() == ".dcm"] or files
    if not files:
        raise _error(directory, "directory holds no DICOM files")
    datasets = [_dcmread(f) for f in files]
    infos = [_slice_info(ds, f) for ds, f in zip(datasets, files, strict=True)]
    _check_one_series(infos, directory)
    order, gap = _slice_order(infos, directory)
    array = np.stack([_dicom_pixels(datasets[i], files[i]) for i in order])
    if len(order) == 1:
        return Volume(array[0], infos[0].spacing, str(directory))
    return Volume(array, (gap, *infos[0].spacing), str(directory))


def _check_one_series(infos: list[_SliceInfo], directory: Path) -> None:
    """ReaderError unless all slices share series, size, pixel spacing and orientation."""
    if len({i.series for i in infos}) > 1:
        raise _error(
            directory,
            f"holds {len({i.series for i in infos})} DICOM series (SeriesInstanceUID differs); "
            "put each series in its own directory",
        )
    first = infos[0]
    for info in infos[1:]:
        if (info.shape, info.spacing) != (first.shape, first.spacing):
            raise _error(
                directory,
                f"slice {info.path.name} differs from {first.path.name} in Rows/Columns "
                f"{info.shape} vs {first.shape} or PixelSpacing {info.spacing} vs {first.spacing}",
            )
        a, b = info.orientation, first.orientation
        if not (a is None and b is None or a is not None and b is not None and _close(a, b)):
            raise _error(
                directory,
                f"slice {info.path.name} differs from {first.path.name} in ImageOrientationPatient",
            )


def _slice_order(infos: list[_SliceInfo], directory: Path) -> tuple[list[int], float]:
    """Slice order (indices into ``infos``) and the slice gap in mm.

    Slices are sorted by ImagePositionPatient projected on the slice normal; each gap
    between neighbours must be within :data:`SLICE_GAP_RTOL` of their mean. Slices
    without position or orientation are ordered by InstanceNumber, and the gap is then
    SpacingBetweenSlices, else SliceThickness, else 1.0.
    """
    orientation = infos[0].orientation
    positions = [i.position for i in infos if i.position is not None]
    if orientation is None or len(positions) < len(infos):
        return _instance_order(infos, directory)
    normal = np.cross(orientation[:3], orientation[3:])
    along = np.array([np.dot(p, normal) for p in positions])
    order = [int(k) for k in np.argsort(along, kind="stable")]
    gaps = np.diff(along[order])
    if len(gaps) == 0:
        return order, infos[0].thickness or 1.0
    gap = float(gaps.mean())
    if gaps.min() <= 1e-6 * max(1.0, abs(gap)):
        raise _error(directory, "DICOM series has two slices at the same position")
    if np.abs(gaps - gap).max() > SLICE_GAP_RTOL * gap:
        raise _error(
            directory,
            f"DICOM series is unevenly spaced: slice gaps from {gaps.min():.4g} to "
            f"{gaps.max():.4g} mm (tolerance {SLICE_GAP_RTOL:.0%}); are slices missing?",
        )
    return order, gap


def _instance_order(infos: list[_SliceInfo], directory: Path) -> tuple[list[int], float]:
    """Order by InstanceNumber, for slices without ImagePositionPatient/Orientation."""
    numbers = [i.instance for i in infos]
    if None in numbers or len(set(numbers)) < len(numbers):
        raise _error(
            directory,
            "cannot order the DICOM slices: no ImagePositionPatient/ImageOrientationPatient "
            "and no distinct InstanceNumber",
        )
    order = sorted(range(len(infos)), key=lambda k: numbers[k] or 0)
    return order, infos[0].thickness or 1.0


# --- helpers -------------------------------------------------------------------------


def _only(values: np.ndarray, allowed: tuple[int, int]) -> bool:
    """Whether every element of ``values`` is one of ``allowed``."""
    return bool(np.isin(values, allowed).all())


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ImageOrientationPatient vectors agree (direction cosines, to 1e-3)."""
    return bool(np.allclose(a, b, atol=1e-3))


def _detail(err: BaseException) -> str:
    """The library's message for ``err``, shortened for a one-line error."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _error(source: str | Path | None, problem: str) -> ReaderError:
    """A ReaderError ``"<source>: <problem>"``, on one line (line breaks become spaces)."""
    message = problem if source is None else f"{source}: {problem}"
    return ReaderError(re.sub(r"\s*[\r\n]+\s*", " ", message))
