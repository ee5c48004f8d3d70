"""Case resampling: the bootstrap count matrix and the seeds it is drawn from.

Every bootstrap in :mod:`benchmark.stats` is a function of case weights (STATISTICS.md):
the count matrix ``C`` drawn here holds, for each replicate (row) and case (column), how
often the case was drawn. A statistic's replicates are then ``statistic(C)``, its estimate
``statistic(ones)`` and its jackknife values ``statistic(1 - I)``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from benchmark.stats._validation import check_int, check_seed


def draw_counts(n_cases: int, n_boot: int, seed: int, strata: Any = None) -> np.ndarray:
    """Draw the case-resampling count matrix of a (stratified) case bootstrap.

    Parameters
    ----------
    n_cases : int
        Number of cases (clusters), ``>= 1``.
    n_boot : int
        Number of bootstrap replicates (rows), ``>= 1``.
    seed : int
        Non-negative seed for :func:`numpy.random.default_rng`; the same seed gives the same
        matrix.
    strata : array_like of shape (n_cases,), optional
        Stratum label of each case (e.g. its class label). When given, every replicate
        draws, within each stratum, as many cases as the stratum holds, so the per-stratum
        case counts are the same in every replicate. Default ``None``: one stratum.

    Returns
    -------
    counts : ndarray of int64, shape (n_boot, n_cases)
        ``counts[b, i]`` is how often case ``i`` was drawn in replicate ``b``; every row
        sums to ``n_cases`` (and to each stratum's size over that stratum's columns).

    Notes
    -----
    Without strata each row is ``Multinomial(n_cases, (1/n_cases, ..., 1/n_cases))``, the
    counts of ``n_cases`` draws with replacement (``rng.integers(0, n_cases, (n_boot,
    n_cases))``, counted per row). With strata, the strata are visited in sorted order of
    their labels and each gets ``Multinomial(n_s, 1/n_s)`` rows drawn the same way from the
    same generator, so the matrix depends only on the seed, the number of cases and the
    strata (not on the order in which labels first appear).

    Examples
    --------
    >>> from benchmark.stats import draw_counts
    >>> c = draw_counts(5, 3, seed=0, strata=[0, 0, 1, 1, 1])
    >>> c.shape, c[:, :2].sum(axis=1).tolist(), c[:, 2:].sum(axis=1).tolist()
    ((3, 5), [2, 2, 2], [3, 3, 3])
    """
    n_cases = check_int(n_cases, "n_cases", 1)
    n_boot = check_int(n_boot, "n_boot", 1)
    rng = np.random.default_rng(check_seed(seed))
    if strata is None:
        return _resample_counts(rng, n_cases, n_boot)
    labels = np.asarray(strata)
    if labels.shape != (n_cases,):
        raise ValueError(
            f"`strata` must hold one label per case, shape ({n_cases},); got {labels.shape}."
        )
    if pd.isna(labels).any():
        raise ValueError("`strata` must not contain missing labels (None or NaN).")
    codes, uniques = pd.factorize(labels, sort=True)
    counts = np.empty((n_boot, n_cases), dtype=np.int64)
    for s in range(len(uniques)):
        members = np.flatnonzero(codes == s)
        counts[:, members] = _resample_counts(rng, members.size, n_boot)
    return counts


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Counts of ``n`` uniform draws with replacement from ``n`` items, ``n_boot`` times.

    Draws the ``(n_boot, n)`` indices with ``rng.integers`` and counts them per row (one
    :func:`numpy.bincount`): each row is ``Multinomial(n, 1/n)``, several times faster
    than ``rng.multinomial`` for many cases.
    """
    draws = rng.integers(0, n, size=(n_boot, n))
    draws += (np.arange(n_boot, dtype=np.int64) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return counts.astype(np.int64, copy=False)


def split_seed(seed: int, split: Any) -> int:
    """Derive the seed of one split's count matrix from the run seed and the split name.

    Parameters
    ----------
    seed : int
        The run seed (non-negative).
    split : object
        The split's name; ``str(split)`` is used.

    Returns
    -------
    int
        ``int.from_bytes(sha256(f"{seed}:{split}".encode("utf-8")).digest()[:8], "little")``,
        a 64-bit seed that is the same on every machine and in every process (unlike
        ``hash``), and differs between splits so that their draws are independent.

    Examples
    --------
    >>> split_seed(0, "test") == split_seed(0, "test") != split_seed(0, "val")
    True
    """
    seed = check_seed(seed)
    digest = hashlib.sha256(f"{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")
