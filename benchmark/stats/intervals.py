"""Bootstrap confidence intervals from replicates: percentile and BCa, vectorised.

Every function takes the replicates of ``K`` statistics at once, as columns of a
``(n_boot, K)`` array (a 1-D array is one statistic), and returns one value per column.
Non-finite replicates (a resample in which the statistic is undefined, e.g. no valid case
drawn) are left out of every column's quantiles and bias correction.

Quantiles use numpy's default ``method="linear"`` (Hyndman & Fan type 7), reproduced
exactly, so that the percentile interval equals ``numpy.quantile`` of the finite
replicates.

References
----------
.. [1] B. Efron, "Better bootstrap confidence intervals", Journal of the American
   Statistical Association 82(397):171-185, 1987.
.. [2] B. Efron and R. J. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall,
   1993, sections 14.3 and 22.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import ndtr, ndtri

#: ``method`` labels reported with an interval.
BCA = "bca"
PERCENTILE = "percentile"
FALLBACK = "percentile (BCa undefined)"
UNDEFINED = "undefined (no valid values)"


def _as_columns(replicates: np.ndarray) -> np.ndarray:
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.ndim not in (1, 2):
        raise ValueError(
            f"`replicates` must have shape (n_boot,) or (n_boot, K); got {reps.shape}."
        )
    return reps.reshape(reps.shape[0], -1)


def sort_columns(replicates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each statistic's replicates, non-finite ones last.

    Parameters
    ----------
    replicates : ndarray, shape (n_boot,) or (n_boot, K)
        Not modified.

    Returns
    -------
    ordered : ndarray of float64, shape (K, n_boot)
        Row ``k`` holds column ``k`` sorted ascending, non-finite values (as NaN) at the end.
    n_finite : ndarray of int64, shape (K,)
        Number of finite replicates per statistic.
    """
    return sort_rows(np.array(_as_columns(replicates).T, order="C", copy=True))


