"""``group_rows``: the groups of pandas' ``groupby(sort=True, observed=True, dropna=False)``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.stats import _validation
from benchmark.stats._validation import group_rows


def _pandas(frame: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    groups = frame.groupby(by, sort=True, observed=True, dropna=False)
    return groups.ngroup().to_numpy(dtype=np.int64), groups.size().index.to_frame(index=False)


def _frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "model": rng.choice(["zeta", "alpha", "mid"], n),
        "split": rng.choice(["test", "shifted"], n),
        "method": rng.choice([f"m{i}" for i in range(12)], n),
        "k": rng.integers(-2, 5, n),
        "f": rng.choice([0.5, -1.0, 2.0], n),
        "b": rng.random(n) < 0.3,
        "t": pd.to_datetime(rng.integers(0, 4, n), unit="D"),
    })


def _variants() -> list[tuple[pd.DataFrame, list[str]]]:
    f = _frame()
    order = [f"m{i}" for i in range(14)][::-1]
    cat = f.assign(method=pd.Categorical(f["method"], categories=order))
    obj = f.astype({"model": object, "k": object, "b": object})
    missing = obj.copy()
    missing.loc[[3, 70], "model"] = np.nan
    mixed = f.assign(model=pd.Series(["x", 1.5] * (len(f) // 2), dtype=object))
    return [
        (f, ["model", "split", "method"]),
        (f, ["method"]),
        (f, ["k", "model", "f", "b", "t"]),
        (f.iloc[::7], ["split", "model"]),  # not every combination present
        (cat, ["model", "method"]),  # category order, unobserved categories dropped
        (obj, ["model", "k", "b"]),  # object keys: dtypes inferred as groupby does
        (missing, ["model", "split"]),  # NaN keys: pandas' own path
        (mixed, ["model", "split"]),  # keys that do not sort: pandas' own path
        (f.iloc[:0], ["model"]),
    ]


@pytest.mark.parametrize("case", range(len(_variants())))
def test_group_rows_equals_pandas_groupby(case):
    frame, by = _variants()[case]
    want_cell, want_keys = _pandas(frame, by)
    cell, keys = group_rows(frame, by)
    assert cell.dtype == np.int64
    np.testing.assert_array_equal(cell, want_cell)
    pd.testing.assert_frame_equal(keys, want_keys)


def test_sparse_keys_beyond_the_dense_table_give_the_same_groups(monkeypatch):
    frame, by = _variants()[2]
    monkeypatch.setattr(_validation, "_DENSE_KEYS", 4)  # force the np.unique path
    want_cell, want_keys = _pandas(frame, by)
    cell, keys = group_rows(frame, by)
    np.testing.assert_array_equal(cell, want_cell)
    pd.testing.assert_frame_equal(keys, want_keys)
