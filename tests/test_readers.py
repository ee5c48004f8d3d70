"""Readers: files written here with numpy, Pillow, nibabel and pydicom, then read back.

Expected arrays and spacings come from how each file was built (or from nibabel itself),
never from the reader under test.
"""

from __future__ import annotations

import functools
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from benchmark.data.readers import ReaderError, Volume, read_image, read_mask
from benchmark.errors import BenchError

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
Reader = Callable[..., Volume]


def reader_error(read: Reader, path: Path, match: str, **kwargs: str) -> str:
    """The message of the ReaderError ``read(path)`` raises, checked to be one line naming
    ``path`` and matching ``match``."""
    with pytest.raises(ReaderError, match=match) as info:
        read(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message, message
    return message


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    position: Sequence[float] | None = None,
    orientation: Sequence[float] = AXIAL,
    spacing: Sequence[float] = (0.7, 0.8),
    slope: float = 1.0,
    intercept: float = 0.0,
    instance: int | None = None,
    thickness: float | None = None,
    series: str = "1.2.826.0.1.3680043.2.1143.1",
    syntax: UID = ExplicitVRLittleEndian,
) -> None:
    """A minimal CT slice: int16 ``pixels`` (rows, columns) and the given geometry."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = list(spacing)
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    if instance is not None:
        ds.InstanceNumber = instance
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def stored_slices(n: int, shape: tuple[int, int] = (6, 5), seed: int = 0) -> np.ndarray:
    """``n`` distinct int16 slices, shape (n, *shape)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-500, 1500, size=(n, *shape)).astype(np.int16)


def write_series(
    directory: Path,
    stored: np.ndarray,
    positions: Sequence[Sequence[float]],
    *,
    orientation: Sequence[float] = AXIAL,
    seed: int = 1,
) -> None:
    """Slice k of ``stored`` at ``positions[k]``, files written in shuffled order under
    names unrelated to the position."""
    directory.mkdir()
    order = list(range(len(stored)))
    random.Random(seed).shuffle(order)
    for name, k in enumerate(order):
        write_dicom(
            directory / f"IM{name:04d}.dcm", stored[k], position=positions[k],
            orientation=orientation, slope=2.0, intercept=-1024.0, instance=name + 1,
        )  # fmt: skip


# --- npy ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 9), (3, 7, 9)])
def test_npy_round_trip_as_float32_with_unit_spacing(tmp_path: Path, shape: tuple[int, ...]):
    array = np.arange(np.prod(shape), dtype=np.int16).reshape(shape) - 50
    np.save(tmp_path / "a.npy", array)
    volume = read_image(tmp_path / "a.npy")
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array)
    assert volume.spacing == (1.0,) * len(shape)
    assert volume.source == str(tmp_path / "a.npy")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npy_image_with_nan_or_inf_is_refused(tmp_path: Path, bad: float):
    array = np.zeros((4, 4), np.float32)
    array[1, 2] = bad
    np.save(tmp_path / "a.npy", array)
    reader_error(read_image, tmp_path / "a.npy", "contains NaN or inf")


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5)])
def test_npy_with_wrong_number_of_dimensions_is_refused(tmp_path: Path, shape: tuple[int, ...]):
    np.save(tmp_path / "a.npy", np.zeros(shape))
    reader_error(read_image, tmp_path / "a.npy", f"has {len(shape)} dimensions")


def test_empty_npy_is_refused(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.zeros((0, 5)))
    reader_error(read_image, tmp_path / "a.npy", "is empty")


def test_empty_nifti_is_refused(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.zeros((3, 0, 4), np.float32), np.eye(4)), tmp_path / "a.nii")
    reader_error(read_image, tmp_path / "a.nii", "is empty")


def test_npy_with_pickled_objects_is_refused_not_unpickled(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    reader_error(read_image, tmp_path / "a.npy", "not a readable .npy")


def test_npz_archive_named_npy_is_refused(tmp_path: Path):
    with (tmp_path / "a.npy").open("wb") as f:
        np.savez(f, x=np.zeros((3, 3)))
    reader_error(read_image, tmp_path / "a.npy", "not a .npy file")


# --- PNG and JPEG ------------------------------------------------------------------


def test_png_8bit_reads_its_values(tmp_path: Path):
    array = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    Image.fromarray(array).save(tmp_path / "a.png")
    volume = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))
    assert volume.spacing == (1.0, 1.0)


