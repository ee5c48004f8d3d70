"""The fused CPU path of the threshold family (metrics/fused.py) against the XLA kernel.

Every score must have the same bits on both paths; the XLA kernel is itself tested
against brute-force counts elsewhere (test_metrics*.py). Each case runs ``compute``
twice: as routed (the fused path) and with the path switched off (the XLA kernel).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.metrics import compute, fused

pytestmark = pytest.mark.skipif(not fused.available(), reason="numba missing or JAX not on CPU")

BASES = ("precision", "irrelevant_fraction", "recall", "iou", "dice")


def names_at(*thresholds: str) -> list[str]:
    """The region metrics at each threshold, and the routed metrics without one."""
    return [f"{m}@{t}" for t in thresholds for m in BASES] + list(fused.COUNTED_METRICS)


def both_paths(monkeypatch: pytest.MonkeyPatch, *args, **kwargs):  # type: ignore[no-untyped-def]
    names = args[2]
    assert fused.routed(args[0], args[1], names), "the case must take the fused path"
    fast = compute(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(fused, "available", lambda: False)
        assert not fused.routed(args[0], args[1], names)
        slow = compute(*args, **kwargs)
    return fast, slow


def assert_same_bits(fast: dict, slow: dict) -> None:
    assert list(fast) == list(slow)
    for name in slow:
        a, b = fast[name], slow[name]
        assert a.dtype == b.dtype == np.float64 and a.shape == b.shape, name
        bad = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
        assert bad.size == 0, f"{name}: images {bad[:5]} fused {a[bad[:5]]} xla {b[bad[:5]]}"


def maps(kind: str, n: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Saliency maps with the structure that stresses one part of the kernel."""
    if kind == "normal":  # distinct values, both signs
        return rng.standard_normal((n, *shape)).astype(np.float32)
    if kind == "quantised":  # a few levels: every cut falls inside a large tie group
        return (rng.integers(-3, 5, (n, *shape)) / 4.0).astype(np.float32)
    if kind == "relu":  # many exact zeros (and -0.0), the cut often among them
        x = rng.standard_normal((n, *shape)).astype(np.float32) - 0.8
        x[x < 0] = 0.0
        x[:, ::3] *= -1.0  # -0.0 and negative values
        return x
    if kind == "ulps":  # values one ulp apart: keys share their top 22 bits
        base = np.float32(1.5).view(np.uint32)
        bits = base + rng.integers(0, 300, (n, *shape)).astype(np.uint32)
        return bits.view(np.float32).copy()
    if kind == "constant":  # constant maps: zero, positive, negative
        out = np.zeros((n, *shape), np.float32)
        out[1::3] = 2.5
        out[2::3] = -1.0
        return out
    if kind == "tiny":  # subnormal and huge magnitudes
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        x[:, ::2] *= np.float32(1e-40)
        x[:, 1::5] *= np.float32(1e30)
        return x
    raise AssertionError(kind)


