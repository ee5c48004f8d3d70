"""Sensitivity analysis: a linear mixed model of image scores (STATISTICS.md, "Comparisons").

Per (model, split, reference, metric) cell, the image scores of all methods are fitted with
method as a fixed effect and a random intercept per case (statsmodels ``MixedLM``, REML).
The method contrasts are a second opinion on the case-bootstrap differences of
:func:`~benchmark.stats.compare`: a model-based estimate that weighs cases by their
information instead of resampling them.

References
----------
.. [1] Laird, N. M. and Ware, J. H. (1982). Random-effects models for longitudinal data.
   Biometrics 38(4), 963-974.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM

from benchmark.stats._validation import (
    check_columns,
    check_level,
    check_unique_rows,
    check_values,
)

CELL = ["model", "split", "reference", "metric"]
MIXED_COLUMNS = [
    *CELL, "method", "reference_method", "estimate", "std_err", "ci_low", "ci_high", "p",
    "case_var", "resid_var", "icc", "n_cases", "n_images", "converged", "note",
]
#: Below this ICC the case variance is reported as at the boundary of its space (zero).
BOUNDARY_ICC = 1e-3
# statsmodels' boundary warning uses an absolute threshold (variance < 0.01), which fires
# for any metric on [0, 1]; it is replaced by the relative BOUNDARY_ICC check.
_ABSOLUTE_BOUNDARY_WARNING = "The MLE may be on the boundary of the parameter space."


@dataclass(frozen=True)
class CellFit:
    """The mixed model of one cell; arrays run over the non-reference methods.

    Attributes
    ----------
    estimate, std_err : ndarray of float, shape (n_methods - 1,)
        Fixed-effect difference of each method from the reference, and its standard error.
    case_var, resid_var : float
        Random-intercept (between-case) variance and residual variance.
    converged : bool
        Whether the REML optimiser reported convergence.
    note : str
        Why numbers are missing, and the optimiser's warnings; ``""`` when all is well.
    """

    estimate: np.ndarray
    std_err: np.ndarray
    case_var: float
    resid_var: float
    converged: bool
    note: str

    @property
    def icc(self) -> float:
        """Intra-case correlation ``case_var / (case_var + resid_var)``."""
        total = self.case_var + self.resid_var
        return float(self.case_var / total) if total > 0 else float("nan")


def _failed(n_contrasts: int, note: str) -> CellFit:
    nan = np.full(n_contrasts, np.nan)
    return CellFit(nan, nan.copy(), float("nan"), float("nan"), False, note)


def treatment_design(method_codes: np.ndarray, n_methods: int) -> np.ndarray:
    """Treatment-coded design, shape (n_obs, n_methods): intercept, then one indicator
    column per method ``1 .. n_methods - 1`` (method 0 is the reference)."""
    exog = np.zeros((method_codes.size, n_methods), dtype=np.float64)
    exog[:, 0] = 1.0
    rows = np.flatnonzero(method_codes > 0)
    exog[rows, method_codes[rows]] = 1.0
    return exog


def _degenerate(
    values: np.ndarray, resid: np.ndarray, case_codes: np.ndarray, n_methods: int,
) -> str:
    """Why a cell cannot be fitted, or ``""``: checked before statsmodels is called.

    ``resid`` are the residuals of the ordinary least-squares fit of the method means.
    """
    n_cases = int(case_codes.max()) + 1 if case_codes.size else 0
    if n_cases < 2:
        return f"{n_cases} case(s): the between-case variance is not identifiable"
    if np.bincount(case_codes).max() < 2:
        return "one score per case: case and residual variance are not separable"
    if values.size <= n_methods + 1:
        return f"{values.size} scores for {n_methods} methods: too few to fit"
    if np.ptp(values) == 0:
        return "all values are equal: there is no variance to model"
    if np.sqrt(np.mean(resid**2)) <= 1e-10 * np.std(values):
        return "the method alone determines every value: no variance left to model"
    return ""


def moment_start(resid: np.ndarray, case_codes: np.ndarray) -> float:
    """Start of the REML search: ``sqrt(case_var / resid_var)`` from one-way ANOVA moments.

    Parameters
    ----------
    resid : ndarray of float, shape (n_obs,)
        Residuals of the ordinary least-squares fit of the fixed effects.
    case_codes : ndarray of int, shape (n_obs,)
        Case of each residual in ``0 .. a - 1``, every code occurring.

    Returns
    -------
    float
        ``sqrt(max(ratio, 0))`` clipped to ``[0.01, 100]``, 1 (statsmodels' own start)
        where the moments are undefined. This is the packed parameter of
        :class:`~statsmodels.regression.mixed_linear_model.MixedLM` (Cholesky factor of
        ``case_var / resid_var``).

    Notes
    -----
    Residuals are split into between- and within-case mean squares ``MSB`` (``a - 1``
    degrees of freedom) and ``MSW`` (``N - a``); ``resid_var = MSW`` and
    ``case_var = (MSB - MSW) / n0`` with ``n0 = (N - sum n_i^2 / N) / (a - 1)``, the ANOVA
    estimator of the unbalanced one-way model (Searle, Casella & McCulloch 1992, ch. 3).
    Starting there rather than at ratio 1 halves the time of a fit and avoids statsmodels'
    optimisers stalling short of a zero case variance.
    """
    n_i = np.bincount(case_codes).astype(np.float64)
    n, a = float(resid.size), n_i.size
    means = np.bincount(case_codes, weights=resid) / n_i
    ss_within = float(np.sum((resid - means[case_codes]) ** 2))
    ss_between = float(np.sum(n_i * (means - resid.mean()) ** 2))
    if a < 2 or n <= a or ss_within <= 0:
        return 1.0
    msw = ss_within / (n - a)
    n0 = (n - float(np.sum(n_i**2)) / n) / (a - 1)
    ratio = (ss_between / (a - 1) - msw) / (n0 * msw)
    return float(np.clip(np.sqrt(max(ratio, 0.0)), 0.01, 100.0))


def fit_random_intercept(
    values: np.ndarray, method_codes: np.ndarray, case_codes: np.ndarray, n_methods: int,
) -> CellFit:
    """REML fit of ``value = b_0 + b_method + u_case + e`` with method 0 as reference.

    Parameters
    ----------
    values : ndarray of float, shape (n_obs,)
        Image scores, without NaN.
    method_codes : ndarray of int, shape (n_obs,)
        Method of each score in ``0 .. n_methods - 1``; code 0 is the reference, and
        every code occurs.
    case_codes : ndarray of int, shape (n_obs,)
        Case of each score in ``0 .. n_cases - 1``, every code occurring.
    n_methods : int

    Returns
    -------
    CellFit
        NaN numbers and a note where the cell is degenerate or the fit raises; the
        optimiser's warnings are captured into the note, never shown.

    Notes
    -----
    Model: ``y_ij = b_0 + sum_m b_m [method_ij = m] + u_i + e_ij`` with
    ``u_i ~ N(0, case_var)`` and ``e_ij ~ N(0, resid_var)`` independent. The design is an
    explicit treatment-coded matrix (no formula, so any method name works); statsmodels'
    default optimisers (BFGS, then L-BFGS, then CG) maximise the REML likelihood profiled
    over the fixed effects and the residual variance, from the start
    :func:`moment_start`.
    """
    n_contrasts = n_methods - 1
    exog = treatment_design(method_codes, n_methods)
    resid = values - exog @ np.linalg.lstsq(exog, values, rcond=None)[0]
    reason = _degenerate(values, resid, case_codes, n_methods)
    if reason:
        return _failed(n_contrasts, reason)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = MixedLM(values, exog, groups=case_codes)
            start = np.array([moment_start(resid, case_codes)])
            res = model.fit(start_params=start, reml=True)
            estimate = np.asarray(res.fe_params[1:], dtype=np.float64)
            std_err = np.asarray(res.bse_fe[1:], dtype=np.float64)
            case_var = float(np.asarray(res.cov_re)[0, 0])
            resid_var = float(res.scale)
            converged = bool(res.converged)
        except (np.linalg.LinAlgError, ValueError, ArithmeticError) as err:
            return _failed(n_contrasts, f"fit failed: {type(err).__name__}: {err}")
    notes = []
    for w in caught:
        message = str(w.message).strip()
        if message != _ABSOLUTE_BOUNDARY_WARNING and message not in notes:
            notes.append(message)
    fit = CellFit(estimate, std_err, case_var, resid_var, converged, "")
    if np.isfinite(fit.icc) and fit.icc < BOUNDARY_ICC:
        notes.append(
            f"case variance at the boundary (ICC < {BOUNDARY_ICC:g}): the random intercept "
            "is negligible and the fit is close to ordinary least squares"
        )
    if not np.isfinite(std_err).all():
        notes.append("standard errors not finite: the information matrix is singular")
    return CellFit(estimate, std_err, case_var, resid_var, converged, "; ".join(notes))


def wald(estimate: np.ndarray, std_err: np.ndarray, level: float) -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:
    """Normal-theory interval ``estimate -+ z std_err`` and two-sided p of ``estimate = 0``."""
    z = stats.norm.ppf(0.5 + level / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 * stats.norm.sf(np.abs(estimate / std_err))
    return estimate - z * std_err, estimate + z * std_err, p


@dataclass(frozen=True)
class _MixedInput:
    scores: pd.DataFrame
    level: float
    reference_method: str | None


def _mixed_model_table_iv(scores: Any, level: Any, reference_method: Any) -> _MixedInput:
    """Input validation and standardisation for :func:`mixed_model_table`."""
    frame = check_columns(scores, "scores", [*CELL, "method", "case_id", "image_id", "value"])
    values = check_values(frame, "scores")
    for col in [*CELL, "method", "case_id"]:
        if frame[col].isna().any():
            raise ValueError(f"`scores['{col}']` must not contain missing values.")
    check_unique_rows(frame, "scores", [*CELL, "method", "case_id", "image_id"])
    if reference_method is not None and (
        not isinstance(reference_method, str) or not reference_method
    ):
        raise ValueError(
            f"`reference_method` must be a method name (str) or None; got {reference_method!r}."
        )
    frame = frame[[*CELL, "method", "case_id", "image_id"]].assign(value=values)
    return _MixedInput(frame, check_level(level), reference_method)


def mixed_model_table(
    scores: pd.DataFrame, *, level: float = 0.95, reference_method: str | None = None,
) -> pd.DataFrame:
    """Linear mixed model per cell: method fixed effect, random intercept per case.

    Parameters
    ----------
    scores : DataFrame, shape (n_rows, >= 8)
        Tidy scores: model, split, method, case_id, image_id, reference, metric, value
        (NaN allowed; NaN rows are dropped). One row per image, method and cell.
    level : float, default 0.95
        Confidence level of the Wald intervals.
    reference_method : str, optional
        Method the others are compared with. Where it is absent from a cell (or None), the
        first method of the cell in sorted order is the reference, and the note says so.

    Returns
    -------
    DataFrame with :data:`MIXED_COLUMNS`, one row per (model, split, reference, metric)
    cell and non-reference method, sorted by those columns; cells with fewer than two
    methods have no rows.

    - ``estimate``, ``std_err``: fixed-effect difference method - ``reference_method``
      (REML) and its standard error; ``ci_low``, ``ci_high``: Wald interval at ``level``;
      ``p``: two-sided Wald p of a zero difference.
    - ``case_var``, ``resid_var``: random-intercept and residual variance of the cell's
      fit; ``icc = case_var / (case_var + resid_var)``.
    - ``n_cases``, ``n_images``: distinct cases and (case, image) pairs with a non-NaN
      score in the cell.
    - ``converged``: the optimiser's verdict; ``note``: why numbers are NaN (a single case,
      constant values, a failed fit, a method with only NaN scores) and the optimiser's
      warnings, ``""`` when there are none.

    Notes
    -----
    Model per cell: ``y_ij = b_0 + b_method(ij) + u_i + e_ij``, ``u_i ~ N(0, case_var)``,
    ``e_ij ~ N(0, resid_var)``, cases ``i``, scores ``j``. Each image is scored by every
    method, so scores of one image share more than their case; the model leaves that
    image-level correlation out (STATISTICS.md specifies a random intercept per case). With
    balanced data (every case has every method, the same images) the estimate equals the
    difference of the methods' mean scores. The Wald intervals use the normal quantile and
    ignore the uncertainty of the variance components, so they are slightly narrow with
    few cases; the case bootstrap of :func:`~benchmark.stats.compare` remains the primary
    analysis.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> case = np.repeat(np.arange(30), 4)             # 30 cases x 4 images
    >>> u = rng.normal(0, 0.5, 30)[case]               # case random intercept
    >>> rows = [pd.DataFrame({"model": "cnn", "split": "test", "method": m,
    ...                       "case_id": case, "image_id": np.arange(case.size),
    ...                       "reference": "consensus", "metric": "iou",
    ...                       "value": shift + u + rng.normal(0, 0.5, case.size)})
    ...         for m, shift in [("gradcam", 0.0), ("ig", 0.3)]]
    >>> out = mixed_model_table(pd.concat(rows))
    >>> out[["method", "reference_method", "estimate", "std_err", "icc", "n_cases"]].round(2)
      method reference_method  estimate  std_err   icc  n_cases
    0     ig          gradcam      0.27     0.06  0.43       30
    """
    iv = _mixed_model_table_iv(scores, level, reference_method)
    rows: list[dict[str, Any]] = []
    for key, cell in iv.scores.groupby(CELL, sort=True):
        rows.extend(_cell_rows(cast(tuple[Any, ...], key), cell, iv))
    out = pd.DataFrame(rows, columns=MIXED_COLUMNS)
    out = out.sort_values([*CELL, "method"], kind="mergesort", ignore_index=True)
    return out.astype({"n_cases": "int64", "n_images": "int64", "converged": "bool"})


def _choose_reference(wanted: str | None, present: list[Any], all_methods: list[Any]) -> tuple[
    Any, str
]:
    """The cell's reference method and, where ``wanted`` could not be used, why."""
    if wanted is not None and wanted in present:
        return wanted, ""
    if not present:  # nothing to fit; keep the wanted name where the cell has it
        return (wanted if wanted in all_methods else all_methods[0]), ""
    if wanted is None:
        return present[0], ""
    why = "has only NaN scores" if wanted in all_methods else "is not a method"
    return present[0], f"reference_method {wanted!r} {why} in this cell; {present[0]!r} is used"