def test_png_16bit_keeps_its_integer_values(tmp_path: Path):
    array = np.array([[0, 1, 300], [4095, 40000, 65535]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")  # really a 16-bit file
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").array, array)


def test_rgb_png_with_equal_channels_reads_as_greyscale(tmp_path: Path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png").array, grey)


def test_colour_png_is_refused(tmp_path: Path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 1] = (200, 10, 10)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    reader_error(read_image, tmp_path / "a.png", "colour image")


def test_greyscale_jpeg_is_read(tmp_path: Path):
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "a.JPG")
    volume = read_image(tmp_path / "a.JPG")
    assert volume.array.shape == (8, 8)
    np.testing.assert_allclose(volume.array, 100, atol=2)  # lossy, but flat stays flat


# --- NIfTI -------------------------------------------------------------------------


def test_nifti_is_canonical_ras_with_axes_and_spacing_in_zyx_order(tmp_path: Path):
    # voxel axis i runs right -> left (x flipped, 0.7 mm), j runs along z (2.5 mm),
    # k along y (0.8 mm): far from canonical.
    affine = np.array(
        [[-0.7, 0, 0, 10], [0, 0, 0.8, -5], [0, 2.5, 0, 3], [0, 0, 0, 1]], dtype=float
    )
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "a.nii.gz")

    volume = read_image(tmp_path / "a.nii.gz")

    # By hand: canonical (x, y, z) = (flip i, k, j); the reader's axes are (z, y, x).
    by_hand = np.flip(data, axis=0).transpose(1, 2, 0)  # (j, k, i) = (z, y, x)
    np.testing.assert_array_equal(volume.array, by_hand)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.7))
    # And nibabel's own reorientation, taken independently of the reader.
    ornt = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.apply_orientation(data, ornt)  # (x, y, z)
    np.testing.assert_array_equal(volume.array, canonical.transpose(2, 1, 0))


def test_nifti_3d_with_one_slice_reads_as_2d_yx(tmp_path: Path):
    data = np.arange(12, dtype=np.float32).reshape(4, 3, 1)  # (x, y, z)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.6, 3.0, 1.0])), tmp_path / "a.nii")
    volume = read_image(tmp_path / "a.nii")
    np.testing.assert_array_equal(volume.array, data[:, :, 0].T)
    assert volume.spacing == pytest.approx((0.6, 0.5))


def test_nifti_with_a_degenerate_affine_is_refused(tmp_path: Path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 2] = 0.0  # the third voxel axis points nowhere
    image = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    image.header.set_sform(affine, code=1)  # nibabel refuses it as the image's affine
    nib.save(image, tmp_path / "a.nii")
    np.testing.assert_array_equal(nib.load(tmp_path / "a.nii").affine, affine)
    reader_error(read_image, tmp_path / "a.nii", "degenerate")


def test_nifti_with_a_4th_dimension_is_refused(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), tmp_path / "a.nii")
    reader_error(read_image, tmp_path / "a.nii", "has 4 dimensions")


# --- DICOM -------------------------------------------------------------------------


def test_dicom_series_is_sorted_by_position_in_hu_with_spacing(tmp_path: Path):
    stored = stored_slices(5)
    positions = [(-20.0, -30.0, 100.0 + 2.5 * k) for k in range(5)]
    write_series(tmp_path / "ct", stored, positions)

    volume = read_image(tmp_path / "ct")

    np.testing.assert_array_equal(volume.array, stored.astype(np.float32) * 2.0 - 1024.0)
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert volume.source == str(tmp_path / "ct")


def test_dicom_series_is_sorted_along_the_slice_normal_not_z(tmp_path: Path):
    # Sagittal slices: rows along +y, columns along -z, normal = y x (-z) = -x, so the
    # slice order runs from high x to low x.
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    stored = stored_slices(4)
    positions = [(30.0 - 1.5 * k, 0.0, 0.0) for k in range(4)]
    write_series(tmp_path / "sag", stored, positions, orientation=sagittal)
    volume = read_image(tmp_path / "sag")
    np.testing.assert_array_equal(volume.array, stored * 2.0 - 1024.0)
    assert volume.spacing[0] == pytest.approx(1.5)


