"""compare: paired bootstrap differences, sign-flip and Wilcoxon p, rank-biserial, Holm/BH."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from benchmark.stats import bootstrap_ci, compare, draw_counts, summarize
from benchmark.stats.aggregate import ratio_terms
from benchmark.stats.comparisons import CONTRACT_COLUMNS, EXTRA_COLUMNS, paired_bootstrap
from benchmark.stats.intervals import bca_interval, percentile_interval
from benchmark.stats.permutation import rank_biserial, sign_flip_pvalues
from benchmark.stats.resample import split_seed

CELL = ["model", "split", "method", "reference", "metric"]


def make_scores(n_cases: int = 10, seed: int = 0, nan_rate: float = 0.0) -> pd.DataFrame:
    """2 splits x 2 models x 3 methods x 1 reference x 2 metrics, 1-3 images per case."""
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("test", "val"):
        for c in range(n_cases):
            for i in range(1 + c % 3):
                for model, method, metric in itertools.product(
                    ("clean", "shortcut"), ("gradcam", "ig", "rise"), ("dice", "iou")
                ):
                    rows.append({
                        "model": model, "split": split, "method": method, "reference": "mask",
                        "metric": metric, "case_id": f"{split}-{c:02d}", "image_id": i,
                        "value": rng.beta(2, 3) + 0.1 * (method == "ig"),
                    })
    frame = pd.DataFrame(rows)
    frame.loc[rng.random(len(frame)) < nan_rate, "value"] = np.nan
    return frame


def one_pair(d: np.ndarray, n_images: int = 1) -> pd.DataFrame:
    """Two methods whose case-level differences are ``d`` (method "a" minus method "b")."""
    rows = []
    for c, di in enumerate(d):
        for i in range(n_images):
            base = 0.5 + 0.01 * c + 0.001 * i
            for method, v in (("a", base + di), ("b", base)):
                rows.append({"model": "m", "split": "test", "method": method,
                             "reference": "mask", "metric": "iou", "case_id": c,
                             "image_id": i, "value": v})
    return pd.DataFrame(rows)


def select(frame: pd.DataFrame, **keys: str) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for k, v in keys.items():
        mask &= (frame[k] == v).to_numpy()
    return frame[mask]


def test_columns_are_the_contract_then_the_extras():
    table = compare(make_scores(), family="methods", n_boot=200).table
    assert list(table.columns) == [*CONTRACT_COLUMNS, *EXTRA_COLUMNS]
    # 2 splits x 2 models x 2 metrics x C(3, 2) method pairs
    assert len(table) == 24
    assert (table.a < table.b).all()
    assert set(table.within) == {"clean", "shortcut"}


@pytest.mark.parametrize("family", ["methods", "models"])
@pytest.mark.parametrize("weighting", ["case", "image"])
def test_diff_equals_difference_of_summarize_estimates(family, weighting):
    scores = make_scores()
    table = compare(scores, family=family, n_boot=200, weighting=weighting).table
    est = summarize(scores, by=CELL, n_boot=200, weighting=weighting).set_index(CELL)["estimate"]
    arm = "method" if family == "methods" else "model"
    for row in table.itertuples():
        key_a = {arm: row.a, "split": row.split, "reference": row.reference,
                 "metric": row.metric}
        key_b = {**key_a, arm: row.b}
        other = "model" if family == "methods" else "method"
        key_a[other] = key_b[other] = row.within
        ea = est[tuple(key_a[c] for c in CELL)]
        eb = est[tuple(key_b[c] for c in CELL)]
        assert row.diff == pytest.approx(ea - eb, abs=1e-12)
        assert row.n_cases == 10


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_interval_is_that_of_paired_replicate_differences_on_the_split_counts(method):
    scores = make_scores()
    # seed 5: no row of the count matrix is all ones, so no replicate ties the estimate up
    # to rounding (a tie counts one half in z0, and the two computations round differently)
    assert not (draw_counts(10, 500, split_seed(5, "test")) == 1).all(axis=1).any()
    table = compare(scores, family="methods", n_boot=500, seed=5, method=method).table
    row = table.iloc[0]
    cells = []
    for m in (row.a, row.b):
        one = select(scores, model=row.within, split=row.split, method=m, metric=row.metric)
        cells.append(bootstrap_ci(one.value, one.case_id, n_boot=500,
                                  seed=split_seed(5, row.split), method="percentile"))
    reps = cells[0].bootstrap_distribution - cells[1].bootstrap_distribution
    if method == "percentile":
        low, high = percentile_interval(reps, 0.95)
    else:
        # jackknife of the difference: difference of leave-one-case-out case means
        a_means = select(scores, model=row.within, split=row.split, method=row.a,
                         metric=row.metric).groupby("case_id").value.mean().to_numpy()
        b_means = select(scores, model=row.within, split=row.split, method=row.b,
                         metric=row.metric).groupby("case_id").value.mean().to_numpy()
        d = a_means - b_means
        jack = (d.sum() - d) / (d.size - 1)
        low, high, _, _ = bca_interval(d.mean(), reps, jack, 0.95)
        assert row.ci_method == "bca"
    assert row.ci_low == pytest.approx(float(low), abs=1e-12)
    assert row.ci_high == pytest.approx(float(high), abs=1e-12)


def test_paired_bootstrap_replicates_equal_difference_of_cell_replicates():
    rng = np.random.default_rng(1)
    n_cases = 12
    values_a, values_b = rng.random(n_cases), rng.random(n_cases)
    cases = np.arange(n_cases)
    counts = draw_counts(n_cases, 300, seed=7)
    num_a, den_a = ratio_terms(values_a[:, None], np.ones((n_cases, 1)), "case")
    num_b, den_b = ratio_terms(values_b[:, None], np.ones((n_cases, 1)), "case")
    out = paired_bootstrap(num_a, den_a, num_b, den_b, counts, level=0.95, method="bca",
                           keep_replicates=True)
    rep_a = bootstrap_ci(values_a, cases, n_boot=300, seed=7).bootstrap_distribution
    rep_b = bootstrap_ci(values_b, cases, n_boot=300, seed=7).bootstrap_distribution
    assert out.replicates is not None
    np.testing.assert_allclose(out.replicates[:, 0], rep_a - rep_b, atol=1e-13)


def brute_force_p(d: np.ndarray) -> float:
    t = abs(d.mean())
    hits = [abs(np.mean(np.asarray(s) * d)) >= t - 1e-12
            for s in itertools.product((-1.0, 1.0), repeat=d.size)]
    return float(np.mean(hits))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_permutation_p_equals_brute_force_enumeration(seed):
    d = np.random.default_rng(seed).normal(0.05, 0.1, 8)
    table = compare(one_pair(d), family="methods", n_boot=200).table
    assert table.p.iloc[0] == pytest.approx(brute_force_p(d), abs=1e-15)
    assert table.n_cases.iloc[0] == 8


def test_permutation_p_is_one_when_all_differences_are_zero():
    table = compare(one_pair(np.zeros(8)), family="methods", n_boot=200).table
    assert table.p.iloc[0] == 1.0
    assert np.isnan(table.p_wilcoxon.iloc[0])
    assert np.isnan(table.effect_size.iloc[0])


def test_monte_carlo_p_is_deterministic_for_a_seed_and_has_the_plus_one_form():
    d = np.random.default_rng(3).normal(0.02, 0.1, 20)  # 2**20 > n_flips: Monte Carlo
    p1 = compare(one_pair(d), family="methods", n_boot=200, n_flips=999, seed=5).table.p.iloc[0]
    p2 = compare(one_pair(d), family="methods", n_boot=200, n_flips=999, seed=5).table.p.iloc[0]
    assert p1 == p2
    assert (p1 * 1000) == pytest.approx(round(p1 * 1000))
    assert 1 / 1000 <= p1 <= 1
    assert abs(p1 - brute_force_p(d)) < 0.05


def test_monte_carlo_p_counts_observed_once():
    d = np.full((20, 1), 1.0)  # only the identity and its negation reach |T|
    p = sign_flip_pvalues(d, np.ones_like(d, dtype=bool), n_flips=500, seed=0)
    assert p[0] == pytest.approx(1 / 501, abs=2 / 501)


def test_p_wilcoxon_equals_scipy():
    d = np.random.default_rng(4).normal(0.03, 0.1, 15)
    d[3] = 0.0
    table = compare(one_pair(d), family="methods", n_boot=200).table
    expected = stats.wilcoxon(table_d(d), zero_method="zsplit").pvalue
    assert table.p_wilcoxon.iloc[0] == pytest.approx(expected, rel=1e-12)


def table_d(d: np.ndarray) -> np.ndarray:
    """The case-level differences compare sees for :func:`one_pair` (floating point)."""
    frame = one_pair(d)
    means = frame.groupby(["method", "case_id"]).value.mean()
    return (means["a"] - means["b"]).to_numpy()


def test_effect_size_equals_hand_computed_rank_biserial():
    # |d| ranks: 0.1 -> 1, 0.2 -> 2.5, 0.2 -> 2.5, 0.4 -> 4; zero dropped
    d = np.array([0.1, -0.2, 0.2, 0.4, 0.0])
    r = rank_biserial(d[:, None], np.ones((5, 1), dtype=bool))[0]
    assert r == pytest.approx((1 + 2.5 + 4 - 2.5) / 10)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_effect_size_is_plus_minus_one_when_all_differences_share_a_sign(sign):
    d = sign * np.random.default_rng(5).uniform(0.01, 0.2, 9)
    table = compare(one_pair(d), family="methods", n_boot=200).table
    assert table.effect_size.iloc[0] == sign


@pytest.mark.parametrize(("adjust", "sm_method"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_p_adj_equals_multipletests_per_family_instance(adjust, sm_method):
    table = compare(make_scores(n_cases=6), family="methods", n_boot=200, adjust=adjust).table
    assert (table.adj_method == adjust).all()
    for _, grp in table.groupby(["family", "split", "reference", "metric"]):
        assert len(grp) == 6  # 2 models x 3 method pairs in one family instance
        expected = multipletests(grp.p.to_numpy(), method=sm_method)[1]
        np.testing.assert_allclose(grp.p_adj.to_numpy(), expected, rtol=0, atol=0)


def test_cases_missing_in_one_arm_are_dropped_from_the_pair():
    d = np.random.default_rng(6).normal(0.05, 0.1, 10)
    full = one_pair(d)
    drop = (full.method == "a") & full.case_id.isin([2, 7])
    nan = (full.method == "b") & (full.case_id == 4)
    frame = full[~drop].copy()
    frame.loc[nan[~drop], "value"] = np.nan
    table = compare(frame, family="methods", n_boot=200).table
    keep = np.setdiff1d(np.arange(10), [2, 4, 7])
    kept = full[full.case_id.isin(keep)]
    ref = compare(kept, family="methods", n_boot=200).table
    assert table.n_cases.iloc[0] == 7
    assert table["diff"].iloc[0] == pytest.approx(ref["diff"].iloc[0], abs=1e-12)
    assert table.p.iloc[0] == ref.p.iloc[0] == pytest.approx(brute_force_p(table_d(d)[keep]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"family": "pairs"}, "`family` must be one of"),
     ({"family": "methods", "adjust": "bonferroni"}, "`adjust` must be one of"),
     ({"family": "methods", "n_flips": 0}, "`n_flips`"),
     ({"family": "methods", "weighting": "voxel"}, "`weighting` must be one of")],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare(one_pair(np.ones(3)), n_boot=200, **kwargs)


def test_models_family_compares_models_within_each_method():
    table = compare(make_scores(), family="models", n_boot=200).table
    assert set(zip(table.a, table.b, strict=True)) == {("clean", "shortcut")}
    assert set(table.within) == {"gradcam", "ig", "rise"}
    assert len(table) == 2 * 3 * 2


def test_sign_flip_pvalues_do_not_depend_on_the_sign_block(monkeypatch) -> None:
    """The Monte Carlo sign matrix is drawn in row blocks to bound memory; any block size
    gives the same matrix, hence the same p-values."""
    from benchmark.stats import permutation

    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 1.0, (40, 5))
    paired = rng.random((40, 5)) > 0.1
    whole = permutation.sign_flip_pvalues(d, paired, n_flips=999, seed=11)
    monkeypatch.setattr(permutation, "_SIGN_BLOCK", 40 * 7)  # 7 rows per block
    blocked = permutation.sign_flip_pvalues(d, paired, n_flips=999, seed=11)
    np.testing.assert_array_equal(blocked, whole)
    # and it is the (1 + hits) / (1 + B) estimate of a brute-force loop over the same signs
    signs = np.where(np.random.default_rng(11).random((999, 40)) < 0.5, -1.0, 1.0)
    for j in range(5):
        x = np.where(paired[:, j], d[:, j], 0.0)
        t = abs(x.sum())
        hits = sum(abs(s @ x) >= t - 100 * np.finfo(float).eps * t for s in signs)
        assert whole[j] == (1 + hits) / 1000


@pytest.mark.parametrize("n", [8, 12, 30, 80])
def test_wilcoxon_pvalues_equal_scipy_column_by_column(n: int) -> None:
    """Grouped and vectorised (small columns in a clean and a zeros-or-ties batch, as
    scipy picks one method per call): each column equals scipy.stats.wilcoxon(zsplit) on
    its paired cases. n = 8 and 12: exact or permutation; 30: exact or normal; 80: normal."""
    from scipy import stats

    from benchmark.stats.permutation import wilcoxon_pvalues

    rng = np.random.default_rng(n)
    d = rng.normal(0.1, 1.0, (n, 9))
    d[:3, 0] = 0.0  # zeros (zsplit)
    d[:, 1] = 0.0  # no non-zero difference: NaN
    d[4, 2] = d[5, 2]  # a tie
    d[6, 5] = -d[7, 5]  # a tie of |d|
    paired = np.ones_like(d, bool)
    paired[::3, 3] = False  # its own group
    paired[:, 4] = False
    paired[:1, 4] = True  # one case: NaN
    got = wilcoxon_pvalues(d, paired)
    for j in range(9):
        x = d[paired[:, j], j]
        if x.size < 2 or not np.any(x != 0):
            assert np.isnan(got[j])
        else:
            assert got[j] == stats.wilcoxon(x, zero_method="zsplit").pvalue  # bit for bit


def per_pair_reference(scores: pd.DataFrame, table: pd.DataFrame, n_boot: int, seed: int,
                       weighting: str) -> tuple[np.ndarray, np.ndarray]:
    """The interval of every row computed the direct way: each pair's two arms restricted
    to its paired cases, ``(C @ num) / (C @ den)`` per arm, their difference, BCa with the
    difference of the arms' jackknife values (no shared arm columns, no blocks)."""
    from benchmark.stats.aggregate import cell_case_sums, ratio_jackknife
    from benchmark.stats.engine import weighted_ratio
    from benchmark.stats.intervals import interval_from_replicates

    lows, highs = [], []
    for row in table.itertuples():
        split_rows = scores[scores.split == row.split]
        cases = np.sort(split_rows.case_id.unique())
        counts = draw_counts(cases.size, n_boot, split_seed(seed, row.split))
        weights = np.vstack([np.ones(cases.size), counts])
        arms = []
        for m in (row.a, row.b):
            cell = select(split_rows, model=row.within, method=m, metric=row.metric)
            codes = np.searchsorted(cases, cell.case_id.to_numpy())
            sums, n_valid, _ = cell_case_sums(cell.value.to_numpy(float),
                                              np.zeros(len(cell), np.int64), 1, codes,
                                              cases.size)
            arms.append((sums, n_valid))
        paired = (arms[0][1] > 0) & (arms[1][1] > 0)
        terms = [ratio_terms(np.where(paired, s, 0.0), np.where(paired, n, 0.0), weighting)
                 for s, n in arms]
        diff = weighted_ratio(weights, *terms[0]) - weighted_ratio(weights, *terms[1])
        jack = ratio_jackknife(*terms[0]) - ratio_jackknife(*terms[1])
        low, high, _ = interval_from_replicates(diff[0], diff[1:], jack, 0.95, "bca")
        lows.append(low[0])
        highs.append(high[0])
    return np.array(lows), np.array(highs)


