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

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark.errors import BenchError

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
    describe: Callable[[str], None],
) -> None:
    """Compute the shards in order in this process (the default executor)."""
    for job in jobs:
        describe(job.label)

        def batch(a: int, b: int, rows: np.ndarray = job.rows) -> torch.Tensor:
            return inputs(rows[a:b])

        try:
            maps = attribute_batches(job.explainer, batch, len(job.rows), batch_size,
                                     job.target, advance)
        except ShardFailed as e:
            e.job = job
            raise
        done(job, maps)


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
