"""The case gallery (after figure 2 of the JIIM 2024 drowning study).

For each model, a few positive cases chosen by the headline metric of one method (the
best, median and worst case), one representative image each, drawn as a row:

    CT (grey, fixed HU window) | saliency map | graded importance | attention region
    (top 15 %) filled, consensus outlined

Drawn with matplotlib into one PNG per model, embedded base64. Why not plotly heatmaps:
a 64x64 float heatmap is ~4,096 numbers of JSON per panel (x 12 panels x models) and
outlines/filled regions need extra traces, while a PNG of a whole row block is a few tens
of kB, looks the same in every browser and in print (a supplement is often printed to
PDF), and needs no JavaScript. Zoom is not needed for 4 panels of small images.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from benchmark.data.dataset import Dataset
from benchmark.report.context import ReportContext, lower_is_better
from benchmark.report.escape import html_text, md, mpl_text, raw_html_block
from benchmark.store import Run

HU_WINDOW = (-1000.0, 400.0)  # lung + soft tissue: both the GGO and the couch stay visible
HU_TICKS = (-1000, 0, 400)
SALIENCY_CMAP = "inferno"
GRADED_CMAP = "viridis"
ATTENTION_RGB = (0.902, 0.624, 0.0)  # Okabe-Ito orange
CONSENSUS_COLOUR = "#56B4E9"  # Okabe-Ito sky blue: distinct from orange for all CVD types
DEFAULT_TOP = 15.0
DPI = 96


@dataclass(frozen=True)
class GalleryCase:
    """One gallery row: a case, its representative image and the case's metric value."""

    rank: str
    case_id: str
    image_id: str
    value: float


