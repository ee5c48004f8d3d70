"""The shared localisation metrics: ``benchmark.metrics.compute`` (JAX) beside Quantus.

How to run (from the repository root; Quantus lives only in the perf environment)::

    make perf-env                                   # once: .venv-perf with quantus 0.6.0
    .venv-perf/bin/python perf/vs_quantus.py        # 1,000 maps of 224 x 224, 5 repeats
    .venv-perf/bin/python perf/vs_quantus.py --quantus-n 200   # Quantus on 200, extrapolated

(The file is not called ``quantus.py``: the script's folder comes first on ``sys.path``,
so that name would shadow the library.)

What is measured
----------------
The data are those of ``perf/metrics.py`` (its ``make_data``, same seed): ``--n`` maps of
``--size`` x ``--size`` float32 with the consensus mask G of three synthetic annotators.
Both libraries get the same arrays: the maps as S⁺ = max(S, 0) (our default sign rule,
applied once here, so that Quantus's own sign options are moot) and G.

Pairs (Quantus 0.6 class, default parameters unless said -> our metric name):

- ``PointingGame()`` -> ``pointing_game``
- ``AttributionLocalisation()`` -> ``mass_accuracy`` (it takes |a|, = S⁺ here)
- ``RelevanceMassAccuracy()`` -> ``mass_accuracy`` (the same ratio without the epsilon)
- ``RelevanceRankAccuracy()`` -> ``rank_accuracy``
- ``AUC()`` -> ``auroc``
- ``TopKIntersection(k=K)`` with K = ``topk_count(15, H*W)`` -> ``precision@top15``
  (|top-K ∩ G| / K with K = 15 % of the pixels: the same quantity)

Quantus is called as its metrics allow with precomputed explanations: ``model=None``,
``x_batch`` a zero array of shape (N, 1, H, W) (it is only read for its shape: channel
order, the attribution axes and, for AttributionLocalisation, the image size),
``y_batch`` zeros, ``a_batch`` and ``s_batch`` of shape (N, 1, H, W), ``batch_size``
``--quantus-batch`` (64, Quantus's default), warnings and progress bar off. Quantus
divides the maps by their maximum by default (``normalise=True``), which changes no ratio
and no ranking, so its defaults are kept (and timed).

Figures per metric: Quantus time for ``--n`` maps (median of ``--quantus-repeats``; when
``--quantus-n`` < ``--n`` Quantus is timed on the first ``--quantus-n`` maps and the time
is scaled linearly, printed as extrapolated), ours (first call in this process, which
includes tracing and compiling, and the median of ``--repeats`` steady calls, each metric
computed alone in one ``compute`` call), the ratio Quantus / ours-steady (target >= 30x)
and the agreement: max |ours - Quantus| over the maps both score, and the count of maps
where they differ by more than 1e-4. A last row scores the five metrics in one ``compute``
call against the sum of the Quantus rows.

Where the definitions differ (printed under the table, not hidden):

- pointing game: Quantus scores 1 when *any* maximal pixel lies in G; ours gives
  fractional credit |M ∩ G| / |M| over the maximal pixels M. The same when the maximum is
  unique (continuous maps); a map with tied maxima (e.g. all zero after S⁺) differs.
- mass accuracy: AttributionLocalisation divides by (Σ S + 1e-9) and returns NaN when the
  ratio exceeds 1; ours is Σ_G S⁺ / Σ S⁺, NaN only when Σ S⁺ = 0 or G is empty. Differences
  are of order 1e-9 / Σ S.
- rank accuracy and top-K intersection: Quantus ranks with ``np.argsort(-a)`` (quicksort:
  ties in an unspecified order); ours breaks ties with a seeded jitter (METRICS.md, top15).
  They differ only when the K-th value is tied, which S⁺ makes common when fewer than K
  pixels are positive (the tied zeros).
- AUC: Quantus uses scikit-learn's ``roc_curve`` + ``auc`` per map (trapezoids, which is
  the Mann-Whitney statistic with ½ for ties), i.e. the same definition as ours; expect
  float rounding only.
- empty G: both give NaN (Quantus's pointing game included in 0.6).

The machine is shared and noisy: the script prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from metrics import make_data, timed  # noqa: E402  (perf/metrics.py)

from benchmark.metrics import compute, fused, topk_count  # noqa: E402

TOLERANCE = 1e-4


def quantus_pairs(k: int) -> list[tuple[str, Callable[[], object], str]]:
    """(Quantus label, factory, our metric name); factories build fresh metric objects."""
    import quantus

    quiet = {"disable_warnings": True, "display_progressbar": False}
    return [
        ("PointingGame", lambda: quantus.PointingGame(**quiet), "pointing_game"),
        (
            "AttributionLocalisation",
            lambda: quantus.AttributionLocalisation(**quiet),
            "mass_accuracy",
        ),
        ("RelevanceMassAccuracy", lambda: quantus.RelevanceMassAccuracy(**quiet), "mass_accuracy"),
        ("RelevanceRankAccuracy", lambda: quantus.RelevanceRankAccuracy(**quiet), "rank_accuracy"),
        ("AUC", lambda: quantus.AUC(**quiet), "auroc"),
        (f"TopKIntersection(k={k})", lambda: quantus.TopKIntersection(k=k, **quiet),
         "precision@top15"),  # fmt: skip
    ]


DIFFERENCES = {
    "pointing_game": "Quantus: 1 if any maximal pixel is in G; ours: fractional credit over tied "
    "maxima",
    "mass_accuracy": "Quantus AttributionLocalisation: / (sum + 1e-9), NaN if > 1",
    "rank_accuracy": "ties at the K-th value: Quantus argsort order vs our seeded jitter",
    "precision@top15": "ties at the K-th value: Quantus argsort order vs our seeded jitter",
    "auroc": "same definition (sklearn roc_curve + trapezoids = Mann-Whitney with 1/2 ties)",
}


def run_quantus(
    factory: Callable[[], object], a: np.ndarray, s: np.ndarray, batch: int
) -> np.ndarray:
    metric = factory()
    x = np.zeros_like(a)
    y = np.zeros(len(a), np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(  # type: ignore[operator]
            model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, batch_size=batch
        )
    return np.asarray(scores, np.float64)


def fmt_s(t: float) -> str:
    if t < 1e-2:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.3f} s" if t < 10 else f"{t:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="maps (the issue: 1,000)")
    ap.add_argument("--size", type=int, default=224, help="maps are size x size")
    ap.add_argument("--quantus-n", type=int, default=0,
                    help="maps given to Quantus (0: all --n); fewer are extrapolated linearly")
    ap.add_argument("--quantus-batch", type=int, default=64, help="Quantus batch_size")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of ours (medians)")
    ap.add_argument("--quantus-repeats", type=int, default=3, help="timed runs of Quantus")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    ap.add_argument("--xla-only", action="store_true",
                    help="ours on the XLA kernel only, not metrics/fused.py (an A/B)")
    args = ap.parse_args(argv)  # fmt: skip
    if args.xla_only:
        fused.available = lambda: False  # type: ignore[method-assign]

    import quantus

    n, size = args.n, args.size
    qn = min(args.quantus_n or n, n)
    k = topk_count(15.0, size * size)
    print(
        f"shared localisation metrics, ours vs Quantus {quantus.__version__}: jax "
        f"{jax.__version__} ({jax.default_backend()}), numpy {np.__version__}, python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}); "
        f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    sal, g, _ = make_data(n, (size, size), args.seed)
    maps = np.maximum(sal, 0.0)  # S⁺ for both libraries
    a4, s4 = maps[:, None], g[:, None]
    print(
        f"{n} maps of {size}x{size} (S⁺ float32) + binary G; ours: median of {args.repeats}, "
        f"Quantus: median of {args.quantus_repeats} on {qn} maps"
        f"{' (times scaled by n / quantus-n: EXTRAPOLATED)' if qn < n else ''}, "
        f"batch_size {args.quantus_batch}; top-K K = {k}; ours counts on "
        f"{'metrics/fused.py' if fused.available() else 'the XLA kernel'}\n",
        flush=True,
    )

    head = (
        f"  {'Quantus metric':28} {'ours':16} {'Quantus':>10} {'ours 1st':>10} "
        f"{'ours med':>10} {'ratio':>8}  {'max |diff|':>10} {'n > 1e-4':>8}"
    )
    print(head)
    rows = []
    ours_cache: dict[str, tuple[float, float, np.ndarray]] = {}
    batch = args.quantus_batch
    for label, factory, ours in quantus_pairs(k):
        run_quantus(factory, a4[: min(qn, 8)], s4[: min(qn, 8)], args.quantus_batch)  # warm-up
        q_out: list[np.ndarray] = []
        a_q, s_q = a4[:qn], s4[:qn]
        qt = timed(
            lambda f=factory, o=q_out, a=a_q, s=s_q: o.append(run_quantus(f, a, s, batch)),
            args.quantus_repeats,
        )
        q_time = statistics.median(qt) * n / qn
        if ours not in ours_cache:
            t0 = time.perf_counter()
            out = compute(maps, g, [ours])[ours]
            first = time.perf_counter() - t0
            med = statistics.median(timed(lambda o=ours: compute(maps, g, [o]), args.repeats))
            ours_cache[ours] = (first, med, out)
        first, med, out = ours_cache[ours]
        q = q_out[-1]
        mine = out[:qn]
        both = ~(np.isnan(q) | np.isnan(mine))
        diff = np.abs(q[both] - mine[both])
        nan_mismatch = int(np.sum(np.isnan(q) != np.isnan(mine)))
        rows.append((label, ours, q_time, first, med))
        print(
            f"  {label:28} {ours:16} {fmt_s(q_time):>10}{'*' if qn < n else ' '}"
            f"{fmt_s(first):>10} {fmt_s(med):>10} {q_time / med:>7.1f}x  "
            f"{float(diff.max(initial=0.0)):>10.2e} {int(np.sum(diff > TOLERANCE)):>8}"
            f"{f'  ({nan_mismatch} NaN mismatches)' if nan_mismatch else ''}",
            flush=True,
        )

    five = ["pointing_game", "mass_accuracy", "rank_accuracy", "auroc", "precision@top15"]
    compute(maps, g, five)
    med5 = statistics.median(timed(lambda: compute(maps, g, five), args.repeats))
    q_sum = sum(r[2] for r in rows if r[0] != "RelevanceMassAccuracy")
    print(
        f"  {'5 metrics, one call':28} {'(all five)':16} {fmt_s(q_sum):>10} {'':>10} "
        f"{fmt_s(med5):>10} {q_sum / med5:>7.1f}x   (Quantus: sum of its rows, "
        f"AttributionLocalisation for the mass)"
    )
    if qn < n:
        print(f"  * Quantus timed on {qn} maps and scaled by {n}/{qn} (extrapolated)")
    print("\nratio = Quantus time / ours steady median (target >= 30x per metric)")
    print("definitions that differ (the max |diff| column shows where it matters):")
    for name, why in DIFFERENCES.items():
        print(f"  {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
