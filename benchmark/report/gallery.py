"""The case gallery (after figure 2 of the JIIM 2024 drowning study).

Two blocks, both on positive cases of the primary split and the headline metric against
the headline reference:

* per method (every explainer of the run; null baselines explain nothing and are left
  out) and model: the best, the median and the worst case by the case mean, one
  representative image each;
* the cases where the models disagree most: the largest range across models of the case
  mean for the gallery method, one image, every model a row.

A row is

    CT (grey, fixed HU window) | saliency map | graded importance | attention region
    (filled) vs consensus (outlined), with the metric values in the title

Drawn with matplotlib into one PNG per figure, embedded base64. Why not plotly heatmaps:
a 64x64 float heatmap is ~4,096 numbers of JSON per panel and outlines/filled regions
need extra traces, while a PNG of a whole row block is a few tens of kB, looks the same
in every browser and in print, and needs no JavaScript. The method blocks are HTML
``<details>`` elements (no JavaScript either): only the gallery method's is open, so the
page stays short while every method is one click away.

Colour scales are fixed, so colours mean the same in every panel: CT on one HU window,
saliency min-max normalised per map (the metrics' convention) on [0, 1], graded importance
on [0, 1]; inferno, viridis and the Okabe-Ito orange / sky blue pair are colourblind-safe.

3D volumes ``(D, H, W)`` are shown by one axial slice (axis 0), the one where the
consensus mask has the largest area (:func:`axial_slice`); captions and row titles say
which ("slice z = k of D", k counted from 0). Everything is computed on the whole volume
first, as the metrics do (resizing, min-max normalisation, the top-K attention region),
and only then sliced: the slice shows exactly the voxels the metric counted, on the same
colour scales as 2D images, and a dark slice means the map peaks elsewhere in the volume.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from benchmark.data.dataset import Dataset
from benchmark.errors import BenchError
from benchmark.metrics import tiebreak_keys, topk_count
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
GAP = 0.12  # white space between panels, as a share of the panel width
N_DISAGREE = 3  # cases in the "models disagree most" block


@dataclass(frozen=True)
class GalleryCase:
    """One gallery row: a case, its representative image and the case's metric value."""

    rank: str
    case_id: str
    image_id: str
    value: float
    image_value: float = math.nan  # the shown image's own value


@dataclass(frozen=True)
class DisagreementCase:
    """A case the models score most differently, and the image shown for it.

    ``spread`` is max - min over models of the case mean; ``case_means`` and
    ``image_values`` hold ``(model, value)`` pairs in model order.
    """

    case_id: str
    image_id: str
    spread: float
    case_means: tuple[tuple[str, float], ...]
    image_values: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class _Row:
    """Arrays (2-D, ``(H, W)``) and texts of one drawn row.

    ``z`` and ``depth``: the axial slice shown and the volume's number of slices, for 3D
    images (None for 2D ones). ``pixel_aspect``: height / width of one pixel in mm, so
    the panels keep the anatomy's proportions.
    """

    ct: np.ndarray
    saliency: np.ndarray
    graded: np.ndarray
    consensus: np.ndarray
    attention: np.ndarray
    label: str  # left of the row
    image_title: str
    saliency_title: str
    metric_title: str
    z: int | None = None
    depth: int | None = None
    pixel_aspect: float = 1.0

    @property
    def slice_text(self) -> str:
        """``"slice z = k of D"`` for a slice of a volume, ``""`` for a 2D image."""
        return "" if self.z is None else f"slice z = {self.z} of {self.depth}"


