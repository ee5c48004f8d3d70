"""Linear mixed model of image scores vs closed forms, simulation and statsmodels formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from benchmark.stats.mixed import MIXED_COLUMNS, mixed_model_table, moment_start

SPEC_COLUMNS = [
    "model", "split", "reference", "metric", "method", "reference_method", "estimate",
    "std_err", "ci_low", "ci_high", "p", "case_var", "resid_var", "icc", "n_cases",
    "n_images", "converged", "note",
]


def _scores(methods=("a", "b", "c"), shifts=None, n_cases=20, n_images=4, case_sd=0.5,
            resid_sd=0.5, seed=0, model="cnn", split="test", reference="consensus",
            metric="iou"):
    """Tidy scores of one cell: ``1 + shift[method] + u_case + e``, every case with every
    method on the same ``n_images`` images (balanced)."""
    rng = np.random.default_rng(seed)
    shifts = shifts if shifts is not None else [0.1 * i for i in range(len(methods))]
    case = np.repeat(np.arange(n_cases), n_images)
    u = rng.normal(0.0, case_sd, n_cases)[case]
    frames = [
        pd.DataFrame({
            "model": model, "split": split, "method": m, "case_id": [f"c{c:03d}" for c in case],
            "image_id": np.arange(case.size), "reference": reference, "metric": metric,
            "value": 1.0 + shift + u + rng.normal(0.0, resid_sd, case.size),
        })
        for m, shift in zip(methods, shifts, strict=True)
    ]
    return pd.concat(frames, ignore_index=True)


def _row(out, method):
    return out.loc[out["method"] == method].iloc[0]


def test_balanced_estimate_equals_difference_of_method_means():
    scores = _scores(methods=("a", "b", "c"), n_cases=15, n_images=3, seed=3)
    means = scores.groupby("method")["value"].mean()
    out = mixed_model_table(scores)
    for m in ("b", "c"):
        assert _row(out, m)["estimate"] == pytest.approx(means[m] - means["a"], abs=1e-8)


def test_recovers_known_effect_and_icc_on_simulated_data():
    # case variance 0.3, residual 0.7: ICC 0.3; method b is 0.1 above a.
    scores = _scores(methods=("a", "b"), shifts=[0.0, 0.1], n_cases=60, n_images=5,
                     case_sd=np.sqrt(0.3), resid_sd=np.sqrt(0.7), seed=0)
    row = _row(mixed_model_table(scores), "b")
    assert abs(row["estimate"] - 0.1) < 3 * row["std_err"]
    assert abs(row["icc"] - 0.3) < 0.1
    assert row["case_var"] == pytest.approx(0.3, abs=0.15)
    assert row["resid_var"] == pytest.approx(0.7, abs=0.15)
    assert row["converged"] and row["note"] == ""
    assert (row["n_cases"], row["n_images"]) == (60, 300)


def test_equals_statsmodels_formula_fit_of_one_cell():
    scores = _scores(methods=("grad-cam", "ig", "occlusion"), n_cases=25, n_images=3, seed=7)
    scores.loc[scores.sample(frac=0.15, random_state=1).index, "value"] = np.nan  # unbalance
    out = mixed_model_table(scores, level=0.9, reference_method="ig")
    data = scores.dropna(subset=["value"])
    res = smf.mixedlm("value ~ C(method, Treatment(reference='ig'))", data,
                      groups=data["case_id"]).fit(reml=True)
    ci = res.conf_int(alpha=0.1)
    for m in ("grad-cam", "occlusion"):
        name = f"C(method, Treatment(reference='ig'))[T.{m}]"
        row = _row(out, m)
        assert row["estimate"] == pytest.approx(res.fe_params[name], abs=1e-6)
        assert row["std_err"] == pytest.approx(res.bse_fe[name], abs=1e-6)
        # p moves ~10x faster than the estimate with the optimiser's stopping point.
        assert row["p"] == pytest.approx(res.pvalues[name], abs=1e-5)
        assert row["ci_low"] == pytest.approx(ci.loc[name, 0], abs=1e-6)
        assert row["ci_high"] == pytest.approx(ci.loc[name, 1], abs=1e-6)
        # The variance components sit where the optimisers stop (gtol 1e-5, two starts).
        assert row["case_var"] == pytest.approx(res.cov_re.iloc[0, 0], abs=1e-5)
        assert row["resid_var"] == pytest.approx(res.scale, abs=1e-5)


def test_constant_values_give_nan_and_a_note():
    scores = _scores(methods=("a", "b")).assign(value=0.5)
    row = _row(mixed_model_table(scores), "b")
    assert np.isnan(row[["estimate", "std_err", "p", "case_var", "icc"]].astype(float)).all()
    assert not row["converged"]
    assert "all values are equal" in row["note"]


def test_a_single_case_gives_nan_and_a_note():
    scores = _scores(methods=("a", "b"), n_cases=1, n_images=10)
    row = _row(mixed_model_table(scores), "b")
    assert np.isnan(row[["estimate", "std_err", "ci_low", "ci_high"]].astype(float)).all()
    assert "between-case variance is not identifiable" in row["note"]
    assert row["n_cases"] == 1


def test_method_determining_every_value_gives_nan_and_a_note():
    scores = _scores(methods=("a", "b"))
    scores["value"] = np.where(scores["method"] == "a", 0.2, 0.4)
    row = _row(mixed_model_table(scores), "b")
    assert np.isnan(row["estimate"]) and "no variance left" in row["note"]


def test_method_with_only_nan_scores_gets_a_nan_row_and_the_others_are_fitted():
    scores = _scores(methods=("a", "b", "c"))
    scores.loc[scores["method"] == "c", "value"] = np.nan
    out = mixed_model_table(scores)
    assert list(out["method"]) == ["b", "c"]
    assert np.isfinite(_row(out, "b")["estimate"])
    assert np.isnan(_row(out, "c")["estimate"]) and "only NaN" in _row(out, "c")["note"]


def test_boundary_fit_equals_ols_and_its_warnings_go_to_the_note_never_shown():
    # Every case has the same mean: the REML case variance is 0, where statsmodels warns
    # (singular covariance, Hessian not positive definite) and the fit is OLS.
    scores = _scores(methods=("a", "b"), n_cases=30, n_images=3, case_sd=0.0, seed=4)
    scores["value"] -= scores.groupby("case_id")["value"].transform("mean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = _row(mixed_model_table(scores), "b")
    y = scores["value"].to_numpy()
    x = np.c_[np.ones(y.size), (scores["method"] == "b").to_numpy(float)]
    beta = np.linalg.solve(x.T @ x, x.T @ y)
    sigma2 = np.sum((y - x @ beta) ** 2) / (y.size - 2)
    se = np.sqrt(sigma2 * np.linalg.inv(x.T @ x)[1, 1])
    assert row["estimate"] == pytest.approx(beta[1], abs=1e-8)
    assert row["std_err"] == pytest.approx(se, rel=1e-6)
    assert row["icc"] < 1e-3
    assert "singular" in row["note"] and "boundary" in row["note"]


def test_reference_method_is_honoured():
    scores = _scores(methods=("a", "b", "c"), n_cases=12, n_images=2, seed=5)
    means = scores.groupby("method")["value"].mean()
    out = mixed_model_table(scores, reference_method="b")
    assert list(out["method"]) == ["a", "c"]
    assert (out["reference_method"] == "b").all()
    for m in ("a", "c"):
        assert _row(out, m)["estimate"] == pytest.approx(means[m] - means["b"], abs=1e-8)


def test_default_reference_is_first_sorted_method_and_a_missing_one_is_noted():
    scores = _scores(methods=("zeta", "alpha", "mid"))
    assert (mixed_model_table(scores)["reference_method"] == "alpha").all()
    out = mixed_model_table(scores, reference_method="nope")
    assert (out["reference_method"] == "alpha").all()
    assert out["note"].str.contains("'nope' is not a method").all()


def test_columns_order_and_sorting_are_as_specified_and_deterministic():
    assert SPEC_COLUMNS == MIXED_COLUMNS
    cells = [
        _scores(model=model, split=split, metric=metric, methods=("b", "a"), n_cases=8,
                n_images=2, seed=i)
        for i, (model, split, metric) in enumerate(
            [("m2", "test", "iou"), ("m1", "shifted", "iou"), ("m1", "test", "dice")]
        )
    ]
    scores = pd.concat(cells, ignore_index=True)
    out = mixed_model_table(scores)
    assert list(out.columns) == SPEC_COLUMNS
    keys = list(zip(out["model"], out["split"], out["reference"], out["metric"], out["method"],
                    strict=True))
    assert keys == sorted(keys) and len(keys) == 3
    shuffled = mixed_model_table(scores.sample(frac=1.0, random_state=0))
    pd.testing.assert_frame_equal(out, shuffled)
    assert out["n_cases"].dtype == np.int64 and out["converged"].dtype == bool


def test_single_method_cells_have_no_rows():
    scores = _scores(methods=("a",))
    out = mixed_model_table(scores)
    assert out.empty and list(out.columns) == SPEC_COLUMNS


def test_moment_start_recovers_the_variance_ratio_of_balanced_data():
    # Balanced one-way layout: ANOVA estimator case_var = (MSB - MSW) / n, ratio to MSW.
    rng = np.random.default_rng(2)
    n_cases, n = 200, 10
    case = np.repeat(np.arange(n_cases), n)
    resid = rng.normal(0, 1.0, n_cases)[case] + rng.normal(0, 0.5, case.size)
    resid -= resid.mean()
    means = resid.reshape(n_cases, n).mean(axis=1)
    msb = n * np.sum(means**2) / (n_cases - 1)
    msw = np.sum((resid.reshape(n_cases, n) - means[:, None]) ** 2) / (n_cases * (n - 1))
    expected = np.sqrt((msb - msw) / n / msw)
    assert moment_start(resid, case) == pytest.approx(expected, rel=1e-12)
    assert moment_start(resid, case) == pytest.approx(2.0, rel=0.2)  # sqrt(1 / 0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"level": 1.5}, "level"),
        ({"reference_method": 3}, "reference_method"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mixed_model_table(_scores(methods=("a", "b")), **kwargs)


def test_missing_column_raises():
    with pytest.raises(ValueError, match="case_id"):
        mixed_model_table(_scores(methods=("a", "b")).drop(columns="case_id"))
