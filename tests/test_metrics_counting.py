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