def references(n: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    g = (rng.random((n, *shape)) < rng.uniform(0.05, 0.6, (n,) + (1,) * len(shape)))
    g[0] = False  # G empty
    if n > 1:
        g[1] = True  # G everything
    return g.astype(np.float32)


KINDS = ("normal", "quantised", "relu", "ulps", "constant", "tiny")
THRESHOLDS = ("top15", "top1", "top50", "top100", "top0.001", "0.5", "0", "1", "0.999",
              "otsu")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sign", ["positive", "abs", "signed"])
def test_same_bits_as_the_xla_kernel(kind: str, sign: str, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng([KINDS.index(kind), len(sign)])
    sal = maps(kind, 12, (23, 29), rng)
    g = references(12, (23, 29), rng)
    fast, slow = both_paths(monkeypatch, sal, g, names_at(*THRESHOLDS), sign=sign, seed=7)
    assert_same_bits(fast, slow)


@pytest.mark.parametrize("kind", ["normal", "quantised", "relu"])
def test_same_bits_with_a_roi(kind: str, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(3)
    sal = maps(kind, 10, (17, 31), rng)
    g = references(10, (17, 31), rng)
    roi = rng.random(sal.shape) < 0.7
    roi[2] = False  # Ω empty: every count 0
    roi[3] = True
    roi[4] = False
    roi[4, 5, 6] = True  # Ω of one pixel
    for sign in ("positive", "signed"):
        fast, slow = both_paths(monkeypatch, sal, g, names_at(*THRESHOLDS), sign=sign,
                                roi=roi, seed=11)  # fmt: skip
        assert_same_bits(fast, slow)


def test_same_bits_in_3d_and_at_224(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(5)
    sal = maps("relu", 3, (9, 11, 13), rng)
    fast, slow = both_paths(monkeypatch, sal, references(3, (9, 11, 13), rng),
                            names_at("top15", "0.5", "otsu"))  # fmt: skip
    assert_same_bits(fast, slow)
    sal = maps("normal", 6, (224, 224), rng)
    fast, slow = both_paths(monkeypatch, sal, references(6, (224, 224), rng),
                            names_at("top15", "0.5", "otsu"), sign="abs")  # fmt: skip
    assert_same_bits(fast, slow)


def test_reference_dtypes_and_array_types(monkeypatch: pytest.MonkeyPatch):
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(9)
    sal = maps("quantised", 8, (16, 20), rng)
    g = references(8, (16, 20), rng)
    names = names_at("top15", "0.5", "otsu")
    expected = compute(sal, g, names)
    for s_in, g_in in [
        (sal, g.astype(bool)), (sal, g.astype(np.uint8)), (sal.astype(np.float64), g),
        (torch.from_numpy(sal), torch.from_numpy(g)), (jnp.asarray(sal), jnp.asarray(g)),
        (sal[:, ::-1].copy()[:, ::-1], g),  # a non-contiguous view
    ]:
        assert_same_bits(compute(s_in, g_in, names), expected)
    fast, slow = both_paths(monkeypatch, sal, g.astype(bool), names)
    assert_same_bits(fast, slow)


def test_mixed_names_keep_their_order_and_values(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(2)
    sal = maps("relu", 9, (20, 20), rng)
    g = references(9, (20, 20), rng)
    names = ["auprc", "iou@top15", "pointing_game", "recall@otsu", "iou@top15", "dice@0.3",
             "auroc"]
    fast, slow = both_paths(monkeypatch, sal, g, names, sign="abs")
    assert list(fast) == ["auprc", "iou@top15", "pointing_game", "recall@otsu", "dice@0.3",
                          "auroc"]
    assert_same_bits(fast, slow)


def test_top_k_regions_have_exactly_k_pixels():
    """|A| of top-K: a precision of 1 at K = 100 % when G is everything, and
    n_a = k read back from the counts (the radix selection and the tie cut)."""
    rng = np.random.default_rng(4)
    sal = maps("quantised", 6, (30, 40), rng)
    g = np.ones_like(sal)
    n_pixels = 30 * 40
    ks = np.array([[1, 180, 600, n_pixels]] * 6, np.int32)
    from benchmark.metrics.threshold import tiebreak_ranks

    counts = fused.region_counts(sal.reshape(6, -1), g.reshape(6, -1), None, 2,
                                 np.zeros(0, np.float32), ks, tiebreak_ranks(0, n_pixels),
                                 False)  # fmt: skip
    assert np.array_equal(counts.top[:, :, 0], ks)
    assert np.array_equal(counts.top[:, :, 1], ks)  # G = Ω
    assert counts.finite.all() and counts.reference_ok.all()


def test_brute_force_top_k_counts():
    """The counts of the top-K region against a sort by (S desc, tie-break rank asc)."""
    from benchmark.metrics.threshold import tiebreak_ranks, topk_count

    rng = np.random.default_rng(8)
    sal = maps("quantised", 5, (21, 19), rng)
    g = references(5, (21, 19), rng)
    n_pixels = 21 * 19
    ranks = tiebreak_ranks(3, n_pixels)
    k = topk_count(15, n_pixels)
    out = compute(sal, g, ["precision@top15"], sign="signed", seed=3)["precision@top15"]
    for i in range(5):
        s, gi = sal[i].ravel(), g[i].ravel()
        order = np.lexsort((ranks, -s.astype(np.float64)))
        hits = gi[order[:k]].sum()
        expected = np.nan if gi.sum() == 0 else np.float32(hits) / np.float32(k)
        assert (np.isnan(expected) and np.isnan(out[i])) or out[i] == expected


def test_errors_name_the_image_as_the_xla_kernel_does(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(1)
    sal = maps("normal", 6, (12, 12), rng)
    g = references(6, (12, 12), rng)
    names = names_at("top15", "otsu")
    cases = []
    bad_s = sal.copy()
    bad_s[4, 3, 3] = np.nan
    bad_s[5, 0, 0] = np.inf
    cases.append((bad_s, g, {}))
    bad_g = g.copy()
    bad_g[3, 1, 1] = 0.5
    cases.append((sal, bad_g, {}))
    cases.append((bad_s, bad_g, {}))  # the reference is named first, as on the XLA path
    cases.append((sal, g, {"roi": np.ones((6, 12, 11), bool)}))
    cases.append((sal, g, {"roi": np.full((6, 12, 12), 0.5)}))
    cases.append((sal, g, {"sign": "both"}))
    cases.append((sal, g, {"seed": -1}))
    cases.append((sal, g, {"chunk_size": 0}))
    cases.append((sal, g, {"spacing": (1.0,)}))
    for s_in, g_in, kwargs in cases:
        with pytest.raises(ValueError) as fast:
            compute(s_in, g_in, names, **kwargs)
        with monkeypatch.context() as m:
            m.setattr(fused, "available", lambda: False)
            with pytest.raises(ValueError) as slow:
                compute(s_in, g_in, names, **kwargs)
        assert str(fast.value) == str(slow.value)


def test_not_routed_when_the_xla_kernel_must_run():
    rng = np.random.default_rng(0)
    sal = maps("normal", 2, (8, 8), rng)
    g = references(2, (16, 16), rng)
    assert fused.routed(sal, g, ["iou@0.5"]) == []  # resized first
    assert fused.routed(g, g, ["iou@tuned", "iou@0.5"]) == []  # named error first
    assert fused.routed(g, g, ["nope@0.5", "iou@0.5"]) == []
    assert fused.routed(g, g, ["auprc", "cc"]) == []
    assert fused.routed(g, g, ["auroc", "cc"]) == ["auroc"]
    assert fused.routed(g, g, ["pointing_game", "rank_accuracy"]) == [
        "pointing_game", "rank_accuracy"]
    # A tolerance reads hit regions: the XLA kernel's.
    assert fused.routed(g, g, ["pointing_game", "rank_accuracy"], 2.0) == ["rank_accuracy"]
    assert fused.routed(g, g, ["auprc", "iou@0.5", "auroc", "dice@otsu"]) == [
        "iou@0.5", "auroc", "dice@otsu"]


def test_pointing_game_with_a_tolerance_keeps_its_hit_regions(monkeypatch):
    rng = np.random.default_rng(12)
    sal = maps("quantised", 6, (15, 15), rng)
    g = references(6, (15, 15), rng)
    names = ["pointing_game", "rank_accuracy", "iou@top15"]
    fast, slow = both_paths(monkeypatch, sal, g, names, pointing_tolerance_mm=3.0,
                            spacing=(1.0, 1.5))  # fmt: skip
    assert_same_bits(fast, slow)
    plain = compute(sal, g, ["pointing_game"])["pointing_game"]
    assert np.any(fast["pointing_game"] != plain)  # the tolerance was applied


def test_empty_batch():
    out = compute(np.zeros((0, 5, 5), np.float32), np.zeros((0, 5, 5), np.float32),
                  names_at("top15", "0.5", "otsu"))  # fmt: skip
    assert all(v.shape == (0,) and v.dtype == np.float64 for v in out.values())


def test_a_kernel_that_cannot_load_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch):
    """numba refuses ``cache=True`` when no cache folder is writable: the XLA kernel
    scores instead, the same values, and a warning names the cause."""
    import importlib

    rng = np.random.default_rng(6)
    sal = maps("relu", 4, (10, 10), rng)
    g = references(4, (10, 10), rng)
    names = names_at("top15", "otsu")
    expected = compute(sal, g, names)
    real = importlib.import_module

    def refuse(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "benchmark.metrics.fused_kernel":
            raise RuntimeError("cannot cache function 'rows': no locator available")
        return real(name, *args, **kwargs)

    fused._kernel_loads.cache_clear()
    monkeypatch.setattr(importlib, "import_module", refuse)
    try:
        with pytest.warns(RuntimeWarning, match="no locator available.*NUMBA_CACHE_DIR"):
            assert not fused.available()
        assert fused.routed(sal, g, names) == []
        assert_same_bits(compute(sal, g, names), expected)
    finally:
        monkeypatch.undo()
        fused._kernel_loads.cache_clear()
    assert fused.available()
