"""Paired tests on case-level differences: sign-flip permutation, Wilcoxon, rank-biserial.

Each function takes the case-level differences ``d`` of ``P`` pairs at once, as columns of
an ``(n_cases, P)`` array, with a boolean mask ``paired`` of the same shape saying which
cases enter each pair (a case enters a pair only if both arms have a valid case mean).
Entries of ``d`` outside the mask are ignored.

References
----------
.. [1] P. Good, "Permutation, Parametric, and Bootstrap Tests of Hypotheses", 3rd ed.,
   Springer, 2005, section 3.7 (the one-sample / paired sign-flip test).
.. [2] B. Phipson and G. K. Smyth, "Permutation p-values should never be zero",
   Statistical Applications in Genetics and Molecular Biology 9(1), 2010.
.. [3] D. S. Kerby, "The simple difference formula: an approach to teaching
   nonparametric correlation", Comprehensive Psychology 3:11.IT.3.1, 2014.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
from scipy import stats

#: Relative tolerance when counting ``|T*| >= |T|`` (as ``scipy.stats.permutation_test``),
#: so that sign vectors giving the observed statistic up to rounding count as "as extreme".
_REL_TOL = 100 * np.finfo(np.float64).eps
#: Columns per chunk of the Monte Carlo product ``signs @ d`` (bounds memory).
_CHUNK = 256
#: Largest n for which scipy's ``wilcoxon(method="auto")`` is exact (scipy 1.9-1.17).
_WILCOXON_EXACT_MAX = 50
#: Largest n for which it runs a permutation test when there are zeros or ties (2**n
#: sign vectors fit its default resamples; scipy 1.13-1.17).
_WILCOXON_PERMUTATION_MAX = 13
#: Entries of the Monte Carlo sign matrix held at once (16 MB of float64).
_SIGN_BLOCK = 1 << 21
#: Pairs per chunk of the Monte Carlo statistics from the arms (``_ARM_CHUNK x rows``
#: doubles stay in cache).
_ARM_CHUNK = 64


def _exact_signs(n: int) -> np.ndarray:
    """All ``2**n`` sign vectors, shape ``(2**n, n)``, float64 (the first is all ``+1``)."""
    bits = (np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)) & 1
    return (1 - 2 * bits).astype(np.float64)


def _count_extreme(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``#{|T*| >= |T|}`` per column, with the relative tolerance ``_REL_TOL``."""
    obs = np.abs(observed)
    return np.count_nonzero(np.abs(null) >= obs - _REL_TOL * obs, axis=0)


