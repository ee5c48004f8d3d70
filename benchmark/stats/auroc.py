"""AUROC as a function of case weights, vectorised over bootstrap replicates.

With observations (images or cases) ``i`` of score ``s_i``, label ``y_i`` and case
``g(i)``, and case weights ``w`` (one per case; an observation carries its case's weight):

    AUROC(w) = sum_{i: y_i=1} sum_{j: y_j=0} w_g(i) w_g(j) k(s_i, s_j)
               / (sum_{i: y_i=1} w_g(i) * sum_{j: y_j=0} w_g(j)),
    k(a, b) = 1[a > b] + 1/2 1[a = b].

Summing the kernel within pairs of cases first gives ``Kc[c, d] = sum_{i in c, pos}
sum_{j in d, neg} k(s_i, s_j)`` (``n_cases x n_cases``), so that for a weight matrix ``W``
``AUROC(W) = rowsum((W @ Kc) * W) / ((W @ n_pos) (W @ n_neg))``: the cost per replicate is
``n_cases^2`` whatever the number of images. ``AUROC(ones)`` is the Mann-Whitney
``U / (n_pos n_neg)``.
"""

from __future__ import annotations

import numpy as np

#: Upper bound on ``rows * n_cases`` per chunk of replicates (doubles).
CHUNK_ELEMENTS = 2**22


def case_pair_kernel(
    scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel sums between cases and per-case class counts.

    Parameters
    ----------
    scores : ndarray of float, shape (m,)
    labels : ndarray of bool, shape (m,)
        True for the positive class.
    groups : ndarray of int, shape (m,)
        Case index of each observation, in ``[0, n_groups)``.
    n_groups : int

    Returns
    -------
    kernel : ndarray of float64, shape (n_groups, n_groups)
        ``Kc[c, d]``: sum of ``k(s_i, s_j)`` over positives ``i`` of case ``c`` and
        negatives ``j`` of case ``d`` (exact: sums of halves).
    n_pos, n_neg : ndarray of float64, shape (n_groups,)
        Positive and negative observations per case.
    """
    pos_scores, pos_groups = scores[labels], groups[labels]
    neg_scores, neg_groups = scores[~labels], groups[~labels]
    kernel = np.zeros((n_groups, n_groups))
    for d in np.unique(neg_groups):
        negatives = np.sort(neg_scores[neg_groups == d])
        below = np.searchsorted(negatives, pos_scores, side="left")
        not_above = np.searchsorted(negatives, pos_scores, side="right")
        wins = below + 0.5 * (not_above - below)
        kernel[:, d] = np.bincount(pos_groups, weights=wins, minlength=n_groups)
    n_pos = np.bincount(pos_groups, minlength=n_groups).astype(np.float64)
    n_neg = np.bincount(neg_groups, minlength=n_groups).astype(np.float64)
    return kernel, n_pos, n_neg


def weighted_auroc(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """AUROC for each row of a case-weight matrix.

    Parameters
    ----------
    scores : ndarray of float, shape (m,)
        Observation scores (higher = more likely positive).
    labels : ndarray of bool, shape (m,)
    groups : ndarray of int, shape (m,)
        Case (column of ``weights``) of each observation.
    weights : ndarray, shape (R, n_cases)
        Case weights: ones (estimate), bootstrap counts, or ``1 - I`` (jackknife).

    Returns
    -------
    ndarray of float64, shape (R,)
        The weighted AUROC of each row; NaN for a row whose weights leave no positive or no
        negative observation.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([0.9, 0.4, 0.6, 0.1]); y = np.array([True, True, False, False])
    >>> weighted_auroc(s, y, np.arange(4), np.ones((1, 4))).tolist()
    [0.75]
    """
    w_all = np.asarray(weights, dtype=np.float64)
    kernel, n_pos, n_neg = case_pair_kernel(scores, labels, groups, w_all.shape[1])
    out = np.empty(w_all.shape[0])
    step = max(1, CHUNK_ELEMENTS // max(w_all.shape[1], 1))
    for start in range(0, w_all.shape[0], step):
        w = w_all[start : start + step]
        top = ((w @ kernel) * w).sum(axis=1)
        bottom = (w @ n_pos) * (w @ n_neg)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + step] = np.where(bottom > 0, top / bottom, np.nan)
    return out
