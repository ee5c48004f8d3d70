"""The shared sort of :mod:`benchmark.metrics.ranking` against brute-force counts."""

import jax.numpy as jnp
import numpy as np
import pytest
from former_ranking import average_ranks, counts_above

from benchmark.metrics import ranking
from benchmark.metrics.threshold import tiebreak_keys, topk_ranks


def _case(seed, size=300):
    rng = np.random.default_rng(seed)
    x = rng.integers(-4, 5, size).astype(np.float32) / 2  # many ties
    x[rng.random(size) < 0.1] = -0.0  # -0.0 ties with 0.0
    roi = rng.random(size) < 0.8
    mask = roi & (rng.random(size) < 0.3)
    return x, roi, mask


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("keyed", [False, True])
def test_counts_and_average_ranks(seed, keyed):
    x, roi, mask = _case(seed)
    keys = jnp.asarray(tiebreak_keys(seed, x.size)) if keyed else None
    r = ranking.descending(jnp.asarray(x), jnp.asarray(roi), keys)
    at_least, above = (np.asarray(c) for c in counts_above(r, jnp.asarray(mask)))
    ranks = np.asarray(average_ranks(r))
    xo = x[roi]
    for p in np.flatnonzero(roi):
        assert at_least[p] == np.sum(mask & (x >= x[p]))
        assert above[p] == np.sum(mask & (x > x[p]))
        assert ranks[p] == (np.sum(xo < x[p]) + np.sum(xo <= x[p]) + 1) / 2
    assert int(r.n) == roi.sum()
    assert sorted(np.asarray(r.order)) == list(range(x.size))


@pytest.mark.parametrize("seed", range(4))
def test_topk_ranks_follow_the_documented_rule(seed):
    x, roi, _ = _case(seed)
    keys = tiebreak_keys(seed, x.size)
    got = np.asarray(topk_ranks(jnp.asarray(x), jnp.asarray(roi), jnp.asarray(keys)))
    # value desc (outside roi last), then jitter key asc, then flat index asc
    primary = np.where(roi, -x.astype(np.float64) + 0.0, np.inf)
    want_order = np.lexsort((np.arange(x.size), keys, primary))
    want = np.empty(x.size, np.int64)
    want[want_order] = np.arange(x.size)
    np.testing.assert_array_equal(got, want)
