"""Where the explain stage's shards run: in this process (``local``) or as Ray tasks.

A shard is one model x method x block of up to ``store.SHARD_SIZE`` images. Both
executors compute a shard's maps with :func:`attribute_batches`, batch by batch, and hand
them to the caller, which writes them to the run directory (atomic, content-addressed
files), so a run's maps, scores and statistics do not depend on the executor.

Ray is optional (``pip install 'saliency-bench[ray]'``) and imported only when used.
A Ray task is one batch of a shard; tasks are retried when their worker dies. The driver
ships each batch's inputs once (shared by every model and method) and the explainer once
per model x method through Ray's object store, so worker nodes need the package
installed, not the data. When the run stops on an error, the tasks not yet finished are
cancelled, so a shared cluster is not left computing for nothing.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.errors import BenchError
from benchmark.threads import available_cpus

#: Attempts of a Ray task after the first when its worker process dies.
RAY_MAX_RETRIES = 3


class ShardFailed(Exception):
    """An explainer failed on a batch; ``offset`` is the batch's first row in the shard."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(offset, message)
        self.offset, self.message = offset, message
        self.job: ShardJob | None = None  # set by the executor that ran it


def attribute_batches(
    explainer: Any, inputs: Callable[[int, int], torch.Tensor], n: int, batch_size: int,
    target: int, advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Maps ``(n, *spatial_out)`` float32 of ``n`` images, ``batch_size`` at a time.

    ``inputs(start, stop)`` returns the network input ``(stop - start, C, *spatial)`` of
    rows ``start:stop``. A RuntimeError of the explainer (the model or its layer does not
    fit the input) becomes :class:`ShardFailed` with the batch's offset.
    """
    out = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        try:
            out.append(explainer.attribute(inputs(start, stop), target=target).cpu().numpy())
        except RuntimeError as e:
            raise ShardFailed(start, str(e).strip().splitlines()[0][:200]) from None
        if advance is not None:
            advance(stop - start)
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class ShardJob:
    """One shard to compute: ``key`` (map cache entry), shard ``index``, dataset ``rows``."""

    key: str
    index: int
    rows: np.ndarray
    explainer: Any
    target: int
    label: str  # "model/method", for progress and messages


def run_local(
    jobs: Iterable[ShardJob], inputs: Callable[[np.ndarray], torch.Tensor], batch_size: int,
    done: Callable[[ShardJob, np.ndarray], None], advance: Callable[[int], None],
    describe: Callable[[str], None], workers: int = 1,
) -> None:
    """Compute the shards in this process (the default executor).

    With ``workers > 1`` (and more than one model x method to compute), the model x
    method pairs are shared out among that many threads (:func:`run_threads`); otherwise
    the shards run in order in this thread.
    """
    jobs = list(jobs)
    if workers > 1 and len({_group(job) for job in jobs}) > 1:
        run_threads(jobs, inputs, batch_size, done, advance, describe, workers)
        return
    for job in jobs:
        describe(job.label)
        done(job, _shard_maps(job, job.explainer, inputs, batch_size, advance))


def _shard_maps(job: ShardJob, explainer: Any, inputs: Callable[[np.ndarray], torch.Tensor],
                batch_size: int, advance: Callable[[int], None]) -> np.ndarray:
    def batch(a: int, b: int, rows: np.ndarray = job.rows) -> torch.Tensor:
        return inputs(rows[a:b])

    try:
        return attribute_batches(explainer, batch, len(job.rows), batch_size, job.target,
                                 advance)
    except ShardFailed as e:
        e.job = job
        raise


class _Stopped(Exception):
    """Raised in a worker thread between batches once the run has failed elsewhere."""


def run_threads(
    jobs: list[ShardJob], inputs: Callable[[np.ndarray], torch.Tensor], batch_size: int,
    done: Callable[[ShardJob, np.ndarray], None], advance: Callable[[int], None],
    describe: Callable[[str], None], workers: int,
) -> None:
    """The shards on ``workers`` threads, each with its own copy of the explainers.

    Why: on a few CPU cores torch's intra-op threads scale poorly on the small convolutions
    of typical saliency models (every parallel region waits for the slowest core, badly
    so on a loaded machine); whole passes side by side, each on ``cpus // workers`` torch
    threads, keep every core busy. Torch releases the GIL in its kernels.

    Each model x method (all its shards, in order) goes to one thread, so an explainer
    with state (the ``random`` baseline's generator) sees its batches in the same order as
    in one thread; pairs are handed out longest first (images x model passes). Every
    thread but the first works on a deep copy of the explainers (one copy of each model,
    shared by its methods): hooks that one method puts on a model (CAM layers) never see
    another thread's passes. ``done`` and errors come back to the calling thread; after
    an error the other threads stop at their next batch. Torch's thread count is restored
    afterwards. Falls back to one thread when the explainers cannot be copied.
    """
    groups: dict[tuple[str, int], list[ShardJob]] = {}
    for job in jobs:
        groups.setdefault(_group(job), []).append(job)
    workers = min(workers, len(groups))
    originals = {key: group[0].explainer for key, group in groups.items()}
    try:
        copies = [originals] + [copy.deepcopy(originals) for _ in range(workers - 1)]
    except Exception:  # noqa: BLE001 - a module that cannot be copied: one thread
        run_local(jobs, inputs, batch_size, done, advance, describe)
        return
    order = sorted(groups, key=lambda k: -_cost(groups[k]))  # stable: ties keep run order
    todo: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
    for key in order:
        todo.put(key)
    results: queue.SimpleQueue[tuple[ShardJob, np.ndarray] | BaseException | None] = (
        queue.SimpleQueue())
    stop = threading.Event()

    def step(k: int) -> None:
        if stop.is_set():
            raise _Stopped
        advance(k)

    def work(explainers: dict[tuple[str, int], Any]) -> None:
        try:
            while not stop.is_set():
                try:
                    key = todo.get_nowait()
                except queue.Empty:
                    return
                for job in groups[key]:
                    describe(job.label)
                    results.put((job, _shard_maps(job, explainers[key], inputs, batch_size,
                                                  step)))
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            results.put(e)
        finally:
            results.put(None)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, available_cpus() // workers))
    pool = [threading.Thread(target=work, args=(c,), name=f"bench-explain-{i}", daemon=True)
            for i, c in enumerate(copies)]
    started: list[threading.Thread] = []
    failed = False
    try:
        for t in pool:
            t.start()
            started.append(t)
        running = len(pool)
        while running:
            item = results.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                done(*item)
    except BaseException:  # a failed shard, Ctrl-C: the others stop at their next batch
        failed = True
        raise
    finally:
        stop.set()
        try:
            for t in started:
                t.join()
            if failed:
                # Shards finished meanwhile are kept (as one thread would have), so that
                # --resume does not compute them again; an error saving them must not
                # hide the first one.
                with contextlib.suppress(Exception):
                    while True:
                        item = results.get_nowait()
                        if isinstance(item, tuple):
                            done(*item)
        finally:
            torch.set_num_threads(threads_before)


def _group(job: ShardJob) -> tuple[str, int]:
    """Jobs that must run in order on one thread: the shards of one explainer (two models
    can share a map key, e.g. one checkpoint under two names)."""
    return job.key, id(job.explainer)


#: Rough model passes per image of a perturbation method (occlusion's patches, Score-CAM's
#: channels): enough to hand those out first. Only the order of the work depends on it.
_PERTURBATION_PASSES = 50


def _cost(group: list[ShardJob]) -> float:
    """Rough model passes of a model x method's shards: images x passes per image."""
    explainer = group[0].explainer
    info, options = explainer.info, explainer.options
    if info.is_baseline:
        per_image = 0.0
    elif any(n in options for n in ("n_steps", "n_samples", "n_masks")):
        per_image = float(next(options[n] for n in ("n_steps", "n_samples", "n_masks")
                               if n in options))
    elif info.family == "perturbation" or "batch_channels" in options:
        per_image = _PERTURBATION_PASSES
    else:
        per_image = 1.0
    return sum(len(job.rows) for job in group) * per_image


def _explain_shard_task(explainer: Any, inputs: np.ndarray, batch_size: int,
                        target: int) -> np.ndarray:
    """Ray task body: the maps of one batch of a shard, on the worker's GPU when Ray
    gave it one."""
    import ray

    if ray.get_gpu_ids() and torch.cuda.is_available():
        explainer.model.to("cuda")
        x = torch.from_numpy(inputs).to("cuda")
    else:
        x = torch.from_numpy(inputs)
    return attribute_batches(explainer, lambda a, b: x[a:b], len(x), batch_size, target)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BenchError(
            "executor 'ray' needs Ray: pip install 'saliency-bench[ray]' (or pip install ray)"
        ) from None
    return ray


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to ``address`` (``auto``, ``ray://host:10001``, ...),
    else to the instance this process already started, else to a new local one."""
    ray = _import_ray()
    if not ray.is_initialized():
        try:
            with warnings.catch_warnings():
                # Ray starts its daemons with fork + exec, which is safe; JAX's warning
                # about forking a multithreaded process does not apply.
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                        category=RuntimeWarning)
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
        # Ray exits the process (SystemExit) when it gives up on an unreachable cluster.
        except (ConnectionError, RuntimeError, ValueError, SystemExit) as e:
            where = f"at {address!r}" if address else "locally"
            first = _last_line(e)
            raise BenchError(f"cannot start or reach a Ray cluster {where} ({first})") from None
    return ray


def run_ray(
    jobs: Iterable[ShardJob], inputs: Callable[[np.ndarray], torch.Tensor], batch_size: int,
    done: Callable[[ShardJob, np.ndarray], None], advance: Callable[[int], None],
    describe: Callable[[str], None], address: str | None = None,
) -> None:
    """Compute the shards as Ray tasks (one CPU each, or one GPU when the cluster has
    GPUs); ``done`` runs in this process as each shard completes.

    A task is one batch of a shard (``batch_size`` images), not the whole shard: shards of
    unequal size (a last, partial one) would otherwise leave workers idle at the end; the
    demo's occlusion ran 1.6x longer on 2 workers with one task per shard.
    """
    ray = connect(address)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    task = ray.remote(_explain_shard_task).options(
        num_cpus=1, num_gpus=1 if gpus else 0, max_retries=RAY_MAX_RETRIES,
        retry_exceptions=False, name="saliency_bench_explain_shard",
    )
    jobs = list(jobs)
    describe(f"explain on Ray ({len(jobs)} shards, {ray.cluster_resources().get('CPU', 0):g} "
             f"CPUs, {gpus:g} GPUs)")
    input_refs: dict[tuple[bytes, int], Any] = {}
    explainer_refs: dict[str, Any] = {}
    pending: dict[Any, tuple[int, int]] = {}  # task -> (job number, first row in the shard)
    for j, job in enumerate(jobs):
        if job.key not in explainer_refs:
            try:
                explainer_refs[job.key] = ray.put(job.explainer)
            except Exception as e:  # noqa: BLE001 - pickling errors have many types
                raise BenchError(
                    f"{job.label}: the model cannot be sent to Ray workers "
                    f"({type(e).__name__}: {str(e)[:150]}); use --executor local"
                ) from None
        rows_key = np.ascontiguousarray(job.rows).tobytes()
        for start in range(0, len(job.rows), batch_size):
            if (rows_key, start) not in input_refs:  # shared by every model and method
                block = job.rows[start:start + batch_size]
                input_refs[rows_key, start] = ray.put(inputs(block).numpy())
            ref = task.remote(explainer_refs[job.key], input_refs[rows_key, start],
                              batch_size, job.target)
            pending[ref] = (j, start)
    try:
        _collect(ray, jobs, pending, done, advance)
    finally:
        for ref in pending:  # left only when the run stops early
            ray.cancel(ref)


def _collect(ray: Any, jobs: list[ShardJob], pending: dict[Any, tuple[int, int]],
             done: Callable[[ShardJob, np.ndarray], None], advance: Callable[[int], None],
             ) -> None:
    """Wait for the tasks in ``pending`` (removing each as it arrives) and hand every
    completed shard to ``done``."""
    parts: list[dict[int, np.ndarray]] = [{} for _ in jobs]
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        j, start = pending.pop(ready[0])
        job = jobs[j]
        try:
            maps = ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, ShardFailed):
                cause.job, cause.offset = job, start + cause.offset
                raise cause from None
            raise BenchError(f"{job.label}: a Ray task failed ({_last_line(e)})") from None
        except ray.exceptions.RayError as e:  # retries used up, node lost, ...
            raise BenchError(f"{job.label}: a Ray task failed ({_last_line(e)})") from None
        parts[j][start] = maps
        advance(len(maps))
        if sum(len(m) for m in parts[j].values()) == len(job.rows):
            done(job, np.concatenate([parts[j][k] for k in sorted(parts[j])]))
            parts[j].clear()


def _last_line(err: BaseException) -> str:
    """The last non-empty line of an error: Ray's messages end with the cause."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]
