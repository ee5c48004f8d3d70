"""Speed-up of ``--executor ray`` over the local executor (issue 10).

How to run (from the repository root; Ray comes with ``pip install -e '.[dev]'`` or the
``ray`` extra)::

    .venv/bin/python perf/ray.py                    # occlusion on the demo, 3 runs each
    .venv/bin/python perf/ray.py --methods occlusion,rise --repeat 1
    .venv/bin/python perf/ray.py --address auto     # an existing cluster

What is measured
----------------
A perturbation-heavy ``bench run`` on the demo data (default: occlusion, the three demo
models, the ``test`` and ``shifted`` splits; no checks, no report, B = 1,000), once with
the local executor and once with ``--executor ray``, alternating, each into a fresh run
directory, ``--repeat`` times, as child processes. Per run: the wall time of the command
and the explain stage's time from ``provenance.json`` (the only stage Ray runs). The Ray
figure includes starting a local Ray instance (``ray.init``) in the child, as a user of
``bench run --executor ray`` on one machine pays it; ``--address`` connects to a running
cluster instead. Medians are quoted; the script asserts nothing about time, and checks
that both executors wrote identical ``summary.parquet`` files.

On one machine Ray runs one single-threaded worker per CPU while the local executor runs
one process with torch's intra-op threads over the same CPUs, so the speed-up here is what
process parallelism buys over thread parallelism for small batches; on a cluster the
explain stage scales with the number of workers (GPUs when the nodes have them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

BENCH = str(Path(sys.executable).with_name("bench"))


def run_once(out: Path, args: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([BENCH, "run", "--out", str(out), *args], capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    timings = json.loads((out / "provenance.json").read_text())["timings"]
    return wall, float(timings["explain"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="occlusion", help="comma-separated methods")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--address", default=None, help="--ray-address (default: a new local one)")
    a = ap.parse_args()
    common = ["--no-sanity", "--no-faithfulness", "--no-report", "--n-boot", "1000"]
    for m in a.methods.split(","):
        common += ["--method", m]
    ray_args = ["--executor", "ray"] + (["--ray-address", a.address] if a.address else [])
    print(f"{os.cpu_count()} CPUs; methods {a.methods}; load average "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    local, ray = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeat):
            lo, ra = Path(tmp) / f"local{r}", Path(tmp) / f"ray{r}"
            local.append(run_once(lo, common))
            ray.append(run_once(ra, common + ray_args))
            same = pd.read_parquet(lo / "summary.parquet").equals(
                pd.read_parquet(ra / "summary.parquet"))
            print(f"  run {r + 1}: local {local[-1][0]:.1f} s (explain {local[-1][1]:.1f}), "
                  f"ray {ray[-1][0]:.1f} s (explain {ray[-1][1]:.1f}); "
                  f"identical summary: {same}")
    med = [statistics.median(x) for x in zip(*local, strict=True)]
    mer = [statistics.median(x) for x in zip(*ray, strict=True)]
    print(f"\nmedian of {a.repeat}     local      ray   speed-up")
    print(f"  explain stage   {med[1]:7.1f} s {mer[1]:7.1f} s   {med[1] / mer[1]:.2f}x")
    print(f"  whole command   {med[0]:7.1f} s {mer[0]:7.1f} s   {med[0] / mer[0]:.2f}x")
    print("load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