@pytest.mark.parametrize("weighting", ["case", "image"])
def test_intervals_equal_the_per_pair_computation_with_missing_cases(weighting):
    """compare computes each cell's replicates once and takes differences; a pair that
    drops cases (missing or NaN in the other arm) gets its own restricted arm. Every
    interval equals the direct per-pair computation up to the rounding of the products."""
    scores = make_scores(n_cases=12, seed=2, nan_rate=0.15)
    rng = np.random.default_rng(2)
    scores = scores[rng.random(len(scores)) > 0.05].reset_index(drop=True)
    table = compare(scores, family="methods", n_boot=500, seed=3, weighting=weighting).table
    assert (table.n_cases < 12).any()  # some pairs lose cases
    low, high = per_pair_reference(scores, table, 500, 3, weighting)
    np.testing.assert_allclose(table.ci_low, low, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table.ci_high, high, rtol=0, atol=1e-12)


@pytest.mark.parametrize("discrete", [False, True])
def test_sign_flip_pvalues_from_arms_equal_those_from_differences(discrete):
    """With ``arms`` the Monte Carlo statistics are differences of per-arm products; ties
    (discrete values: many sign vectors reach |T| exactly) are recomputed from ``d``, so
    the p-values are exactly those without ``arms``."""
    from benchmark.stats.comparisons import _arm_columns

    rng = np.random.default_rng(7)
    n, k = 60, 6
    x = rng.normal(0.5, 0.2, (n, k))
    if discrete:
        x = np.round(x * 3) / 3  # case means of three binary images: many zero and tied d
    valid = rng.random((n, k)) > 0.1
    x = np.where(valid, x, 0.0)
    ia, ib = map(np.array, zip(*itertools.combinations(range(k), 2), strict=True))
    paired = valid[:, ia] & valid[:, ib]
    d = np.where(paired, x[:, ia] - x[:, ib], 0.0)
    arms = _arm_columns(x, valid, ia, ib, paired)
    np.testing.assert_array_equal(arms[0][:, arms[1]] - arms[0][:, arms[2]], d)
    plain = sign_flip_pvalues(d, paired, n_flips=2000, seed=4)
    fast = sign_flip_pvalues(d, paired, n_flips=2000, seed=4, arms=arms)
    np.testing.assert_array_equal(fast, plain)
