"""Time of the case-bootstrap statistics (``summarize``, ``compare``) beside per-statistic loops.

How to run (from the repository root)::

    .venv/bin/python perf/stats.py              # full sizes, 3 repeats: a few minutes
    .venv/bin/python perf/stats.py --quick      # small sizes, a few seconds
    .venv/bin/python perf/stats.py --repeat 5 --scipy-sample 10 --pandas-sample 3

What is measured
----------------
A synthetic tidy scores table, fixed seed: 1 model x 1 split x ``--methods`` (10) methods x
1 reference x ``--metrics`` (100) metrics = 1,000 statistics (cells), each over ``--cases``
(300) cases with ``--images`` (3) images per case, i.e. 900 rows per cell and 900,000
rows in all. value = case effect + method effect + metric effect + noise (intra-case
correlation about 0.3), no NaN.

- ``summarize``: :func:`benchmark.stats.summarize` of the whole table (every cell's
  estimate and BCa interval), B = ``--n-boot`` (10,000), from the tidy table to the
  result table (grouping, per-case sums, one count matrix, matrix products, jackknife).
- ``compare``: :func:`benchmark.stats.compare` with ``family="methods"``: every pair of
  methods per metric, ``C(10, 2) * 100 = 4,500`` pairs, each with its paired BCa interval,
  sign-flip p (10,000 flips), Wilcoxon p, rank-biserial effect size and Holm adjustment.
- ``scipy.stats.bootstrap``: the usual one-statistic-at-a-time call,
  ``bootstrap((case_means,), np.mean, method="BCa", n_resamples=B, vectorized=True)`` on
  the 300 case means of a cell (the same estimand and resampling unit as ``summarize``),
  looped over ``--scipy-sample`` (5) cells and extrapolated linearly to all cells; the same
  on the case-level differences of ``--scipy-sample`` pairs, extrapolated to all pairs
  (intervals only: no p-values, so the ``compare`` ratio flatters scipy). ``agreement``:
  the largest |endpoint difference| between scipy's and ``summarize``'s intervals on the
  sampled cells, Monte Carlo error only (both are BCa of the mean of case means).
- ``pandas loop``: the naive approach seen in many notebooks, per cell
  ``[cell.sample(frac=1, replace=True)["value"].mean() for _ in range(B)]`` and the 2.5 /
  97.5 percentiles; it resamples IMAGES (the wrong unit, see STATISTICS.md) and gives a
  percentile interval. ``--pandas-sample`` (2) cells, extrapolated to all cells.

Every figure is the median over ``--repeat`` (3) runs; a baseline's per-statistic time is
the median over runs of (loop time / sampled statistics). ``ratio`` = baseline time
extrapolated to all statistics / the engine's time (> 1: the engine is faster). The
machine is shared and noisy: the script prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy
from scipy import stats

from benchmark.stats import compare, summarize

BY = ["model", "split", "method", "reference", "metric"]


# ------------------------------------------------------------------------------- data


def make_scores(
    n_methods: int, n_metrics: int, n_cases: int, n_images: int, seed: int
) -> pd.DataFrame:
    """Tidy scores: 1 model x 1 split x methods x 1 reference x metrics, cases x images."""
    rng = np.random.default_rng(seed)
    shape = (n_methods, n_metrics, n_cases, n_images)
    value = (
        0.5
        + rng.normal(0.0, 0.05, (n_methods, 1, 1, 1))  # method effect
        + rng.normal(0.0, 0.10, (1, n_metrics, 1, 1))  # metric effect
        + rng.normal(0.0, np.sqrt(0.3) * 0.15, (n_methods, n_metrics, n_cases, 1))  # case
        + rng.normal(0.0, np.sqrt(0.7) * 0.15, shape)  # image
    )
    idx = np.indices(shape).reshape(4, -1)
    methods = np.array([f"method{i:02d}" for i in range(n_methods)], dtype=object)
    metrics = np.array([f"metric{i:03d}" for i in range(n_metrics)], dtype=object)
    return pd.DataFrame({
        "model": "model0",
        "split": "test",
        "method": methods[idx[0]],
        "reference": "mask",
        "metric": metrics[idx[1]],
        "case_id": idx[2],
        "image_id": idx[3],
        "value": value.ravel(),
    })


# ---------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    """Wall times of ``repeat`` calls and the last call's result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def fmt_s(t: float) -> str:
    if t < 1:
        return f"{1e3 * t:.1f} ms"
    if t < 600:
        return f"{t:.2f} s"
    return f"{t:.0f} s ({t / 60:.1f} min)"


