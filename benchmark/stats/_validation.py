"""Argument checks shared by the public functions of :mod:`benchmark.stats`.

Each public function has a private ``_<name>_iv`` companion (scipy style) that calls these
helpers once, at the edge; the computation after it trusts its inputs. Every error names
the argument and the allowed values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchmark.threads import alternate, side_by_side

METHODS = ("bca", "percentile")
WEIGHTINGS = ("case", "image")
#: Smallest accepted ``n_boot``; see :func:`check_n_boot`.
MIN_N_BOOT = 100


def check_int(value: Any, name: str, minimum: int) -> int:
    """Return ``value`` as a Python int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_n_boot(n_boot: Any) -> int:
    """Check the number of bootstrap replicates.

    At least 100: with fewer, a 95% interval's tail quantiles rest on two or three
    replicates and the BCa bias correction on a coarse fraction; use >= 2,000 for
    reported intervals (the default is 10,000).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < MIN_N_BOOT:
        raise ValueError(
            f"`n_boot` must be an integer >= {MIN_N_BOOT} (fewer replicates leave the tail "
            f"quantiles of the interval resting on a handful of draws; 10,000 is the "
            f"default); got {n_boot!r}."
        )
    return int(n_boot)


def check_level(level: Any) -> float:
    """Check a confidence level strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise ValueError(f"`level` must be a number between 0 and 1 (exclusive); got {level!r}.")
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be between 0 and 1 (exclusive), e.g. 0.95; got {level!r}.")
    return level


def check_choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    """Check that ``value`` is one of the strings in ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(f'"{a}"' for a in allowed)
        raise ValueError(f"`{name}` must be one of {options}; got {value!r}.")
    return value


def check_seed(seed: Any) -> int:
    """Check a seed for :func:`numpy.random.default_rng`: a non-negative integer."""
    return check_int(seed, "seed", 0)


def check_labels(labels: Any, name: str, n: int) -> np.ndarray:
    """Check a 1-D array of ``n`` group labels without missing values; return it as an array."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional; got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise ValueError(
            f"`{name}` must have the same length as `values` ({n}); got {arr.shape[0]}."
        )
    if pd.isna(arr).any():
        raise ValueError(f"`{name}` must not contain missing labels (None or NaN).")
    return arr


