"""The persistent XLA compilation cache of the ``bench`` commands (benchmark.compile_cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import compile_cache


def test_cache_dir_default_override_and_off(tmp_path: Path) -> None:
    default = compile_cache.cache_dir({"XDG_CACHE_HOME": str(tmp_path)})
    assert default == tmp_path / "saliency-bench" / "jax" / compile_cache.cpu_tag()
    assert compile_cache.cache_dir({compile_cache.ENV: str(tmp_path / "c")}) == tmp_path / "c"
    for off in ("off", "OFF", "0", "false", "no"):
        assert compile_cache.cache_dir({compile_cache.ENV: off}) is None


def test_cpu_tag_is_stable_and_names_the_machine() -> None:
    tag = compile_cache.cpu_tag()
    assert tag == compile_cache.cpu_tag()
    assert tag.rsplit("-", 1)[1].isalnum() and len(tag.rsplit("-", 1)[1]) == 12


def test_enable_sets_jax_settings_and_keeps_the_users(tmp_path: Path) -> None:
    env = {compile_cache.ENV: str(tmp_path / "c")}
    assert compile_cache.enable(env) == tmp_path / "c"
    assert (tmp_path / "c").is_dir()
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "c")
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert env["JAX_COMPILATION_CACHE_MAX_SIZE"] == str(compile_cache.MAX_BYTES)
    mine = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere", compile_cache.ENV: str(tmp_path)}
    assert compile_cache.enable(mine) is None
    assert mine["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"
    off = {compile_cache.ENV: "off"}
    assert compile_cache.enable(off) is None and "JAX_COMPILATION_CACHE_DIR" not in off


def test_no_home_folder_means_no_cache_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    env: dict[str, str] = {}
    assert compile_cache.cache_dir(env) is None
    assert compile_cache.enable(env) is None and not env


def test_enable_without_a_writable_folder_runs_without_a_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {compile_cache.ENV: str(blocker / "cache")}
    assert compile_cache.enable(env) is None
    assert "JAX_COMPILATION_CACHE_DIR" not in env


_SCRIPT = """
import numpy as np
from benchmark.compile_cache import enable
enable()
from benchmark.metrics import compute
rng = np.random.default_rng(0)
s = rng.random((8, 16, 16), dtype=np.float32)
g = (rng.random((8, 16, 16)) < 0.3).astype(np.float32)
w = rng.random((8, 16, 16)).astype(np.float32)
v = compute(s, g, ["iou@top15", "pointing_game", "mass_accuracy"])
v.update(compute(s, w, ["weighted_mass"]))
print(repr({k: x.tolist() for k, x in sorted(v.items())}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_a_second_process_reads_the_cache_and_gets_the_same_scores(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env[compile_cache.ENV] = str(tmp_path / "cache")

    def run() -> str:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                              text=True, check=True)
        return proc.stdout

    first = run()
    cache = tmp_path / "cache"
    entries = sorted(p.name for p in cache.glob("*-cache"))
    assert any(name.startswith("jit_per_image") for name in entries), entries
    # JAX stamps an entry's "-atime" file on every read (its LRU eviction order).
    stamps = {p.name: p.read_bytes() for p in cache.glob("jit_per_image*-atime")}
    assert run() == first
    assert sorted(p.name for p in cache.glob("*-cache")) == entries  # nothing recompiled
    assert all((cache / name).read_bytes() != stamp for name, stamp in stamps.items())
