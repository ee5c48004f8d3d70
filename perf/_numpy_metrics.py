"""A straightforward numpy implementation of the metric catalogue, for ``perf/metrics.py``.

This is the code a user would write without JAX: a Python loop over images, vectorised
numpy inside each image (``np.partition`` for top-K, ``np.bincount`` for the Otsu
histogram, one stable ``argsort`` giving average ranks for AUROC (Mann-Whitney),
AUPRC and Spearman). It follows METRICS.md and the package's documented rules (top-K
size and tie-breaking keys come from the public ``topk_count`` / ``tiebreak_keys``,
which *define* the rule), so it computes the same numbers as ``benchmark.metrics.compute``
up to float rounding: float32 where the package's rule is stated on float32 values
(min-max normalisation, thresholds), float64 for every sum.

Scope: no region of interest (Ω = every pixel), saliency already on the reference grid
(no resizing), sign ``positive``, ``abs`` or ``signed``; ``peak_distance`` in units of
``spacing`` (1 per axis by default). Only the metrics listed in
:data:`SUPPORTED` are implemented; :func:`supports` says whether a name is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmark.metrics import tiebreak_keys, topk_count

REGION = ("precision", "irrelevant_fraction", "recall", "iou", "dice")
BINARY = ("pointing_game", "mass_accuracy", "rank_accuracy", "auroc", "auprc", "nss")
GRADED = ("weighted_mass", "cc", "spearman", "sim", "kl", "spearman_abs", "peak_distance")
SUPPORTED = frozenset(REGION + BINARY + GRADED)
KL_EPS = 2.2e-16
OTSU_BINS = 256
NAN = float("nan")


def supports(name: str) -> bool:
    """Whether ``name`` (``base`` or ``base@threshold``) is implemented here."""
    base, _, thr = name.partition("@")
    if base not in SUPPORTED:
        return False
    if base in REGION:
        return thr == "otsu" or _is_top(thr) or _is_fixed(thr)
    return not thr


def _is_top(thr: str) -> bool:
    return thr.startswith("top") and _is_fixed(thr[3:], hi=100.0)


def _is_fixed(thr: str, hi: float = 1.0) -> bool:
    try:
        return 0.0 <= float(thr) <= hi
    except ValueError:
        return False


# ----------------------------------------------------------------------- per-image pieces


def _sign(s: np.ndarray, sign: str) -> np.ndarray:
    if sign == "positive":
        return np.maximum(s, np.float32(0.0))
    if sign == "abs":
        return np.abs(s)
    return s


def _minmax(s: np.ndarray) -> np.ndarray:
    """Min-max normalise in float32 (as the package does); a constant map gives zeros."""
    lo, hi = s.min(), s.max()
    span = hi - lo
    if span > 0:
        return (s - lo) / span
    return np.zeros_like(s)


def _topk_mask(s: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """The k highest pixels; ties at the k-th value broken by (key, index) ascending."""
    n = s.size
    mask = np.zeros(n, bool)
    if k <= 0:
        return mask
    if k >= n:
        mask[:] = True
        return mask
    kth = np.partition(s, n - k)[n - k]
    above = s > kth
    need = k - int(np.count_nonzero(above))
    tied = np.flatnonzero(s == kth)
    if need < tied.size:
        tied = tied[np.lexsort((tied, keys[tied]))[:need]]
    mask |= above
    mask[tied] = True
    return mask


def _otsu_tau(s_norm: np.ndarray) -> np.float32:
    bins = np.clip(np.floor(s_norm * OTSU_BINS), 0, OTSU_BINS - 1).astype(np.intp)
    counts = np.bincount(bins, minlength=OTSU_BINS)
    p = counts / max(int(counts.sum()), 1)
    levels = np.arange(OTSU_BINS, dtype=np.float64)
    n_below = np.cumsum(counts)[:-1]
    valid = (n_below > 0) & (n_below < counts.sum())
    w_b = np.cumsum(p)[:-1]
    m_b = np.cumsum(p * levels)[:-1]
    w_a = 1.0 - w_b
    m_a = (p * levels).sum() - m_b
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(valid, w_b * w_a * (m_b / w_b - m_a / w_a) ** 2, 0.0)
    return np.float32((int(np.argmax(var)) + 1) / OTSU_BINS)


def _region_scores(a: np.ndarray, g: np.ndarray, n_g: int) -> dict[str, float]:
    if n_g == 0:
        return dict.fromkeys(REGION, NAN)
    n_a = int(np.count_nonzero(a))
    n_ag = int(np.count_nonzero(a & g))
    precision = n_ag / n_a if n_a else NAN
    return {
        "precision": precision,
        "irrelevant_fraction": 1.0 - precision,
        "recall": n_ag / n_g,
        "iou": n_ag / (n_a + n_g - n_ag),
        "dice": 2 * n_ag / (n_a + n_g),
    }


class _Ranks:
    """One stable argsort of ``x``: average ranks (1-based) and per-pixel group starts."""

    def __init__(self, x: np.ndarray) -> None:
        order = np.argsort(x, kind="stable")
        xs = x[order]
        new = np.empty(x.size, bool)
        new[0] = True
        np.not_equal(xs[1:], xs[:-1], out=new[1:])
        group = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        bounds = np.append(starts, x.size)
        self.order = order
        self.group_sorted = group
        self.starts = starts
        # Pixels in group j hold sorted positions starts[j] .. bounds[j+1]-1 (0-based).
        avg = (bounds[:-1] + bounds[1:] + 1) / 2.0
        self.avg = np.empty(x.size, np.float64)
        self.avg[order] = avg[group]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.max() <= x.min() or y.max() <= y.min():
        return NAN
    xc = x - x.mean()
    yc = y - y.mean()
    r = float(np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc)))
    return min(1.0, max(-1.0, r))


def _peak_centroid(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centroid, in index units, of the pixels where ``x`` is maximal."""
    idx = np.flatnonzero(x == x.max())
    return np.array([c.mean() for c in np.unravel_index(idx, shape)])


