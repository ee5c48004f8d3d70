"""The metric kernels' building blocks for speed: int8 block counts and aligned inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark.metrics import compute
from benchmark.metrics.counting import MAX_BLOCK, MIN_BLOCK, block_length, count
from benchmark.metrics.validate import aligned, to_jax


@pytest.mark.parametrize("n", [1, 5, 31, 64, 127, 128, 255, 4096, 50176, 50177, 12 * 127 + 5])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_count_equals_numpy_count_for_any_length_and_density(n, density):
    rng = np.random.default_rng(n)
    mask = rng.random(n) < density
    assert int(jax.jit(count)(jnp.asarray(mask))) == int(mask.sum())


def test_all_true_blocks_do_not_overflow_the_int8_partial_sums():
    # 127 True in every block is the largest int8 partial sum; 2**17 + 3 needs padding.
    for n in (127 * 1000, 2**17 + 3):
        assert int(count(jnp.ones(n, bool))) == n


def test_count_under_vmap_counts_each_row():
    rng = np.random.default_rng(0)
    masks = rng.random((7, 1000)) < rng.random((7, 1))
    np.testing.assert_array_equal(np.asarray(jax.vmap(count)(jnp.asarray(masks))),
                                  masks.sum(axis=1))


def test_block_length_divides_when_it_can_and_pads_otherwise():
    assert block_length(50176) == 112  # 224 x 224 = 2**10 * 7**2
    assert block_length(4096) == 64
    assert block_length(127 * 3) == MAX_BLOCK
    prime = 50177  # no divisor in [MIN_BLOCK, MAX_BLOCK]
    assert all(prime % b for b in range(MIN_BLOCK, MAX_BLOCK + 1))
    assert block_length(prime) == MAX_BLOCK
    assert block_length(5) == 5


@pytest.mark.parametrize("x", [
    np.arange(12, dtype=np.float64).reshape(3, 4),
    np.ones((5, 8), np.float32)[:, ::2],  # not contiguous
    np.frombuffer(np.zeros(4 * 65, np.uint8).tobytes()[4:], np.float32).reshape(8, 8),
    [[True, False], [False, True]],
    np.zeros((0, 3), np.int64),
])
def test_aligned_is_the_same_values_contiguous_and_on_a_64_byte_boundary(x):
    out = aligned(x, np.float32)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert out.ctypes.data % 64 == 0 or out.size == 0
    np.testing.assert_array_equal(out, np.asarray(x, np.float32))


def test_an_aligned_float32_array_is_passed_through_and_copies_are_private():
    raw = np.zeros(4 * 64 + 64, np.uint8)
    start = -raw.ctypes.data % 64
    x = raw[start:start + 256].view(np.float32).reshape(8, 8)
    assert aligned(x, np.float32) is x
    unaligned = np.frombuffer(bytearray(4 * 65), np.float32)[1:].reshape(8, 8)
    copy = to_jax(unaligned, jnp.float32)
    unaligned[0, 0] = 5.0  # the caller's later writes never reach a converted copy
    assert float(copy[0, 0]) == 0.0


def test_unaligned_and_aligned_inputs_score_the_same():
    rng = np.random.default_rng(1)
    s = rng.random((4, 16, 16)).astype(np.float32)
    g = (rng.random((4, 16, 16)) < 0.3).astype(np.float32)
    names = ["pointing_game", "mass_accuracy", "auroc", "iou@top15", "rank_accuracy"]
    shifted = np.frombuffer(bytearray(s.nbytes + 4), np.float32)[1:].reshape(s.shape)
    shifted[...] = s
    a, b = compute(s, g, names), compute(shifted, g.astype(np.float64), names)
    for name in names:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("sign", ["positive", "abs", "signed"])
def test_signed_bounds_are_the_min_and_max_of_the_signed_map(sign):
    from benchmark.metrics.preprocess import SIGNS, apply_sign, signed_bounds

    rng = np.random.default_rng(3)
    maps = rng.normal(size=(9, 50)).astype(np.float32)
    maps[1] = -np.abs(maps[1])  # all negative: S+ peaks at 0
    maps[2] = 0.0
    maps[3] = -0.0
    maps[4, :10] = 7.0  # tied maxima
    maps[5] = -maps[5] * 1e-39  # subnormal
    maps[6] = np.abs(maps[6]) + 0.5  # all positive: min |S| = min S
    maps[7, 3] = -0.0  # a signed zero among mixed signs: min |S| = 0
    maps[8] = np.linspace(-3, -1, 50)  # all negative: min |S| = -max S
    code = jnp.int32(SIGNS.index(sign))
    lo, hi = jax.vmap(lambda s: signed_bounds(s, code))(jnp.asarray(maps))
    signed = jax.vmap(lambda s: apply_sign(s, code))(jnp.asarray(maps))
    for got, want in ((lo, jnp.min(signed, axis=1)), (hi, jnp.max(signed, axis=1))):
        # Equal values; a zero may differ in its sign (-0.0 and 0.0 compare equal and
        # every use of the bounds only subtracts and compares them).
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("sign", ["positive", "abs", "signed"])
def test_pointing_game_with_the_whole_grid_as_roi_equals_no_roi(sign):
    # No roi reads the peak from the raw map; an all-True roi takes the masked maximum.
    rng = np.random.default_rng(4)
    s = np.round(rng.normal(size=(8, 12, 12)), 1).astype(np.float32)
    s[0] = 0.0
    s[1] = -1.0
    g = (rng.random((8, 12, 12)) < 0.3).astype(np.float32)
    a = compute(s, g, ["pointing_game"], sign=sign)["pointing_game"]
    b = compute(s, g, ["pointing_game"], sign=sign, roi=np.ones(s.shape, bool))["pointing_game"]
    np.testing.assert_array_equal(a, b)
    tied = np.isclose(s.reshape(8, -1), s.reshape(8, -1).max(axis=1, keepdims=True))
    if sign == "signed":  # brute force: fractional credit over the tied maxima
        want = (tied & (g.reshape(8, -1) > 0)).sum(axis=1) / tied.sum(axis=1)
        np.testing.assert_allclose(a, want, rtol=1e-6)


@pytest.mark.parametrize("sign", ["positive", "abs", "signed"])
def test_metrics_reading_the_raw_bounds_equal_the_masked_ones(sign):
    # Without a roi the threshold regions, nss, cc, sim and kl read S's bounds from the
    # raw map (signed_bounds); an all-True roi takes the masked min / max: same bits.
    rng = np.random.default_rng(6)
    s = np.round(rng.normal(size=(10, 14, 12)), 1).astype(np.float32)
    s[0], s[1], s[2] = 0.0, -1.0, 2.5  # constant maps: empty / whole regions, NaN scores
    s[3, :4] = -0.0
    g = (rng.random(s.shape) < 0.3).astype(np.float32)
    w = np.round(rng.random(s.shape) * 3) / 3
    full = np.ones(s.shape, bool)
    exact = [f"{m}@{t}" for m in ("iou", "precision") for t in ("0", "0.5", "otsu", "1")]
    a = compute(s, g, [*exact, "pointing_game"], sign=sign)
    b = compute(s, g, [*exact, "pointing_game"], sign=sign, roi=full)
    for name in a:  # counts of regions: the same integers, the same bits
        np.testing.assert_array_equal(a[name].view(np.uint64), b[name].view(np.uint64),
                                      err_msg=name)
    # Sums over a masked map may round differently; the constant maps' NaN may not.
    for names, ref in ((["nss"], g), (["cc", "sim", "kl"], w)):
        a = compute(s, ref, names, sign=sign)
        b = compute(s, ref, names, sign=sign, roi=full)
        for name in names:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)
            assert np.isnan(a[name][:3]).all() and not np.isnan(a[name][3:]).any(), name
