"""The demo ``bench run`` end to end: time per stage and peak memory (issue 8, item 4).

How to run (from the repository root)::

    .venv/bin/python perf/demo.py                 # 3 fresh runs + 3 report re-renders
    .venv/bin/python perf/demo.py --repeat 1 --args "--no-sanity --no-faithfulness"

What is measured
----------------
``--repeat`` times: ``bench run`` with the demo's defaults (all models, the default
methods, B = 10,000) into a fresh run directory, as a child process, so that each run pays
the imports, JAX compilation and the map computations a user pays once installed. Per run:

- wall time of the whole command (``total``), and the stage times the pipeline records in
  ``provenance.json`` (``timings``: load, predict, explain, score (with the human
  benchmark), checks (sanity and faithfulness), analyse (statistics), report);
  ``startup`` = total minus the sum of the stages (interpreter, imports, planning);
- peak resident memory of the child (``ru_maxrss`` of the finished child, the largest
  process of the tree).

Then ``bench report RUN`` ``--repeat`` times on the last run directory (re-render only).
The ``bench`` commands keep compiled JAX kernels on disk (``benchmark.compile_cache``), so
a run after the first compiles less: ``--jax-cache fresh`` starts from an empty cache
(what a new installation sees), ``off`` compiles everything in every run; the line
printed first says which cache the runs use and how full it was.
Every figure is the median over the repeats (min..max beside it). The machine is shared
and noisy: ``uptime``'s load average is printed before and after; the script asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark import compile_cache

STAGES = ("load", "predict", "explain", "score", "checks", "analyse", "report")
BENCH = str(Path(sys.executable).with_name("bench"))


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _child_peak_mb(before: int) -> float:
    """Peak RSS of the largest child waited for so far (KiB on Linux), in MB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak, before) * 1024 / 1e6


def run_once(out: Path, extra: list[str]) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    proc = subprocess.run([BENCH, "run", "--out", str(out), *extra],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    prov = json.loads((out / "provenance.json").read_text())
    return wall, dict(prov.get("timings") or {})


def report_once(out: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([BENCH, "report", str(out)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.exit(f"bench report failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:7.1f} s  ({min(values):.1f}..{max(values):.1f})"


def _jax_cache(mode: str) -> str:
    """Set up the compile cache the child processes use; a line saying which it is."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return f"JAX compile cache: yours, {os.environ['JAX_COMPILATION_CACHE_DIR']}"
    if mode == "off":
        os.environ[compile_cache.ENV] = "off"
        return "JAX compile cache: off (every run compiles its kernels)"
    if mode == "fresh":
        os.environ[compile_cache.ENV] = tempfile.mkdtemp(prefix="perf-demo-jax-")
    folder = compile_cache.cache_dir()
    entries = len(list(folder.glob("*-cache"))) if folder and folder.is_dir() else 0
    return f"JAX compile cache: {folder} ({entries} entries before the first run)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--args", default="", help="extra `bench run` arguments (one string)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    ap.add_argument("--jax-cache", choices=("default", "fresh", "off"), default="default",
                    help="the bench commands' compiled-kernel cache: the user's (default), "
                         "a new empty one (the first run compiles, as after installing), "
                         "or none")
    args = ap.parse_args(argv)
    extra = shlex.split(args.args)
    print(f"bench run {' '.join(extra) or '(demo defaults)'}; {args.repeat} fresh runs; "
          f"{_load()}")
    print(_jax_cache(args.jax_cache))
    base = args.keep or Path(tempfile.mkdtemp(prefix="perf-demo-"))
    walls: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    peak_so_far = 0
    out = base
    for i in range(args.repeat):
        out = base / f"run{i}"
        wall, timings = run_once(out, extra)
        walls.append(wall)
        for s in STAGES:
            if s in timings:
                stages[s].append(float(timings[s]))
        peak_so_far = max(peak_so_far, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(f"  run {i + 1}: {wall:.1f} s, "
              + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    reports = [report_once(out) for _ in range(args.repeat)]
    startup = [w - sum(float(v[i]) for v in stages.values() if len(v) > i)
               for i, w in enumerate(walls)]
    print("\nstage                 median  (min..max)")
    print(f"  total           {_fmt(walls)}")
    print(f"  startup         {_fmt(startup)}")
    for s in STAGES:
        print(f"  {s:<15} {_fmt(stages[s])}")
    print(f"  bench report    {_fmt(reports)}   (re-render of the last run)")
    print(f"peak RSS of a bench run: {_child_peak_mb(peak_so_far):.0f} MB")
    print(f"targets: bench run <= 90 s, bench report <= 15 s; {_load()}")


if __name__ == "__main__":
    main()
