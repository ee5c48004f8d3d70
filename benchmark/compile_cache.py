"""JAX's persistent compilation cache for the ``bench`` commands.

XLA compiles every metric kernel plan (a set of metrics, a map shape, a chunk length) on
first use: about 8 s of the demo's ``bench run`` on 2 CPU cores, paid again by every run.
JAX can keep the compiled executables on disk, keyed by the program, the compile options,
the XLA flags, the jaxlib version and the device kind; a later run loads them instead.
The program is the same, so the results are the same.

Where: ``$SALIENCY_BENCH_JAX_CACHE`` if set (``off`` turns the cache off), else
``$XDG_CACHE_HOME/saliency-bench/jax`` (``~/.cache/...``), in a subfolder per CPU type:
JAX's key names the device kind ("cpu") but not the instruction set, and a home folder
shared by several machines must not hand AVX-512 code to an older CPU. At most
:data:`MAX_BYTES`, least recently used entries evicted (JAX's own LRU, file-locked, so
concurrent runs can share it). A cache set up through JAX's own settings
(``JAX_COMPILATION_CACHE_DIR``) is left as it is.

Only the command line turns it on (:func:`enable`, before JAX is imported): a library
import changes no global JAX setting.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

#: Environment variable naming the cache folder; "off" (or 0, false, no) disables it.
ENV = "SALIENCY_BENCH_JAX_CACHE"
#: Largest size of the cache folder (JAX evicts the least recently used entries).
MAX_BYTES = 1 << 30
_OFF = {"off", "0", "false", "no", "none"}


def cpu_tag() -> str:
    """A short name of this CPU type: the machine and its instruction-set flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        flags = platform.processor()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{platform.machine() or 'cpu'}-{digest}"


def cache_dir(env: MutableMapping[str, str] | None = None) -> Path | None:
    """The folder :func:`enable` uses, or None when the cache is off."""
    env = os.environ if env is None else env
    setting = env.get(ENV, "").strip()
    if setting.lower() in _OFF:
        return None
    try:  # no home folder (no HOME, no passwd entry): no cache, not a crash
        if setting:
            return Path(setting).expanduser()
        base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:
        return None
    return base / "saliency-bench" / "jax" / cpu_tag()


def enable(env: MutableMapping[str, str] | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir`.

    Sets JAX's environment settings (read when JAX is imported), so call it before
    anything imports JAX. Returns the folder, or None when the cache is off, JAX's own
    setting is already there, or the folder cannot be created (the run goes on without
    a cache).
    """
    env = os.environ if env is None else env
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    path = cache_dir(env)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    env["JAX_COMPILATION_CACHE_DIR"] = str(path)
    # JAX's default keeps only compilations over 1 s; ours take 0.05-1 s each, many times.
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(MAX_BYTES))
    return path
