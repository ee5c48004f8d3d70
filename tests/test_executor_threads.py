"""Model passes side by side give the values of one thread: the local executor's threads
(``run_local(..., workers=N)``) and the checks' (``model_passes``).

Each model x method runs on one thread, in shard order, on that thread's copy of the
explainers; ``done`` runs in the calling thread; the first failure stops the others and
comes back as the same :class:`ShardFailed` as in one thread.
"""

from __future__ import annotations

import copy
import threading
import time
import warnings
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.executor import ShardFailed, ShardJob, run_local
from benchmark.explainers import get_explainer
from benchmark.explainers.base import without_warning
from benchmark.sanity import cascading_randomisation, methods_maps
from benchmark.threads import available_cpus, model_passes

# gradcam hooks its layer, random keeps a generator across batches, gradient_shap seeds
# the global generators: each would give other maps if threads shared them.
METHODS = ("saliency", "integrated_gradients", "gradcam", "random", "gradient_shap",
           "occlusion")


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1),
    )


def _images(n: int = 21) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).random((n, 1, 16, 16), np.float32))


def _jobs(models: list[nn.Module], rows: np.ndarray, shard: int = 8) -> list[ShardJob]:
    jobs = []
    for m, model in enumerate(models):
        for method in METHODS:
            layer = model[2] if method == "gradcam" else None
            options: dict[str, Any] = {}
            if method == "integrated_gradients":
                options = {"n_steps": 4}
            elif method == "gradient_shap":
                options = {"n_samples": 3}
            elif method == "occlusion":
                options = {"window": 8, "stride": 4}
            explainer = get_explainer(method, model, layer=layer, **options)
            for i, start in enumerate(range(0, len(rows), shard)):
                jobs.append(ShardJob(f"{m}/{method}", i, rows[start:start + shard], explainer,
                                     0, f"m{m}/{method}"))
    return jobs


def _run(workers: int, jobs: list[ShardJob] | None = None) -> tuple[dict[Any, np.ndarray],
                                                                    set[str], int]:
    x = _images()
    jobs = jobs if jobs is not None else _jobs([_model(0), _model(1)], np.arange(len(x)))
    out: dict[Any, np.ndarray] = {}
    callers, advanced = set(), []

    def done(job: ShardJob, maps: np.ndarray) -> None:
        callers.add(threading.current_thread().name)
        out[job.key, job.index] = maps

    run_local(jobs, lambda at: x[at], 5, done, advanced.append, lambda label: None,
              workers=workers)
    return out, callers, sum(advanced)


@pytest.fixture
def one_torch_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the threads' own count, so float sums match exactly
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("workers", [2, 3])
def test_threads_give_the_maps_of_one_thread(workers: int) -> None:
    want, _, n_want = _run(1)
    got, callers, n_got = _run(workers)
    assert got.keys() == want.keys() and len(got) == 2 * len(METHODS) * 3
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
    assert callers == {threading.current_thread().name}  # done() never runs in a worker
    assert n_got == n_want == 2 * len(METHODS) * 21
    assert torch.get_num_threads() == 1  # restored


def test_random_baseline_sees_its_batches_in_order() -> None:
    # Its generator runs on across batches and shards: a thread must not take a later
    # shard of the same explainer before an earlier one, nor start from a fresh copy.
    got, _, _ = _run(2)
    draws = torch.Generator().manual_seed(0)
    # 21 rows in shards of 8 and batches of 5: 5 + 3 | 5 + 3 | 5, one draw per batch.
    expected = [torch.rand((n, 16, 16), generator=draws).numpy() for n in (5, 3, 5, 3, 5)]
    flat = np.concatenate([got["0/random", i] for i in range(3)])
    np.testing.assert_array_equal(flat, np.concatenate(expected))


class _Failing(nn.Module):
    """Fails on any batch holding the image whose first pixel is ``bad``."""

    def __init__(self, bad: float) -> None:
        super().__init__()
        self.inner, self.bad = _model(2), bad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0, 0, 0] == self.bad).any()):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\nmore text")
        return self.inner(x)  # type: ignore[no-any-return]


def test_a_failure_stops_the_threads_and_names_its_shard() -> None:
    x = _images()
    rows = np.arange(len(x))
    jobs = _jobs([_model(0)], rows)
    broken = get_explainer("saliency", _Failing(float(x[13, 0, 0, 0])))
    jobs += [ShardJob("bad", i, rows[s:s + 8], broken, 0, "bad/saliency")
             for i, s in enumerate(range(0, len(rows), 8))]
    before = torch.get_num_threads()
    with pytest.raises(ShardFailed) as err:
        _run(2, jobs)
    assert err.value.job is not None and err.value.job.key == "bad"
    # Image 13 is row 5 of shard 1 (rows 8..15), in its batch starting at row 5.
    assert err.value.job.index == 1 and err.value.offset == 5
    assert err.value.message == "mat1 and mat2 shapes cannot be multiplied"
    assert torch.get_num_threads() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("bench-explain")]


