"""Sentences generated from the numbers: the summary findings and the methods paragraph.

The methods paragraph states every setting STATISTICS.md requires a report to state
(B, seed, interval method, unit of resampling, weighting, threshold rule, sign handling,
reference definition, correction family) so it can be pasted into a paper as is.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from benchmark.methods import METHODS
from benchmark.report.context import ReportContext, lower_is_better, metric_base, records
from benchmark.report.diagnosis import RULE
from benchmark.report.escape import fmt_ci, is_missing, md, md_code
from benchmark.report.tables import headline_frame, image_auroc, not_above_baseline

HIGH_AUROC = 0.9  # "classifies well": the JIIM models had 0.94 to 0.98

# Bibliography keys (reports/references.bib) of the methods the report can cite.
#: Each explainer's citation (key in references.bib), from the registry.
CITATIONS = {name: info.citation for name, info in METHODS.items() if not info.is_baseline}
#: Where each metric's definition comes from (METRICS.md); keys in references.bib.
METRIC_CITATIONS = {
    "irrelevant_fraction": "zeng2024inconsistency",
    "precision": "zeng2024inconsistency",
    "iou": "saporta2022benchmarking",
    "dice": "saporta2022benchmarking",
    "pointing_game": "zhang2018topdown",
    "mass_accuracy": "arras2022clevr",
    "rank_accuracy": "arras2022clevr",
    "nss": "peters2005components",
    "auroc": "bylinskii2019metrics",
    "cc": "bylinskii2019metrics",
    "sim": "bylinskii2019metrics",
    "kl": "bylinskii2019metrics",
    "ssim": "wang2004ssim",
    "spearman_abs": "adebayo2018",
}
CAPTUM = "kokhlikyan2020captum"
_ADJUST_CITATION = {"bh": "benjamini1995controlling", "fdr_bh": "benjamini1995controlling"}
BCA = "efron1987better"
JIIM = "zeng2024inconsistency"

_SIGN = {
    "positive": "positive part of each map (S\u207a = max(S, 0))",
    "abs": "absolute value of each map",
    "signed": "signed maps as computed (mass ratios may leave [0, 1])",
}
_INTERVALS = {
    "bca": f"bias-corrected and accelerated (BCa) percentile intervals [@{BCA}], the "
           "acceleration from the delete-one-case jackknife, with the percentile interval "
           "as a stated fallback where BCa is undefined",
    "percentile": "percentile intervals",
}


def _pick(frame: pd.DataFrame, lower: bool) -> dict[str, Any] | None:
    frame = frame.dropna(subset=["estimate"])
    if frame.empty:
        return None
    pos = int(frame["estimate"].to_numpy(dtype=float).argmin() if lower
              else frame["estimate"].to_numpy(dtype=float).argmax())
    return records(frame.iloc[[pos]])[0]


def summary_sentences(
    ctx: ReportContext, summary: pd.DataFrame, classification: pd.DataFrame | None,
    comparisons: pd.DataFrame | None = None, human: pd.DataFrame | None = None,
) -> str:
    """A few sentences on the headline numbers (markdown)."""
    metric, lower = ctx.headline_metric, lower_is_better(ctx.headline_metric)
    head = headline_frame(ctx, summary)
    expl = head[~head["method"].isin(list(ctx.baselines))]
    word = "lowest" if lower else "highest"
    out: list[str] = []
    # The in-distribution split first: that is where a paper states its main result.
    primary = expl[expl["split"] == ctx.primary_split]
    best = _pick(primary if not primary.empty else expl, lower)
    if best is None:
        return (f"No explainer has a finite {md(metric)} against the "
                f"{md(ctx.headline_reference)} reference.\n")
    out.append(
        f"The {word} {md(metric)} against the {md(ctx.headline_reference)} reference is "
        f"{fmt_ci(best['estimate'], best['ci_low'], best['ci_high'], ctx.digits)}, for model "
        f"**{md(best['model'])}** explained by **{md(best['method'])}** on split "
        f"{md(best['split'])}."
    )
    out += _margin(ctx, best, primary, comparisons, lower)
    out += _human_sentence(ctx, human)
    out += _accurate_but_misaligned(ctx, expl, classification, lower)
    flagged = sorted(k for k in not_above_baseline(ctx, head) if k[1] == ctx.primary_split)
    if flagged:
        out.append(_baseline_sentence(ctx, head, flagged))
    return " ".join(out) + "\n"


def _baseline_sentence(ctx: ReportContext, head: pd.DataFrame,
                       flagged: list[tuple[str, str, str]]) -> str:
    """Which explainers fail to beat the best null baseline, per model (primary split)."""
    per_model: dict[str, list[str]] = {}
    for model, _, method in flagged:
        per_model.setdefault(model, []).append(method)
    parts = []
    for model in ctx.models:
        methods = per_model.get(model)
        if not methods:
            continue
        if set(methods) >= set(ctx.explainers):
            parts.append(f"{md(model)}: every explainer")
        else:
            parts.append(f"{md(model)}: {', '.join(md(m) for m in methods)}")
    best = ""
    if "best_baseline" in head.columns:
        names = sorted({str(b) for b in head["best_baseline"].dropna()})
        if len(names) == 1:
            best = f" ({md(names[0])})"
    return (f"On {md(ctx.primary_split)}, these explainers are not shown to beat the best "
            f"null baseline{best} (marked \u2020 in the table) — " + "; ".join(parts) + ".")


def _margin(ctx: ReportContext, best: dict[str, Any], explainers: pd.DataFrame,
            comparisons: pd.DataFrame | None, lower: bool) -> list[str]:
    """By how much the best explainer beats the runner-up of the same model (paired)."""
    if comparisons is None or comparisons.empty:
        return []
    same = explainers[(explainers["model"] == best["model"])
                      & (explainers["method"] != best["method"])]
    runner = _pick(same, lower)
    if runner is None:
        return []
    c = comparisons
    pair = c[(c["family"] == "methods") & (c["within"] == best["model"])
             & (c["split"] == best["split"]) & (c["metric"] == ctx.headline_metric)
             & (c["reference"] == ctx.headline_reference)
             & c["a"].isin([best["method"], runner["method"]])
             & c["b"].isin([best["method"], runner["method"]])]
    if pair.empty:
        return []
    r = records(pair)[0]
    sign = 1.0 if r["a"] == best["method"] else -1.0
    lo, hi = sorted((sign * float(r["ci_low"]), sign * float(r["ci_high"])))
    diff = sign * float(r["diff"])
    p_adj = r["p_adj"]
    p_text = "" if is_missing(p_adj) else f", adjusted p {_p_text(float(p_adj))}"
    return [f"The runner-up explainer of that model, {md(runner['method'])}, differs by "
            f"{fmt_ci(diff, lo, hi, ctx.digits)} (paired case bootstrap{p_text})."]


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _human_sentence(ctx: ReportContext, human: pd.DataFrame | None) -> list[str]:
    if human is None or human.empty or "annotator" not in human.columns:
        return []
    sel = human[(human["annotator"] == "all") & (human["split"] == ctx.primary_split)
                & (human["metric"] == ctx.headline_metric)
                & (human["reference"] == ctx.headline_reference)]
    if sel.empty or is_missing(sel["estimate"].iloc[0]):
        return []
    r = records(sel)[0]
    return [f"For scale, the annotators scored against the {md(ctx.headline_reference)} of "
            f"the others reach {fmt_ci(r['estimate'], r['ci_low'], r['ci_high'], ctx.digits)}"
            " (the human benchmark)."]


def _accurate_but_misaligned(
    ctx: ReportContext, expl: pd.DataFrame, classification: pd.DataFrame | None, lower: bool
) -> list[str]:
    """The model that classifies well but whose best explainer agrees worst."""
    auroc = image_auroc(classification)
    split = ctx.primary_split
    candidates = []
    for model in ctx.models:
        a = auroc.get((model, split))
        sub = expl[(expl["model"] == model) & (expl["split"] == split)]
        best = _pick(sub, lower)
        if a is None or best is None or is_missing(a["estimate"]):
            continue
        if float(a["estimate"]) >= HIGH_AUROC:
            candidates.append((model, a, best))
    if len(candidates) < 1 or len(ctx.models) < 2:
        return []
    # Worst agreement = the model whose *best* explainer is still the worst.
    model, a, best = (max if lower else min)(candidates, key=lambda c: c[2]["estimate"])
    out = [
        f"Model **{md(model)}** classifies well on {md(split)} (image-level AUROC "
        f"{fmt_ci(a['estimate'], a['ci_low'], a['ci_high'], ctx.digits)}), yet even its "
        f"best explainer ({md(best['method'])}) gives {md(ctx.headline_metric)} "
        f"{fmt_ci(best['estimate'], best['ci_low'], best['ci_high'], ctx.digits)}, the "
        "poorest agreement with the experts among the well-classifying models: a high "
        f"AUROC does not show that a model looks where the experts do [@{JIIM}]."
    ]
    for other in ctx.splits:
        b = auroc.get((model, other))
        if other != split and b is not None and not is_missing(b["estimate"]):
            out.append(
                f"On split {md(other)} its AUROC is "
                f"{fmt_ci(b['estimate'], b['ci_low'], b['ci_high'], ctx.digits)}."
            )
    return out


def _describe_threshold(metric: str) -> str:
    spec = metric.split("@", 1)[1] if "@" in metric else ""
    if spec.startswith("top"):
        return (f"{md_code(spec)} = the {md(spec[3:])} % highest-valued pixels of the min-max "
                "normalised map, ties broken by a seeded jitter so the region size is exact")
    if spec == "otsu":
        return "`otsu` = Otsu's threshold on a 256-bin histogram of the normalised map"
    if spec == "tuned":
        return ("`tuned` = threshold chosen per model and method to maximise mean IoU on the "
                "validation split, then frozen")
    return f"{md_code(spec)} = fixed threshold on the min-max normalised map"


def methods_paragraph(ctx: ReportContext) -> str:
    """The methods text with every setting of the run, and citations."""
    cfg = ctx.config
    n_boot = cfg.get("n_boot", 10_000)
    seed = cfg.get("seed", ctx.provenance.get("seed", "unrecorded"))
    level = cfg.get("level", 0.95)
    level_text = f"{float(level) * 100:g} %" if _is_fraction(level) else md(level)
    weighting = str(cfg.get("weighting") or "case")
    sign = str(cfg.get("sign") or "positive")
    explain = cfg.get("explain", "all images of the evaluated splits")
    ci = ctx.ci_method

    methods = []
    for m in ctx.explainers:
        key = CITATIONS.get(m)
        methods.append(f"{md(m)} [@{key}]" if key else md(m))
    baselines = [md(m) for m in ctx.methods if ctx.is_baseline(m)]
    thresholds = sorted({m.split("@", 1)[1] for m in ctx.metrics if "@" in m})
    threshold_text = "; ".join(
        _describe_threshold(f"x@{t}") for t in thresholds) or "no thresholded metrics"
    estimand = (
        "the mean over cases of the per-case mean image score"
        if weighting == "case"
        else "the pooled mean over images (a ratio estimator, still resampled by case)"
    )
    paragraphs = [
        f"Saliency maps were computed for {len(ctx.models)} model(s) "
        f"({', '.join(md(m) for m in ctx.models)}) with {', '.join(methods) or 'no explainer'}"
        f", implemented with Captum [@{CAPTUM}]"
        + (f"; {', '.join(baselines)} are null baselines that use no information from the "
           "model and give each metric a floor" if baselines else "")
        + f". Explained images: {md(explain)}. Each map was resized to the reference grid "
        f"(bilinear) and reduced to the {_SIGN.get(sign, md(sign))} (sign handling "
        f"{md_code(sign)}).",
        f"Maps were scored against expert annotations of dataset {md(ctx.dataset_name)} on "
        f"split(s) {', '.join(md(s) for s in ctx.splits)}. References: "
        f"{', '.join(md(r) for r in ctx.references)}; `consensus` = pixels marked by at least "
        "half of the annotators, `graded` = the mean of the annotator masks (share of "
        f"annotators). Metrics: {_cited_metrics(ctx.metrics)}. Threshold rules: "
        f"{threshold_text}. The headline figure is {md(ctx.headline_metric)} against "
        f"{md(ctx.headline_reference)}"
        + (f", the share of the attention region outside the annotated findings [@{JIIM}]"
           if metric_base(ctx.headline_metric) == "irrelevant_fraction" else "")
        + ". Region of interest: "
        + ("every metric was restricted to the dataset's region of interest (body mask)"
           if cfg.get("roi") else "none (metrics over the whole image)")
        + ".",
        f"Uncertainty: the resampling unit is the case (all images of a drawn case are "
        f"kept, because slices of one case are not independent); B = {md(n_boot)} bootstrap "
        f"replicates drawn once from a generator seeded with {md(seed)} and shared by every "
        f"model, method and metric, so differences are paired. Estimand ({md_code(weighting)} "
        f"weighting): {estimand}. Intervals: {level_text}, "
        f"{_INTERVALS.get(ci, md(ci) + ' intervals')}. Images with an undefined metric "
        "(NaN) are dropped before aggregation and counted per cell. Classification: image- "
        "and case-level AUROC with case-bootstrap intervals; accuracy, sensitivity and "
        "specificity with Wilson intervals [@wilson1927probable].",
    ]
    adjust = cfg.get("adjust") or cfg.get("correction") or "Holm"
    paragraphs.append(
        "Pairwise comparisons (methods within a model, models within a method; "
        "`comparisons.parquet`): difference of the estimates with a paired case-bootstrap "
        "interval on the same draws, a two-sided paired sign-flip permutation test on "
        "case-level differences (exact when 2^n is small, else 10,000 flips), the Wilcoxon "
        "signed-rank test (zsplit) as a second opinion and the matched-pairs rank-biserial "
        f"effect size [@kerby2014simple]; p-values are adjusted with {md(adjust)} "
        f"[@{_ADJUST_CITATION.get(str(adjust).lower(), 'holm1979simple')}] "
        "within each family (one family per split, reference, metric and comparison kind)."
    )
    paragraphs.append(
        "Floors, ceilings and checks. "
        + ("`average_mask` is the mean consensus mask over the positive images of the "
           "training split, the same map for every image: how much agreement a location "
           "prior alone gives. " if "average_mask" in ctx.methods else "")
        + "An explainer is flagged (†) when the paired case-bootstrap interval of its "
        "difference from the best null baseline of the same model, split, reference and "
        "metric does not lie entirely on the better side of zero. Human benchmark: each "
        "annotator's mask is scored, with the same metrics and bootstrap, against the "
        "reference built from the other annotators only, and the pooled band (mean over "
        "annotators per image) is drawn beside the explainers. Many methods at once: "
        "Friedman test with cases as blocks on per-case means, mean ranks and the Nemenyi "
        "critical difference [@demsar2006statistical]. Sensitivity analysis: a linear mixed "
        "model (statsmodels MixedLM, REML) of the image scores with the method as fixed "
        "effect and a random intercept per case, contrasts against `random`, Wald "
        "intervals. Confidence and agreement: Spearman correlation over cases between "
        "the per-case mean probability and the per-case mean metric, with a percentile "
        "case-bootstrap interval on the same draws."
    )
    checks = _checks_paragraph(cfg)
    if checks:
        paragraphs.append(checks)
    return "\n\n".join(paragraphs) + "\n"


def _checks_paragraph(cfg: dict[str, Any]) -> str:
    """How the model-or-explainer checks were run, and the rule that reads them."""
    if not (cfg.get("sanity") or cfg.get("faithfulness")):
        return ""
    n = md(cfg.get("check_images", "unrecorded"))
    parts = [f"Model or explainer? On a seeded sample of at most {n} positive images of "
             "the first evaluated split"]
    if cfg.get("sanity"):
        parts.append(
            "; cascading model-parameter randomisation [@adebayo2018]: the layers that "
            "hold parameters are re-initialised from the output backwards, one more at each "
            "step, the maps recomputed, and their similarity (SSIM and |Spearman|) to the "
            "original maps recorded; a method passes when the upper end of the last step's "
            "percentile case-bootstrap interval lies below the similarity of maps of random "
            "pairs of different images [@arun2021assessing]")
    if cfg.get("faithfulness"):
        parts.append(
            f"; deletion and insertion curves [@petsiuk2018rise] in "
            f"{md(cfg.get('deletion_steps', 16))} steps, pixels in the map's order (ties "
            "in a seeded random order) against a random order, removed pixels taken from "
            f"the image's {md(cfg.get('faithfulness_baseline', 'mean'))} "
            f"(output: {md(cfg.get('faithfulness_output', 'logit'))}, which unlike the "
            "probability does not saturate for confident models); and the model's output "
            "drop when the annotated findings, or everything outside the region of "
            "interest, are replaced by the dataset's `deletion_fill`")
    return "".join(parts) + ". " + RULE



def _cited_metrics(metrics: list[str]) -> str:
    """Metric names, each with the citation of its definition where there is one."""
    out = []
    for m in metrics:
        key = METRIC_CITATIONS.get(metric_base(m))
        out.append(f"{md(m)} [@{key}]" if key else md(m))
    return ", ".join(out)


def _is_fraction(value: Any) -> bool:
    try:
        return 0 < float(value) < 1
    except (TypeError, ValueError):
        return False