def positive_values(
    scores: pd.DataFrame, labels: pd.DataFrame, *, model: str, split: str, method: str,
    metric: str, reference: str, available: set[str],
) -> pd.DataFrame:
    """``image_id, case_id, value`` of one cell: finite values of positive images.

    ``labels`` has columns ``image_id, case_id, label``; only images with a label of 1
    and a cached map (``available``) count.
    """
    sel = (
        (scores["model"] == model)
        & (scores["split"] == split)
        & (scores["method"] == method)
        & (scores["metric"] == metric)
        & (scores["reference"] == reference)
    )
    s = scores.loc[sel, ["image_id", "value"]]
    s = s.assign(image_id=s["image_id"].astype(str))
    s = s[np.isfinite(s["value"].to_numpy(dtype=float)) & s["image_id"].isin(available)]
    pos = labels[labels["label"] == 1]
    pos = pd.DataFrame({"image_id": pos["image_id"].astype(str),
                        "case_id": pos["case_id"].astype(str)})
    return s.merge(pos, on="image_id")


def select_cases(
    scores: pd.DataFrame, labels: pd.DataFrame, *, model: str, split: str, method: str,
    metric: str, reference: str, available: set[str],
) -> list[GalleryCase]:
    """Best, median and worst positive case by the case mean of ``metric``.

    Cases as in :func:`positive_values`. The representative image of a case is the one
    whose value is closest to the case mean (first on ties), so the row shows a typical
    slice rather than the extreme one.
    """
    s = positive_values(scores, labels, model=model, split=split, method=method,
                        metric=metric, reference=reference, available=available)
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
        closest = int((imgs["value"] - mean).abs().to_numpy().argmin())
        out.append(GalleryCase(rank, case_id, str(imgs["image_id"].iloc[closest]), mean,
                               float(imgs["value"].iloc[closest])))
    return out


def select_disagreement(
    scores: pd.DataFrame, labels: pd.DataFrame, *, models: list[str], split: str,
    method: str, metric: str, reference: str, available: Mapping[str, set[str]],
    n: int = N_DISAGREE,
) -> list[DisagreementCase]:
    """The ``n`` positive cases with the largest range across ``models`` of the case mean.

    A case counts when every model has a finite case mean (:func:`positive_values`) and
    at least one of its images is scored by every model; ties go to the smaller case id.
    The image shown is the case's image whose values range most across the models (the
    smallest image id on ties): where the disagreement is visible.
    """
    if len(models) < 2:
        return []
    values = {m: positive_values(scores, labels, model=m, split=split, method=method,
                                 metric=metric, reference=reference, available=available[m])
              for m in models}
    means = pd.DataFrame({m: v.groupby("case_id")["value"].mean()
                          for m, v in values.items()}, columns=models).dropna()
    per_image = pd.DataFrame({m: v.groupby("image_id")["value"].mean()
                              for m, v in values.items()}, columns=models).dropna()
    case_of = {str(i): str(c) for i, c in zip(labels["image_id"], labels["case_id"],
                                              strict=True)}
    image_case = pd.Series([case_of[str(i)] for i in per_image.index], index=per_image.index,
                           dtype=object)
    spread = (means.max(axis=1) - means.min(axis=1))
    spread = spread[spread.index.isin(set(image_case))]
    out: list[DisagreementCase] = []
    for case_id in sorted(spread.index, key=lambda c: (-spread[c], str(c)))[:n]:
        imgs = per_image[(image_case == case_id).to_numpy()].sort_index()
        image_id = str((imgs.max(axis=1) - imgs.min(axis=1)).idxmax())
        case_means, image_values = means.loc[case_id], imgs.loc[image_id]
        out.append(DisagreementCase(
            str(case_id), image_id, float(spread[case_id]),
            tuple((m, float(case_means[m])) for m in models),
            tuple((m, float(image_values[m])) for m in models),
        ))
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