def _cell_rows(key: tuple[Any, ...], cell: pd.DataFrame, iv: _MixedInput) -> list[dict]:
    """The output rows of one cell: fit, then one row per non-reference method."""
    all_methods = sorted(cell["method"].unique())
    if len(all_methods) < 2:
        return []
    data = cell[cell["value"].notna()]
    present = sorted(data["method"].unique())
    reference, reference_note = _choose_reference(iv.reference_method, present, all_methods)
    notes = [reference_note] if reference_note else []
    fitted = [reference] + [m for m in present if m != reference]
    if len(fitted) >= 2:
        method_codes = pd.Categorical(data["method"], categories=fitted).codes.astype(np.int64)
        case_codes = pd.factorize(data["case_id"], sort=True)[0]
        fit = fit_random_intercept(
            data["value"].to_numpy(np.float64), method_codes, case_codes, len(fitted)
        )
    else:
        fit = _failed(0, "fewer than 2 methods with non-NaN scores")
    ci_low, ci_high, p = wald(fit.estimate, fit.std_err, iv.level)
    common = {
        "reference_method": reference, "case_var": fit.case_var, "resid_var": fit.resid_var,
        "icc": fit.icc, "n_cases": int(data["case_id"].nunique()),
        "n_images": len(data[["case_id", "image_id"]].drop_duplicates()),
    }
    cell_note = "; ".join([*notes, fit.note] if fit.note else notes)
    index = {m: i for i, m in enumerate(fitted[1:])}
    rows = []
    for method in all_methods:
        if method == reference:
            continue
        row = {**dict(zip(CELL, key, strict=True)), "method": method, **common}
        i = index.get(method)
        if i is None:
            missing = f"{method!r} has only NaN scores in this cell"
            row.update(estimate=np.nan, std_err=np.nan, ci_low=np.nan, ci_high=np.nan,
                       p=np.nan, converged=False,
                       note="; ".join(filter(None, [missing, cell_note])))
        else:
            row.update(estimate=fit.estimate[i], std_err=fit.std_err[i], ci_low=ci_low[i],
                       ci_high=ci_high[i], p=p[i], converged=fit.converged, note=cell_note)
        rows.append(row)
    return rows
