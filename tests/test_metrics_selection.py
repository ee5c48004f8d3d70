"""Top-K selection by bisection (:func:`.threshold.topk_region`) against the sort.

The region must be exactly the first k pixels of the sort-based ranking
(:func:`.threshold.topk_ranks`: value descending, jitter key, flat index), on maps with
heavy ties, constant maps, roi restrictions, every k, and 3D volumes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmark.metrics import compute
from benchmark.metrics.threshold import (
    order_keys,
    tiebreak_keys,
    tiebreak_ranks,
    topk_count,
    topk_ranks,
    topk_region,
)

_select = jax.jit(jax.vmap(topk_region, in_axes=(None, None, 0, None)))


def _sorted_region(s: np.ndarray, roi: np.ndarray, k: int, seed: int) -> np.ndarray:
    keys = jnp.asarray(tiebreak_keys(seed, s.size))
    ranks = np.asarray(topk_ranks(jnp.asarray(s), jnp.asarray(roi), keys))
    return (ranks < k) & roi


def _maps(seed: int, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    full = np.ones(size, bool)
    roi = rng.random(size) < 0.7
    quant = (rng.integers(-3, 4, size) / 2).astype(np.float32)
    quant[rng.random(size) < 0.2] = -0.0
    cont = rng.standard_normal(size).astype(np.float32)
    pos = np.maximum(cont, 0).astype(np.float32)  # many tied zeros
    extreme = rng.choice(
        np.array([-3.4e38, -1e-45, 0.0, 1e-45, 3.4e38, np.float32(1.0)], np.float32), size
    )
    return {
        "quantised": (quant, full),
        "quantised_roi": (quant, roi),
        "continuous": (cont, full),
        "positive_part": (pos, full),
        "positive_part_roi": (pos, roi),
        "zeros": (np.zeros(size, np.float32), full),
        "constant_roi": (np.full(size, 2.5, np.float32), roi),
        "extremes": (extreme, full),
    }


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", list(_maps(0, 8)))
def test_selection_equals_the_sorted_region_for_every_k(seed, case):
    size = 97 + 50 * seed
    s, roi = _maps(seed, size)[case]
    n = int(roi.sum())
    ks = np.arange(0, n + 1, dtype=np.int32)
    got = np.asarray(
        _select(jnp.asarray(s), jnp.asarray(roi), jnp.asarray(ks),
                jnp.asarray(tiebreak_ranks(seed, size)))
    )  # fmt: skip
    for k in ks:
        want = _sorted_region(s, roi, int(k), seed)
        np.testing.assert_array_equal(got[k], want, err_msg=f"k={k}")
        assert got[k].sum() == k


def test_selection_on_a_3d_volume_with_ties():
    rng = np.random.default_rng(5)
    vol = (rng.integers(0, 6, (12, 14, 16)) / 5).astype(np.float32).ravel()
    roi = (rng.random(vol.size) < 0.9)
    n = int(roi.sum())
    ks = np.array([0, 1, 2, topk_count(15, n), n // 2, n - 1, n], np.int32)
    got = np.asarray(
        _select(jnp.asarray(vol), jnp.asarray(roi), jnp.asarray(ks),
                jnp.asarray(tiebreak_ranks(3, vol.size)))
    )  # fmt: skip
    for row, k in zip(got, ks, strict=True):
        np.testing.assert_array_equal(row, _sorted_region(vol, roi, int(k), 3))


def test_tiebreak_ranks_are_the_key_then_index_order():
    keys = tiebreak_keys(7, 1000).copy()
    keys[::3] = keys[0]  # force equal jitter keys: the flat index decides
    order = np.lexsort((np.arange(keys.size), keys))
    want = np.empty(keys.size, np.int64)
    want[order] = np.arange(keys.size)
    ranks_from = np.argsort(keys, kind="stable")
    np.testing.assert_array_equal(order, ranks_from)
    got = tiebreak_ranks(7, 1000)
    assert sorted(got.tolist()) == list(range(1000))
    order7 = np.lexsort((np.arange(1000), tiebreak_keys(7, 1000)))
    np.testing.assert_array_equal(got[order7], np.arange(1000))


def test_order_keys_preserve_order_and_merge_signed_zeros():
    x = np.array([-3.4e38, -2.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.4e38], np.float32)
    u = np.asarray(order_keys(jnp.asarray(x), jnp.ones(x.size, bool))).astype(np.int64)
    assert u[3] == u[4]
    assert np.all(np.diff(np.delete(u, 3)) > 0)
    assert u.min() > 0
    # XLA:CPU treats subnormals as zero (as the sort does: the "extremes" case above
    # checks that the selection agrees with it); they tie with 0 here too.
    sub = np.array([-1e-45, 0.0, 1e-45], np.float32)
    u_sub = np.asarray(order_keys(jnp.asarray(sub), jnp.ones(3, bool)))
    assert len(set(u_sub.tolist())) == 1
    out = np.asarray(order_keys(jnp.asarray(x), jnp.zeros(x.size, bool)))
    assert np.all(out == 0)


@pytest.mark.parametrize("seed", [0, 11])
def test_compute_top_k_metrics_equal_the_sorted_region(seed):
    rng = np.random.default_rng(seed)
    sal = (rng.integers(0, 4, (6, 9, 11)) / 3).astype(np.float32)
    sal[0] = 0.0
    sal[1] = 1.0
    ref = (rng.random((6, 9, 11)) < 0.3).astype(np.float32)
    roi = rng.random((6, 9, 11)) < 0.8
    out = compute(sal, ref, ["recall@top15", "precision@top40", "rank_accuracy"],
                  roi=roi, seed=seed)  # fmt: skip
    for i in range(6):
        s, g, om = sal[i].ravel(), ref[i].ravel() > 0.5, roi[i].ravel()
        g = g & om
        n = int(om.sum())
        for name, pct in (("recall@top15", 15), ("precision@top40", 40)):
            a = _sorted_region(s, om, topk_count(pct, n), seed)
            want = (a & g).sum() / (g.sum() if name.startswith("recall") else a.sum())
            assert out[name][i] == pytest.approx(want, abs=1e-7) or (
                np.isnan(want) and np.isnan(out[name][i])
            )
        a = _sorted_region(s, om, int(g.sum()), seed)
        want = (a & g).sum() / g.sum() if g.sum() else np.nan
        np.testing.assert_allclose(out["rank_accuracy"][i], want, atol=1e-7)