def test_dicom_series_without_positions_is_ordered_by_instance_number(tmp_path: Path):
    stored = stored_slices(3)
    (tmp_path / "ct").mkdir()
    for name, k in enumerate([2, 0, 1]):
        write_dicom(tmp_path / "ct" / f"{name}.dcm", stored[k], instance=k + 1, thickness=3.0)
    volume = read_image(tmp_path / "ct")
    np.testing.assert_array_equal(volume.array, stored)
    assert volume.spacing == pytest.approx((3.0, 0.7, 0.8))


def test_unevenly_spaced_dicom_series_is_refused(tmp_path: Path):
    positions = [(0.0, 0.0, z) for z in (0.0, 2.5, 5.0, 10.0)]  # one slice missing
    write_series(tmp_path / "ct", stored_slices(4), positions)
    reader_error(read_image, tmp_path / "ct", "unevenly spaced")


def test_dicom_series_with_two_slices_at_one_position_is_refused(tmp_path: Path):
    positions = [(0.0, 0.0, z) for z in (0.0, 2.5, 2.5, 5.0)]
    write_series(tmp_path / "ct", stored_slices(4), positions)
    reader_error(read_image, tmp_path / "ct", "two slices at the same position")


def test_dicom_series_with_mismatched_slice_sizes_is_refused(tmp_path: Path):
    (tmp_path / "ct").mkdir()
    write_dicom(tmp_path / "ct" / "a.dcm", stored_slices(1)[0], position=(0, 0, 0))
    write_dicom(tmp_path / "ct" / "b.dcm", stored_slices(1, (7, 5))[0], position=(0, 0, 1))
    reader_error(read_image, tmp_path / "ct", "differs from a.dcm in Rows/Columns")


def test_directory_with_two_dicom_series_is_refused(tmp_path: Path):
    (tmp_path / "ct").mkdir()
    write_dicom(tmp_path / "ct" / "a.dcm", stored_slices(1)[0], position=(0, 0, 0))
    write_dicom(tmp_path / "ct" / "b.dcm", stored_slices(1)[0], position=(0, 0, 1), series="9.9")
    reader_error(read_image, tmp_path / "ct", "holds 2 DICOM series")


def test_single_dicom_file_is_2d_in_hu_with_row_column_spacing(tmp_path: Path):
    stored = stored_slices(1)[0]
    write_dicom(
        tmp_path / "a.dcm", stored, spacing=(0.5, 0.9), slope=1.0, intercept=-1000.0,
        syntax=ImplicitVRLittleEndian,
    )  # fmt: skip
    volume = read_image(tmp_path / "a.dcm")
    np.testing.assert_array_equal(volume.array, stored.astype(np.float32) - 1000.0)
    assert volume.spacing == pytest.approx((0.5, 0.9))


def test_dicom_without_suffix_is_read_with_kind(tmp_path: Path):
    write_dicom(tmp_path / "IM0001", stored_slices(1)[0])
    reader_error(read_image, tmp_path / "IM0001", "unknown file type")
    assert read_image(tmp_path / "IM0001", kind="dicom").array.shape == (6, 5)


# --- masks -------------------------------------------------------------------------


def test_mask_of_0_and_1_reads_as_bool(tmp_path: Path):
    mask = np.array([[[0, 1], [1, 0]], [[1, 1], [0, 0]]], dtype=np.uint8)
    np.save(tmp_path / "m.npy", mask)
    volume = read_mask(tmp_path / "m.npy")
    assert volume.array.dtype == np.bool_
    np.testing.assert_array_equal(volume.array, mask == 1)


