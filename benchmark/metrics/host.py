"""Numpy work of the metric kernels on CPU, split between two threads.

On CPU backends some steps of the kernels run as numpy on the host
(``jax.pure_callback``: :func:`benchmark.metrics.ranking.host_positive_counts`,
:func:`benchmark.metrics.threshold.host_topk_cut`). They loop over the maps of a batch
with numpy sorts and searches, which release the GIL, so two threads share the maps.
Each map is computed the same way whichever thread takes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def over_rows(fn: Callable[[range], None], n: int) -> None:
    """``fn(range(n))``, as two halves on two threads when there are two CPUs and rows.

    ``fn`` must write only the rows it is given.
    """
    if n < 2 or _cpus() < 2:
        fn(range(n))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-metrics") as pool:
        later = pool.submit(fn, range(n // 2, n))
        fn(range(n // 2))
        later.result()
