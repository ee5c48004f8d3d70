"""Memory stays bounded: maps stream through the metric kernels shard by shard, so the
peak memory of a run on 4 shards of images exceeds that of a run on one shard by the
extra images (held by the dataset) and their result rows, not by their maps.

Each run is a separate process; its peak resident set (``ru_maxrss``) is compared. Held
at once, the maps of one method, two float32 references and their device copies would
add about 4 x 4 bytes per extra pixel: the test allows half of that for the tidy tables,
which do grow with the images.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.demo.cnn import build
from benchmark.store import SHARD_SIZE

SIDE = 128
N_SMALL, N_LARGE = SHARD_SIZE, 4 * SHARD_SIZE

MANIFEST = """\
schema_version: 1
datasets:
  - name: big
    kind: files
    root: data
    index: index.csv
    annotations:
      r1: m1/{image_id}.npy
      r2: m2/{image_id}.npy
    models:
      - {name: cnn, path: cnn.pt, factory: "benchmark.demo.cnn:build", factory_kwargs: {width: 4}}
"""

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import benchmark
    benchmark.run(manifest="m.yaml", methods=["saliency", "random"], splits=["test"],
                  metrics=["iou@top15", "mass_accuracy"], references=["consensus", "graded"],
                  n_boot=100, report=False, out="run")
    print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def _dataset(base: Path, n: int) -> int:
    """``n`` positive 128x128 images in cases of 4; returns the bytes the dataset holds."""
    rng = np.random.default_rng(0)
    for sub in ("data/img", "data/m1", "data/m2"):
        (base / sub).mkdir(parents=True)
    rows = []
    for i in range(n):
        iid = f"i{i:05d}"
        img = rng.normal(-500, 80, (SIDE, SIDE)).astype(np.float32)
        m = np.zeros((SIDE, SIDE), np.uint8)
        y, x = rng.integers(8, SIDE - 16, 2)
        m[y:y + 12, x:x + 12] = 1
        np.save(base / "data" / "img" / f"{iid}.npy", img)
        np.save(base / "data" / "m1" / f"{iid}.npy", m)
        np.save(base / "data" / "m2" / f"{iid}.npy", np.roll(m, 1, axis=1))
        rows.append({"case_id": f"c{i // 4}", "image_id": iid, "image": f"img/{iid}.npy",
                     "label": 1, "split": "test"})
    pd.DataFrame(rows).to_csv(base / "data" / "index.csv", index=False)
    (base / "m.yaml").write_text(MANIFEST)
    torch.manual_seed(0)
    torch.save(build(width=4).state_dict(), base / "cnn.pt")
    return n * SIDE * SIDE * (4 + 2)  # float32 image + two bool masks


def _peak_mb(base: Path) -> float:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=base, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_mb"])


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_peak_memory_grows_with_the_images_not_with_their_maps(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    bytes_small = _dataset(small, N_SMALL)
    bytes_large = _dataset(large, N_LARGE)
    extra_data_mb = (bytes_large - bytes_small) / 2**20
    peak_small, peak_large = _peak_mb(small), _peak_mb(large)
    grown = peak_large - peak_small
    unstreamed_mb = 4 * (N_LARGE - N_SMALL) * SIDE * SIDE * 4 / 2**20
    print(f"peak {peak_small:.0f} MB ({N_SMALL} images) -> {peak_large:.0f} MB ({N_LARGE}); "
          f"extra images {extra_data_mb:.0f} MB; unstreamed maps would add {unstreamed_mb:.0f}")
    assert grown < extra_data_mb + unstreamed_mb / 2, (
        f"peak {peak_small:.0f} MB on {N_SMALL} images, {peak_large:.0f} MB on {N_LARGE}: "
        f"grew {grown:.0f} MB for {extra_data_mb:.0f} MB more images "
        f"(holding every map at once would add ~{unstreamed_mb:.0f} MB more)"
    )
    assert len(list((large / "run" / "maps").rglob("shard-*.npz"))) == 2 * N_LARGE // SHARD_SIZE