def spread(times: Sequence[float]) -> str:
    return f"[{min(times):.3g}..{max(times):.3g} s]" if len(times) > 1 else ""


# ------------------------------------------------------------------------- baselines


def scipy_bca(sample: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    res = stats.bootstrap(
        (sample,), np.mean, n_resamples=n_boot, method="BCa", vectorized=True,
        confidence_level=0.95, rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def pandas_loop(cell: pd.DataFrame, n_boot: int) -> tuple[float, float]:
    reps = [cell.sample(frac=1, replace=True)["value"].mean() for _ in range(n_boot)]
    low, high = np.percentile(reps, [2.5, 97.5])
    return float(low), float(high)


def per_statistic(
    label: str, work: Callable[[], object], k: int, total: int, engine: float, repeat: int
) -> None:
    """Time ``work`` (a loop over ``k`` statistics), print per-statistic, total and ratio."""
    times, _ = timed(work, repeat)
    per = statistics.median(t / k for t in times)
    print(
        f"  {label:44} {fmt_s(per):>10} / stat (loop of {k}) "
        f"-> {total:,} stats ~ {fmt_s(per * total):>18}  ratio {per * total / engine:7.1f}x"
    )


# ------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", type=int, default=10, help="methods (cells per metric)")
    ap.add_argument("--metrics", type=int, default=100, help="metrics")
    ap.add_argument("--cases", type=int, default=300, help="cases per cell")
    ap.add_argument("--images", type=int, default=3, help="images per case")
    ap.add_argument("--n-boot", type=int, default=10_000, help="bootstrap replicates B")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (medians are quoted)")
    ap.add_argument("--scipy-sample", type=int, default=5, help="cells/pairs timed for scipy")
    ap.add_argument("--pandas-sample", type=int, default=2, help="cells timed for pandas")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data and bootstraps")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes: 5 methods x 20 metrics, 100 cases, B = 2,000, 1 run")
    args = ap.parse_args(argv)
    if args.quick:
        args.methods, args.metrics, args.cases, args.n_boot = 5, 20, 100, 2000
        args.repeat, args.scipy_sample, args.pandas_sample = 1, 2, 1
    args.repeat = max(1, args.repeat)

    print(
        f"saliency-bench statistics throughput: numpy {np.__version__}, pandas "
        f"{pd.__version__}, scipy {scipy.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs ({platform.machine()})"
    )
    t0 = time.perf_counter()
    scores = make_scores(args.methods, args.metrics, args.cases, args.images, args.seed)
    n_cells = args.methods * args.metrics
    n_pairs = args.methods * (args.methods - 1) // 2 * args.metrics
    print(
        f"scores: 1 model x 1 split x {args.methods} methods x 1 reference x {args.metrics} "
        f"metrics = {n_cells:,} statistics, {args.cases} cases x {args.images} images each, "
        f"{len(scores):,} rows (built in {time.perf_counter() - t0:.1f} s)"
    )
    print(
        f"B = {args.n_boot:,}, BCa, weighting case, seed {args.seed}; medians of "
        f"{args.repeat} run(s)\n"
    )

    sum_times, table = timed(
        lambda: summarize(scores, by=BY, n_boot=args.n_boot, seed=args.seed), args.repeat
    )
    assert isinstance(table, pd.DataFrame)
    t_sum = statistics.median(sum_times)
    cmp_times, pairs = timed(
        lambda: compare(scores, family="methods", n_boot=args.n_boot, seed=args.seed).table,
        args.repeat,
    )
    assert isinstance(pairs, pd.DataFrame)
    t_cmp = statistics.median(cmp_times)
    print("engine (all statistics, one call):")
    print(f"  summarize: {n_cells:,} intervals           {fmt_s(t_sum):>10} "
          f"{spread(sum_times)}  ({1e3 * t_sum / n_cells:.2f} ms / stat)")
    print(f"  compare:   {len(pairs):,} pairs (family=methods) {fmt_s(t_cmp):>10} "
          f"{spread(cmp_times)}  ({1e3 * t_cmp / len(pairs):.2f} ms / pair)")
    print(f"  total:     {fmt_s(t_sum + t_cmp)}\n")

    # ---- baselines on a sample of the same statistics, extrapolated
    cell_ids = scores.groupby(["method", "metric"], sort=True).ngroup().to_numpy()
    rng = np.random.default_rng(args.seed)
    k_scipy = min(args.scipy_sample, n_cells)
    k_pandas = min(args.pandas_sample, n_cells)
    picked = rng.choice(n_cells, size=max(k_scipy, k_pandas), replace=False)
    cells = {int(c): scores[cell_ids == c] for c in picked}
    case_means = {
        c: frame.groupby("case_id", sort=True)["value"].mean().to_numpy()
        for c, frame in cells.items()
    }
    scipy_cells = [int(c) for c in picked[:k_scipy]]
    pandas_cells = [int(c) for c in picked[:k_pandas]]

    ends: dict[int, tuple[float, float]] = {}

    def scipy_cells_loop() -> None:
        for c in scipy_cells:
            ends[c] = scipy_bca(case_means[c], args.n_boot, args.seed + c)

    # case-level differences of a sample of method pairs within one metric
    means = scores.groupby(["method", "metric", "case_id"], sort=True)["value"].mean()
    wide = means.unstack("case_id")
    metric_rows = wide.xs(f"metric{int(rng.integers(args.metrics)):03d}", level="metric")
    pair_list = [(i, j) for i in range(args.methods) for j in range(i + 1, args.methods)]
    k_pairs = min(args.scipy_sample, len(pair_list))
    diffs = [
        metric_rows.iloc[i].to_numpy() - metric_rows.iloc[j].to_numpy()
        for i, j in pair_list[:k_pairs]
    ]

    def scipy_pairs_loop() -> None:
        for p, d in enumerate(diffs):
            scipy_bca(d, args.n_boot, args.seed + p)

    def pandas_cells_loop() -> None:
        for c in pandas_cells:
            pandas_loop(cells[c], args.n_boot)

    print("baselines (a sample of the same statistics, extrapolated linearly):")
    per_statistic("scipy.stats.bootstrap BCa, case means", scipy_cells_loop, k_scipy,
                  n_cells, t_sum, args.repeat)
    per_statistic("scipy.stats.bootstrap BCa, pair differences", scipy_pairs_loop, k_pairs,
                  n_pairs, t_cmp, args.repeat)
    per_statistic("pandas df.sample loop (images, percentile)", pandas_cells_loop, k_pandas,
                  n_cells, t_sum, args.repeat)
    print("  (ratio: baseline extrapolated / summarize, or / compare for the pair row; the "
          "pair row\n   is intervals only, compare also computes p-values and effect sizes)")

    ordered = table.set_index(["method", "metric"]).sort_index()
    gap = 0.0
    for c, (low, high) in ends.items():
        row = ordered.iloc[c]
        gap = max(gap, abs(row.ci_low - low), abs(row.ci_high - high))
    width = float((table.ci_high - table.ci_low).median())
    print(
        f"\nagreement: max |summarize - scipy| interval endpoint over {len(ends)} cells "
        f"{gap:.2e} (median interval width {width:.3f}; Monte Carlo error only)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
