"""Throughput of ``benchmark.metrics.compute`` (JAX) beside a straightforward numpy version.

How to run (from the repository root)::

    .venv/bin/python perf/metrics.py                       # defaults: 5-9 min on the 2-core box
    .venv/bin/python perf/metrics.py --n 1000 --volumes 16  # the issue's full sizes (slow)
    .venv/bin/python perf/metrics.py --n 64 --volumes 0 --repeats 3        # quick 2D look
    .venv/bin/python perf/metrics.py --metrics auroc,iou@top15 --per-metric
    .venv/bin/python perf/metrics.py --family threshold --n 1000 --volumes 0  # issue 8 item 1
    .venv/bin/python perf/metrics.py --family threshold --n 256 --volumes 0 --xla-only  # A/B

Defaults: 256 maps of 224 x 224 and 4 volumes of 128^3, 5 repeats. The issue asks for
1,000 maps and 16 volumes; on the 2-core development machine one suite pass then takes
about a minute per case for JAX alone, i.e. about 16 minutes with 5 repeats, so the
defaults are smaller (``--n 1000 --volumes 16`` restores them). 256 maps use the same
compiled kernel as 1,000 (``compute`` pads to chunks of ``--chunk-size`` = 256), so the
per-image figures carry over.

What is measured
----------------
Synthetic data, fixed seed: each image has a lesion, three "annotators" each drawing a
jittered disc (ball in 3D) around it; the graded reference W is their mean (values 0, 1/3,
2/3, 1, so plenty of ties) and the binary reference G = consensus = (W >= 1/2). The
saliency map is a blob near the lesion plus a distractor blob, minus an offset (so S+ has
many tied zeros), plus noise; float32, already on the reference grid (no resizing), no roi.

The suite is every name of ``benchmark.metrics.METRICS`` that the current ``compute``
accepts, with ``@top15``, ``@0.5`` and ``@otsu`` where a threshold is needed. Names are
discovered at run time and tried on a tiny input; the ones ``compute`` rejects are skipped
and listed, so the script keeps working as the catalogue grows. Binary-reference metrics are
scored against G, graded ones against W: one pass of the suite is two ``compute`` calls.
``--metrics a,b,c`` replaces the suite. ``--family threshold`` replaces it with the threshold
family, iou / dice / precision / recall at ``top15``, ``0.5`` and ``otsu`` (12 names, three
attention regions, read against G only), and prints its effective bandwidth as a share of
memcopy on one line per case (the issue's target: at least 25 %).

Figures, per case (2D and 3D):

Our side is ``benchmark.metrics.compute``, labelled "JAX": the XLA kernel, except that on
CPU with numba installed the region metrics (the threshold family), ``auroc``,
``rank_accuracy`` and ``pointing_game`` run on ``metrics/fused.py`` (one compiled read of
each map, the same bits); ``--xla-only`` keeps them on the XLA kernel, for an A/B in one
command.

- ``JAX first call``: wall time of the first suite pass in this process, which includes
  tracing and XLA compilation; ``compile ~`` is first call minus the steady median.
- ``JAX steady``: median (and min..max) over ``--repeats`` further passes; ``img/s`` is
  images (or volumes) per second of that median.
- ``numpy``: the same metrics by ``perf/_numpy_metrics.py`` (a Python loop over images,
  vectorised numpy per image: ``np.partition`` for top-K, ``np.bincount`` for Otsu, one
  stable ``argsort`` for rank-based AUROC, AUPRC and Spearman); median of ``--repeats``.
- ``JAX/numpy``: JAX images/s divided by numpy images/s (> 1: JAX is faster), on the
  metrics both implement. A JAX-only metric (no numpy version yet) is timed in the suite;
  for the ratio the JAX time is the suite median minus the median of the JAX-only metrics
  run alone (an estimate, printed as such).
- ``agreement``: largest |JAX - numpy| over every common metric and every image of the
  timed batch (the tolerance is 1e-4), and whether both put NaN in the same places.
- ``effective bandwidth``: bytes of input read per second, i.e. (saliency + G + W as
  float32, each counted once, G / W only if some metric needs it) / steady median.
- ``memcopy``: this machine's copy bandwidth, measured in the same run: ``np.copyto`` of a
  ``--copy-mb`` MB float32 array, median of the repeats, counted as bytes read per second
  (each byte is also written once). ``% of memcopy`` = effective bandwidth / memcopy: how
  far a pass is from being limited by memory traffic.

``--per-metric`` adds a table of each metric run alone (the region metrics at one
threshold share one kernel, so only one of them per threshold is listed): JAX first call,
JAX steady median, numpy steady median, and the JAX time as a share of the sum of the
rows. It is run on the 2D case, and on the 3D case with ``--per-metric-3d``.

The machine is shared and noisy: the script prints figures, it asserts nothing about
time. It exits with status 1 only if JAX and numpy disagree by more than 1e-4 (or on NaN).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _numpy_metrics as npm  # noqa: E402

from benchmark.metrics import METRICS, compute, fused  # noqa: E402

THRESHOLDS = ("top15", "0.5", "otsu")
FAMILIES = {
    "threshold": [f"{m}@{t}" for t in THRESHOLDS for m in ("iou", "dice", "precision", "recall")],
}
FAMILY_TARGET = {"threshold": 25.0}  # % of memcopy (issue 8)
TOLERANCE = 1e-4
GB = 1e9


# ------------------------------------------------------------------------------- data


def make_data(
    n: int, shape: tuple[int, ...], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic saliency maps, graded references W and consensus masks G (float32)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[(np.arange(d) + 0.5) / d for d in shape], indexing="ij"))
    sal = np.empty((n, *shape), np.float32)
    w = np.empty((n, *shape), np.float32)
    extra = (slice(None),) + (None,) * len(shape)

    def sq_dist(centre: np.ndarray) -> np.ndarray:
        return np.sum((grid - centre[extra]) ** 2, axis=0)

    for i in range(n):
        lesion = rng.uniform(0.25, 0.75, len(shape))
        radius = rng.uniform(0.08, 0.16)
        votes = np.zeros(shape, np.float32)
        for _ in range(3):
            centre = lesion + rng.normal(0.0, 0.02, len(shape))
            votes += sq_dist(centre) < (radius * rng.uniform(0.85, 1.15)) ** 2
        w[i] = votes / 3.0
        hit = lesion + rng.normal(0.0, 0.08, len(shape))
        distractor = rng.uniform(0.1, 0.9, len(shape))
        width = 2 * rng.uniform(0.08, 0.2) ** 2
        s = np.exp(-sq_dist(hit) / width) + 0.6 * np.exp(-sq_dist(distractor) / width)
        s += 0.05 * rng.standard_normal(shape) - 0.25
        sal[i] = s
    g = (w >= 0.5).astype(np.float32)
    return sal, g, w


# ------------------------------------------------------------------------- the suite


@dataclass
class Suite:
    binary: list[str]  # scored against G
    graded: list[str]  # scored against W
    skipped: list[tuple[str, str]]  # (name, why)

    @property
    def names(self) -> list[str]:
        return self.binary + self.graded


def candidate_names() -> list[str]:
    names = []
    for name, spec in METRICS.items():
        if spec.needs_threshold:
            names += [f"{name}@{t}" for t in THRESHOLDS]
        else:
            names.append(name)
    return names


def reference_kind(name: str) -> str:
    spec = METRICS.get(name.partition("@")[0])
    return spec.reference_kind if spec is not None else "binary"


def _first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text if len(text) <= 140 else text[:137] + "..."


def discover(names: Sequence[str], shape: tuple[int, ...]) -> Suite:
    """Keep the names ``compute`` accepts, tried on two tiny images like ``shape``.

    The probe grid is ``shape`` capped at 16 per axis, so a metric with a minimum size
    (e.g. a 7-pixel window) is skipped when the real grid is too small. All names are
    tried in one call first; only if that fails is each tried alone.
    """
    probe_s, probe_g, probe_w = make_data(2, tuple(min(d, 16) for d in shape), 1)
    spacing = (1.0,) * len(shape)

    def error(batch: list[str], ref: np.ndarray) -> str | None:
        try:
            compute(probe_s, ref, batch, spacing=spacing)
        except Exception as exc:  # any rejection means "skip it"
            return _first_line(exc)
        return None

    suite = Suite([], [], [])
    binary = [n for n in names if reference_kind(n) == "binary"]
    graded = [n for n in names if reference_kind(n) != "binary"]
    for group, ref, kept in ((binary, probe_g, suite.binary), (graded, probe_w, suite.graded)):
        if group and error(group, ref) is None:
            kept.extend(group)
            continue
        for name in group:
            why = error([name], ref)
            if why is not None and ref is probe_w and error([name], probe_g) is None:
                suite.binary.append(name)  # an unknown reference kind that wants a mask
            elif why is not None:
                suite.skipped.append((name, why))
            else:
                kept.append(name)
    return suite


# ---------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def memcopy_bandwidth(megabytes: int, repeats: int) -> float:
    """Bytes read per second by ``np.copyto`` of a ``megabytes`` MB array (median)."""
    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages
    times = timed(lambda: np.copyto(dst, src), max(repeats, 3))
    return src.nbytes / statistics.median(times)


def jax_pass(
    suite: Suite, sal: np.ndarray, g: np.ndarray, w: np.ndarray, chunk: int
) -> dict[str, np.ndarray]:
    spacing = (1.0,) * (sal.ndim - 1)
    out: dict[str, np.ndarray] = {}
    if suite.binary:
        out.update(compute(sal, g, suite.binary, chunk_size=chunk, spacing=spacing))
    if suite.graded:
        out.update(compute(sal, w, suite.graded, chunk_size=chunk, spacing=spacing))
    return out


def numpy_pass(
    names: Sequence[str], sal: np.ndarray, g: np.ndarray, w: np.ndarray
) -> dict[str, np.ndarray]:
    return npm.compute(sal, g, w, names, spacing=(1.0,) * (sal.ndim - 1))


def input_bytes(suite: Suite, sal: np.ndarray) -> int:
    return sal.nbytes * (1 + bool(suite.binary) + bool(suite.graded))


def fmt_s(t: float) -> str:
    return f"{t:.3f} s" if t < 10 else f"{t:.1f} s"


def spread(times: Sequence[float]) -> str:
    return f"[{min(times):.3g}..{max(times):.3g}]" if len(times) > 1 else ""


@dataclass
class CaseResult:
    label: str
    n: int
    jax_first: float
    jax_median: float
    jax_common_median: float
    numpy_median: float
    nbytes: int
    nbytes_common: int
    max_diff: float
    agree: bool


def run_case(
    label: str,
    suite: Suite,
    n: int,
    shape: tuple[int, ...],
    args: argparse.Namespace,
    copy_bw: float,
) -> CaseResult:
    unit = "maps" if len(shape) == 2 else "volumes"
    sal, g, w = make_data(n, shape, args.seed)
    common = Suite(
        [m for m in suite.binary if npm.supports(m)],
        [m for m in suite.graded if npm.supports(m)],
        [],
    )
    jax_only = [m for m in suite.names if not npm.supports(m)]
    nbytes = input_bytes(suite, sal)
    nbytes_common = input_bytes(common, sal)
    print(
        f"\n== {label}: {n} {unit} of {'x'.join(map(str, shape))}, {len(suite.names)} metrics "
        f"({len(suite.binary)} on G, {len(suite.graded)} on W), "
        f"input {nbytes / 1e6:.1f} MB ==",
        flush=True,
    )

    t0 = time.perf_counter()
    jax_out = jax_pass(suite, sal, g, w, args.chunk_size)
    first = time.perf_counter() - t0
    jt = timed(lambda: jax_pass(suite, sal, g, w, args.chunk_size), args.repeats)
    jmed = statistics.median(jt)
    print(
        f"  JAX   first call {fmt_s(first)} (compile ~ {fmt_s(max(first - jmed, 0.0))}); "
        f"steady median {fmt_s(jmed)} {spread(jt)} = {n / jmed:,.3g} {unit}/s, "
        f"{nbytes / jmed / GB:.3f} GB/s",
        flush=True,
    )
    if jax_only:  # estimated, to avoid a second full set of JAX passes
        alone = Suite(
            [m for m in jax_only if m in suite.binary],
            [m for m in jax_only if m in suite.graded],
            [],
        )
        jax_pass(alone, sal, g, w, args.chunk_size)  # compile
        ja = timed(lambda: jax_pass(alone, sal, g, w, args.chunk_size), args.repeats)
        jcmed = max(jmed - statistics.median(ja), 1e-9)
        print(
            f"  JAX on the {len(common.names)} metrics numpy has ~ suite - "
            f"{', '.join(jax_only)} alone ({fmt_s(statistics.median(ja))}) = {fmt_s(jcmed)} "
            f"= {n / jcmed:,.3g} {unit}/s"
        )
    else:
        jcmed = jmed

    np_out: dict[str, np.ndarray] = {}

    def np_run() -> None:
        np_out.update(numpy_pass(common.names, sal, g, w))

    nt = timed(np_run, args.repeats)
    nmed = statistics.median(nt)
    print(
        f"  numpy steady median {fmt_s(nmed)} {spread(nt)} = {n / nmed:,.3g} {unit}/s, "
        f"{nbytes_common / nmed / GB:.3f} GB/s",
        flush=True,
    )
    print(
        f"  JAX/numpy throughput ratio: {nmed / jcmed:.2f}x "
        f"({'JAX faster' if jcmed < nmed else 'numpy faster'})"
    )

    worst, worst_name, nan_bad = 0.0, "-", []
    for name in common.names:
        a, b = jax_out[name], np_out[name]
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            nan_bad.append(name)
        both = ~(np.isnan(a) | np.isnan(b))
        d = float(np.max(np.abs(a[both] - b[both]), initial=0.0))
        if d > worst:
            worst, worst_name = d, name
    agree = worst <= TOLERANCE and not nan_bad
    n_nan = sum(int(np.isnan(jax_out[m]).sum()) for m in common.names)
    print(
        f"  agreement: max |JAX - numpy| = {worst:.2e} (worst: {worst_name}) over "
        f"{len(common.names)} metrics x {n} {unit}; NaN placement "
        f"{'equal' if not nan_bad else 'DIFFERS for ' + ', '.join(nan_bad)} "
        f"({n_nan} NaN) -> {'OK' if agree else 'MISMATCH'} (tolerance {TOLERANCE:g})"
    )
    print(
        f"  effective bandwidth: JAX {nbytes / jmed / GB:.3f} GB/s = "
        f"{100 * nbytes / jmed / copy_bw:.2f}% of memcopy ({copy_bw / GB:.2f} GB/s); "
        f"numpy {nbytes_common / nmed / GB:.3f} GB/s = "
        f"{100 * nbytes_common / nmed / copy_bw:.2f}%",
        flush=True,
    )
    return CaseResult(label, n, first, jmed, jcmed, nmed, nbytes, nbytes_common, worst, agree)


def per_metric(
    label: str, suite: Suite, n: int, shape: tuple[int, ...], args: argparse.Namespace
) -> None:
    """Each metric alone; one region metric per threshold (they share a kernel)."""
    sal, g, w = make_data(n, shape, args.seed)
    rows: list[tuple[str, float, float, float]] = []
    seen_thresholds: set[str] = set()
    reps = max(1, args.repeats)
    print(
        f"\n== per metric, {label}: {n} x {'x'.join(map(str, shape))}, "
        f"each metric alone, median of {reps} ==",
        flush=True,
    )
    print(
        f"  {'metric':28} {'JAX first':>10} {'JAX steady':>11} {'numpy':>9} "
        f"{'JAX/numpy':>9} {'JAX share':>9}"
    )
    for name in suite.names:
        base, _, thr = name.partition("@")
        if thr:
            if thr in seen_thresholds:
                continue
            seen_thresholds.add(thr)
        one = Suite([name], [], []) if name in suite.binary else Suite([], [name], [])
        t0 = time.perf_counter()
        jax_pass(one, sal, g, w, args.chunk_size)
        first = time.perf_counter() - t0
        jmed = statistics.median(timed(lambda o=one: jax_pass(o, sal, g, w, args.chunk_size), reps))
        if npm.supports(name):
            nmed = statistics.median(timed(lambda nm=name: numpy_pass([nm], sal, g, w), reps))
        else:
            nmed = float("nan")
        rows.append((name if not thr else f"{base}@{thr} (+ region)", first, jmed, nmed))
    total = sum(r[2] for r in rows)
    for name, first, jmed, nmed in sorted(rows, key=lambda r: -r[2]):
        print(
            f"  {name:28} {fmt_s(first):>10} {fmt_s(jmed):>11} {fmt_s(nmed):>9} "
            f"{nmed / jmed:>8.2f}x {100 * jmed / total:>8.1f}%"
        )
    print(
        f"  sum of the rows: JAX {fmt_s(total)}, "
        f"numpy {fmt_s(sum(r[3] for r in rows if r[3] == r[3]))}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="2D maps (0: skip 2D)")
    ap.add_argument("--size", type=int, default=224, help="2D maps are size x size")
    ap.add_argument("--volumes", type=int, default=4, help="3D volumes (0: skip 3D)")
    ap.add_argument("--vol-size", type=int, default=128, help="volumes are vol-size^3")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (medians are quoted)")
    ap.add_argument("--metrics", default="", help="comma-separated names instead of the suite")
    ap.add_argument(
        "--family", choices=sorted(FAMILIES), default="",
        help="a metric family instead of the suite, with its bandwidth line",
    )  # fmt: skip
    ap.add_argument("--chunk-size", type=int, default=256, help="passed to compute")
    ap.add_argument("--copy-mb", type=int, default=256, help="size of the memcopy array")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    ap.add_argument("--per-metric", action="store_true", help="also time each metric alone")
    ap.add_argument("--per-metric-3d", action="store_true", help="per-metric table in 3D too")
    ap.add_argument(
        "--xla-only", action="store_true",
        help="score every metric with the XLA kernel, not metrics/fused.py (an A/B)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    args.repeats = max(1, args.repeats)
    if args.xla_only:
        fused.available = lambda: False  # type: ignore[method-assign]

    print(
        f"saliency-bench metrics throughput: jax {jax.__version__} "
        f"({jax.default_backend()}: {', '.join(str(d) for d in jax.devices())}), "
        f"numpy {np.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs ({platform.machine()})"
    )
    print(f"repeats {args.repeats}, chunk_size {args.chunk_size}, data seed {args.seed}; "
          f"counting metrics on {'metrics/fused.py' if fused.available() else 'the XLA kernel'}")

    cases = [
        (label, n, shape)
        for label, n, shape in (
            ("2D", args.n, (args.size,) * 2),
            ("3D", args.volumes, (args.vol_size,) * 3),
        )
        if n > 0
    ]
    wanted = (
        FAMILIES[args.family]
        if args.family
        else [m.strip() for m in args.metrics.split(",") if m.strip()] or candidate_names()
    )
    suites = {}
    for label, _, shape in cases:
        t0 = time.perf_counter()
        suite = suites[label] = discover(wanted, shape)
        print(
            f"{label} suite: {len(suite.names)} metrics (probed in "
            f"{time.perf_counter() - t0:.1f} s): {', '.join(suite.names)}"
        )
        for name, why in suite.skipped:
            print(f"  skipped, compute rejects {name}: {why}")
        no_numpy = [m for m in suite.names if not npm.supports(m)]
        if no_numpy:
            print(
                f"  no numpy version (timed in the suite, not in the ratio): {', '.join(no_numpy)}"
            )

    copy_bw = memcopy_bandwidth(args.copy_mb, args.repeats)
    print(
        f"memcopy (np.copyto of {args.copy_mb} MB, median of {max(args.repeats, 3)}): "
        f"{copy_bw / GB:.2f} GB/s read (+ as much written)",
        flush=True,
    )

    results = [
        run_case(label, suites[label], n, shape, args, copy_bw)
        for label, n, shape in cases
        if suites[label].names
    ]

    print("\n== summary (steady-state medians) ==")
    print(
        f"  {'case':5} {'JAX img/s':>10} {'numpy img/s':>12} {'JAX/numpy':>9} "
        f"{'JAX compile':>11} {'JAX GB/s':>9} {'% memcopy':>9} {'max diff':>9}"
    )
    for r in results:
        print(
            f"  {r.label:5} {r.n / r.jax_median:>10.2f} {r.n / r.numpy_median:>12.2f} "
            f"{r.numpy_median / r.jax_common_median:>8.2f}x "
            f"{fmt_s(max(r.jax_first - r.jax_median, 0.0)):>11} "
            f"{r.nbytes / r.jax_median / GB:>9.3f} "
            f"{100 * r.nbytes / r.jax_median / copy_bw:>8.2f}% {r.max_diff:>9.1e}"
        )
    print(f"  memcopy {copy_bw / GB:.2f} GB/s; img/s counts volumes in 3D")
    if args.family:
        names = {"threshold": "iou/dice/precision/recall at top15, 0.5, otsu"}[args.family]
        for r in results:
            share = 100 * r.nbytes / r.jax_median / copy_bw
            target = FAMILY_TARGET[args.family]
            print(
                f"  {args.family} family ({names}), {r.label}: "
                f"{r.nbytes / r.jax_median / GB:.3f} GB/s = {share:.2f}% of memcopy "
                f"({copy_bw / GB:.2f} GB/s, same process) -> target >= {target:g}%: "
                f"{'met' if share >= target else 'NOT met'}"
            )

    for label, n, shape in cases:
        if suites[label].names and (args.per_metric_3d if label == "3D" else args.per_metric):
            per_metric(label, suites[label], n, shape, args)
    return 0 if all(r.agree for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
