"""AUROC / AUPRC from :func:`ranking.positive_counts`, checked on the float32 bits.

``kernels.auroc`` and ``kernels.auprc`` used to read only :func:`ranking.descending`
(one two-operand XLA sort); they now read :func:`ranking.positive_counts` (numpy on the
host on CPU, a radix sort of single-operand uint32 sorts elsewhere). AUPRC must not move
by one ulp: its reference is a verbatim copy of the former kernel. AUROC is the float32
of the exact integer 2U over the once-rounded 2 n1 n0; its reference takes U from
``scipy.stats.mannwhitneyu`` (exact in float64 at these sizes) and does the same three
roundings in numpy.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from former_ranking import average_ranks, counts_above

from benchmark.metrics import compute, counting, kernels, ranking
from benchmark.metrics.threshold import order_keys


def _reference_auroc(s, g, roi):
    """float32(2U) / (2 float32(float32(n1) float32(n0))) with U from scipy, per map."""
    out = np.full(s.shape[0], np.nan, np.float32)
    for i in range(s.shape[0]):
        pos, neg = s[i][g[i]].astype(np.float64), s[i][roi[i] & ~g[i]].astype(np.float64)
        if pos.size and neg.size:  # (scipy's U is float32 for float32 samples)
            with np.errstate(invalid="ignore"):  # its p-value of an all-tied sample
                twice_u = int(2 * scipy.stats.mannwhitneyu(pos, neg).statistic)
            den = np.float32(2) * (np.float32(pos.size) * np.float32(neg.size))
            out[i] = np.float32(float(twice_u)) / den
    return out


def _old_auprc(s, g, roi):
    r = ranking.descending(s, roi)
    n1, n = kernels.count(g), kernels.count(roi)
    tp, _ = counts_above(r, g)
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
    arrays = tuple(np.asarray(x) for x in (s, g, roi))
    for new, old in ((kernels.auroc, _reference_auroc), (kernels.auprc, _old_auprc)):
        got = jax.jit(jax.vmap(lambda a, b, c, f=new: f(a, b, c)))(s, g, roi)
        scores[new.__name__] = np.asarray(got)
        want = old(*arrays) if old is _reference_auroc else jax.jit(jax.vmap(old))(s, g, roi)
        np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=new.__name__)
    # The edge cases are where METRICS.md puts them.
    auc = scores["auroc"]
    assert np.isnan(auc[1]) and np.isnan(auc[8])
    np.testing.assert_array_equal(auc[[2, 3]], 0.5)  # constant maps, exactly
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


def _brute_counts(u, g):
    """Per map 2U = Σ_G (#{B < u} + #{B <= u}) as a Python int; per pixel of G #{B < u},
    #{G < u}."""
    b = (u != 0) & ~g
    want = {name: np.zeros(u.shape, np.int32) for name in ranking.COUNTS if name != "twice_u"}
    twice_u = {}
    for row in np.ndindex(u.shape[:-1]):
        twice_u[row] = 0
        for p in np.flatnonzero(g[row]):
            x = u[row][p]
            below = np.sum(b[row] & (u[row] < x))
            twice_u[row] += int(below + np.sum(b[row] & (u[row] <= x)))
            want["neg_below"][row][p] = below
            want["pos_below"][row][p] = np.sum(g[row] & (u[row] < x))
    return want, twice_u


def _check_counts(got, g, want, twice_u, fields=ranking.COUNTS):
    for name, values in zip(fields, got, strict=True):
        values = np.asarray(values)
        if name == "twice_u":
            assert values.shape == g.shape[:-1] + (2,)
            assert np.all((values[..., 1] >= 0) & (values[..., 1] < counting.RADIX))
            total = {row: int(values[row][0]) * counting.RADIX + int(values[row][1])
                     for row in twice_u}
            assert total == twice_u
        else:
            np.testing.assert_array_equal(np.where(g, values, 0), want[name], err_msg=name)


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("size", [1, 2, 61, 300])
def test_positive_counts_host_and_radix_paths_equal_brute_force(n, size):
    # CPU counts on the host (numpy, maps split between two threads); GPUs from one radix
    # sort. Both must give the brute-force integers, alone and batched, with keys tied
    # across G and B, an empty G, an empty B and pixels outside Ω (key 0); U alone takes
    # its own host path (one sort of the whole map).
    rng = np.random.default_rng(size * 7 + n)
    u = rng.integers(0x00800000, 0x00800006, (n, size), dtype=np.uint64).astype(np.uint32)
    u[rng.random((n, size)) < 0.1] = 0  # outside Ω
    u[:, :1] = np.uint32(0xFFFFFFFF)
    g = (rng.random((n, size)) < 0.3) & (u != 0)
    g[0] = False
    if n > 1:
        g[1] = u[1] != 0  # B empty
    want, twice_u = _brute_counts(u, g)
    host = jax.jit(jax.vmap(lambda a, b: ranking.host_positive_counts(a, b, ranking.COUNTS)))
    radix = jax.jit(jax.vmap(lambda a, b: ranking.xla_positive_counts(a, b, ranking.COUNTS)))
    shared = jax.jit(jax.vmap(lambda a, b: ranking.positive_counts(a, b)))
    for got in (host(u, g), radix(u, g), tuple(shared(u, g))):
        _check_counts(got, g, want, twice_u)
    for path in (ranking.host_positive_counts, ranking.xla_positive_counts):
        u_only = jax.jit(jax.vmap(lambda a, b, f=path: f(a, b, ("twice_u",))))(u, g)
        _check_counts(u_only, g, want, twice_u, ("twice_u",))
    alone = ranking.positive_counts(jnp.asarray(u[-1]), jnp.asarray(g[-1]), ("pos_below",))
    assert alone.twice_u is None and alone.neg_below is None
    np.testing.assert_array_equal(np.where(g[-1], np.asarray(alone.pos_below), 0),
                                  want["pos_below"][-1])


def test_twice_u_past_int32():
    # A 2**17-pixel map whose upper half is G: 2U = 2 n1 n0 = 2**33 needs both digits.
    size = 2**17
    u = np.arange(1, size + 1, dtype=np.uint32) + np.uint32(0x00800000)
    g = np.arange(size) >= size // 2
    for path in (ranking.host_positive_counts, ranking.xla_positive_counts):
        (got,) = jax.jit(lambda a, b, f=path: f(a, b, ("twice_u",)))(u, g)
        assert int(got[0]) * counting.RADIX + int(got[1]) == 2 * (size // 2) ** 2


@pytest.mark.parametrize("n", [1, 63, 64, 65, 4097, 100_000])
def test_exact_sum_against_python_integers(n):
    rng = np.random.default_rng(n)
    for high in (5, 2**25, 2**31 - 1):
        x = rng.integers(0, high, n, dtype=np.int64)
        x[: n // 3] = high - 1  # large values, so the carries and the top digit are used
        hi, lo = np.asarray(jax.jit(counting.exact_sum)(jnp.asarray(x, jnp.int32)))
        assert 0 <= lo < counting.RADIX
        assert int(hi) * counting.RADIX + int(lo) == int(x.sum())


@pytest.mark.parametrize("seed", range(3))
def test_counts_below_against_brute_force(seed):
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
    for p in np.flatnonzero(roi):
        assert below[p] == np.sum(mask & (x < x[p]))
        assert at_most[p] == np.sum(mask & (x <= x[p]))


def test_host_steps_cap_the_chunk_and_leave_the_scores_unchanged(monkeypatch):
    import importlib

    from benchmark.metrics.plan import Plan

    # The package exports the function ``compute``; the module is needed here.
    compute_module = importlib.import_module("benchmark.metrics.compute")

    grid = (32, 32)  # 4 KB of keys per map
    plan = Plan(grid, grid, (("auroc", -1),), ())
    assert compute_module.host_chunk_cap(plan) == 4096
    assert compute_module.host_chunk_cap(Plan(grid, grid, (("mass_accuracy", -1),), ())) > 2**40
    rng = np.random.default_rng(2)
    sal = np.round(rng.normal(size=(37, *grid)) * 3).astype(np.float32)
    ref = (rng.random((37, *grid)) < 0.3).astype(np.float32)
    names = ["auroc", "auprc", "rank_accuracy", "iou@top15", "mass_accuracy"]
    whole = compute(sal, ref, names)
    monkeypatch.setattr(compute_module, "HOST_CHUNK_BYTES", 5 * 4 * 32 * 32)
    assert compute_module.host_chunk_cap(plan) == 4
    calls = []
    real = compute_module.chunk_kernel

    def spy(p):
        kernel = real(p)

        def run(*args):
            calls.append(args[0].shape[0])
            return kernel(*args)

        return run

    monkeypatch.setattr(compute_module, "chunk_kernel", spy)
    capped = compute(sal, ref, names)
    assert calls == [4] * 10
    for name in names:
        np.testing.assert_array_equal(_bits(capped[name]), _bits(whole[name]))


def test_host_steps_on_one_cpu_give_the_two_thread_values(monkeypatch):
    from benchmark import threads

    rng = np.random.default_rng(9)
    sal = np.round(rng.normal(size=(9, 24, 24)) * 2).astype(np.float32)
    ref = (rng.random((9, 24, 24)) < 0.25).astype(np.float32)
    names = ["auroc", "auprc", "rank_accuracy", "recall@top15"]
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    two = compute(sal, ref, names)
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    one = compute(sal, ref, names)
    for name in names:
        np.testing.assert_array_equal(_bits(one[name]), _bits(two[name]))


@pytest.mark.parametrize("with_roi", [False, True])
@pytest.mark.parametrize("shape", [(7, 9), (64, 64), (24, 20, 16)])
def test_twice_ranks_on_the_host_equal_the_variadic_sorts(shape, with_roi):
    # Spearman's average ranks: numpy on CPU, the tie groups of ranking.descending
    # elsewhere; the same integers (ties, -0.0 beside 0.0, subnormals, empty Ω) on Ω.
    s, _, roi = _batch(shape, sum(shape) + 2 * with_roi, with_roi)
    u = jax.vmap(order_keys)(s, roi)
    host = np.asarray(jax.jit(jax.vmap(ranking.host_twice_ranks))(u))

    def sorted_twice(x, r):
        rk = ranking.descending(x, r)
        return ranking.to_pixels(rk, 2 * rk.n - rk.first - rk.last)

    want = np.asarray(jax.jit(jax.vmap(sorted_twice))(s, roi))
    roi = np.asarray(roi)
    np.testing.assert_array_equal(np.where(roi, host, 0), np.where(roi, want, 0))
    shared = jax.jit(jax.vmap(ranking.twice_ranks))(u, s, jnp.asarray(roi))
    np.testing.assert_array_equal(np.where(roi, np.asarray(shared), 0), np.where(roi, want, 0))
    # Brute force on one map: #{<} + #{<=} + 1 over Ω.
    x, r = np.asarray(s[5]), roi[5]
    for p in np.flatnonzero(r)[:50]:
        assert host[5, p] == np.sum(r & (x < x[p])) + np.sum(r & (x <= x[p])) + 1


def test_spearman_bit_identical_to_the_variadic_sort_ranks():
    from benchmark.metrics import graded

    rng = np.random.default_rng(8)
    sal = np.round(rng.normal(size=(6, 30, 30)) * 3).astype(np.float32) / 3
    sal[0] = 0.0
    ref = np.round(rng.random((6, 30, 30)) * 4).astype(np.float32) / 4
    got = compute(sal, ref, ["spearman", "spearman_abs", "cc"], sign="signed")

    def old(s, w):
        omega = jnp.ones(s.shape, bool)
        rw = average_ranks(ranking.descending(w, omega))
        rs = average_ranks(ranking.descending(s, omega))
        ra = average_ranks(ranking.descending(jnp.abs(s), omega))
        return graded._pearson(rs, rw, omega), graded._pearson(ra, rw, omega)

    flat = (jnp.asarray(sal.reshape(6, -1)), jnp.asarray(ref.reshape(6, -1)))
    want = jax.jit(jax.vmap(old))(*flat)
    np.testing.assert_array_equal(_bits(got["spearman"]), _bits(want[0]))
    np.testing.assert_array_equal(_bits(got["spearman_abs"]), _bits(want[1]))