def attention_region(s_norm: np.ndarray, metric: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """The attention region of the metric's threshold rule, and a label for it.

    ``topQ``: the top-K rule of the metric kernels (``topk_count`` pixels; ties broken
    by the run's seeded jitter ``tiebreak_keys(seed, P)``, then by position), so a map
    with ties shows the pixels the metric counted, not the first rows of the image; a
    number: ``S >= tau``. Rules that need more than the map (``otsu``, ``tuned``) fall
    back to top 15 % for display.
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
    order = np.lexsort((np.arange(flat.size), tiebreak_keys(seed, flat.size), -flat))
    region = np.zeros(flat.size, dtype=bool)
    region[order[:topk_count(q, flat.size)]] = True
    return region.reshape(s_norm.shape), label


def axial_slice(consensus: np.ndarray, graded: np.ndarray, saliency: np.ndarray) -> int:
    """The axial slice (index along axis 0) a gallery row shows for a ``(D, H, W)`` volume.

    The slice where the consensus mask has the largest area (voxel count), the first one
    on ties: where the findings are. A volume whose consensus is empty (possible when the
    headline reference is another one) falls back to the slice with the most graded
    importance, then to the slice holding the saliency peak (first voxel on ties).

    Parameters
    ----------
    consensus : ndarray (D, H, W), bool
    graded : ndarray (D, H, W), float in [0, 1]
    saliency : ndarray (D, H, W), float, on the same grid
    """
    for guide in (consensus, graded):
        area = guide.reshape(guide.shape[0], -1).sum(axis=1, dtype=np.float64)
        if area.max() > 0:
            return int(np.argmax(area))
    return int(np.unravel_index(int(np.argmax(saliency)), saliency.shape)[0])


def _slice2d(*arrays: np.ndarray, z: int | None) -> list[np.ndarray]:
    """2-D views ``(H, W)``: the arrays themselves for 2D images (``z`` None), slice
    ``z`` along axis 0 of 3D ones."""
    return list(arrays) if z is None else [a[z] for a in arrays]


def pixel_aspect(spacing: tuple[float, ...], ndim: int) -> float:
    """Height / width of one displayed pixel: row spacing / column spacing (mm).

    1 when the spacing does not describe the image (a default 2-tuple for a volume) or
    is not positive and finite.
    """
    if len(spacing) != ndim:
        return 1.0
    dy, dx = float(spacing[-2]), float(spacing[-1])
    if not (math.isfinite(dy) and math.isfinite(dx) and dy > 0 and dx > 0):
        return 1.0
    return dy / dx


def _panels(row: _Row) -> np.ndarray:
    """The row's four panels side by side as one RGB image, white gaps between them.

    Colours come from the same fixed scales as the colourbars (HU window, [0, 1]); the
    attention fill is orange at alpha 0.6 over the CT.
    """
    grey = colormaps["gray"](Normalize(*HU_WINDOW, clip=True)(row.ct))[..., :3]
    sal = colormaps[SALIENCY_CMAP](np.clip(row.saliency, 0, 1))[..., :3]
    graded = colormaps[GRADED_CMAP](np.clip(row.graded, 0, 1))[..., :3]
    over = grey.copy()
    over[row.attention] = 0.4 * over[row.attention] + 0.6 * np.asarray(ATTENTION_RGB)
    gap = np.ones((grey.shape[0], _gap(grey.shape[1]), 3))
    return np.concatenate([grey, gap, sal, gap, graded, gap, over], axis=1)


def _gap(width: int) -> int:
    return max(1, round(GAP * width))


#: Figure layout in inches: margins, the title band above each row, the colour-scale
#: footer, the width of every figure.
LEFT, RIGHT, TOP, TITLE_H, BOTTOM, WIDTH = 0.5, 0.18, 0.3, 0.4, 0.85, 9.6
_PANEL_W = (WIDTH - LEFT - RIGHT) / (4 + 3 * GAP)


def _rect(height: float, x: float, y_top: float, rw: float, rh: float
          ) -> tuple[float, float, float, float]:
    """Figure coordinates of a box given in inches from the top-left corner of a figure
    ``WIDTH`` x ``height`` inches."""
    return (x / WIDTH, 1 - (y_top + rh) / height, rw / WIDTH, rh / height)


def render_rows_png(rows: list[_Row], *, title: str, region_label: str) -> bytes:
    """One PNG: a row per entry (CT | saliency | graded | attention vs consensus).

    Each row is one image in one axes (four axes per row made drawing several times
    slower); the layout is fixed in inches, so every figure has the same width. Every
    row's arrays are ``(H, W)`` (a slice for volumes), the same for all rows; a panel is
    ``H * pixel_aspect / W`` times as high as it is wide. The colour scales below the rows
    are the same in every figure: drawn once (:func:`_footer`) and copied in.
    """
    h, w = rows[0].ct.shape
    gap = _gap(w)
    panel_h = _PANEL_W * h * rows[0].pixel_aspect / w
    height = TOP + len(rows) * (TITLE_H + panel_h) + BOTTOM
    fig = Figure(figsize=(WIDTH, height), dpi=DPI)
    for i, row in enumerate(rows):
        y = TOP + i * (TITLE_H + panel_h) + TITLE_H
        ax = fig.add_axes(_rect(height, LEFT, y, WIDTH - LEFT - RIGHT, panel_h))
        ax.imshow(_panels(row), interpolation="nearest", aspect="auto")
        # No axis at all: creating its ticks (even to hide them) and updating data limits
        # per patch cost more than drawing the row. The label sits where a y label would.
        ax.set_axis_off()
        ax.annotate(mpl_text(row.label), (0, 0.5), xycoords="axes fraction", xytext=(-4, 0),
                    textcoords="offset points", rotation=90, ha="right", va="center",
                    multialignment="center", fontsize=9)
        texts = [row.image_title, row.saliency_title, "graded importance", row.metric_title]
        for j, text in enumerate(texts):
            x0 = j * (w + gap)
            ax.add_artist(Rectangle((x0 - 0.5, -0.5), w, h, fill=False, linewidth=0.8))
            ax.annotate(mpl_text(text), (x0 + w / 2 - 0.5, -0.5), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8,
                        fontweight="bold" if j == 3 else "normal", annotation_clip=False)
        if row.consensus.any() and not row.consensus.all():
            ax.contour(np.arange(w) + 3 * (w + gap), np.arange(h),
                       row.consensus.astype(float), levels=[0.5], colors=CONSENSUS_COLOUR,
                       linewidths=1.4)
    fig.suptitle(mpl_text(title), fontsize=11, y=1 - 0.1 / height, va="top")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    # Pixel rows count from the bottom edge in both figures, at the same DPI, so the
    # footer lands on exactly the pixels it would have been drawn on here; only its drawn
    # (non-white) pixels are copied, on top, as the colour scales used to be drawn: a
    # long row label reaching into the band stays visible around them.
    footer = _footer(region_label)
    band = pixels[-footer.shape[0]:]
    drawn = (footer != 255).any(axis=-1)
    band[drawn] = footer[drawn]
    # RGB, not matplotlib's RGBA (the figure is opaque): ~8 % smaller. No "Software"
    # chunk either: the PNG bytes depend only on the data (reproducible).
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="png")
    return buf.getvalue()


@lru_cache(maxsize=8)
def _footer(region_label: str) -> np.ndarray:
    """The colour scales and the legend under the rows: RGB pixels ``(BOTTOM * DPI, WIDTH *
    DPI, 3)``, read-only (the same for every figure of a report)."""
    fig = Figure(figsize=(WIDTH, BOTTOM), dpi=DPI)
    scales: list[tuple[Colormap, Normalize, list[float], str]] = [
        (colormaps["gray"], Normalize(*HU_WINDOW), [float(t) for t in HU_TICKS], "HU"),
        (colormaps[SALIENCY_CMAP], Normalize(0, 1), [0, 0.5, 1],
         "saliency (min-max per map)"),
        (colormaps[GRADED_CMAP], Normalize(0, 1), [0, 0.5, 1],
         "graded importance (share of annotators)"),
    ]
    step = _PANEL_W * (1 + GAP)
    y_bar = 0.25
    for j, (cmap, norm, ticks, label) in enumerate(scales):
        cax = fig.add_axes(_rect(BOTTOM, LEFT + j * step + 0.1 * _PANEL_W, y_bar,
                                 0.8 * _PANEL_W, 0.12))
        cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax,
                            orientation="horizontal")
        cbar.set_ticks(ticks)
        cbar.set_label(label, fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    fig.legend(
        handles=[Patch(color=(*ATTENTION_RGB, 0.6), label=f"attention ({region_label})"),
                 Patch(facecolor="none", edgecolor=CONSENSUS_COLOUR, linewidth=1.4,
                       label="consensus")],
        loc="center", bbox_to_anchor=_rect(BOTTOM, LEFT + 3 * step, y_bar - 0.2, _PANEL_W, 0.5),
        fontsize=7, frameon=False, ncols=1,
    )
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    pixels.flags.writeable = False
    return pixels


class _Gallery:
    """What the figures need: the dataset, the labels, cached maps, the settings."""

    def __init__(self, run: Run, dataset: Dataset, ctx: ReportContext) -> None:
        self.run, self.dataset, self.ctx = run, dataset, ctx
        self.labels = dataset.index[["image_id", "case_id", "label"]]
        self.sign = str(ctx.config.get("sign") or "positive")
        self.seed = int(ctx.config.get("seed") or 0)
        self._maps: dict[tuple[str, str], tuple[dict[str, int], np.ndarray]] = {}

    def maps(self, model: str, method: str) -> tuple[dict[str, int], np.ndarray]:
        """``(position by image id, maps)``; BenchError when the run has none cached."""
        if (model, method) not in self._maps:
            ids, maps = self.run.maps(model, method)
            self._maps[model, method] = ({str(i): k for k, i in enumerate(ids)}, maps)
        return self._maps[model, method]

    def cases(self, model: str, method: str) -> list[GalleryCase]:
        ctx = self.ctx
        return select_cases(
            self.run.scores, self.labels, model=model, split=ctx.primary_split,
            method=method, metric=ctx.headline_metric, reference=ctx.headline_reference,
            available=set(self.maps(model, method)[0]),
        )

    def disagreement(self) -> list[DisagreementCase]:
        """Over the models with cached maps of the gallery method."""
        ctx, available = self.ctx, {}
        for model in ctx.models:
            try:
                available[model] = set(self.maps(model, ctx.gallery_method)[0])
            except BenchError:
                continue
        return select_disagreement(
            self.run.scores, self.labels, models=list(available), split=ctx.primary_split,
            method=ctx.gallery_method, metric=ctx.headline_metric,
            reference=ctx.headline_reference, available=available,
        )

    def row(self, model: str, method: str, image_id: str, *, label: str,
            metric_title: str) -> tuple[_Row, str]:
        """One row's arrays, and the attention-region label.

        The map is resized to the image grid, normalised and thresholded on the whole
        image (volume), as the metrics do; a volume is then cut at :func:`axial_slice`.
        """
        position, maps = self.maps(model, method)
        idx = self.dataset.positions([image_id])
        ct = self.dataset.images(idx)[0]
        graded = self.dataset.reference(idx, "graded")[0]
        cons = self.dataset.reference(idx, "consensus")[0] > 0.5
        sal = normalise(resize_bilinear(maps[position[image_id]], ct.shape), self.sign)
        att, region_label = attention_region(sal, self.ctx.headline_metric, self.seed)
        z = axial_slice(cons, graded, sal) if ct.ndim == 3 else None
        depth = int(ct.shape[0]) if z is not None else None
        aspect = pixel_aspect(tuple(self.dataset.spacing), ct.ndim)
        ct, sal, graded, cons, att = _slice2d(ct, sal, graded, cons, att, z=z)
        title = f"CT, image {image_id}" + ("" if z is None else f", z = {z} of {depth}")
        return _Row(ct, sal, graded, cons, att, label, title, method, metric_title,
                    z=z, depth=depth, pixel_aspect=aspect), region_label


def gallery_methods(ctx: ReportContext) -> list[str]:
    """The gallery method first, then the other explainers in report order."""
    rest = [m for m in ctx.explainers if m != ctx.gallery_method]
    return [ctx.gallery_method, *rest] if ctx.gallery_method in ctx.methods else rest


def gallery_section(run: Run, dataset: Dataset | None, ctx: ReportContext) -> str:
    """Markdown body of the gallery section (images as base64 PNG in raw HTML)."""
    if dataset is None:
        return _callout(
            "The gallery needs the images and annotations: pass the dataset to "
            "`build_report(run, dataset)` (or run `bench report` where the data is "
            "available) to draw it."
        )
    g = _Gallery(run, dataset, ctx)
    metric = md(ctx.headline_metric)
    parts = [
        f"Positive cases of split {md(ctx.primary_split)}, scored by the case mean of "
        f"{metric} against the {md(ctx.headline_reference)} reference. Each row shows "
        f"one image: the CT (window {HU_WINDOW[0]:g} to {HU_WINDOW[1]:g} HU), the saliency "
        "map resized to the image and min-max normalised per map, the graded importance "
        "(share of annotators marking the pixel, 0 to 1), and the attention region used by "
        "the metric (filled orange) with the consensus outline (blue); the row title gives "
        "the case mean and the image's value. Colour scales are the same in every panel "
        "and colourblind-safe.",
        _volume_note(dataset),
        "\n\n",
        "### Best, median and worst case per method {#gallery-by-method}\n\n",
        "For each method and model, the best, the median and the worst case, each shown "
        "by the image closest to the case mean. Null baselines are left out. "
        f"{md(ctx.gallery_method)} is open; click a method to open it (a closed block "
        "is not printed).\n\n",
    ]
    for method in gallery_methods(ctx):
        parts.append(raw_html_block(_method_block(g, method)))
        parts.append("\n")
    parts.append("### Cases where the models disagree most {#gallery-disagreement}\n\n")
    parts.append(_disagreement_block(g))
    return "".join(parts)


def _method_block(g: _Gallery, method: str) -> str:
    """``<details>`` with one figure per model (best, median, worst rows)."""
    ctx = g.ctx
    is_open = " open" if method == ctx.gallery_method else ""
    out = [f'<details class="gallery-method" data-method="{html_text(method)}"{is_open}>'
           f"<summary><strong>{html_text(ctx.method_label(method))}</strong></summary>"]
    for model in ctx.models:
        try:
            cases = g.cases(model, method)
            drawn = [g.row(model, method, c.image_id, label=f"{c.rank}\ncase {c.case_id}",
                           metric_title=_values(ctx, c.value, c.image_value))
                     for c in cases]
        except (KeyError, BenchError) as err:
            out.append(f"<p>No gallery for model {html_text(model)}: {html_text(err)}.</p>")
            continue
        if not drawn:
            out.append(f"<p>No gallery for model {html_text(model)}: no positive case with "
                       f"a finite {html_text(ctx.headline_metric)} in split "
                       f"{html_text(ctx.primary_split)}.</p>")
            continue
        png = render_rows_png([r for r, _ in drawn], title=f"model {model} \u00b7 {method}",
                              region_label=drawn[0][1])
        spans = ", ".join(
            f'<span class="gallery-case" data-rank="{c.rank}" data-case="{html_text(c.case_id)}"'
            f' data-image="{html_text(c.image_id)}"{_slice_attrs(r)}>{c.rank}: case '
            f"{html_text(c.case_id)} ({c.value:.{ctx.digits}f}"
            f"{', ' + r.slice_text if r.slice_text else ''})</span>"
            for c, (r, _) in zip(cases, drawn, strict=True))
        alt = (f"Gallery for model {model}, method {method}: saliency, graded importance "
               f"and attention region for {len(cases)} cases")
        out.append(_figure(png, alt, f"Model {html_text(model)}, {html_text(method)}, "
                           f"{html_text(ctx.headline_metric)} per case \u2014 {spans}",
                           f'data-model="{html_text(model)}" data-method="{html_text(method)}"'))
    out.append("</details>")
    return "\n".join(out)


def _values(ctx: ReportContext, case_mean: float, image_value: float) -> str:
    """Title of the overlay panel: the metric, the case mean and the image's value."""
    d = ctx.digits
    return f"{ctx.headline_metric}\ncase {case_mean:.{d}f}, image {image_value:.{d}f}"


def _disagreement_block(g: _Gallery) -> str:
    """Markdown: intro, then one figure per case with a row per model."""
    ctx = g.ctx
    method, metric = ctx.gallery_method, ctx.headline_metric
    cases = g.disagreement()
    if not cases:
        return _callout(
            f"No disagreement gallery: it needs at least two models with a finite "
            f"{md(metric)} for {md(method)} on a common positive case of split "
            f"{md(ctx.primary_split)}.")
    parts = [
        f"The {len(cases)} positive cases whose case mean of {md(metric)} for "
        f"{md(method)} maps differs most between the models (largest range across "
        "models), each shown by the image where the models' values range most, every "
        "model a row.\n\n"
    ]
    for case in cases:
        try:
            drawn = [g.row(model, method, case.image_id, label=f"model {model}",
                           metric_title=_values(ctx, mean, value))
                     for (model, mean), (_, value) in zip(case.case_means, case.image_values,
                                                          strict=True)]
        except KeyError as err:  # an image the dataset lacks
            parts.append(_callout(f"No figure for case {md(case.case_id)}: {md(err)}."))
            continue
        png = render_rows_png(
            [r for r, _ in drawn], region_label=drawn[0][1],
            title=f"case {case.case_id}: models differ by {case.spread:.{ctx.digits}f}")
        values = ", ".join(f"{html_text(m)} {v:.{ctx.digits}f}" for m, v in case.case_means)
        alt = (f"Case {case.case_id}, image {case.image_id}: {method} saliency of every "
               "model, graded importance and attention region")
        first = drawn[0][0]  # every row shows the same image, so the same slice
        where = f", {first.slice_text}" if first.slice_text else ""
        parts.append(raw_html_block(_figure(
            png, alt,
            f"Case {html_text(case.case_id)} (image {html_text(case.image_id)}{where}): "
            f"{html_text(metric)} case mean {values}; range "
            f"{case.spread:.{ctx.digits}f}.",
            f'data-case="{html_text(case.case_id)}" data-image="{html_text(case.image_id)}"'
            f' data-spread="{case.spread!r}"{_slice_attrs(first)}',
            extra_class=" gallery-disagreement")))
        parts.append("\n")
    return "".join(parts)


def _slice_attrs(row: _Row) -> str:
    """``data-slice`` / ``data-depth`` attributes of a volume's row (none for 2D)."""
    return "" if row.z is None else f' data-slice="{row.z}" data-depth="{row.depth}"'


def _volume_note(dataset: Dataset) -> str:
    """The section's sentence on 3D volumes; empty for 2D data."""
    if dataset.image_array.ndim != 4:
        return ""
    return (
        " The images are 3D volumes: each row shows the axial slice where the consensus "
        "mask has the largest area (\"slice z = k of D\" in the captions, slices counted "
        "from 0). Maps are resized, normalised and thresholded on the whole volume, as "
        "the metrics are, then sliced: a dark slice means the map peaks elsewhere in the "
        "volume."
    )


def _figure(png: bytes, alt: str, caption_html: str, attrs: str, extra_class: str = "") -> str:
    # role and aria-label as pandoc's --embed-resources writes them (render.py does
    # without that option when it can, so the image carries them from here).
    label = html_text(alt)
    return (f'<figure class="gallery{extra_class}" {attrs}><img role="img" '
            f'aria-label="{label}" alt="{label}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
            f"<figcaption>{caption_html}</figcaption></figure>")


def _callout(text: str, kind: str = "note") -> str:
    return f"::: {{.callout-{kind}}}\n{text}\n:::\n\n"