def sort_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-place variant of :func:`sort_columns` for replicates laid out as ``(K, n_boot)``.

    Non-finite entries of ``rows`` are set to NaN and each row is sorted in place; returns
    ``(rows, n_finite)``.

    Notes
    -----
    Rows are sorted first: ascending order puts ``-inf`` first and ``+inf`` and NaN last,
    so a row whose first and last entries are finite is all finite, and only the other
    rows (rare: a replicate that drew no valid case) need the NaN pass and a second sort.
    """
    rows.sort(axis=1)
    k, n = rows.shape
    n_finite = np.full(k, n, dtype=np.int64)
    if n == 0:
        return rows, n_finite
    bad = np.flatnonzero(~(np.isfinite(rows[:, 0]) & np.isfinite(rows[:, -1])))
    if bad.size:
        sub = rows[bad]
        sub[~np.isfinite(sub)] = np.nan
        sub.sort(axis=1)
        rows[bad] = sub
        n_finite[bad] = np.count_nonzero(~np.isnan(sub), axis=1)
    return rows, n_finite


def standard_error_sorted(ordered: np.ndarray, n_finite: np.ndarray) -> np.ndarray:
    """Standard deviation (``ddof=1``) of the finite entries of each row; NaN below two."""
    if (n_finite == ordered.shape[1]).all() and ordered.shape[1] > 1:
        return np.asarray(ordered.std(axis=1, ddof=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.asarray(np.nanstd(ordered, axis=1, ddof=1))
    se[n_finite < 2] = np.nan
    return se


def quantile_sorted(ordered: np.ndarray, n_finite: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantile ``q[k]`` of the first ``n_finite[k]`` entries of row ``k``.

    Same arithmetic as ``numpy.quantile(x, q, method="linear")``: virtual index
    ``h = (n - 1) q``, ``lo = floor(h)``, ``g = h - lo``, and ``x[lo] + g (x[lo+1] - x[lo])``
    (or ``x[lo+1] - (1 - g)(x[lo+1] - x[lo])`` when ``g >= 0.5``). NaN where ``q`` is NaN
    or a row has no finite entry.

    Parameters
    ----------
    ordered : ndarray, shape (K, n_boot)
        Output of :func:`sort_columns`.
    n_finite : ndarray of int, shape (K,)
    q : ndarray of float, shape (K,)
        Probabilities in [0, 1] (clipped), one per row.

    Returns
    -------
    ndarray of float64, shape (K,)
    """
    q = np.asarray(q, dtype=np.float64)
    ok = np.isfinite(q) & (n_finite > 0)
    n = np.maximum(n_finite, 1)
    h = (n - 1) * np.clip(np.where(ok, q, 0.0), 0.0, 1.0)
    lo_f = np.floor(h)
    gamma = h - lo_f
    lo = np.minimum(lo_f.astype(np.int64), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    rows = np.arange(ordered.shape[0])
    a = ordered[rows, lo]
    b = ordered[rows, hi]
    diff = b - a
    out = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    out[~ok] = np.nan
    return out


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of each column.

    Parameters
    ----------
    replicates : ndarray, shape (n_boot,) or (n_boot, K)
        Bootstrap replicates; non-finite ones are ignored.
    level : float
        Confidence level in (0, 1), e.g. 0.95.

    Returns
    -------
    low, high : ndarray of float64, shape () or (K,)
        The ``alpha = (1 - level) / 2`` and ``1 - alpha`` quantiles (numpy's ``"linear"``
        method) of the finite replicates.

    Examples
    --------
    >>> import numpy as np
    >>> low, high = percentile_interval(np.arange(101.0), 0.5)
    >>> float(low), float(high)
    (25.0, 75.0)
    """
    reps = np.asarray(replicates)
    ordered, n_finite = sort_columns(reps)
    low, high = _percentile_sorted(ordered, n_finite, level)
    return low.reshape(reps.shape[1:]), high.reshape(reps.shape[1:])


def _percentile_sorted(
    ordered: np.ndarray, n_finite: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    k = ordered.shape[0]
    low = quantile_sorted(ordered, n_finite, np.full(k, alpha))
    high = quantile_sorted(ordered, n_finite, np.full(k, 1.0 - alpha))
    return low, high


def jackknife_acceleration(jackknife: np.ndarray) -> np.ndarray:
    """BCa acceleration from delete-one-case jackknife values.

    Parameters
    ----------
    jackknife : ndarray, shape (n_cases,) or (n_cases, K)
        ``theta_(i)``: the statistic with case ``i`` left out. NaN entries (cases that do
        not enter the statistic) are skipped.

    Returns
    -------
    a : ndarray of float64, shape () or (K,)
        ``a = sum_i d_i^3 / (6 (sum_i d_i^2)^(3/2))`` with ``d_i = mean_j theta_(j) -
        theta_(i)`` over the finite entries (Efron 1987 [1]; [2] section 14.3). NaN when
        all ``d_i`` are zero or no entry is finite.
    """
    jk = np.asarray(jackknife, dtype=np.float64)
    shape = jk.shape[1:]
    jk = jk.reshape(jk.shape[0], -1)
    finite = np.isfinite(jk)
    m = finite.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if finite.all():  # the same sums without the masking passes
            mean = jk.sum(axis=0) / m
            d = mean - jk
        else:
            mean = np.where(finite, jk, 0.0).sum(axis=0) / m
            d = np.where(finite, mean - jk, 0.0)
        # d * d * d, not d**3: numpy's power calls libm pow for an exponent of 3 (~50x
        # slower); the two differ by at most two roundings (~1e-16 relative in ``a``).
        d2 = d * d
        a = (d2 * d).sum(axis=0) / (6.0 * d2.sum(axis=0) ** 1.5)
    return a.reshape(shape)


def bias_correction(theta_hat: np.ndarray, replicates: np.ndarray) -> np.ndarray:
    """BCa bias correction ``z0`` of each column.

    Parameters
    ----------
    theta_hat : float or ndarray, shape () or (K,)
        The estimates.
    replicates : ndarray, shape (n_boot,) or (n_boot, K)

    Returns
    -------
    z0 : ndarray of float64, shape () or (K,)
        ``Phi^-1((#{theta*_b < theta_hat} + #{theta*_b == theta_hat} / 2) / B)`` over the
        ``B`` finite replicates: ties count one half, as in ``scipy.stats.bootstrap``
        (``percentileofscore(kind="mean")``). Infinite when every replicate lies on one
        side of the estimate.
    """
    reps = np.asarray(replicates)
    ordered, n_finite = sort_columns(reps)
    theta = np.broadcast_to(np.asarray(theta_hat, dtype=np.float64), reps.shape[1:]).ravel()
    return _z0_sorted(theta, ordered, n_finite).reshape(reps.shape[1:])


def _z0_sorted(theta: np.ndarray, ordered: np.ndarray, n_finite: np.ndarray) -> np.ndarray:
    # Rows are sorted (NaN last): the counts below and equal to theta are two binary
    # searches per row rather than two passes over the replicates.
    below = np.zeros(theta.shape, dtype=np.int64)
    ties = np.zeros(theta.shape, dtype=np.int64)
    for k in np.flatnonzero(~np.isnan(theta)):
        row = ordered[k, : n_finite[k]]
        lo = row.searchsorted(theta[k], side="left")
        below[k] = lo
        ties[k] = row.searchsorted(theta[k], side="right") - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(ndtri((below + 0.5 * ties) / n_finite))


def bca_interval(
    theta_hat: np.ndarray, replicates: np.ndarray, jackknife: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated (BCa) bootstrap interval of each column.

    Parameters
    ----------
    theta_hat : float or ndarray, shape () or (K,)
        The estimates (the statistic on the original sample).
    replicates : ndarray, shape (n_boot,) or (n_boot, K)
        Bootstrap replicates; non-finite ones are ignored.
    jackknife : ndarray, shape (n_cases,) or (n_cases, K)
        Delete-one-case jackknife values; NaN entries are skipped.
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    low, high : ndarray of float64, shape () or (K,)
        Quantiles ``alpha_1``, ``alpha_2`` of the finite replicates, where, with
        ``z = Phi^-1((1 - level) / 2)``,
        ``alpha_1 = Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` and
        ``alpha_2 = Phi(z0 + (z0 - z) / (1 - a (z0 - z)))`` ([1]; [2] section 14.3).
        NaN where BCa is undefined: all finite replicates equal, or ``z0``, ``a`` or an
        adjusted level not finite (the caller then falls back to
        :func:`percentile_interval`).
    a : ndarray of float64, shape () or (K,)
        Acceleration, :func:`jackknife_acceleration`.
    z0 : ndarray of float64, shape () or (K,)
        Bias correction, :func:`bias_correction`.

    Notes
    -----
    Matches ``scipy.stats.bootstrap(method="BCa")`` given the same replicates and
    jackknife values (scipy's ``(n - 1)`` scaling of the jackknife deviations cancels in
    the ratio).
    """
    reps = np.asarray(replicates)
    shape = reps.shape[1:]
    ordered, n_finite = sort_columns(reps)
    theta = np.broadcast_to(np.asarray(theta_hat, dtype=np.float64), shape).ravel()
    jk = np.asarray(jackknife, dtype=np.float64)
    a = np.asarray(jackknife_acceleration(jk.reshape(jk.shape[0], -1)))
    low, high, z0 = _bca_sorted(theta, ordered, n_finite, a, level)
    return low.reshape(shape), high.reshape(shape), a.reshape(shape), z0.reshape(shape)


def _bca_sorted(
    theta: np.ndarray, ordered: np.ndarray, n_finite: np.ndarray, a: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z0 = _z0_sorted(theta, ordered, n_finite)
    z = float(ndtri((1.0 - level) / 2.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        num1 = z0 + z
        alpha_1 = ndtr(z0 + num1 / (1 - a * num1))
        num2 = z0 - z
        alpha_2 = ndtr(z0 + num2 / (1 - a * num2))
    rows = np.arange(ordered.shape[0])
    last = ordered[rows, np.maximum(n_finite - 1, 0)]
    constant = ordered[:, 0] == last
    undefined = constant | ~np.isfinite(z0) | ~np.isfinite(a)
    alpha_1 = np.where(undefined, np.nan, alpha_1)
    alpha_2 = np.where(undefined, np.nan, alpha_2)
    low = quantile_sorted(ordered, n_finite, alpha_1)
    high = quantile_sorted(ordered, n_finite, alpha_2)
    return low, high, z0


def interval_from_replicates(
    theta: np.ndarray,
    replicates: np.ndarray,
    jackknife: np.ndarray | None,
    level: float,
    method: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The interval a table reports: BCa with percentile fallback, or percentile.

    Parameters
    ----------
    theta : ndarray, shape (K,)
        Estimates; a NaN estimate gives a NaN interval labelled ``"undefined (no valid
        values)"``.
    replicates : ndarray, shape (n_boot, K)
    jackknife : ndarray, shape (n_cases, K), or None
        Needed for ``method="bca"``.
    level : float
    method : {"bca", "percentile"}

    Returns
    -------
    low, high : ndarray of float64, shape (K,)
    method_used : ndarray of object, shape (K,)
        ``"bca"``, ``"percentile"``, ``"percentile (BCa undefined)"`` (the BCa interval was
        undefined and the percentile interval is given instead) or ``"undefined (no valid
        values)"``.
    """
    ordered, n_finite = sort_columns(replicates)
    return interval_from_sorted(theta, ordered, n_finite, jackknife, level, method)


def interval_from_sorted(
    theta: np.ndarray,
    ordered: np.ndarray,
    n_finite: np.ndarray,
    jackknife: np.ndarray | None,
    level: float,
    method: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`interval_from_replicates` for replicates already sorted by :func:`sort_rows`."""
    theta = np.asarray(theta, dtype=np.float64).ravel()
    low, high = _percentile_sorted(ordered, n_finite, level)
    used = np.full(theta.shape, PERCENTILE, dtype=object)
    if method == BCA:
        if jackknife is None:
            raise ValueError("`jackknife` is required for method='bca'.")
        jk = np.asarray(jackknife, dtype=np.float64)
        a = np.asarray(jackknife_acceleration(jk.reshape(jk.shape[0], -1)))
        b_low, b_high, _ = _bca_sorted(theta, ordered, n_finite, a, level)
        ok = np.isfinite(b_low) & np.isfinite(b_high)
        low = np.where(ok, b_low, low)
        high = np.where(ok, b_high, high)
        used[:] = FALLBACK
        used[ok] = BCA
    missing = ~np.isfinite(theta)
    low[missing] = np.nan
    high[missing] = np.nan
    used[missing] = UNDEFINED
    return low, high, used
