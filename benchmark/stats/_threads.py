"""Independent stages of one statistics call, run side by side on two threads.

The stages of :func:`~benchmark.stats.compare` (the paired bootstrap on one side, the
sign-flip, Wilcoxon and rank-biserial tests on the other) read the same inputs and write
nothing shared. Their time goes to numpy sorts, element-wise passes and BLAS products,
which release the GIL, so two threads overlap them. BLAS gets half of the CPUs for the
duration (``threadpoolctl``): OpenBLAS threads spin while they wait, and two products
each asking for every core slow both down. Each stage computes what it would alone, so
the values do not depend on the overlap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

from threadpoolctl import threadpool_limits


class Submitter(Protocol):
    """What :func:`side_by_side` yields: ``submit(fn, *args, **kwargs) -> Future``."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]: ...


class _Inline:
    """Runs a submitted call at once (one CPU: nothing to overlap)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # re-raised by result(), as from a thread
            future.set_exception(exc)
        return future


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def side_by_side(worthwhile: bool = True) -> Iterator[Submitter]:
    """One worker thread for a stage submitted to it while the caller runs another.

    With one CPU, or ``worthwhile=False`` (work too small to repay a thread, about a
    millisecond), the submitted call runs at once, in the caller's thread. Otherwise
    BLAS is limited to half of the CPUs (at least one) until the block ends; the limit
    is process-wide (``threadpoolctl``), like BLAS's own thread count.
    """
    cpus = available_cpus()
    if cpus < 2 or not worthwhile:
        yield _Inline()
        return
    with threadpool_limits(limits=max(1, cpus // 2), user_api="blas"), \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-stats") as pool:
        yield pool
