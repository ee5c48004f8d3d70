"""Work split over two threads (``benchmark.threads``) gives the values of a plain loop."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

from benchmark import threads as _threads
from benchmark.stats import bootstrap, compare
from benchmark.stats.engine import _even_chunks


def _scores(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (method, metric, case, image)
        for method in ("a", "b", "c") for metric in ("iou", "dice", "auroc")
        for case in range(40) for image in range(2)
    ]
    frame = pd.DataFrame(rows, columns=["method", "metric", "case_id", "image_id"])
    frame["model"], frame["split"], frame["reference"] = "m", "test", "mask"
    frame["value"] = rng.normal(0.5, 0.1, len(frame))
    frame.loc[rng.random(len(frame)) < 0.05, "value"] = np.nan
    return frame


@pytest.fixture
def one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "available_cpus", lambda: 1)


def _run(scores: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Small chunks so that both threads get several.
    boot = bootstrap(scores, by=["model", "split", "method", "reference", "metric"],
                     n_boot=500, seed=3).table
    pairs = compare(scores, family="methods", n_boot=500, n_flips=800, seed=3).table
    return boot, pairs


def test_threaded_results_equal_those_on_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "available_cpus", lambda: 2)
    monkeypatch.setattr("benchmark.stats.engine.CHUNK_ELEMENTS", 501 * 2)
    threaded = _run(_scores())
    monkeypatch.setattr(_threads, "available_cpus", lambda: 1)
    inline = _run(_scores())
    for got, want in zip(threaded, inline, strict=True):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert threaded[1]["ci_low"].notna().all()


def test_one_cpu_runs_the_submitted_call_in_the_callers_thread(one_cpu: None) -> None:
    with _threads.side_by_side() as worker:
        assert worker.submit(threading.get_ident).result() == threading.get_ident()


def test_two_cpus_run_it_on_a_worker_with_blas_limited_to_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_threads, "available_cpus", lambda: 2)
    with _threads.side_by_side() as worker:
        ident = worker.submit(threading.get_ident).result()
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert ident != threading.get_ident()
    assert blas and set(blas) == {1}


@pytest.mark.parametrize("cpus", [1, 2])
def test_an_error_in_the_submitted_call_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch, cpus: int
) -> None:
    monkeypatch.setattr(_threads, "available_cpus", lambda: cpus)

    def fail() -> None:
        raise ValueError("bad column 'value'")

    with pytest.raises(ValueError, match="bad column 'value'"), \
            _threads.side_by_side() as worker:
        worker.submit(fail).result()


@pytest.mark.parametrize(("k", "step", "sizes"), [
    (1000, 419, [250] * 4), (420, 419, [210, 210]), (419, 419, [419]), (1, 419, [1]),
    (0, 5, []), (7, 2, [2, 2, 2, 1]),
])
def test_even_chunks_cover_the_columns_in_order(k: int, step: int, sizes: list[int]) -> None:
    chunks = _even_chunks(k, step)
    assert [c.stop - c.start for c in chunks] == sizes
    assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(k))


def test_small_work_stays_in_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "available_cpus", lambda: 8)
    with _threads.side_by_side(worthwhile=False) as worker:
        assert worker.submit(threading.get_ident).result() == threading.get_ident()


def test_large_tables_factorize_their_keys_on_two_threads_with_the_same_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmark.stats import _validation

    scores = _scores()
    by = ["model", "split", "method", "reference", "metric"]
    monkeypatch.setattr(_threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(_validation, "_THREADED_ROWS", 1)
    seen: set[int] = set()
    real = _validation._factorize_sorted

    def spy(column: pd.Series) -> object:
        seen.add(threading.get_ident())
        return real(column)

    monkeypatch.setattr(_validation, "_factorize_sorted", spy)
    cell, keys = _validation.group_rows(scores, by)
    groups = scores.groupby(by, sort=True, observed=True, dropna=False)
    np.testing.assert_array_equal(cell, groups.ngroup().to_numpy())
    pd.testing.assert_frame_equal(keys, groups.size().index.to_frame(index=False),
                                  check_dtype=False)
    assert len(seen) == 2
