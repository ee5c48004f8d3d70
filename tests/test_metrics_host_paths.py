"""Steps that run as numpy on the host on CPU and in XLA elsewhere give the same values.

On CPU ``lax.platform_dependent`` picks the host path, so the kernels' own tests never
reach the XLA one (the GPU path); here both are called directly and compared with a
plain reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark.metrics.threshold import (
    N_OTSU_BINS,
    host_bin_counts,
    host_topk_cut,
    order_keys,
    otsu_threshold,
    tiebreak_ranks,
    xla_bin_counts,
    xla_topk_cut,
)


def _bin_rows(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    skewed = np.minimum(rng.exponential(20, size), 255).astype(np.uint8)  # mostly low bins
    return np.stack([
        rng.integers(0, 256, size, dtype=np.uint8),
        skewed,
        np.zeros(size, np.uint8),
        np.full(size, 255, np.uint8),
        np.where(rng.random(size) < 0.5, 0, 255).astype(np.uint8),
    ])


@pytest.mark.parametrize("size", [1, 97, 224 * 224])
def test_bin_counts_on_the_host_and_by_scatter_equal_a_loop(size):
    rows = _bin_rows(size, size)
    want = np.zeros((rows.shape[0], N_OTSU_BINS), np.int64)
    for i, row in enumerate(rows):
        for value in row.tolist():
            want[i, value] += 1
    host = np.asarray(jax.jit(jax.vmap(host_bin_counts))(jnp.asarray(rows)))
    xla = np.asarray(jax.jit(jax.vmap(xla_bin_counts))(jnp.asarray(rows)))
    assert host.dtype == xla.dtype == np.int32
    np.testing.assert_array_equal(host, want)
    np.testing.assert_array_equal(xla, want)
    # Unbatched, the callback gets one row.
    np.testing.assert_array_equal(np.asarray(jax.jit(host_bin_counts)(rows[1])), want[1])


def test_otsu_ignores_the_pixels_outside_the_roi():
    # Outside the roi a spike near the top would move the threshold up.
    rng = np.random.default_rng(4)
    roi = rng.random(2000) < 0.6
    s_norm = rng.random(2000).astype(np.float32)
    s_norm[~roi] = 0.98
    inside = otsu_threshold(jnp.asarray(s_norm[roi]), jnp.ones(int(roi.sum()), bool))
    with_roi = otsu_threshold(jnp.asarray(s_norm), jnp.asarray(roi))
    whole = otsu_threshold(jnp.asarray(s_norm), jnp.ones(2000, bool))
    assert float(with_roi) == float(inside)
    assert float(whole) > float(inside) + 0.1


@pytest.mark.parametrize("seed", range(3))
def test_topk_cut_on_the_host_and_by_bisection_agree_for_every_k(seed):
    rng = np.random.default_rng(seed)
    size = 61 + 40 * seed
    roi = rng.random(size) < 0.8
    maps = [
        (rng.integers(-3, 4, size) / 2).astype(np.float32),  # heavy ties
        np.maximum(rng.standard_normal(size), 0).astype(np.float32),  # tied zeros
        rng.standard_normal(size).astype(np.float32),
        np.full(size, 1.5, np.float32),
    ]
    tb = jnp.asarray(tiebreak_ranks(seed, size))
    n = int(roi.sum())
    ks = jnp.arange(1, n + 1, dtype=jnp.int32)
    def region(u: jax.Array, cut: tuple[jax.Array, jax.Array]) -> np.ndarray:
        un, t, r = np.asarray(u)[None, :], np.asarray(cut[0])[:, None], np.asarray(cut[1])
        return (un > t) | ((un == t) & (np.asarray(tb)[None] <= r[:, None]))

    for s in maps:
        u = order_keys(jnp.asarray(s), jnp.asarray(roi))
        host = jax.jit(jax.vmap(host_topk_cut, in_axes=(None, 0, None)))(u, ks, tb)
        xla = jax.jit(jax.vmap(xla_topk_cut, in_axes=(None, 0, None)))(u, ks, tb)
        # The host returns the k-th largest key itself; the bisection may stop earlier
        # at a key with exactly k pixels at or above it: the same region.
        np.testing.assert_array_equal(
            np.asarray(host[0]), [np.sort(np.asarray(u))[size - k] for k in range(1, n + 1)])
        want = region(u, host)
        np.testing.assert_array_equal(region(u, xla), want)
        np.testing.assert_array_equal((want & roi).sum(axis=1), np.asarray(ks))
        assert not (want & ~roi).any()