def check_columns(frame: Any, name: str, required: Sequence[str]) -> pd.DataFrame:
    """Check that ``frame`` is a DataFrame holding every column in ``required``."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"`{name}` must be a pandas DataFrame; got {type(frame).__name__}.")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"`{name}` lacks the column(s) {missing}; it needs {list(required)}."
        )
    return frame


def check_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The ``value`` column of ``frame`` as float64: numeric, NaN allowed, never +-inf."""
    try:
        values = pd.to_numeric(frame["value"]).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}['value']` must be numeric (NaN allowed).") from err
    if np.isinf(values).any():
        raise ValueError(f"`{name}['value']` must be finite or NaN; it contains +-inf.")
    return values


#: Largest product of the key columns' distinct counts that is mapped to group numbers
#: through a dense table (one int64 per possible key); larger products sort the keys.
_DENSE_KEYS = 1 << 22
#: Combined int64 keys of several columns stay below this (else the general path).
_KEY_LIMIT = 2**62
#: Rows from which the key columns are factorized on two threads (a thread costs ~1 ms).
_THREADED_ROWS = 1 << 16


def _combined_key(codes: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray:
    """One int64 per row: the mixed-radix number of its codes (first column most
    significant, ``codes[i] < sizes[i]``), so keys order as the code tuples do.
    The caller checks ``prod(sizes) < _KEY_LIMIT``."""
    key = np.zeros(len(codes[0]), np.int64)
    for col_codes, size in zip(codes, sizes, strict=True):
        key = key * size + col_codes
    return key


def group_rows(frame: pd.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Group number of each row and the sorted table of groups.

    The same as ``frame.groupby(by, sort=True, observed=True, dropna=False)``: returns its
    ``ngroup()`` as int64 and the group keys as a DataFrame (one row per group, in
    group-number order). Each key column is factorized once, sorted, and the codes are
    combined into one int64 key per row whose order is the lexicographic order of the
    groups; present keys are numbered through a dense table. The same numbers as
    pandas' groupby in less time (900,000 rows x 5 columns: 0.12 -> 0.10 s with Arrow
    strings, 1.0 -> 0.26 s with object strings, 0.21 -> 0.04 s with categoricals).
    Missing keys, keys that do not sort, or too many combinations take pandas' path.
    """
    by = list(by)
    fast = _group_codes(frame, by)
    if fast is None:
        groups = frame.groupby(by, sort=True, observed=True, dropna=False)
        cell = groups.ngroup().to_numpy(dtype=np.int64)
        return cell, groups.size().index.to_frame(index=False)
    codes, uniques = fast
    sizes = [len(col_uniques) for col_uniques in uniques]
    key = _combined_key(codes, sizes)
    radix = math.prod(sizes)
    if radix <= _DENSE_KEYS:
        present = np.bincount(key, minlength=radix) > 0
        group_keys = np.flatnonzero(present)
        cell = (np.cumsum(present) - 1)[key]
    else:
        group_keys, cell = np.unique(key, return_inverse=True)
    columns = {}
    rest = group_keys
    for col, col_uniques in zip(reversed(by), reversed(uniques), strict=True):
        rest, digit = np.divmod(rest, len(col_uniques))
        values = col_uniques.take(digit)
        # groupby infers the dtype of object keys (e.g. str); so does a new Index.
        columns[col] = pd.Index(values.tolist()) if values.dtype == object else values
    keys = pd.DataFrame({col: columns[col] for col in by})
    return cell.astype(np.int64, copy=False), keys


def _group_codes(
    frame: pd.DataFrame, by: list[str]
) -> tuple[list[np.ndarray], list[pd.Index]] | None:
    """Sorted factorization of each column of ``by``, or None when pandas' groupby must
    decide (a missing key, keys that do not sort, no rows, or too many combinations for
    an int64 key)."""
    if not by or len(frame) == 0:
        return None
    # Arrow string columns factorize without the GIL: two at a time on two threads.
    with side_by_side(len(by) > 1 and len(frame) >= _THREADED_ROWS) as worker:
        factorized = alternate(worker, _factorize_sorted, [frame[col] for col in by])
    codes, uniques = [], []
    radix = 1
    for done in factorized:
        if done is None:  # unorderable mixed keys
            return None
        col_codes, col_uniques = done
        if len(col_uniques) == 0 or (col_codes < 0).any():  # NA keys
            return None
        radix *= len(col_uniques)
        if radix >= _KEY_LIMIT:
            return None
        codes.append(col_codes.astype(np.int64, copy=False))
        uniques.append(col_uniques)
    return codes, uniques


def _factorize_sorted(column: pd.Series) -> tuple[np.ndarray, pd.Index] | None:
    """``pd.factorize(column, sort=True)``, or None when its values do not sort."""
    try:
        col_codes, col_uniques = pd.factorize(column, sort=True)
    except TypeError:
        return None
    return col_codes, col_uniques


def check_unique_rows(
    frame: pd.DataFrame,
    name: str,
    keys: Sequence[str],
    *,
    groups: tuple[Sequence[str], np.ndarray, int] | None = None,
) -> None:
    """Raise if two rows of ``frame`` share the same ``keys`` (e.g. an image scored twice).

    ``groups = (columns, codes, n_groups)``, optional: the group number of each row for
    the ``columns`` among ``keys`` (:func:`group_rows`), so that only the other key
    columns are factorized (one int64 key per row instead of ``frame.duplicated``: the
    same rows are flagged).
    """
    dup = None
    if groups is not None:
        columns, codes, n_groups = groups
        extra = [pd.factorize(frame[col], use_na_sentinel=False)
                 for col in keys if col not in columns]
        sizes = [max(n_groups, 1), *(max(len(uniques), 1) for _, uniques in extra)]
        if math.prod(sizes) < _KEY_LIMIT:  # else the combined key would overflow
            key = _combined_key([codes.astype(np.int64), *(c for c, _ in extra)], sizes)
            dup = pd.Series(key, copy=False).duplicated().to_numpy()
    if dup is None:
        dup = frame.duplicated(subset=list(keys)).to_numpy()
    if dup.any():
        first = frame.loc[dup, list(keys)].iloc[0].to_dict()
        raise ValueError(
            f"`{name}` has {int(dup.sum())} duplicated row(s) for the key {list(keys)}, "
            f"e.g. {first}; each image must appear once per group."
        )
