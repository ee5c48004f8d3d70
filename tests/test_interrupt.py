"""A run killed (SIGKILL) or interrupted (Ctrl-C) at any point loses nothing: ``--resume``
finishes it, recomputes no cached map and gives the same ``summary.parquet`` as a run
that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ARGS = ["run", "--model", "clean", "--method", "saliency", "--method", "integrated_gradients",
        "--method", "gradcam", "--method", "occlusion", "--method", "random",
        "--split", "test", "--metric", "iou@top15", "--metric", "mass_accuracy",
        "--reference", "consensus", "--n-boot", "200", "--no-report"]
ARGS_METHODS = [a for i, a in enumerate(ARGS) if i and ARGS[i - 1] == "--method"]
#: Kill points as fractions of an uninterrupted run's wall time, drawn once (seeded).
KILL_FRACTIONS = sorted(np.random.default_rng(7).uniform(0.15, 0.9, size=5).round(3))


def _bench(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _maps(run_dir: Path) -> dict[str, int]:
    """Cached map shards (``maps/<key>/shard-*.npz``) with their modification times (ns)."""
    root = run_dir / "maps"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in root.rglob("shard-*.npz")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An uninterrupted run and its wall time."""
    base = tmp_path_factory.mktemp("interrupt")
    t0 = time.perf_counter()
    code, text = _finish(_bench(base, *ARGS, "--out", "ref"))
    assert code == 0, text
    return base, time.perf_counter() - t0


@pytest.mark.parametrize("fraction", KILL_FRACTIONS)
def test_sigkill_then_resume_gives_the_same_summary(reference: tuple[Path, float],
                                                    fraction: float) -> None:
    base, wall = reference
    run_dir = base / f"killed-{fraction}"
    proc = _bench(base, *ARGS, "--out", run_dir.name)
    time.sleep(fraction * wall)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = _maps(run_dir) if run_dir.exists() else {}
    assert (run_dir / "config.yaml").exists(), f"killed at {fraction:.0%}, before any work"
    code, text = _finish(_bench(base, "run", "--resume", run_dir.name, "--no-report"))
    assert code == 0, text
    after = _maps(run_dir)
    assert {k: after[k] for k in before} == before  # nothing cached was recomputed
    assert set(after) == set(_maps(base / "ref")) and len(after) == len(ARGS_METHODS)
    assert not list(run_dir.glob(".*.tmp")) and not list((run_dir / "maps").glob(".*.tmp"))
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "summary.parquet"),
                                  pd.read_parquet(base / "ref" / "summary.parquet"))


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(reference: tuple[Path, float]) -> None:
    base, _ = reference
    run_dir = base / "ctrl-c"
    proc = _bench(base, *ARGS, "--out", run_dir.name)
    deadline = time.monotonic() + 300
    while not _maps(run_dir) and time.monotonic() < deadline:  # explaining has begun
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, text = _finish(proc)
    assert code == 130, text
    assert f"continue with: bench run --resume {run_dir.name}" in text
    assert "Traceback" not in text
    before = _maps(run_dir)
    assert before  # the finished maps are kept
    code, text = _finish(_bench(base, "run", "--resume", run_dir.name, "--no-report"))
    assert code == 0, text
    after = _maps(run_dir)
    assert {k: after[k] for k in before} == before
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "summary.parquet"),
                                  pd.read_parquet(base / "ref" / "summary.parquet"))