class _NoCopy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _model(3)
        self.threads: set[str] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.threads.add(threading.current_thread().name)
        return self.inner(x)  # type: ignore[no-any-return]

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        raise TypeError("cannot copy this module")


@pytest.mark.usefixtures("one_torch_thread")
def test_a_model_that_cannot_be_copied_runs_in_one_thread() -> None:
    rows = np.arange(21)
    model = _NoCopy()
    jobs = [ShardJob(f"k{m}", i, rows[s:s + 8], get_explainer(m, model), 0, m)
            for m in ("saliency", "input_x_gradient") for i, s in enumerate(range(0, 21, 8))]
    got, _, _ = _run(2, jobs)
    assert model.threads == {threading.current_thread().name}
    want, _, _ = _run(1, jobs)
    assert got.keys() == want.keys() and len(got) == 6
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


# ------------------------------------------------------------ model passes in the checks


def test_model_passes_returns_in_order_and_raises_the_first_failure() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []

    def square(i: int) -> int:
        seen.append(torch.get_num_threads())
        return i * i

    assert model_passes([partial(square, i) for i in range(7)], 2) == [i * i for i in range(7)]
    assert seen == [max(1, available_cpus() // 2)] * 7 and torch.get_num_threads() == before

    def fail(i: int) -> int:
        if i in (2, 4):
            raise RuntimeError(f"pass {i}")
        return i

    with pytest.raises(RuntimeError, match="pass 2"):
        model_passes([partial(fail, i) for i in range(6)], 2)
    assert torch.get_num_threads() == before


@pytest.mark.usefixtures("one_torch_thread")
def test_sanity_cascade_is_the_same_on_two_threads() -> None:
    # gradient_shap seeds the global generators and randomise() draws from them: without
    # the shared lock two threads would interleave their draws.
    model, x = _model(4), _images(6)
    cases = np.array(["a", "a", "b", "c", "d", "d"])
    kw: dict[str, Any] = dict(layer="2", n_boot=200, seed=3,
                              options={"gradient_shap": {"n_samples": 2},
                                       "integrated_gradients": {"n_steps": 4}})
    methods = ["saliency", "gradcam", "gradient_shap", "integrated_gradients"]
    one = cascading_randomisation(model, methods, x, cases, workers=1, **kw)
    two = cascading_randomisation(model, methods, x, cases, workers=2, **kw)
    assert len(one.curves) == len(methods) * 3 * 2  # 3 parameter layers, 2 similarities
    pd.testing.assert_frame_equal(one.curves, two.curves, check_exact=True)
    pd.testing.assert_frame_equal(one.verdicts, two.verdicts, check_exact=True)


@pytest.mark.usefixtures("one_torch_thread")
def test_methods_maps_on_copies_and_on_a_model_that_cannot_be_copied() -> None:
    x = _images(6)
    for model in (_model(5), _NoCopy()):
        methods = ["saliency", "gradcam", "integrated_gradients"]
        layer = "2" if isinstance(model, nn.Sequential) else "inner.2"
        one = methods_maps(model, methods, x, layer=layer, workers=1)
        two = methods_maps(model, methods, x, layer=layer, workers=2)
        assert list(two) == methods
        for m in methods:
            np.testing.assert_array_equal(one[m], two[m], err_msg=m)


def test_model_passes_starts_nothing_after_a_failure() -> None:
    started: list[int] = []

    def call(i: int) -> int:
        started.append(i)
        if i == 0:
            raise RuntimeError("first pass failed")
        time.sleep(0.2)
        return i

    with pytest.raises(RuntimeError, match="first pass failed"):
        model_passes([partial(call, i) for i in range(12)], 2)
    # 0 and 1 start together; at most the pool's next pick races the cancellation.
    assert 2 <= len(started) <= 4, started


class _Copies(nn.Module):
    copies = 0

    def __init__(self) -> None:
        super().__init__()
        self.inner = _model(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)  # type: ignore[no-any-return]

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        type(self).copies += 1
        new = _Copies.__new__(_Copies)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


@pytest.mark.usefixtures("one_torch_thread")
def test_no_more_model_copies_than_explainers_to_run() -> None:
    rows = np.arange(21)
    model = _Copies()
    jobs = [ShardJob(f"k{m}", 0, rows, get_explainer(m, model), 0, m)
            for m in ("saliency", "input_x_gradient")]
    got, _, _ = _run(8, jobs)  # two explainers: two threads, one copy
    assert _Copies.copies == 1 and len(got) == 2


def test_warning_blocks_in_threads_leave_the_filters_as_they_were() -> None:
    # catch_warnings saves and restores the process's filter list: overlapping blocks in
    # two threads would leave one's filter on (or drop another's early).
    before = list(warnings.filters)

    def quiet(message: str) -> None:
        for _ in range(300):
            with without_warning(message):
                time.sleep(0)

    pool = [threading.Thread(target=quiet, args=(m,)) for m in ("first notice", "second")]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert warnings.filters == before