@pytest.mark.parametrize("on", [1, 255])
def test_8bit_png_mask_of_0_and_1_or_255_reads_as_bool(tmp_path: Path, on: int):
    mask = np.array([[0, on, on], [0, 0, on]], dtype=np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png").array, mask == on)


def test_mask_with_other_values_is_refused_naming_one(tmp_path: Path):
    np.save(tmp_path / "m.npy", np.array([[0.0, 0.5], [1.0, 1.0]]))
    message = reader_error(read_mask, tmp_path / "m.npy", "has values other than 0/1")
    assert message == f"mask {tmp_path / 'm.npy'} has values other than 0/1: e.g. 0.5"


def test_npy_mask_of_0_and_255_is_refused(tmp_path: Path):
    np.save(tmp_path / "m.npy", np.array([[0, 255]], dtype=np.uint8))
    reader_error(read_mask, tmp_path / "m.npy", "e.g. 255")


def test_lossy_jpeg_mask_is_refused_with_a_hint(tmp_path: Path):
    mask = np.zeros((16, 16), np.uint8)
    mask[3:11, 5:13] = 255
    Image.fromarray(mask).save(tmp_path / "m.jpg", quality=50)
    reader_error(read_mask, tmp_path / "m.jpg", "values other than 0/1.*save masks as PNG")


def test_nifti_mask_reads_in_the_image_orientation(tmp_path: Path):
    mask = np.zeros((3, 4, 2), np.uint8)
    mask[0, 1, 1] = 1
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])  # x flipped
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "m.nii.gz")
    volume = read_mask(tmp_path / "m.nii.gz")
    expected = np.flip(mask, axis=0).transpose(2, 1, 0) == 1
    np.testing.assert_array_equal(volume.array, expected)


# --- bad paths and damaged files ---------------------------------------------------


def test_missing_file_is_a_reader_error(tmp_path: Path):
    reader_error(read_image, tmp_path / "absent.png", "no such file")


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path):
    (tmp_path / "a.tif").write_bytes(b"II*\x00")
    message = reader_error(read_image, tmp_path / "a.tif", "unknown file type .tif")
    for suffix in (".npy", ".png", ".jpg", ".jpeg", ".nii", ".nii.gz", ".dcm"):
        assert suffix in message


def test_unknown_kind_lists_the_valid_ones(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    valid = "valid kinds: npy, png, jpeg, nifti, dicom"
    reader_error(read_image, tmp_path / "a.npy", valid, kind="tiff")


def test_reader_error_is_a_bench_error():
    assert issubclass(ReaderError, BenchError)


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii", "a.dcm", "a.png", "a.jpg", "a.npy"])
def test_random_bytes_are_a_reader_error_naming_the_file(tmp_path: Path, name: str):
    (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(600))
    reader_error(read_image, tmp_path / name, "not a")


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii", "a.dcm", "a.png", "a.npy"])
def test_truncated_files_are_a_reader_error(tmp_path: Path, name: str):
    data = valid_file(name)
    (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    reader_error(read_image, tmp_path / name, name)


# --- fuzz --------------------------------------------------------------------------

FUZZ_NAMES = ["a.png", "a.npy", "a.nii.gz", "a.nii", "a.dcm"]


@functools.cache
def valid_file(name: str) -> bytes:
    """The bytes of a small valid file called ``name``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        array = stored_slices(1, (12, 10))[0]
        if name.endswith(".png"):
            Image.fromarray((array % 256).astype(np.uint8)).save(path)
        elif name.endswith(".npy"):
            np.save(path, array)
        elif name.endswith((".nii", ".nii.gz")):
            nib.save(nib.Nifti1Image(array[None].astype(np.int16), np.eye(4)), path)
        else:
            write_dicom(path, array, position=(0, 0, 0))
        return path.read_bytes()


def read_or_reader_error(path: Path) -> None:
    """Read ``path``; anything but a Volume or a one-line ReaderError fails the test."""
    try:
        assert isinstance(read_image(path), Volume)
    except ReaderError as err:
        assert "\n" not in str(err) and str(path) in str(err)


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(FUZZ_NAMES), data=st.binary(max_size=2048))
def test_arbitrary_bytes_give_a_volume_or_a_reader_error(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        read_or_reader_error(path)


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(FUZZ_NAMES),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8),
)
def test_damaged_valid_files_give_a_volume_or_a_reader_error(
    name: str, cut: float, flips: list[tuple[float, int]]
):
    data = bytearray(valid_file(name))
    for where, byte in flips:
        data[int(where * (len(data) - 1))] = byte
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(bytes(data[: max(1, int(cut * len(data)))]))
        read_or_reader_error(path)


def test_valid_fuzz_seeds_read():
    # The damaged-file fuzz starts from files the readers accept.
    with tempfile.TemporaryDirectory() as tmp:
        for name in FUZZ_NAMES:
            (Path(tmp) / name).write_bytes(valid_file(name))
            assert read_image(Path(tmp) / name).array.size == 120
