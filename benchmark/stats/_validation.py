"""Argument checks shared by the public functions of :mod:`benchmark.stats`.

Each public function has a private ``_<name>_iv`` companion (scipy style) that calls these
helpers once, at the edge; the computation after it trusts its inputs. Every error names
the argument and the allowed values.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

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


def group_rows(frame: pd.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Group number of each row and the sorted table of groups.

    ``frame.groupby(by, sort=True, observed=True, dropna=False)``: returns ``ngroup()`` as
    int64 and the group keys as a DataFrame (one row per group, in group-number order).
    """
    groups = frame.groupby(list(by), sort=True, observed=True, dropna=False)
    cell = groups.ngroup().to_numpy(dtype=np.int64)
    return cell, groups.size().index.to_frame(index=False)


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
        key = codes.astype(np.int64)
        radix = max(n_groups, 1)
        for col in (k for k in keys if k not in columns):
            col_codes, uniques = pd.factorize(frame[col], use_na_sentinel=False)
            radix *= max(len(uniques), 1)
            if radix >= 2**62:  # the combined key would overflow: the general path
                break
            key = key * max(len(uniques), 1) + col_codes
        else:
            dup = pd.Series(key, copy=False).duplicated().to_numpy()
    if dup is None:
        dup = frame.duplicated(subset=list(keys)).to_numpy()
    if dup.any():
        first = frame.loc[dup, list(keys)].iloc[0].to_dict()
        raise ValueError(
            f"`{name}` has {int(dup.sum())} duplicated row(s) for the key {list(keys)}, "
            f"e.g. {first}; each image must appear once per group."
        )
