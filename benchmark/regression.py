"""The regression gate: a candidate run compared with a baseline run, paired on cases.

``bench compare RUN_A RUN_B`` and ``bench run --baseline RUN_A`` answer one question for a
CI pipeline: *is the new checkpoint's saliency significantly worse than the old one's?*
Both runs must have scored (some of) the same cases; every number here is a paired
difference on the cases the two runs share, computed by :func:`benchmark.stats.compare`
(paired case bootstrap on shared draws, sign-flip permutation test), so the statistics
are exactly those of the run's own model comparisons (STATISTICS.md, "Comparisons").

Public API
----------
:func:`compare_runs` -> :class:`RegressionResult`; :func:`parse_gate` -> :class:`GateSpec`;
:func:`gate_exit` (the exit status of a gated run); :func:`write_regression` (the run
directory's ``regression.parquet`` and ``regression.json``).

The gate rule
-------------
For a gate ``METRIC[:MARGIN]`` (:func:`parse_gate`), every cell of the metric against the
gate's reference (every model pair x method x split) is checked. ``worse_by`` is how much
worse the candidate is, in the metric's own units, positive = worse (``baseline -
candidate`` for a higher-is-better metric, ``candidate - baseline`` for a lower-is-better
one), with its paired case-bootstrap interval ``[worse_ci_low, worse_ci_high]``. A cell
**fails** when

- the whole interval lies above the margin: ``worse_ci_low > MARGIN`` (the candidate is
  significantly worse by more than the margin), and,
- for ``MARGIN == 0`` only, also the adjusted permutation p is below ``1 - level``
  (``p_adj < 0.05`` at the default level), so a gate without a margin needs both the
  interval and the multiplicity-adjusted test to agree.

A cell whose interval is undefined (no case with a value in both runs) never fails. A
gate fails when any of its cells fails; :func:`gate_exit` returns 1 then, else 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.errors import BenchError
from benchmark.metrics import parse_metric
from benchmark.stats import compare
from benchmark.stats._validation import (
    METHODS,
    WEIGHTINGS,
    check_choice,
    check_level,
    check_n_boot,
    check_seed,
)
from benchmark.stats.adjust import ADJUSTMENTS, adjust_pvalues, frozen_heap
from benchmark.stats.aggregate import ratio_terms
from benchmark.store import REGRESSION, REGRESSION_JSON, Run, write_json, write_table

#: The arms' model labels inside :func:`benchmark.stats.compare`.
BASELINE, CANDIDATE = "baseline", "candidate"
#: A compared cell, apart from the model (pair).
CELL = ["method", "split", "reference", "metric"]
REGRESSION_COLUMNS = [
    "baseline_model", "candidate_model", "method", "split", "reference", "metric",
    "baseline_estimate", "candidate_estimate", "diff", "ci_low", "ci_high", "worse_by",
    "worse_ci_low", "worse_ci_high", "p", "p_adj", "adj_method", "n_cases",
    "n_cases_dropped_baseline", "n_cases_dropped_candidate",
]
#: After the contract columns: the metric's better direction and the interval method used
#: (``percentile`` where BCa fell back).
EXTRA_COLUMNS = ["direction", "ci_method"]
#: The configuration keys that change what a score means; a difference is worth a warning.
SCORING_KEYS = ("dataset", "sign", "roi", "explain", "threshold", "weighting")
#: Monte Carlo sign vectors of the permutation test (exact when ``2**n_cases`` is fewer).
N_FLIPS = 10_000
#: Exactly what ``p_adj`` is adjusted over; also written to ``regression.json``.
FAMILY = ("per split: every (model pair, method, reference, metric) cell of the split "
          "forms one family")


class RegressionError(BenchError):
    """The two runs cannot be compared (no shared cases, models or cells; bad settings)."""


class GateError(BenchError):
    """A ``--fail-if-worse`` gate that cannot be parsed or matches no compared cell."""


@dataclass(frozen=True)
class GateSpec:
    """One ``--fail-if-worse METRIC[:MARGIN]`` gate.

    Attributes
    ----------
    metric : str
        A metric name as in the scores table, e.g. ``"irrelevant_fraction@top15"``.
    margin : float, default 0.0
        Tolerated worsening in the metric's own units (>= 0).
    reference : str or None, default None
        The reference whose cells are gated; None: the candidate run's headline reference
        (or the metric's only reference when it has no cell against the headline one).
    """

    metric: str
    margin: float = 0.0
    reference: str | None = None

    def __str__(self) -> str:
        text = f"{self.metric}:{self.margin:g}"
        return text if self.reference is None else f"{text} (reference {self.reference})"


def parse_gate(text: str, reference: str | None = None) -> GateSpec:
    """Parse ``"METRIC[:MARGIN]"``, e.g. ``"irrelevant_fraction@top15:0.02"``.

    Parameters
    ----------
    text : str
        A metric name (validated with :func:`benchmark.metrics.parse_metric`), optionally
        followed by ``:`` and a non-negative margin in the metric's units (default 0).
    reference : str, optional
        Restrict the gate to this reference (see :class:`GateSpec`).

    Returns
    -------
    GateSpec

    Raises
    ------
    GateError
        One line naming the gate: unknown metric, bad threshold, bad or negative margin.

    Examples
    --------
    >>> parse_gate("irrelevant_fraction@top15:0.02")
    GateSpec(metric='irrelevant_fraction@top15', margin=0.02, reference=None)
    >>> parse_gate("iou@0.5").margin
    0.0
    """
    if not isinstance(text, str) or not text.strip():
        raise GateError(f"--fail-if-worse {text!r}: expected METRIC[:MARGIN]")
    # A metric name never holds ":" (thresholds are numbers, topK, otsu, tuned).
    metric, sep, margin_text = text.strip().rpartition(":")
    if not sep:
        metric, margin_text = margin_text, ""
    metric = metric.strip()
    try:
        parse_metric(metric)
    except ValueError as err:
        raise GateError(f"--fail-if-worse {text!r}: {err}") from None
    margin = 0.0
    if sep:
        try:
            margin = float(margin_text)
        except ValueError:
            raise GateError(
                f"--fail-if-worse {text!r}: margin {margin_text!r} is not a number"
            ) from None
        if not math.isfinite(margin) or margin < 0:
            raise GateError(
                f"--fail-if-worse {text!r}: margin must be a finite number >= 0"
            )
    return GateSpec(metric, margin, reference)


def _as_gate(gate: GateSpec | str) -> GateSpec:
    return gate if isinstance(gate, GateSpec) else parse_gate(gate)


def _direction(metric: str) -> str:
    try:
        return parse_metric(str(metric))[0].direction
    except ValueError as err:
        raise RegressionError(f"metric {metric!r} of the runs: {err}") from None


@dataclass(frozen=True, eq=False)
class RegressionResult:
    """Result of :func:`compare_runs`.

    Attributes
    ----------
    table : DataFrame
        One row per model pair x method x split x reference x metric, columns
        ``baseline_model, candidate_model, method, split, reference, metric,
        baseline_estimate, candidate_estimate, diff, ci_low, ci_high, worse_by,
        worse_ci_low, worse_ci_high, p, p_adj, adj_method, n_cases,
        n_cases_dropped_baseline, n_cases_dropped_candidate, direction, ci_method``.
        ``diff = candidate_estimate - baseline_estimate`` in the metric's units, with its
        paired interval ``[ci_low, ci_high]``; ``worse_by`` (positive = candidate worse)
        is ``-diff`` for higher-is-better metrics and ``diff`` for lower-is-better ones
        (``direction``), with ``[worse_ci_low, worse_ci_high]``. ``n_cases``: cases with a
        value in both runs; ``n_cases_dropped_*``: cases of the split that only that run
        scored (the same for every cell of a model pair and split).
    settings : dict
        ``n_boot, level, ci_method, weighting, seed, adjust, family, pairing
        ({baseline_model: candidate_model}), pairing_rule ("name", "single" or
        "explicit"), unpaired_baseline, unpaired_candidate, splits_without_shared_cases,
        headline_metric, headline_reference, baseline, candidate (paths), baseline_run_id,
        config_differences ({key: {"baseline": .., "candidate": ..}})``.
    """

    table: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """The tidy table (a copy)."""
        return self.table.copy()

    def to_dict(self, gates: Iterable[GateSpec | str] = (), *,
                cells: bool = False) -> dict[str, Any]:
        """Strict-JSON content: ``settings``, ``gates`` (:func:`gate_summary`) and, with
        ``cells=True``, ``cells`` (the table's records); NaN becomes None."""
        doc: dict[str, Any] = {"settings": self.settings, "gates": gate_summary(self, gates)}
        if cells:
            doc["cells"] = self.table.to_dict(orient="records")
        safe: dict[str, Any] = _json_safe(doc)
        return safe

    def verdicts(self, gates: Iterable[GateSpec | str]) -> pd.DataFrame:
        """Every cell each gate checks, with its verdict.

        Parameters
        ----------
        gates : iterable of GateSpec or str
            Gates, parsed with :func:`parse_gate` when given as strings.

        Returns
        -------
        DataFrame
            The rows of :attr:`table` the gates select (a cell checked by two gates appears
            twice), plus ``gate`` (the spec as text), ``margin`` and ``failed`` (bool), in
            gate order. The rule is in the module docstring.

        Raises
        ------
        GateError
            A gate whose metric has no compared cell against its reference: a gate that
            checks nothing must not pass silently.
        """
        parts = []
        alpha = 1.0 - float(self.settings.get("level", 0.95))
        for gate in map(_as_gate, gates):
            rows = self._gate_rows(gate)
            worse_low = rows["worse_ci_low"].to_numpy(dtype=np.float64)
            # NaN compares False: an undefined interval never fails a gate.
            failed = worse_low > gate.margin
            if gate.margin == 0:
                failed &= rows["p_adj"].to_numpy(dtype=np.float64) < alpha
            parts.append(rows.assign(gate=f"{gate.metric}:{gate.margin:g}",
                                     margin=gate.margin, failed=failed))
        if not parts:
            return self.table.iloc[:0].assign(gate=pd.Series(dtype=object),
                                               margin=pd.Series(dtype=float),
                                               failed=pd.Series(dtype=bool))
        return pd.concat(parts, ignore_index=True)

    def failures(self, gate: GateSpec | str) -> pd.DataFrame:
        """The cells where ``gate`` fails (empty when it passes); columns as :meth:`verdicts`.

        A cell (model pair x method x split of the gate's metric, against the gate's
        reference) fails when ``worse_ci_low > margin`` -- the whole interval of the
        worsening lies above the margin -- and, for ``margin == 0`` only, also
        ``p_adj < 1 - level``. NaN intervals never fail.
        """
        v = self.verdicts([gate])
        return v[v["failed"]].reset_index(drop=True)

    def gate_reference(self, gate: GateSpec | str) -> str:
        """The reference ``gate`` applies to: its own, else the headline reference, else
        the metric's only reference in the table."""
        gate = _as_gate(gate)
        if gate.reference is not None:
            return gate.reference
        headline = str(self.settings.get("headline_reference") or "")
        refs = self.table.loc[self.table["metric"] == gate.metric, "reference"].unique()
        if headline in set(refs) or len(refs) != 1:
            return headline
        return str(refs[0])

    def _gate_rows(self, gate: GateSpec) -> pd.DataFrame:
        ref = self.gate_reference(gate)
        t = self.table
        rows = t[(t["metric"] == gate.metric) & (t["reference"] == ref)]
        if rows.empty:
            have = t.loc[t["metric"] == gate.metric, "reference"].unique()
            if len(have):
                hint = (f"the comparison has it against reference(s) "
                        f"{', '.join(map(str, sorted(have)))}; choose one with --reference")
            else:
                metrics = ", ".join(map(str, sorted(t["metric"].unique()))) or "none"
                hint = f"metrics both runs scored: {metrics}"
            raise GateError(
                f"gate {gate.metric}:{gate.margin:g}: no compared cell of {gate.metric!r} "
                f"against reference {ref!r}; {hint}"
            )
        return rows.reset_index(drop=True)


def gate_exit(result: RegressionResult, gates: Iterable[GateSpec | str]) -> int:
    """Exit status of a gated comparison: 1 when any cell of any gate fails, else 0.

    ``bench compare --fail-if-worse`` and ``bench run --baseline --fail-if-worse`` both
    return this; :meth:`RegressionResult.verdicts` raises :class:`GateError` for a gate
    that matches no cell.
    """
    gates = list(gates)
    if not gates:
        return 0
    return int(bool(result.verdicts(gates)["failed"].any()))


# --- compare_runs ---------------------------------------------------------------------


def _open(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


def _settings(cfg: Mapping[str, Any], n_boot: Any, level: Any, method: Any, weighting: Any,
              seed: Any, adjust: Any) -> dict[str, Any]:
    """The statistics settings: arguments, else the candidate's config, else the defaults."""
    def pick(value: Any, key: str, default: Any) -> Any:
        if value is not None:
            return value
        got = cfg.get(key)
        return default if got is None else got

    try:
        return {
            "n_boot": check_n_boot(pick(n_boot, "n_boot", 10_000)),
            "level": check_level(pick(level, "level", 0.95)),
            "ci_method": check_choice(pick(method, "ci_method", "bca"), "method", METHODS),
            "weighting": check_choice(pick(weighting, "weighting", "case"), "weighting",
                                      WEIGHTINGS),
            "seed": check_seed(pick(seed, "seed", 0)),
            "adjust": check_choice(adjust, "adjust", tuple(ADJUSTMENTS)),
        }
    except ValueError as err:
        raise RegressionError(f"compare: {err}") from None


def _pairing(base_models: list[str], cand_models: list[str],
             pairs: Mapping[str, str] | None) -> tuple[dict[str, str], str]:
    """``{baseline_model: candidate_model}`` and the rule that made it."""
    if pairs:
        bad = [m for m in pairs if m not in base_models]
        bad += [m for m in pairs.values() if m not in cand_models]
        if bad:
            raise RegressionError(
                f"pairs: model {bad[0]!r} is not in the run (baseline models: "
                f"{', '.join(base_models)}; candidate models: {', '.join(cand_models)})"
            )
        return {str(k): str(v) for k, v in pairs.items()}, "explicit"
    common = [m for m in base_models if m in set(cand_models)]
    if common:
        return {m: m for m in common}, "name"
    if len(base_models) == 1 and len(cand_models) == 1:
        # One checkpoint against its predecessor under a new name: the usual CI case.
        return {base_models[0]: cand_models[0]}, "single"
    raise RegressionError(
        f"no model name in common between the baseline ({', '.join(base_models) or 'none'}) "
        f"and the candidate ({', '.join(cand_models) or 'none'}); pair them explicitly "
        "(--pair BASELINE=CANDIDATE)"
    )


def _run_id(run: Run) -> str | None:
    try:
        return str(run.provenance.get("run_id") or "") or None
    except (OSError, ValueError):  # provenance.json is optional for a comparison
        return None


def _config_differences(base: Mapping[str, Any], cand: Mapping[str, Any]) -> dict[str, Any]:
    keys = (*SCORING_KEYS, "n_boot", "level", "ci_method", "seed")
    return {k: {"baseline": base.get(k), "candidate": cand.get(k)}
            for k in keys if base.get(k) != cand.get(k)}


def _shared_rows(b: pd.DataFrame, c: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame,
                                                            dict[Any, tuple[int, int, int]]]:
    """Rows of both arms on the cells and the cases (per split) that both runs have.

    Returns the two filtered frames and ``{split: (n_shared, dropped_b, dropped_c)}`` for
    every split both arms have.
    """
    counts: dict[Any, tuple[int, int, int]] = {}
    keep_b = np.zeros(len(b), dtype=bool)
    keep_c = np.zeros(len(c), dtype=bool)
    for split in sorted(set(b["split"]) & set(c["split"]), key=str):
        in_b = (b["split"] == split).to_numpy()
        in_c = (c["split"] == split).to_numpy()
        cases_b = set(b.loc[in_b, "case_id"])
        cases_c = set(c.loc[in_c, "case_id"])
        shared = cases_b & cases_c
        counts[split] = (len(shared), len(cases_b - shared), len(cases_c - shared))
        keep_b |= in_b & b["case_id"].isin(shared).to_numpy()
        keep_c |= in_c & c["case_id"].isin(shared).to_numpy()
    b, c = b[keep_b], c[keep_c]
    cells = b[CELL].drop_duplicates().merge(c[CELL].drop_duplicates(), on=CELL)
    return b.merge(cells, on=CELL), c.merge(cells, on=CELL), counts


def _arm_estimates(frame: pd.DataFrame, weighting: str) -> pd.DataFrame:
    """Each arm's estimate on the cases that enter the pair (a value in both arms).

    The same estimand as the bootstrap (:func:`benchmark.stats.aggregate.ratio_terms` at
    unit weights), so ``candidate_estimate - baseline_estimate`` equals ``diff``.
    """
    per_case = (frame.assign(n=frame["value"].notna().astype(np.float64))
                .groupby([*CELL, "case_id", "model"], sort=False, observed=True)
                .agg(s=("value", "sum"), n=("n", "sum"))
                .unstack("model", fill_value=0.0))
    paired = ((per_case[("n", BASELINE)] > 0) & (per_case[("n", CANDIDATE)] > 0)).to_numpy()
    out = {}
    for arm in (BASELINE, CANDIDATE):
        num, den = ratio_terms(per_case[("s", arm)].to_numpy(np.float64),
                               per_case[("n", arm)].to_numpy(np.float64), weighting)
        terms = pd.DataFrame({"num": np.where(paired, num, 0.0),
                              "den": np.where(paired, den, 0.0)}, index=per_case.index)
        sums = terms.groupby(level=CELL, sort=False).sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"{arm}_estimate"] = sums["num"] / sums["den"]
    return pd.DataFrame(out).reset_index()


def _compare_pair(b: pd.DataFrame, c: pd.DataFrame, stats: Mapping[str, Any]) -> pd.DataFrame:
    """Paired table of one model pair, oriented ``candidate - baseline``; p not adjusted."""
    frame = pd.concat([b.assign(model=BASELINE), c.assign(model=CANDIDATE)],
                      ignore_index=True)
    t = compare(frame, family="models", n_boot=stats["n_boot"], level=stats["level"],
                method=stats["ci_method"], weighting=stats["weighting"], seed=stats["seed"],
                adjust=stats["adjust"], n_flips=N_FLIPS).table
    # compare() orders each pair a < b and reports a - b; flip where a is the baseline.
    sign = np.where(t["a"].to_numpy() == BASELINE, -1.0, 1.0)
    lo, hi = t["ci_low"].to_numpy(np.float64), t["ci_high"].to_numpy(np.float64)
    out = pd.DataFrame({
        "method": t["within"], "split": t["split"], "reference": t["reference"],
        "metric": t["metric"], "diff": sign * t["diff"].to_numpy(np.float64),
        "ci_low": np.where(sign > 0, lo, -hi), "ci_high": np.where(sign > 0, hi, -lo),
        "p": t["p"], "n_cases": t["n_cases"], "ci_method": t["ci_method"],
    })
    return out.merge(_arm_estimates(frame, stats["weighting"]), on=CELL, how="left")


def _adjust_per_split(table: pd.DataFrame, adjust: str) -> np.ndarray:
    """Adjusted p over each split's whole family (:data:`FAMILY`); NaN p stays NaN."""
    p = table["p"].to_numpy(np.float64)
    p_adj = np.full(len(table), np.nan)
    for idx in table.groupby("split", sort=False).indices.values():
        p_adj[idx] = adjust_pvalues(p[idx], adjust)
    return p_adj


def _compare_pairs(base: pd.DataFrame, cand: pd.DataFrame, pairing: Mapping[str, str],
                   stats: Mapping[str, Any]) -> tuple[list[pd.DataFrame], set[Any]]:
    """One unadjusted table per model pair with shared cases, and the splits without any."""
    parts, empty_splits = [], set()
    for b_model, c_model in pairing.items():
        b, c, counts = _shared_rows(base[base["model"] == b_model],
                                    cand[cand["model"] == c_model])
        empty_splits |= {s for s, (n, _, _) in counts.items() if n == 0}
        if b.empty:
            continue
        part = _compare_pair(b, c, stats)
        part.insert(0, "baseline_model", b_model)
        part.insert(1, "candidate_model", c_model)
        part["n_cases_dropped_baseline"] = part["split"].map({s: n[1] for s, n in counts.items()})
        part["n_cases_dropped_candidate"] = part["split"].map({s: n[2] for s, n in counts.items()})
        parts.append(part)
    return parts, empty_splits


def compare_runs(
    baseline: Run | str | Path,
    candidate: Run | str | Path,
    *,
    n_boot: int | None = None,
    level: float | None = None,
    method: str | None = None,
    weighting: str | None = None,
    seed: int | None = None,
    adjust: str = "holm",
    metrics: Sequence[str] | None = None,
    pairs: Mapping[str, str] | None = None,
) -> RegressionResult:
    """Compare a candidate run with a baseline run, paired on the cases both scored.

    Parameters
    ----------
    baseline, candidate : Run or path
        Run directories written by ``bench run`` (their ``scores.parquet`` and
        ``config.yaml`` are read).
    n_boot, level, method, weighting, seed : optional
        Bootstrap replicates, confidence level, interval method (``"bca"`` or
        ``"percentile"``), estimand (``"case"`` or ``"image"``) and seed; each defaults to
        the candidate's ``config.yaml`` (``n_boot, level, ci_method, weighting, seed``),
        else to 10,000, 0.95, ``"bca"``, ``"case"``, 0.
    adjust : {"holm", "bh"}, default "holm"
        Multiplicity adjustment (statsmodels ``multipletests`` with ``"holm"`` or
        ``"fdr_bh"``) of the permutation p over one family per split: every (model pair,
        method, reference, metric) cell of that split.
    metrics : sequence of str, optional
        Compare only these metrics (each must be in both runs); default: every metric both
        runs scored. Fewer metrics make a smaller family, hence smaller ``p_adj``.
    pairs : mapping of str to str, optional
        ``{baseline_model: candidate_model}``. Default: models with the same name; when
        no name is shared and each run has exactly one model, those two.

    Returns
    -------
    RegressionResult
        ``.table`` has one row per model pair x method x split x reference x metric (columns
        in :class:`RegressionResult`); ``diff = candidate - baseline``.

    Raises
    ------
    RegressionError
        No model pair, no split with shared cases, no shared cell, a metric not in both
        runs, or invalid settings; the message is one line.

    Notes
    -----
    Pairing: for each model pair and split only the ``case_id`` values both runs scored
    are used (the others are counted in ``n_cases_dropped_baseline`` and
    ``n_cases_dropped_candidate``), and only the (method, reference, metric) cells both
    runs have. A case enters a cell when it has a non-NaN value in both runs; images are
    not matched, each run's images of a case give that run's case mean. The two arms
    go through :func:`benchmark.stats.compare` (``family="models"``) as models
    ``"baseline"`` and ``"candidate"``: the interval comes from the paired case bootstrap
    (one count matrix per split over the shared cases, seeded with the run seed), ``p``
    from the two-sided sign-flip permutation test of the case-mean differences.

    Examples
    --------
    >>> result = compare_runs("runs/baseline", "runs/new")  # doctest: +SKIP
    >>> result.failures(parse_gate("irrelevant_fraction@top15:0.02"))  # doctest: +SKIP
    """
    base_run, cand_run = _open(baseline), _open(candidate)
    base_cfg, cand_cfg = base_run.config or {}, cand_run.config or {}
    stats = _settings(cand_cfg, n_boot, level, method, weighting, seed, adjust)
    base_scores, cand_scores = base_run.scores, cand_run.scores

    if metrics is not None:
        metrics = [str(m) for m in metrics]
        for m in metrics:
            for name, scores in (("baseline", base_scores), ("candidate", cand_scores)):
                if not (scores["metric"] == m).any():
                    raise RegressionError(f"metric {m!r} is not in the {name} run's scores")
        base_scores = base_scores[base_scores["metric"].isin(metrics)]
        cand_scores = cand_scores[cand_scores["metric"].isin(metrics)]

    base_models = [str(m) for m in dict.fromkeys(base_scores["model"])]
    cand_models = [str(m) for m in dict.fromkeys(cand_scores["model"])]
    pairing, rule = _pairing(base_models, cand_models, pairs)

    with frozen_heap():  # compare() adjusts each pair's p-values (gc.collect per call)
        parts, empty_splits = _compare_pairs(base_scores, cand_scores, pairing, stats)
        if not parts:
            raise RegressionError(
                f"{base_run.path} and {cand_run.path} share no scored case (same split, "
                "case_id, method, reference and metric); were they run on the same dataset?"
            )
        table = pd.concat(parts, ignore_index=True)
        table["p_adj"] = _adjust_per_split(table, stats["adjust"])
    table["adj_method"] = stats["adjust"]
    direction = {m: _direction(m) for m in table["metric"].unique()}
    table["direction"] = table["metric"].map(direction)
    higher = (table["direction"] == "higher").to_numpy()
    diff, lo, hi = (table[k].to_numpy(np.float64) for k in ("diff", "ci_low", "ci_high"))
    table["worse_by"] = np.where(higher, -diff, diff)
    table["worse_ci_low"] = np.where(higher, -hi, lo)
    table["worse_ci_high"] = np.where(higher, -lo, hi)
    for col in ("n_cases", "n_cases_dropped_baseline", "n_cases_dropped_candidate"):
        table[col] = table[col].astype(np.int64)
    table = table[REGRESSION_COLUMNS + EXTRA_COLUMNS]

    settings: dict[str, Any] = {
        **stats,
        "family": FAMILY,
        "n_flips": N_FLIPS,
        "baseline": str(base_run.path),
        "baseline_run_id": _run_id(base_run),
        "candidate": str(cand_run.path),
        "pairing": pairing,
        "pairing_rule": rule,
        "unpaired_baseline": [m for m in base_models if m not in pairing],
        "unpaired_candidate": [m for m in cand_models if m not in set(pairing.values())],
        "splits_without_shared_cases": sorted(map(str, empty_splits)),
        "headline_metric": cand_cfg.get("headline_metric"),
        "headline_reference": cand_cfg.get("headline_reference") or "consensus",
        "config_differences": _config_differences(base_cfg, cand_cfg),
    }
    return RegressionResult(table, settings)


# --- run directory --------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """NaN -> None and numpy scalars -> Python, so regression.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def gate_summary(result: RegressionResult, gates: Iterable[GateSpec | str]) -> list[dict[str, Any]]:
    """Per gate: its spec, reference, cells checked and the failing cells (for JSON).

    Returns
    -------
    list of dict
        Keys ``gate, metric, margin, reference, n_cells, n_failed, passed, failed_cells``;
        each failing cell has ``baseline_model, candidate_model, method, split, worse_by,
        worse_ci_low, worse_ci_high, p_adj``.
    """
    keep = ["baseline_model", "candidate_model", "method", "split", "worse_by",
            "worse_ci_low", "worse_ci_high", "p_adj"]
    out = []
    for gate in map(_as_gate, gates):
        v = result.verdicts([gate])
        failed = v[v["failed"]]
        out.append({
            "gate": f"{gate.metric}:{gate.margin:g}", "metric": gate.metric,
            "margin": gate.margin, "reference": result.gate_reference(gate),
            "n_cells": len(v), "n_failed": len(failed), "passed": failed.empty,
            "failed_cells": failed[keep].to_dict("records"),
        })
    return out


def write_regression(result: RegressionResult, run_dir: str | Path,
                     gates: Iterable[GateSpec | str] = ()) -> Path:
    """Write ``regression.parquet`` and ``regression.json`` into ``run_dir`` (atomically).

    Parameters
    ----------
    result : RegressionResult
    run_dir : path
        Usually the candidate's run directory (created if missing).
    gates : iterable of GateSpec or str, default ()
        Gates whose verdicts go into the JSON (``"gates"``: :func:`gate_summary`).

    Returns
    -------
    Path
        The path of ``regression.parquet``.
    """
    run_dir = Path(run_dir)
    path = run_dir / REGRESSION
    doc = result.to_dict(gates)  # first: a gate matching no cell raises before any write
    write_table(result.table, path)
    write_json(doc, run_dir / REGRESSION_JSON)
    return path
