"""AUROC / AUPRC from the radix-sorted order keys, bit for bit as from the variadic sort.

``kernels.auroc`` and ``kernels.auprc`` used to read only :func:`ranking.descending`
(one two-operand XLA sort); without Spearman they now read :func:`ranking.ascending`
(single-operand uint32 sorts). The scores must not move by one ulp: the references below
are verbatim copies of the former kernels, and every comparison is on the float32 bits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark.metrics import compute, kernels, ranking
from benchmark.metrics.threshold import order_keys


def _old_auroc(s, g, roi):
    r = ranking.descending(s, roi)
    b = roi & ~g
    n1, n0 = kernels.count(g), kernels.count(b)
    at_least, above = ranking.counts_above(r, b)
    below = n0 - at_least
    below_or_equal = n0 - above
    twice = (below + below_or_equal).astype(jnp.float32)
    den = 2.0 * jnp.maximum(n0, 1).astype(jnp.float32)
    share = jnp.where(g, twice / den, 0.0)
    auc = kernels.tree_sum(share) / jnp.maximum(n1, 1).astype(jnp.float32)
    return jnp.where((n1 > 0) & (n0 > 0), auc, kernels.NAN)


def _old_auprc(s, g, roi):
    r = ranking.descending(s, roi)
    n1, n = kernels.count(g), kernels.count(roi)
    tp, _ = ranking.counts_above(r, g)
    pp = ranking.to_pixels(r, r.last + 1)
    prec = jnp.where(g, tp.astype(jnp.float32) / jnp.maximum(pp, 1).astype(jnp.float32), 0.0)
    ap = kernels.tree_sum(prec) / jnp.maximum(n1, 1).astype(jnp.float32)
    return jnp.where((n1 > 0) & (n1 < n), ap, kernels.NAN)


def _batch(shape, seed, with_roi):
    """Maps with heavy ties: quantised, all zero, -0.0 beside 0.0, constant, signed."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    n = 10
    s = np.round(rng.normal(size=(n, size)) * 4).astype(np.float32) / 4
    s[1] = 0.0
    s[2] = np.where(rng.random(size) < 0.5, -0.0, 0.0)
    s[3] = 0.75
    s[4] = np.maximum(s[4], 0.0)  # S+ with many tied zeros
    s[4][rng.random(size) < 0.2] = -0.0
    s[5] = rng.normal(size=size).astype(np.float32)  # (almost) no ties
    s[6] = np.float32(3.0) * (rng.random(size) < 0.01)
    s[7] = rng.integers(-2, 3, size).astype(np.float32) * np.float32(1e-30)  # subnormal
    s[8] = np.where(rng.random(size) < 0.5, np.float32(-3.4e38), np.float32(3.4e38))
    g = rng.random((n, size)) < 0.2
    g[1] = False  # G empty
    g[3, : size // 2] = True
    g[6] = np.roll(s[6] > 0, 1) | (rng.random(size) < 0.05)
    roi = rng.random((n, size)) < 0.85 if with_roi else np.ones((n, size), bool)
    if with_roi:
        roi[9] = False  # empty Ω
        roi[0, : size // 3] = False
    g &= roi
    g[8] = roi[8]  # G = Ω
    return jnp.asarray(s), jnp.asarray(g), jnp.asarray(roi)


def _bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


@pytest.mark.parametrize("with_roi", [False, True])
@pytest.mark.parametrize("shape", [(7, 9), (64, 64), (24, 20, 16), (48, 48, 32)])
def test_auroc_auprc_bit_identical_to_the_variadic_sort(shape, with_roi):
    # (48, 48, 32) has P > 2**16: three radix passes instead of two.
    s, g, roi = _batch(shape, sum(shape) + with_roi, with_roi)
    scores = {}
    for new, old in ((kernels.auroc, _old_auroc), (kernels.auprc, _old_auprc)):
        got = jax.jit(jax.vmap(lambda a, b, c, f=new: f(a, b, c)))(s, g, roi)
        scores[new.__name__] = np.asarray(got)
        want = jax.jit(jax.vmap(old))(s, g, roi)
        np.testing.assert_array_equal(_bits(got), _bits(want))
        # The Ranking path (shared with Spearman) is the same computation.
        shared = jax.jit(jax.vmap(lambda a, b, c, f=new: f(a, b, c, ranking.descending(a, c))))
        np.testing.assert_array_equal(_bits(shared(s, g, roi)), _bits(want))
    # The edge cases are where METRICS.md puts them.
    auc = scores["auroc"]
    assert np.isnan(auc[1]) and np.isnan(auc[8])
    np.testing.assert_allclose(auc[[2, 3]], 0.5, atol=1e-6)  # constant maps
    if with_roi:
        assert np.isnan(auc[9])


@pytest.mark.parametrize("with_roi", [False, True])
def test_compute_with_and_without_spearman_agree_bitwise(with_roi):
    # Without Spearman the plan shares ranking.ascending, with it ranking.descending.
    rng = np.random.default_rng(5)
    sal = np.round(rng.normal(size=(6, 40, 40)) * 3).astype(np.float32) / 3
    sal[0] = 0.0
    sal[1] = -0.0
    sal[2] = 2.5
    ref = (rng.random((6, 40, 40)) < 0.3).astype(np.float32)
    roi = rng.random((6, 40, 40)) < 0.9 if with_roi else None
    alone = compute(sal, ref, ["auroc", "auprc"], roi=roi)
    shared = compute(sal, ref, ["auprc", "spearman", "auroc", "iou@top15"], roi=roi)
    for name in ("auroc", "auprc"):
        np.testing.assert_array_equal(_bits(alone[name]), _bits(shared[name]))
    for name in ("auroc", "auprc"):
        one = compute(sal, ref, [name], roi=roi, sign="signed")
        both = compute(sal, ref, ["auroc", "auprc", "spearman"], roi=roi, sign="signed")
        np.testing.assert_array_equal(_bits(one[name]), _bits(both[name]))


@pytest.mark.parametrize("size", [1, 2, 300, 2**16, 2**16 + 3])
def test_radix_sort_is_a_stable_sort(size):
    rng = np.random.default_rng(size)
    u = rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32)
    u[rng.random(size) < 0.5] = np.uint32(0x80000000)  # many ties
    u[rng.random(size) < 0.1] = np.uint32(0xFFFFFFFF)
    order, keys = ranking.radix_sort_keys(jnp.asarray(u))
    want = np.argsort(u, kind="stable")
    np.testing.assert_array_equal(np.asarray(order), want)
    np.testing.assert_array_equal(np.asarray(keys), u[want])


@pytest.mark.parametrize("size", [1, 2, 300, 2**16 + 3])
@pytest.mark.parametrize("block", [None, 300])
def test_host_sort_equals_the_radix_sort(size, block, monkeypatch):
    # CPU runs sort_keys on the host (numpy); GPUs run the radix sort. Same arrays, ties
    # in flat-index order, alone, batched under vmap and inside jit; block=300 sorts the
    # batch a row or a few rows at a time.
    if block is not None:
        monkeypatch.setattr(ranking, "_HOST_SORT_BLOCK", block)  # read when called
    rng = np.random.default_rng(size)
    u = rng.integers(0, 2**32, (3, size), dtype=np.uint64).astype(np.uint32)
    u[rng.random((3, size)) < 0.5] = np.uint32(0x80000000)
    u[:, :1] = np.uint32(0xFFFFFFFF)
    u[2] = 0
    want = np.argsort(u, axis=-1, kind="stable")
    for fn in (ranking.host_sort_keys, ranking.sort_keys):
        order, keys = jax.jit(jax.vmap(fn))(jnp.asarray(u))
        np.testing.assert_array_equal(np.asarray(order), want)
        np.testing.assert_array_equal(np.asarray(keys), np.take_along_axis(u, want, -1))
        order1, keys1 = fn(jnp.asarray(u[0]))
        np.testing.assert_array_equal(np.asarray(order1), want[0])
        np.testing.assert_array_equal(np.asarray(keys1), u[0][want[0]])
    radix = jax.vmap(ranking.radix_sort_keys)(jnp.asarray(u))
    np.testing.assert_array_equal(np.asarray(radix[0]), want)


@pytest.mark.parametrize("seed", range(3))
def test_counts_below_and_group_start_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    size = 257
    x = rng.integers(-3, 4, size).astype(np.float32) / 2
    x[rng.random(size) < 0.2] = -0.0
    roi = rng.random(size) < 0.8
    mask = roi & (rng.random(size) < 0.4)
    a = ranking.ascending(order_keys(jnp.asarray(x), jnp.asarray(roi)))
    below, at_most = ranking.counts_below(a, jnp.asarray(mask))
    below = np.asarray(ranking.scatter_to_pixels(a, below))
    at_most = np.asarray(ranking.scatter_to_pixels(a, at_most))
    start = np.asarray(ranking.scatter_to_pixels(a, ranking.group_start(a)))
    for p in np.flatnonzero(roi):
        assert below[p] == np.sum(mask & (x < x[p]))
        assert at_most[p] == np.sum(mask & (x <= x[p]))
        assert size - start[p] == np.sum(roi & (x >= x[p]))