def sign_flip_pvalues(
    d: np.ndarray,
    paired: np.ndarray,
    *,
    n_flips: int,
    seed: int,
    arms: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Two-sided paired sign-flip permutation p-value of each column.

    Parameters
    ----------
    d : ndarray of float, shape (n_cases, P)
        Case-level differences ``a_i - b_i``.
    paired : ndarray of bool, shape (n_cases, P)
        Which cases enter each pair; ``m = paired[:, j].sum()`` pairs in column ``j``.
    n_flips : int
        Monte Carlo sign vectors; a column is enumerated exactly when ``2**m <= n_flips``.
    seed : int
        Seed of the Monte Carlo sign matrix ``(n_flips, n_cases)``: entry ``-1`` where a
        uniform from :func:`numpy.random.default_rng` is below 0.5, drawn row-major in
        blocks and shared by all Monte Carlo columns.
    arms : tuple (x, col_a, col_b), optional
        The arms of the differences when many pairs share an arm: ``x`` of shape
        ``(n_cases, K)`` (zero outside the pair's cases) and column indices of shape
        ``(P,)`` with ``where(paired, d, 0) == x[:, col_a] - x[:, col_b]``. The Monte
        Carlo statistics are then computed per arm (``K`` columns in the product instead
        of ``P``, see Notes); the p-values are the same.

    Returns
    -------
    p : ndarray of float64, shape (P,)
        NaN where ``m = 0``.

    Notes
    -----
    Statistic ``T = |sum_i d_i|`` (equivalently ``|mean d|``) over the paired cases. Exact:
    ``p = #{s in {-1, 1}^m : |sum s_i d_i| >= T} / 2**m`` (the identity is one of the
    ``s``). Monte Carlo: ``p = (1 + #{b : |T*_b| >= T}) / (1 + n_flips)`` [2], the observed
    sign vector counted once. All differences zero gives ``p = 1``. A statistic counts as
    "as extreme" when ``|T*| >= T (1 - 100 eps)``, so that sign vectors reaching ``T`` up
    to rounding (ties, e.g. from discrete metrics) are counted.

    With ``arms``, ``T*_b = s_b . x_a - s_b . x_b``. Its rounding error, bounded by
    ``2 n eps (sum |x_a| + sum |x_b| + sum |d|)``, can exceed the tolerance above, so a
    statistic that close to the threshold is recomputed as ``s_b . d`` and counted as
    without ``arms``: the p-values do not depend on ``arms``.
    """
    d = np.where(paired, np.asarray(d, dtype=np.float64), 0.0)
    m = paired.sum(axis=0)
    observed = d.sum(axis=0)
    p = np.full(d.shape[1], np.nan)
    exact = (m > 0) & (m <= int(n_flips).bit_length() - 1)  # 2**m <= n_flips
    cache: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(exact):
        k = int(m[j])
        signs = cache.setdefault(k, _exact_signs(k))
        null = signs @ d[paired[:, j], j]
        p[j] = _count_extreme(null[:, None], observed[j : j + 1])[0] / signs.shape[0]
    mc = np.flatnonzero((m > 0) & ~exact)
    if mc.size:
        if arms is None:
            hits = _count_monte_carlo(d, observed, mc, n_flips, seed)
        else:
            hits = _count_monte_carlo_arms(d, observed, mc, arms, n_flips, seed)
        p[mc] = (1.0 + hits) / (1.0 + n_flips)
    return p


def _sign_blocks(n_cases: int, n_flips: int, seed: int) -> Iterator[np.ndarray]:
    """The Monte Carlo sign matrix ``(n_flips, n_cases)`` in blocks of rows.

    One uniform per entry, drawn row-major, so the blocks form the same matrix whatever
    their size: memory stays at ``_SIGN_BLOCK`` entries however many cases there are.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, _SIGN_BLOCK // max(n_cases, 1))
    for first in range(0, n_flips, rows):
        yield np.where(rng.random((min(rows, n_flips - first), n_cases)) < 0.5, -1.0, 1.0)


def _count_monte_carlo(
    d: np.ndarray, observed: np.ndarray, mc: np.ndarray, n_flips: int, seed: int
) -> np.ndarray:
    """``#{b : |s_b . d_j| >= |T_j|}`` for the columns ``mc``, one product per column."""
    hits = np.zeros(mc.size, np.int64)
    for signs in _sign_blocks(d.shape[0], n_flips, seed):
        for start in range(0, mc.size, _CHUNK):
            cols = mc[start : start + _CHUNK]
            hits[start : start + _CHUNK] += _count_extreme(signs @ d[:, cols], observed[cols])
    return hits


def _count_monte_carlo_arms(
    d: np.ndarray, observed: np.ndarray, mc: np.ndarray,
    arms: tuple[np.ndarray, np.ndarray, np.ndarray], n_flips: int, seed: int,
) -> np.ndarray:
    """:func:`_count_monte_carlo` from the products of the arms, ``s_b . x_k`` once per arm."""
    x, col_a, col_b = arms
    used, inv = np.unique(np.concatenate([col_a[mc], col_b[mc]]), return_inverse=True)
    ia, ib = inv[: mc.size], inv[mc.size :]
    xu = np.ascontiguousarray(x[:, used].T)
    obs = np.abs(observed[mc])
    threshold = obs - _REL_TOL * obs
    n = d.shape[0]
    eps = np.finfo(np.float64).eps
    size = np.abs(xu).sum(axis=1)
    margin = (2.0 * n * eps * (size[ia] + size[ib] + np.abs(d[:, mc]).sum(axis=0))
              + 4.0 * eps * obs)
    sure = (threshold + margin)[:, None]
    maybe = (threshold - margin)[:, None]
    hits = np.zeros(mc.size, np.int64)
    for signs in _sign_blocks(n, n_flips, seed):
        arm_null = xu @ signs.T  # (arms, rows): s_b . x_k
        for start in range(0, mc.size, _ARM_CHUNK):
            stop = min(start + _ARM_CHUNK, mc.size)
            null = arm_null[ia[start:stop]]
            null -= arm_null[ib[start:stop]]
            np.abs(null, out=null)
            above = np.count_nonzero(null >= sure[start:stop], axis=1)
            hits[start:stop] += above
            near = np.count_nonzero(null >= maybe[start:stop], axis=1) - above
            for j in np.flatnonzero(near):
                # Too close to call from the arms: recompute s_b . d as without them.
                rows = np.flatnonzero((null[j] >= maybe[start + j, 0])
                                      & (null[j] < sure[start + j, 0]))
                exact = signs[rows] @ d[:, mc[start + j]]
                col = mc[start + j]
                hits[start + j] += _count_extreme(exact[:, None], observed[col : col + 1])[0]
    return hits


def wilcoxon_pvalues(d: np.ndarray, paired: np.ndarray) -> np.ndarray:
    """``scipy.stats.wilcoxon(d, zero_method="zsplit").pvalue`` of each column.

    Parameters
    ----------
    d, paired : ndarray, shape (n_cases, P)
        As in :func:`sign_flip_pvalues`.

    Returns
    -------
    p : ndarray of float64, shape (P,)
        NaN where fewer than two cases are paired or all paired differences are zero.
    """
    p = np.full(d.shape[1], np.nan)
    usable = np.flatnonzero((paired.sum(axis=0) >= 2) & (paired & (d != 0)).any(axis=0))
    packed = np.packbits(paired, axis=0)
    # Columns with the same paired cases go through one vectorised scipy call: same
    # p-values, ~100x faster than a loop. scipy picks one method per call, and below
    # _WILCOXON_EXACT_MAX cases the exact one only when no column has a zero or a tie, so
    # small columns are called in two batches: clean (exact) and the others (the normal
    # approximation, or a permutation test up to _WILCOXON_PERMUTATION_MAX cases, looped).
    groups: dict[bytes, list[int]] = {}
    for j in usable.tolist():
        groups.setdefault(packed[:, j].tobytes(), []).append(j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for group in groups.values():
            cols = np.asarray(group)
            rows = paired[:, cols[0]]
            block = d[rows][:, cols]
            n = int(rows.sum())
            if n > _WILCOXON_EXACT_MAX:
                batches = [np.arange(len(cols))]
            else:
                a = np.sort(np.abs(block), axis=0)
                clean = (a[0] > 0) & (np.diff(a, axis=0) > 0).all(axis=0)
                batches = [np.flatnonzero(clean), np.flatnonzero(~clean)]
                if n <= _WILCOXON_PERMUTATION_MAX:
                    batches = batches[:1] + [np.array([k]) for k in batches[1]]
            for k in batches:
                if k.size == 1:
                    p[cols[k[0]]] = stats.wilcoxon(block[:, k[0]], zero_method="zsplit").pvalue
                elif k.size:
                    p[cols[k]] = stats.wilcoxon(block[:, k], zero_method="zsplit", axis=0).pvalue
    return p


def rank_biserial(d: np.ndarray, paired: np.ndarray) -> np.ndarray:
    """Matched-pairs rank-biserial correlation of each column (Kerby 2014 [3]).

    Parameters
    ----------
    d, paired : ndarray, shape (n_cases, P)
        As in :func:`sign_flip_pvalues`.

    Returns
    -------
    r : ndarray of float64, shape (P,)
        ``r = (R+ - R-) / (R+ + R-)``: ``R+`` (``R-``) is the sum of the ranks of ``|d_i|``
        (average ranks for ties, zero differences dropped) over the positive (negative)
        ``d_i``. In ``[-1, 1]``; ``+1`` when every non-zero difference is positive. NaN
        when no paired difference is non-zero.
    """
    # Zero and unpaired differences get rank NaN (dropped); the others are ranked per
    # column in one vectorised call, with average ranks for ties as before.
    x = np.where(paired & (d != 0), np.abs(d), np.nan)
    ranks = stats.rankdata(x, axis=0, nan_policy="omit")
    sign = np.sign(np.where(np.isnan(x), 0.0, d))
    total = np.nansum(ranks, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.nansum(ranks * sign, axis=0) / total
    return np.where(total > 0, r, np.nan)
