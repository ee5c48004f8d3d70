"""The aligned input copies of ``compute`` reuse earlier calls' buffers, safely."""

from __future__ import annotations

import importlib
import threading

import jax
import numpy as np
import pytest

from benchmark.metrics import compute, compute_curve, fused, validate
from benchmark.metrics.compute import chunks

NAMES = ["pointing_game", "mass_accuracy", "auroc", "iou@top15", "dice@0.5"]


@pytest.fixture(autouse=True)
def _empty_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # Earlier tests in this process leave buffers in the pool; start from none.
    validate._pool.free = []
    # The buffers are the XLA kernel's: keep the region metrics on it (not metrics/fused).
    monkeypatch.setattr(fused, "available", lambda: False)


def _unaligned(x: np.ndarray) -> np.ndarray:
    """A float32 copy of ``x`` that starts 4 bytes past a 64-byte boundary."""
    raw = np.empty(x.size * 4 + 128, np.uint8)
    start = -raw.ctypes.data % 64 + 4
    out = raw[start : start + x.size * 4].view(np.float32).reshape(x.shape)
    out[...] = x
    return out


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sal = _unaligned(rng.normal(size=(12, 40, 40)))
    ref = _unaligned((rng.random((12, 40, 40)) < 0.2).astype(np.float32))
    return sal, ref


def test_later_calls_reuse_the_buffers_and_score_their_own_inputs(monkeypatch):
    first, second = _data(0), _data(1)
    # Without reuse (every buffer fresh) as the reference.
    monkeypatch.setattr(validate, "_KEEP_BYTES", 0)
    want = [compute(*first, NAMES), compute(*second, NAMES)]
    monkeypatch.undo()
    taken: list[int] = []
    real = validate._pool.take

    def spy(nbytes: int) -> np.ndarray:
        raw = real(nbytes)
        taken.append(raw.ctypes.data)
        return raw

    monkeypatch.setattr(validate._pool, "take", spy)
    got = [compute(*first, NAMES), compute(*second, NAMES), compute(*first, NAMES)]
    assert len(taken) == 6 and taken[2:4] == taken[:2] == taken[4:]  # the same two buffers
    for g, w in zip(got, [*want, want[0]], strict=True):
        for name in NAMES:
            np.testing.assert_array_equal(g[name], w[name], err_msg=name)
    # compute_curve leases the same pool: its columns equal compute's at each tau.
    curve = compute_curve(*second, "iou", [0.2, 0.5])
    np.testing.assert_array_equal(curve[:, 1], compute(*second, ["iou@0.5"])["iou@0.5"])
    compute(*first, NAMES)  # rewrites the pooled buffers; the curve is a copy
    np.testing.assert_array_equal(curve[:, 0], compute(*second, ["iou@0.2"])["iou@0.2"])


def test_a_call_that_fails_inside_the_block_drops_its_buffers():
    sal, ref = _data(2)
    bad = _unaligned(np.where(ref > 0, 0.5, 0.0))
    compute(sal, ref, NAMES)
    before = list(validate._pool.free)
    with pytest.raises(ValueError, match="reference image 0"):
        compute(sal, bad, NAMES)
    # The failed call leased the free buffers; its traceback may hold arrays that wrap
    # them, so they are not handed to a later call.
    assert validate._pool.lease is None
    assert not any(b is a for b in validate._pool.free for a in before)
    # A saliency map with NaN fails after the block, once nothing wraps the buffers.
    nan = sal.copy()
    nan[3, 0, 0] = np.nan
    compute(sal, ref, NAMES)
    with pytest.raises(ValueError, match="saliency image 3"):
        compute(nan, ref, NAMES)
    assert len(validate._pool.free) == 2


def test_buffers_are_per_thread():
    sal, ref = _data(3)
    compute(sal, ref, NAMES)
    seen: list[list[np.ndarray]] = []
    thread = threading.Thread(target=lambda: seen.append(list(validate._pool.free)))
    thread.start()
    thread.join()
    assert seen == [[]] and validate._pool.free


def test_large_inputs_are_not_kept(monkeypatch):
    monkeypatch.setattr(validate, "_KEEP_BYTES", 1000)
    compute(*_data(4), NAMES)
    assert validate._pool.free == []