def select_cases(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    model: str,
    split: str,
    method: str,
    metric: str,
    reference: str,
    available: set[str],
) -> list[GalleryCase]:
    """Best, median and worst positive case by the case mean of ``metric``.

    ``labels`` has columns ``image_id, case_id, label``; only images with a label of 1
    and a cached map (``available``) count. The representative image of a case is the
    one whose value is closest to the case mean (first on ties), so the row shows a
    typical slice rather than the extreme one.
    """
    sel = (
        (scores["model"] == model)
        & (scores["split"] == split)
        & (scores["method"] == method)
        & (scores["metric"] == metric)
        & (scores["reference"] == reference)
    )
    s = scores.loc[sel, ["image_id", "value"]].copy()
    s["image_id"] = s["image_id"].astype(str)
    s = s[np.isfinite(s["value"].to_numpy(dtype=float)) & s["image_id"].isin(available)]
    lab = labels.assign(image_id=labels["image_id"].astype(str), case_id=labels["case_id"]
                        .astype(str))
    s = s.merge(lab[lab["label"] == 1][["image_id", "case_id"]], on="image_id")
    if s.empty:
        return []
    case_mean = s.groupby("case_id", sort=True)["value"].mean()
    order = case_mean.sort_values(ascending=lower_is_better(metric), kind="stable")
    picks = {"best": 0, "median": (len(order) - 1) // 2, "worst": len(order) - 1}
    out: list[GalleryCase] = []
    seen: set[str] = set()
    for rank, pos in picks.items():
        case_id = str(order.index[pos])
        if case_id in seen:
            continue
        seen.add(case_id)
        mean = float(order.iloc[pos])
        imgs = s[s["case_id"] == case_id]
        closest = (imgs["value"] - mean).abs().to_numpy().argmin()
        out.append(GalleryCase(rank, case_id, str(imgs["image_id"].iloc[closest]), mean))
    return out


def resize_bilinear(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear (multilinear) resize with half-pixel centres, as the metric stage does.

    METRICS.md: saliency is resized to the reference grid before any metric, so the
    display shows the map the metrics saw.
    """
    out = np.asarray(a, dtype=np.float32)
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (x - lo).astype(np.float32)
        bshape = [1] * out.ndim
        bshape[axis] = n_out
        w = w.reshape(bshape)
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
    return out


def normalise(s: np.ndarray, sign: str) -> np.ndarray:
    """Sign handling (METRICS.md: positive, abs, signed), then min-max to [0, 1]."""
    if sign == "abs":
        s = np.abs(s)
    elif sign != "signed":
        s = np.maximum(s, 0)
    lo, hi = float(np.min(s)), float(np.max(s))
    if not hi > lo:
        return np.zeros_like(s, dtype=np.float32)
    return ((s - lo) / (hi - lo)).astype(np.float32)


def attention_region(s_norm: np.ndarray, metric: str) -> tuple[np.ndarray, str]:
    """The attention region of the metric's threshold rule, and a label for it.

    ``topQ``: the Q % highest pixels (exactly ceil(Q% of N); ties by position here,
    by seeded jitter in the metric kernels); a number: ``S >= tau``. Rules that need
    more than the map (``otsu``, ``tuned``) fall back to top 15 % for display.
    """
    spec = metric.split("@", 1)[1] if "@" in metric else ""
    flat = s_norm.ravel()
    if spec.startswith("top"):
        try:
            q = float(spec[3:])
        except ValueError:
            q = DEFAULT_TOP
        label = f"top {q:g} %"
    else:
        try:
            tau = float(spec)
        except ValueError:
            q, label = DEFAULT_TOP, f"top {DEFAULT_TOP:g} % (display rule)"
        else:
            return s_norm >= tau, f"S \u2265 {tau:g}"
    k = max(1, math.ceil(q / 100 * flat.size))
    region = np.zeros(flat.size, dtype=bool)
    region[np.argsort(-flat, kind="stable")[:k]] = True
    return region.reshape(s_norm.shape), label


def _slice2d(*arrays: np.ndarray, guide: np.ndarray) -> list[np.ndarray]:
    """2-D views: 3-D volumes show the slice (axis 0) with the most consensus."""
    if guide.ndim == 2:
        return list(arrays)
    k = int(np.argmax(guide.reshape(guide.shape[0], -1).sum(axis=1)))
    return [a[k] for a in arrays]


def render_model_png(
    rows: list[dict[str, Any]], *, model: str, method: str, metric: str, region_label: str
) -> bytes:
    """One PNG: a row per case (CT | saliency | graded | attention vs consensus)."""
    n = len(rows)
    # Fixed layout (no constrained layout): it is several times faster and the panel
    # geometry never changes. Heights in inches: title, n rows of panels, colourbars.
    height = 0.65 + 2.15 * n + 0.75
    fig = Figure(figsize=(9.6, height), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        n + 1, 4, height_ratios=[1.0] * n + [0.06], left=0.05, right=0.98,
        top=1 - 0.65 / height, bottom=0.45 / height, wspace=0.06, hspace=0.28,
    )
    axes = np.array([[fig.add_subplot(grid[i, j]) for j in range(4)] for i in range(n)])
    handles = {}
    for i, row in enumerate(rows):
        ct, sal, graded, cons, att = row["ct"], row["saliency"], row["graded"], row["consensus"], \
            row["attention"]
        ax = axes[i]
        handles["ct"] = ax[0].imshow(ct, cmap="gray", vmin=HU_WINDOW[0], vmax=HU_WINDOW[1],
                                     interpolation="nearest")
        handles["sal"] = ax[1].imshow(sal, cmap=SALIENCY_CMAP, vmin=0, vmax=1,
                                      interpolation="nearest")
        handles["graded"] = ax[2].imshow(graded, cmap=GRADED_CMAP, vmin=0, vmax=1,
                                         interpolation="nearest")
        ax[3].imshow(ct, cmap="gray", vmin=HU_WINDOW[0], vmax=HU_WINDOW[1],
                     interpolation="nearest")
        overlay = np.zeros((*att.shape, 4), dtype=np.float32)
        overlay[att] = (*ATTENTION_RGB, 0.6)
        ax[3].imshow(overlay, interpolation="nearest")
        if cons.any() and not cons.all():
            ax[3].contour(cons.astype(float), levels=[0.5], colors=CONSENSUS_COLOUR,
                          linewidths=1.4)
        ax[0].set_title(mpl_text(f"CT, image {row['image_id']}"), fontsize=8)
        ax[1].set_title(mpl_text(f"{method}"), fontsize=8)
        ax[2].set_title("graded importance", fontsize=8)
        ax[3].set_title(mpl_text(f"{metric} = {row['value']:.2f}"), fontsize=8,
                        fontweight="bold")
        ax[0].set_ylabel(mpl_text(f"{row['rank']}\ncase {row['case_id']}"), fontsize=9)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    for j, (key, label) in enumerate(
        [("ct", "HU"), ("sal", "saliency (min-max)"), ("graded", "share of annotators")]
    ):
        cax = fig.add_subplot(grid[n, j])
        box = cax.get_position()  # narrower than the panel, so end labels do not collide
        cax.set_position((box.x0 + 0.1 * box.width, box.y0, 0.8 * box.width, box.height))
        cbar = fig.colorbar(handles[key], cax=cax, orientation="horizontal")
        cbar.set_ticks(list(HU_TICKS) if key == "ct" else [0, 0.5, 1])
        cbar.set_label(label, fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    legend_ax = fig.add_subplot(grid[n, 3])
    legend_ax.axis("off")
    legend_ax.legend(
        handles=[Patch(color=(*ATTENTION_RGB, 0.6), label=f"attention ({region_label})"),
                 Patch(facecolor="none", edgecolor=CONSENSUS_COLOUR, linewidth=1.4,
                       label="consensus")],
        loc="center", fontsize=7, frameon=False, ncols=1,
    )
    fig.suptitle(mpl_text(f"model {model}"), fontsize=11, y=1 - 0.1 / height, va="top")
    buf = io.BytesIO()
    # No "Software" chunk: the PNG bytes then depend only on the data (reproducible).
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _model_rows(
    run: Run, dataset: Dataset, ctx: ReportContext, model: str, labels: pd.DataFrame
) -> tuple[list[dict[str, Any]], str]:
    """Rows (arrays + titles) of one model, and the attention-region label."""
    ids, maps = run.maps(model, ctx.gallery_method)
    ids = np.asarray(ids).astype(str)
    position = {image_id: i for i, image_id in enumerate(ids)}
    cases = select_cases(
        run.scores, labels, model=model, split=ctx.primary_split, method=ctx.gallery_method,
        metric=ctx.headline_metric, reference=ctx.headline_reference, available=set(ids),
    )
    sign = str(ctx.config.get("sign") or "positive")
    rows, region_label = [], ""
    for case in cases:
        idx = dataset.positions([case.image_id])
        ct = dataset.images(idx)[0]
        graded = dataset.reference(idx, "graded")[0]
        cons = dataset.reference(idx, "consensus")[0] > 0.5
        sal = normalise(resize_bilinear(maps[position[case.image_id]], ct.shape), sign)
        att, region_label = attention_region(sal, ctx.headline_metric)
        ct, sal, graded, cons, att = _slice2d(ct, sal, graded, cons, att, guide=cons)
        rows.append({"ct": ct, "saliency": sal, "graded": graded, "consensus": cons,
                     "attention": att, "rank": case.rank, "case_id": case.case_id,
                     "image_id": case.image_id, "value": case.value})
    return rows, region_label


def gallery_section(run: Run, dataset: Dataset | None, ctx: ReportContext) -> str:
    """Markdown body of the gallery section (images as base64 PNG in raw HTML)."""
    if dataset is None:
        return _callout(
            "The gallery needs the images and annotations: pass the dataset to "
            "`build_report(run, dataset)` (or run `bench report` where the data is "
            "available) to draw it."
        )
    labels = dataset.index[["image_id", "case_id", "label"]]
    parts = [
        f"Positive cases of split {md(ctx.primary_split)}, chosen by the case mean of "
        f"{md(ctx.headline_metric)} against the {md(ctx.headline_reference)} reference for "
        f"{md(ctx.gallery_method)} maps: the best, the median and the worst case, one "
        "representative image each (the image closest to the case mean). Columns: CT "
        f"(window {HU_WINDOW[0]:g} to {HU_WINDOW[1]:g} HU), the saliency map resized to "
        "the image and min-max normalised, the graded importance (share of annotators "
        "marking the pixel), and the attention region used by the metric (filled) with "
        "the consensus outline. Colour scales are fixed across rows and models.\n\n"
    ]
    for model in ctx.models:
        try:
            rows, region_label = _model_rows(run, dataset, ctx, model, labels)
        except KeyError as err:
            parts.append(_callout(f"No gallery for model {md(model)}: {md(err)}."))
            continue
        if not rows:
            parts.append(_callout(
                f"No gallery for model {md(model)}: no positive case with a finite "
                f"{md(ctx.headline_metric)} in split {md(ctx.primary_split)}."))
            continue
        png = render_model_png(rows, model=model, method=ctx.gallery_method,
                               metric=ctx.headline_metric, region_label=region_label)
        alt = (f"Gallery for model {model}: {ctx.gallery_method} saliency, graded importance "
               f"and attention region for {len(rows)} cases")
        caption = ", ".join(f"{r['rank']}: case {r['case_id']} ({r['value']:.2f})" for r in rows)
        parts.append(f"### Model {md(model)}\n\n")
        parts.append(raw_html_block(
            f'<figure class="gallery"><img alt="{html_text(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
            f"<figcaption>{html_text(ctx.headline_metric)} per case \u2014 "
            f"{html_text(caption)}</figcaption></figure>"
        ))
        parts.append("\n")
    return "".join(parts)


def _callout(text: str, kind: str = "note") -> str:
    return f"::: {{.callout-{kind}}}\n{text}\n:::\n\n"
