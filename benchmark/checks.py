"""Is it the model or the explainer? The checks stage of a run.

Low agreement with the experts has two causes: the model relies on other evidence, or the
map does not show what the model relies on. On a seeded sample of positive images of the
first evaluated split, per model:

- ``sanity``: cascading model-parameter randomisation of every non-baseline method
  (:func:`benchmark.sanity.cascading_randomisation`);
- ``faithfulness``: deletion and insertion curves of every non-baseline method against
  the random order (:func:`benchmark.faithfulness.deletion_insertion`), and the model's
  output drop when the annotated findings, or everything outside the region of interest,
  are deleted (:func:`benchmark.faithfulness.region_deletion`; no explainer involved).

Every figure gets a case-bootstrap interval from the run's statistics settings. The
report reads them side by side with the agreement (``report/diagnosis.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from benchmark import store
from benchmark.config import RunConfig
from benchmark.errors import BenchError
from benchmark.explainers import EXPLAINERS
from benchmark.faithfulness import deletion_insertion, region_deletion
from benchmark.models import LoadedModel
from benchmark.resolve import ResolvedDataset
from benchmark.sanity import cascading_randomisation, methods_maps
from benchmark.stats import summarize
from benchmark.threads import model_passes

#: Per-image faithfulness columns summarised with intervals.
FAITHFULNESS_METRICS = ("faithful_deletion", "faithful_insertion", "deletion", "insertion",
                        "deletion_random", "insertion_random")
#: Region names of :func:`region_deletion` and their masks' meaning.
REGIONS = {"findings": "the annotated findings (the binary reference)",
           "outside": "everything outside the region of interest"}


def diagnosed_methods(methods: list[str]) -> list[str]:
    """The methods the checks apply to: baselines know nothing about the model by design."""
    return [m for m in methods if not EXPLAINERS[m].info.is_baseline]


def check_rows(data: ResolvedDataset, split: str, n: int, seed: int) -> np.ndarray:
    """Positions of up to ``n`` positive images of ``split``: a seeded sample, in index
    order. Shape (k,), k = min(n, positives)."""
    idx = data.dataset.index
    pos = np.flatnonzero(((idx["split"] == split) & (idx["label"] == 1)).to_numpy())
    if len(pos) <= n:
        return pos
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pos, size=n, replace=False))


def _output(lm: LoadedModel, cfg: RunConfig) -> str:
    # A model that returns probabilities is read as it is (``logit`` means "raw output").
    return "logit" if lm.output == "probabilities" else cfg.faithfulness_output


def run_checks(
    data: ResolvedDataset, loaded: dict[str, LoadedModel], methods: list[str],
    cfg: RunConfig, split: str, reference: str,
    advance: Callable[[int], None] = lambda k: None, workers: int = 1,
) -> dict[str, pd.DataFrame]:
    """Every check table of the run, keyed by its file name in the run directory.

    Parameters
    ----------
    data : ResolvedDataset
    loaded : dict of str to LoadedModel
    methods : list of str
        The run's methods (baselines are skipped).
    cfg : RunConfig
        ``sanity``, ``faithfulness``, ``check_images``, ``faithfulness_baseline``,
        ``faithfulness_output``, ``deletion_steps``, ``seed`` and the bootstrap settings.
    split : str
        Split the images are drawn from.
    reference : str
        Binary reference whose mask is the ``findings`` region.
    advance : callable
        Called with 1 after each model (progress).
    workers : int, default 1
        Model passes side by side (:func:`benchmark.threads.model_passes`): the sanity
        cascade's randomised copies, the faithfulness curves of the methods. The tables
        do not depend on it.
    """
    ds = data.dataset
    rows = check_rows(data, split, cfg.check_images, cfg.seed)
    if len(rows) < 2:
        return {}
    x = data.to_input(ds.images(rows))
    cases = ds.index["case_id"].to_numpy()[rows].astype(str)
    ids = ds.index["image_id"].to_numpy()[rows]
    boot: dict[str, Any] = dict(n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed)
    curves, verdicts, faith, regions = [], [], [], []
    for name, lm in loaded.items():
        meths = diagnosed_methods(methods)
        originals: dict[str, np.ndarray] = {}
        try:
            if any(EXPLAINERS[m].info.needs_layer for m in meths):
                lm.layer()  # resolves the default CAM layer when none is named
            if cfg.sanity and meths:
                res = cascading_randomisation(
                    lm.module, meths, x, cases, target=lm.target or 0,
                    layer=lm.target_layer, workers=workers, **boot)
                curves.append(res.curves.assign(model=name))
                verdicts.append(res.verdicts.assign(model=name))
                originals = res.originals
            if cfg.faithfulness:
                maps = {**methods_maps(lm.module, [m for m in meths if m not in originals],
                                       x, lm.target or 0, lm.target_layer, workers=workers),
                        **originals}
                # Forward passes only, no hooks: the methods' curves side by side.
                frames = model_passes([partial(
                    deletion_insertion, lm.module, x, maps[m], target=lm.target or 0,
                    baseline=cfg.faithfulness_baseline, steps=cfg.deletion_steps,
                    output=_output(lm, cfg), seed=cfg.seed, sign=cfg.sign) for m in meths],
                    workers)
                for method, frame in zip(meths, frames, strict=True):
                    faith.append(frame.assign(model=name, method=method, split=split,
                                              case_id=cases, image_id=ids))
                regions.append(_regions(data, lm, rows, reference, cfg).assign(
                    model=name, split=split))
            advance(1)
        except RuntimeError as err:  # the model does not survive copying or hooks
            first = str(err).strip().splitlines()[0][:200]
            raise BenchError(f"model {name!r}: the model-or-explainer checks failed ({first}); "
                             "run with --no-sanity --no-faithfulness to skip them") from None
    out: dict[str, pd.DataFrame] = {}
    if curves:
        out[store.SANITY] = pd.concat(curves, ignore_index=True)
        out[store.SANITY_VERDICTS] = pd.concat(verdicts, ignore_index=True)
    if faith:
        per_image = pd.concat(faith, ignore_index=True)
        out[store.FAITHFULNESS] = per_image
        tidy = per_image.melt(id_vars=["model", "method", "split", "case_id", "image_id"],
                              value_vars=list(FAITHFULNESS_METRICS), var_name="metric")
        out[store.FAITHFULNESS_SUMMARY] = summarize(
            tidy, by=["model", "split", "method", "metric"], method=cfg.ci_method, **boot)
    if regions:
        per_image = pd.concat(regions, ignore_index=True)
        out[store.REGION_DELETION] = per_image
        out[store.REGION_DELETION_SUMMARY] = _region_summary(per_image, cfg, boot)
    return out


def _regions(data: ResolvedDataset, lm: LoadedModel, rows: np.ndarray, reference: str,
             cfg: RunConfig) -> pd.DataFrame:
    ds = data.dataset
    masks = {"findings": ds.reference(rows, reference).astype(bool)}
    roi = ds.roi(rows)
    if roi is not None:
        masks["outside"] = ~roi.astype(bool)
    fills = dict(getattr(data.entry, "deletion_fill", {}))
    frame = region_deletion(lm.module, ds.images(rows), masks, fills, data.to_input,
                            target=lm.target or 0, output=_output(lm, cfg))
    frame["case_id"] = ds.index["case_id"].to_numpy()[rows][frame["row"]].astype(str)
    frame["image_id"] = ds.index["image_id"].to_numpy()[rows][frame["row"]]
    frame["fill"] = frame["region"].map(lambda r: str(fills.get(r, "mean")))
    return frame.drop(columns="row")


def _region_summary(per_image: pd.DataFrame, cfg: RunConfig, boot: dict[str, Any]
                    ) -> pd.DataFrame:
    """Mean output drop per model x region, and the paired difference outside - findings
    (``region = "outside - findings"``), each with a case-bootstrap interval."""
    tidy = per_image.rename(columns={"region": "metric", "drop": "value"})
    frames = [tidy[["model", "split", "metric", "case_id", "image_id", "value"]]]
    wide = per_image.pivot_table(index=["model", "split", "case_id", "image_id"],
                                 columns="region", values="drop").reset_index()
    if {"findings", "outside"} <= set(wide.columns):
        frames.append(wide.assign(metric="outside - findings",
                                  value=wide["outside"] - wide["findings"])[
            ["model", "split", "metric", "case_id", "image_id", "value"]])
    out = summarize(pd.concat(frames, ignore_index=True), by=["model", "split", "metric"],
                    method=cfg.ci_method, **boot)
    return out.rename(columns={"metric": "region"})
