"""Independent work split over two threads: statistics stages and the metrics' host steps.

The stages of :func:`~benchmark.stats.compare` (the paired bootstrap on one side, the
sign-flip, Wilcoxon and rank-biserial tests on the other) read the same inputs and write
nothing shared; so do the column chunks of a bootstrap and the maps of a metric kernel's
numpy step on CPU (:func:`over_rows`). Their time goes to numpy sorts, element-wise passes
and BLAS products, which release the GIL, so two threads overlap them. While statistics
stages overlap, BLAS gets half of the CPUs (``threadpoolctl``): OpenBLAS threads spin
while they wait, and two products each asking for every core slow both down. Each piece
computes what it would alone, so the values do not depend on the overlap.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from threadpoolctl import threadpool_limits

#: Held by code that seeds torch's or numpy's global generators and draws from them
#: (GradientSHAP, the sanity check's re-initialised layers): model passes may run in
#: several threads (:func:`benchmark.executor.run_threads`, the checks' models), and two
#: such sections interleaved would draw each other's numbers.
GLOBAL_RNG = threading.Lock()


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
def side_by_side(worthwhile: bool = True, *, limit_blas: bool = True) -> Iterator[Submitter]:
    """One worker thread for work submitted to it while the caller runs other work.

    With one CPU, or ``worthwhile=False`` (work too small to repay a thread, about a
    millisecond), the submitted call runs at once, in the caller's thread. Otherwise,
    with ``limit_blas``, BLAS is limited to half of the CPUs (at least one) until the
    block ends; the limit is process-wide (``threadpoolctl``), like BLAS's own thread
    count. (Work without BLAS products passes ``limit_blas=False`` and saves the
    library scan.)
    """
    cpus = available_cpus()
    if cpus < 2 or not worthwhile:
        yield _Inline()
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-worker") as pool:
        if not limit_blas:
            yield pool
            return
        with threadpool_limits(limits=max(1, cpus // 2), user_api="blas"):
            yield pool


T = TypeVar("T")
R = TypeVar("R")


def alternate(worker: Submitter, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``: the odd items on ``worker``, the even ones here."""
    later = {i: worker.submit(fn, x) for i, x in enumerate(items) if i % 2}
    here = {i: fn(x) for i, x in enumerate(items) if not i % 2}
    return [here[i] if i in here else later[i].result() for i in range(len(items))]


def over_rows(fn: Callable[[range], None], n: int) -> None:
    """``fn(range(n))``, as two halves on two threads when there are two CPUs and rows.

    ``fn`` must write only the rows it is given.
    """
    with side_by_side(n >= 2, limit_blas=False) as worker:
        later = worker.submit(fn, range(n // 2, n))
        fn(range(n // 2))
        later.result()


def model_passes(fns: Sequence[Callable[[], R]], workers: int) -> list[R]:
    """``[fn() for fn in fns]``, ``workers`` at a time, each on ``cpus // workers`` torch
    threads; torch's thread count is restored afterwards.

    For independent model passes (each on its own model, or forward passes without hooks
    on a shared one): on a few cores torch's intra-op threads scale poorly on small
    convolutions and collapse on a loaded machine, while whole passes side by side keep
    every core busy (torch releases the GIL in its kernels). The values do not depend on
    ``workers`` beyond torch's own thread count. After a failure no further call starts;
    once the started ones have ended, the first failure in ``fns`` order is raised.
    """
    workers = min(workers, len(fns))
    if workers < 2:
        return [fn() for fn in fns]
    import torch  # here: the statistics stages use this module without torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, available_cpus() // workers))
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="bench-passes") as pool:
            futures = [pool.submit(fn) for fn in fns]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            finally:  # after a failure, or Ctrl-C, nothing more starts
                for f in futures:
                    f.cancel()
        for f in futures:  # the pool has waited for the calls that started
            error = None if f.cancelled() else f.exception()
            if error is not None:
                raise error
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(before)
