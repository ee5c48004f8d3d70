"""``--executor ray``: the explain stage's shards as Ray tasks on a local 2-CPU instance.

The Ray run must give the same maps and the same ``summary.parquet`` as the local executor
(identical, not close), also when a worker process is killed in the middle of a shard.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

import benchmark
from benchmark import store
from benchmark.errors import BenchError

#: The demo data, cut for time: one split, three methods (occlusion is the costly,
#: perturbation-heavy one), small shards so that each model x method is several tasks.
SETTINGS = dict(
    methods=["saliency", "gradcam", "occlusion"], splits=["test"], n_boot=300,
    metrics=["irrelevant_fraction@top15", "iou@0.5", "pointing_game", "weighted_mass"],
    sanity=False, faithfulness=False, report=False,
)
SHARD = 48


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(store, "SHARD_SIZE", SHARD)
    try:
        return benchmark.run(out=str(tmp_path_factory.mktemp("local") / "run"), **SETTINGS)
    finally:
        mp.undo()


def _maps(run_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for key in sorted(p.name for p in (run_dir / store.MAPS).iterdir() if p.is_dir()):
        out[key] = np.concatenate([m for _, m in store.iter_maps(run_dir, key)])
    return out


def _assert_same_results(run: Path, reference: Path) -> None:
    mine, theirs = _maps(run), _maps(reference)
    assert sorted(mine) == sorted(theirs) and len(mine) == 9  # 3 models x 3 methods
    for key in theirs:
        np.testing.assert_array_equal(mine[key], theirs[key])
    for table in ("summary", "scores"):
        pd.testing.assert_frame_equal(pd.read_parquet(run / f"{table}.parquet"),
                                      pd.read_parquet(reference / f"{table}.parquet"))


def _explain_workers() -> list[int]:
    """PIDs of Ray workers running an explain shard now (Ray titles a busy worker
    ``ray::<task name>``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::saliency_bench_explain_shard"):
                pids.append(int(entry))
    return pids


def test_ray_executor_gives_the_local_executors_maps_and_summary(cluster, local_run, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(store, "SHARD_SIZE", SHARD)
    run = benchmark.run(out=str(tmp_path / "run"), executor="ray", **SETTINGS)
    _assert_same_results(run.path, local_run.path)
    n_shards = len(list((run.path / store.MAPS).rglob("shard-*.npz")))
    assert n_shards > 9  # several tasks per model x method
    assert benchmark.load_run(run.path).config["executor"] == "ray"


def test_a_killed_worker_is_retried_and_the_results_do_not_change(cluster, local_run,
                                                                   tmp_path, monkeypatch):
    monkeypatch.setattr(store, "SHARD_SIZE", SHARD)
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker() -> None:
        while not stop.is_set() and not killed:
            pids = _explain_workers()
            if pids:
                time.sleep(0.2)  # let it get into the shard
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                except ProcessLookupError:
                    continue
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        run = benchmark.run(out=str(tmp_path / "run"), executor="ray", **SETTINGS)
    finally:
        stop.set()
        killer.join(timeout=10)
    assert killed, "no explain worker was seen running"
    _assert_same_results(run.path, local_run.path)


def test_an_explainer_error_on_ray_names_the_model_method_and_image(cluster, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(store, "SHARD_SIZE", SHARD)
    with pytest.raises(BenchError, match=r"model 'clean', method 'gradcam' failed on image "
                                         r"'.+' and its batch \(method 'gradcam' returned maps"):
        benchmark.run(out=str(tmp_path / "run"), executor="ray", models=["clean"],
                      methods=["gradcam"], splits=["test"], target_layer="head",
                      n_boot=300, sanity=False, faithfulness=False, report=False)


def test_without_ray_installed_the_error_says_how_to_get_it(monkeypatch):
    import sys

    from benchmark.executor import connect

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BenchError, match=r"pip install 'saliency-bench\[ray\]'"):
        connect(None)