def _distribution(x: np.ndarray) -> np.ndarray:
    x_norm = _minmax(x).astype(np.float64)
    total = x_norm.sum()
    return x_norm / total if total > 0 else x_norm


def _score_one(
    s_raw: np.ndarray,
    g_ref: np.ndarray | None,
    w_ref: np.ndarray | None,
    names: Sequence[str],
    keys: np.ndarray,
    sign: str,
    spacing: Sequence[float],
) -> list[float]:
    s = _sign(s_raw.ravel().astype(np.float32, copy=False), sign)
    n = s.size
    s64 = s.astype(np.float64)
    cache: dict[str, object] = {}

    def lazy(key: str, make: Callable[[], object]) -> Any:
        if key not in cache:
            cache[key] = make()
        return cache[key]

    g = (g_ref.ravel() > 0.5) if g_ref is not None else None
    n_g = int(np.count_nonzero(g)) if g is not None else 0
    w = w_ref.ravel().astype(np.float64) if w_ref is not None else None
    constant_s = not (s.max() > s.min())

    def s_norm() -> np.ndarray:
        return lazy("s_norm", lambda: _minmax(s))

    def ranks_s() -> _Ranks:
        return lazy("ranks_s", lambda: _Ranks(s))

    out: list[float] = []
    for name in names:
        base, _, thr = name.partition("@")
        if base in REGION:
            assert g is not None

            def region(thr: str = thr) -> dict[str, float]:
                if thr.startswith("top"):
                    a = _topk_mask(s, keys, topk_count(float(thr[3:]), n))
                elif thr == "otsu":
                    a = s_norm() >= _otsu_tau(s_norm())
                else:
                    a = s_norm() >= np.float32(float(thr))
                return _region_scores(a, g, n_g)

            out.append(lazy("region@" + thr, region)[base])
        elif base == "pointing_game":
            m = s == s.max()
            out.append(np.count_nonzero(m & g) / np.count_nonzero(m) if n_g else NAN)
        elif base == "mass_accuracy":
            total = s64.sum()
            out.append(s64[g].sum() / total if n_g and total != 0 else NAN)
        elif base == "rank_accuracy":
            out.append(np.count_nonzero(_topk_mask(s, keys, n_g) & g) / n_g if n_g else NAN)
        elif base == "auroc":
            n0 = n - n_g
            if n_g == 0 or n0 == 0:
                out.append(NAN)
            else:
                u = ranks_s().avg[g].sum() - n_g * (n_g + 1) / 2.0
                out.append(u / (n_g * n0))
        elif base == "auprc":
            if n_g == 0 or n_g == n:
                out.append(NAN)
            else:
                r = ranks_s()
                left = r.starts[r.group_sorted]  # pixels strictly below, in sorted order
                pos_sorted = g[r.order]
                g_below = np.concatenate(([0], np.cumsum(pos_sorted)))[left]
                pp = n - left
                tp = n_g - g_below
                out.append(float(np.sum((tp / pp)[pos_sorted])) / n_g)
        elif base == "nss":
            if n_g == 0 or constant_s:
                out.append(NAN)
            else:
                out.append(float((s64[g].mean() - s64.mean()) / s64.std()))
        elif base == "spearman_abs":  # |S| before the sign option, by definition
            assert w is not None
            w_ranks: _Ranks = lazy("ranks_w", lambda: _Ranks(w))
            abs_ranks: _Ranks = lazy(
                "ranks_abs", lambda: _Ranks(np.abs(s_raw.ravel().astype(np.float32)))
            )
            out.append(_pearson(abs_ranks.avg, w_ranks.avg) if np.any(w > 0) else NAN)
        elif base == "peak_distance":
            assert w is not None
            shape = s_raw.shape
            if not np.any(w > 0):
                out.append(NAN)
            else:
                d = _peak_centroid(s, shape) - _peak_centroid(w, shape)
                out.append(float(np.sqrt(np.sum((d * np.asarray(spacing)) ** 2))))
        elif base in GRADED:
            assert w is not None
            out.append(_graded(base, s, s64, w, constant_s, lazy, ranks_s))
        else:
            raise ValueError(f"no numpy implementation of {name!r}")
    return out


