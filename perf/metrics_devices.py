"""Metric kernels on every JAX backend present: agreement and throughput.

Prints, for the demo's Grad-CAM and saliency maps, the largest difference between the
CPU backend and the default backend (a GPU where there is one), and the median time of
``metrics.compute`` over several runs for a batch of 224 x 224 maps on each backend.

    python perf/metrics_devices.py [--n 1000] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import torch

from benchmark.config import DEFAULT_METRICS
from benchmark.explainers import get_explainer
from benchmark.metrics import compute
from benchmark.resolve import resolve_dataset

BINARY = [m for m in DEFAULT_METRICS if m != "weighted_mass"]


def backends() -> list[jax.Device]:
    devs = [jax.devices("cpu")[0]]
    if jax.default_backend() != "cpu":
        devs.append(jax.devices()[0])
    return devs


def run_on(device: jax.Device, maps: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    with jax.default_device(device):
        return compute(maps, ref, BINARY)


def timed(device: jax.Device, maps: np.ndarray, ref: np.ndarray, repeats: int) -> float:
    run_on(device, maps, ref)  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run_on(device, maps, ref)
        np.asarray(out[BINARY[0]])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    devs = backends()
    print("jax", jax.__version__, "backends:", [str(d) for d in devs])
    print("torch", torch.__version__, "cuda:", torch.cuda.is_available())

    data = resolve_dataset(None, None, ["test"])
    ds = data.dataset
    rows = np.flatnonzero(ds.index["label"].to_numpy() == 1)
    model = data.load_model("clean")
    ref = ds.reference(rows, "consensus")
    for method in ("gradcam", "saliency"):
        maps = get_explainer(method, model.module, layer=model.layer()).attribute(
            data.to_input(ds.images(rows))
        ).numpy()
        results = [run_on(d, maps, ref) for d in devs]
        worst = max(
            float(np.nanmax(np.abs(results[0][m] - r[m]), initial=0.0))
            for r in results[1:] for m in BINARY
        ) if len(results) > 1 else 0.0
        nan_agree = all(
            np.array_equal(np.isnan(results[0][m]), np.isnan(r[m]))
            for r in results[1:] for m in BINARY
        )
        print(f"{method}: {len(rows)} images, max |cpu - default| over {len(BINARY)} "
              f"metrics = {worst:.2e}, NaN pattern equal: {nan_agree}")

    rng = np.random.default_rng(0)
    sal = rng.random((args.n, args.size, args.size), dtype=np.float32)
    g = (rng.random((args.n, args.size, args.size)) < 0.12).astype(np.float32)
    nbytes = sal.nbytes + g.nbytes
    for d in devs:
        t = timed(d, sal, g, args.repeats)
        print(f"{d}: {args.n} maps {args.size}x{args.size}, {len(BINARY)} metrics: "
              f"median {t:.3f} s = {args.n / t:,.0f} maps/s, {nbytes / t / 1e9:.2f} GB/s of input")


if __name__ == "__main__":
    main()
