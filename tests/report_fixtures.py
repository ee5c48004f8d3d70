"""A small synthetic run directory for the report tests (no model, no JAX, < 1 s).

Tables follow the schemas in ``benchmark.store``; numbers are made up but shaped like
the demo: the ``clean`` model agrees best with the experts, ``shortcut`` worst, and the
shortcut model's AUROC collapses on the ``shifted`` split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.dataset import Dataset
from benchmark.human import human_scores
from benchmark.stats import compare, friedman, summarize
from benchmark.store import (
    CLASSIFICATION,
    CLASSIFICATION_COLUMNS,
    COMPARISONS,
    CONFIG,
    HUMAN,
    MAPS,
    OMNIBUS,
    PREDICTIONS,
    PREDICTIONS_COLUMNS,
    PROVENANCE,
    SCORES,
    SCORES_COLUMNS,
    SUMMARY,
    SUMMARY_COLUMNS,
    Run,
    save_maps,
    write_json,
    write_table,
    write_yaml,
)

MODELS = ["clean", "partial", "shortcut"]
METHODS = [
    "saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradcam",
    "occlusion", "random", "center_prior",
]
SPLITS = ["test", "shifted"]
METRICS = ["irrelevant_fraction@top15", "iou@top15", "mass_accuracy"]
REFERENCES = ["consensus", "graded"]
N_CASES, PER_CASE, SIDE = 6, 2, 64
N_BOOT, SEED = 2000, 1234

# How far each model's maps sit from the findings (0 = on them): drives the fake scores.
_OFFSET = {"clean": 0.0, "partial": 0.15, "shortcut": 0.3}


def make_dataset(name: str = "pmct-phantom", seed: int = SEED) -> Dataset:
    """Phantom-like CT slices (HU) with three annotators marking a dependent opacity."""
    rng = np.random.default_rng(seed)
    rows, images, masks = [], [], []
    yy, xx = np.mgrid[:SIDE, :SIDE]
    body = ((yy - 34) / 26) ** 2 + ((xx - 32) / 29) ** 2 <= 1
    lungs = (((yy - 30) / 16) ** 2 + ((xx - 20) / 8) ** 2 <= 1) | (
        ((yy - 30) / 16) ** 2 + ((xx - 44) / 8) ** 2 <= 1)
    for split in SPLITS:
        for c in range(N_CASES):
            label = int(c % 2 == 0)
            for k in range(PER_CASE):
                img = np.full((SIDE, SIDE), -1000.0, np.float32)
                img[body] = 40
                img[lungs] = -850
                finding = lungs & (yy > 36 + k)  # dependent (posterior) opacity
                if label:
                    img[finding] = -350
                img += rng.normal(0, 25, img.shape).astype(np.float32)
                ann = np.zeros((3, SIDE, SIDE), bool)
                if label:
                    for a in range(3):
                        ann[a] = finding & (yy > 36 + k + a)  # annotators disagree at edges
                rows.append({"case_id": f"{split}-c{c}", "image_id": f"{split}-c{c}-i{k}",
                             "split": split, "label": label})
                images.append(img)
                masks.append(ann)
    return Dataset(name=name, index=pd.DataFrame(rows), image_array=np.stack(images),
                   masks=np.stack(masks), annotators=["a1", "a2", "a3"])


def _maps_for(dataset: Dataset, model: str, method: str, rng: np.random.Generator) -> np.ndarray:
    side = 16 if method == "gradcam" else SIDE  # Grad-CAM is coarser than the image
    graded = dataset.reference(np.arange(len(dataset.index)), "graded")
    yy, xx = np.mgrid[:SIDE, :SIDE]
    couch = np.exp(-((yy - 60) ** 2) / 20.0)  # the confounder a shortcut model looks at
    w = _OFFSET[model] / 0.3
    maps = (1 - w) * graded + w * couch + 0.2 * rng.random(graded.shape)
    if method == "random":
        maps = rng.random(graded.shape)
    if method == "center_prior":
        maps = np.broadcast_to(np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / 300.0), graded.shape)
    step = SIDE // side
    return np.asarray(maps[:, ::step, ::step], dtype=np.float32)


def make_run(
    root: Path, *, models: list[str] | None = None, dataset_name: str = "pmct-phantom"
) -> tuple[Run, Dataset]:
    """Write a complete run directory under ``root`` and return it with its dataset."""
    models = models or MODELS
    offsets = {m: _OFFSET.get(m, 0.3) for m in models}
    rng = np.random.default_rng(SEED)
    dataset = make_dataset(dataset_name)
    index = dataset.index
    root = Path(root)

    scores, preds = [], []
    for model in models:
        for split in SPLITS:
            sub = index[index["split"] == split]
            for rec in sub.to_dict("records"):
                shift = split == "shifted" and model == "shortcut"
                p = float(np.clip(rec["label"] * 0.8 + 0.1 + rng.normal(0, 0.05)
                                  - (0.5 if shift else 0.0), 0, 1))
                preds.append([model, split, rec["case_id"], rec["image_id"], rec["label"], p])
                for method in METHODS:
                    base = 0.9 if method in ("random", "center_prior") else 0.45
                    for ref in REFERENCES:
                        for metric in METRICS:
                            v = base + offsets[model] + rng.normal(0, 0.05)
                            v = float(np.clip(v, 0, 1))
                            if not metric.startswith("irrelevant"):
                                v = 1 - v
                            if not rec["label"] and ref == "consensus":
                                v = np.nan  # empty reference: undefined (METRICS.md)
                            scores.append([model, split, method, rec["case_id"],
                                           rec["image_id"], ref, metric, float(v)])
    scores_df = pd.DataFrame(scores, columns=SCORES_COLUMNS)
    write_table(scores_df, root / SCORES)
    write_table(pd.DataFrame(preds, columns=PREDICTIONS_COLUMNS), root / PREDICTIONS)
    write_table(_summary(scores_df), root / SUMMARY)
    write_table(_classification(models), root / CLASSIFICATION)
    # The statistics tables come from the real functions on the fake scores.
    comparisons = pd.concat([compare(scores_df, family=f, n_boot=500, seed=SEED).table
                             for f in ("methods", "models")], ignore_index=True)
    write_table(comparisons, root / COMPARISONS)
    write_table(friedman(scores_df, lower_is_better=lambda m: m.startswith("irrelevant")),
                root / OMNIBUS)
    human = human_scores(dataset, np.flatnonzero(index["label"].to_numpy() == 1),
                         REFERENCES, METRICS, [])
    write_table(summarize(human, by=["split", "annotator", "reference", "metric"],
                          n_boot=500, seed=SEED), root / HUMAN)

    keys = {}
    for model in models:
        for method in METHODS:
            key = f"{model}-{method}-key"
            save_maps(root, key, index["image_id"].to_numpy(),
                      _maps_for(dataset, model if model in _OFFSET else "shortcut", method, rng))
            keys[f"{model}/{method}"] = key
    write_json(keys, root / MAPS / "index.json")

    write_yaml({
        "dataset": dataset_name, "models": models, "methods": METHODS, "metrics": METRICS,
        "references": REFERENCES, "splits": SPLITS, "n_boot": N_BOOT, "level": 0.95,
        "ci_method": "bca", "weighting": "case", "seed": SEED, "sign": "positive",
        "explain": "all images", "headline_metric": METRICS[0],
        "headline_reference": "consensus",
    }, root / CONFIG)
    write_json({
        "versions": {"python": "3.11.9", "torch": "2.13.0", "captum": "0.9.0",
                     "jax": "0.6.0", "saliency-bench": "0.1.0"},
        "checkpoints": {m: f"{i:02d}" + "ab" * 31 for i, m in enumerate(models)},
        "data_sha256": dataset.sha256, "seed": SEED, "git_revision": "0123abc",
        "started": "2025-11-26T10:00:00", "finished": "2025-11-26T10:05:00",
        "machine": "test-host (x86_64, 2 cores)", "run_id": "run-20251126-test",
    }, root / PROVENANCE)
    return Run.open(root), dataset


def _summary(scores: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "split", "method", "reference", "metric"]
    rows = []
    for key, group in scores.groupby(keys, sort=False):
        per_case = group.groupby("case_id")["value"].mean().dropna()
        est = float(per_case.mean()) if len(per_case) else np.nan
        ci_method = "percentile" if key[2] == "center_prior" else "bca"  # a stated fallback
        rows.append([*key, est, est - 0.05, est + 0.05, ci_method, len(per_case),
                     int(group["value"].notna().sum()), int(group["value"].isna().sum())])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _classification(models: list[str]) -> pd.DataFrame:
    rows = []
    for model in models:
        for split in SPLITS:
            auc = 0.58 if (model == "shortcut" and split == "shifted") else 0.97
            for level in ("image", "case"):
                for metric, est in (("auroc", auc), ("accuracy", auc - 0.05),
                                    ("sensitivity", auc - 0.03), ("specificity", auc - 0.07)):
                    rows.append([model, split, level, metric, est, est - 0.04,
                                 min(est + 0.03, 1.0),
                                 "bca" if metric == "auroc" else "wilson",
                                 N_CASES, N_CASES * PER_CASE])
    return pd.DataFrame(rows, columns=CLASSIFICATION_COLUMNS)