def _graded(
    base: str,
    s: np.ndarray,
    s64: np.ndarray,
    w: np.ndarray,
    constant_s: bool,
    lazy: Callable[[str, Callable[[], object]], Any],
    ranks_s: Callable[[], _Ranks],
) -> float:
    if not np.any(w > 0):
        return NAN
    if base == "weighted_mass":
        total = s64.sum()
        return float(np.dot(s64, w) / total) if total != 0 else NAN
    if base == "cc":
        return _pearson(s64, w)
    if base == "spearman":
        ranks_w: _Ranks = lazy("ranks_w", lambda: _Ranks(w))
        return _pearson(ranks_s().avg, ranks_w.avg)
    constant_w = not (w.max() > w.min())
    if constant_s or constant_w:
        return NAN
    s_hat: np.ndarray = lazy("s_hat", lambda: _distribution(s))
    w_hat: np.ndarray = lazy("w_hat", lambda: _distribution(w.astype(np.float32)))
    if base == "sim":
        return float(np.minimum(s_hat, w_hat).sum())
    if base == "kl":
        return float(np.sum(w_hat * np.log(KL_EPS + w_hat / (s_hat + KL_EPS))))
    raise ValueError(f"no numpy implementation of {base!r}")


def compute(
    saliency: np.ndarray,
    mask: np.ndarray | None,
    graded: np.ndarray | None,
    names: Sequence[str],
    *,
    sign: str = "positive",
    seed: int = 0,
    spacing: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Score every image for ``names``; one float64 array ``(N,)`` per name.

    Parameters
    ----------
    saliency : ndarray, shape (N, *spatial)
        On the reference grid (no resizing here).
    mask : ndarray, shape (N, *spatial) or None
        Binary reference G, for the binary metrics.
    graded : ndarray, shape (N, *spatial) or None
        Graded reference W in [0, 1], for the graded metrics.
    """
    bad = [nm for nm in names if not supports(nm)]
    if bad:
        raise ValueError(f"no numpy implementation of {bad}")
    n_images = saliency.shape[0]
    n_pixels = int(np.prod(saliency.shape[1:]))
    keys = tiebreak_keys(seed, n_pixels)
    out = np.empty((n_images, len(names)), np.float64)
    for i in range(n_images):
        out[i] = _score_one(
            saliency[i],
            None if mask is None else mask[i],
            None if graded is None else graded[i],
            names,
            keys,
            sign,
            spacing if spacing is not None else (1.0,) * (saliency.ndim - 1),
        )
    return {name: out[:, j].copy() for j, name in enumerate(names)}