def test_buffers_of_several_sizes_serve_the_smallest_fit():
    rng = np.random.default_rng(5)
    big = (_unaligned(rng.normal(size=(20, 64, 64))),
           _unaligned((rng.random((20, 64, 64)) < 0.3).astype(np.float32)))
    small = _data(6)
    want = compute(*small, NAMES)
    compute(*big, NAMES)
    sizes = sorted(b.size for b in validate._pool.free)
    assert len(sizes) == 4 and sizes[0] < sizes[2]  # two of each size
    np.testing.assert_array_equal(compute(*small, NAMES)["auroc"], want["auroc"])
    assert sorted(b.size for b in validate._pool.free) == sizes


def test_chunks_wrap_the_inputs_without_copies_and_pad_the_last():
    x = validate.aligned(np.arange(5 * 64 * 64, dtype=np.float32).reshape(5, 64, 64),
                         np.float32)  # fmt: skip
    got = list(chunks([jax.device_put(x), x], 5, 2))
    assert [(start, stop) for start, stop, _ in got] == [(0, 2), (2, 4), (4, 5)]
    for start, _, arrays in got[:2]:
        for arr in arrays:  # a JAX array on the CPU and a numpy array alike
            assert arr.shape == (2, 64, 64)
            assert arr.unsafe_buffer_pointer() == x[start:].ctypes.data
    want = np.concatenate([x[4:], np.zeros((1, 64, 64), np.float32)])
    for arr in got[2][2]:
        np.testing.assert_array_equal(np.asarray(arr), want)


def _blocks_of_four(monkeypatch, module_name: str, scorer: str) -> list[int]:
    """Blocks of 4 images (40 x 40 float32 maps: 6,400 bytes each) and the sizes of the
    blocks that ``module_name.scorer`` is called with, as they come."""
    # The modules, not the functions benchmark.metrics exports under their names.
    compute_module = importlib.import_module("benchmark.metrics.compute")
    monkeypatch.setattr(compute_module, "largest_kept_buffer", lambda: 4 * 6400)
    module = importlib.import_module(module_name)
    sizes: list[int] = []
    real = getattr(module, scorer)

    def spy(saliency, *args, **kwargs):
        sizes.append(len(saliency))
        return real(saliency, *args, **kwargs)

    monkeypatch.setattr(module, scorer, spy)
    return sizes


def test_large_batches_go_in_blocks_with_the_same_values_and_image_numbers(monkeypatch):
    sal, ref = _data(3)
    names = [*NAMES, "rank_accuracy", "precision@otsu"]
    whole = compute(sal, ref, names, chunk_size=4)
    blocks = _blocks_of_four(monkeypatch, "benchmark.metrics.compute", "_compute_block")
    got = compute(sal, ref, names, chunk_size=4)
    assert blocks == [4, 4, 4]
    for name in names:
        np.testing.assert_array_equal(got[name].view(np.uint64), whole[name].view(np.uint64))
    # Messages name images by their number in the whole batch.
    bad_ref = ref.copy()
    bad_ref[9, 0, 0] = 0.5
    with pytest.raises(ValueError, match="reference image 9 has other values"):
        compute(sal, bad_ref, names, chunk_size=4)
    bad_sal = sal.copy()
    bad_sal[2, 1, 1], bad_sal[10, 3, 3] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"image 2 contains NaN or inf \(and 1 more: \[10\]\)"):
        compute(bad_sal, ref, names, chunk_size=4)
    # A chunk longer than a block: one call, as before.
    blocks.clear()
    compute(sal, ref, names, chunk_size=8)
    assert blocks == [12]


def test_curves_of_large_batches_go_in_blocks_with_the_same_values(monkeypatch):
    sal, ref = _data(4)
    roi = np.random.default_rng(4).random(sal.shape) < 0.9
    whole = compute_curve(sal, ref, "iou", [0.1, 0.5, 0.9], roi=roi, chunk_size=4)
    sizes = _blocks_of_four(monkeypatch, "benchmark.metrics.curve", "_curve_block")
    got = compute_curve(sal, ref, "iou", [0.1, 0.5, 0.9], roi=roi, chunk_size=4)
    assert sizes == [4, 4, 4]
    np.testing.assert_array_equal(got.view(np.uint64), whole.view(np.uint64))
    bad_sal = sal.copy()
    bad_sal[6, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"saliency image 6 contains NaN or inf"):
        compute_curve(bad_sal, ref, "iou", [0.5], chunk_size=4)
    bad_ref = ref.copy()
    bad_ref[11, 2, 2] = 0.5
    with pytest.raises(ValueError, match="reference image 11 has other values"):
        compute_curve(sal, bad_ref, "iou", [0.5], chunk_size=4)
