"""The synthetic post-mortem chest CT phantom (`pmct-phantom`, DESIGN.md "The embedded demo").

Axial slices in Hounsfield-like units: body with a fat rim, two lungs, trachea (upper
slices) or main bronchi (lower slices), spine, and the scanner couch. Drowning cases carry
a diffuse dependent ground-glass opacity (GGO) with a few denser patches and fluid in the
airways; about 13% of the image is finding. Some non-drowning cases carry a thin dependent
density (post-mortem hypostasis) that is *not* a drowning finding: a hard negative.

The confounder is the scanner: type B has a curved couch and a coarse noise texture
outside the body; type A a flat couch and fine noise. ``P(B | drowning) = c`` and
``P(B | non-drowning) = 1 - c`` with ``c`` the confounder strength of the split, so
``c = 0.5`` carries no label information and ``c = 0.05`` reverses the training one.

Four simulated annotators mark the findings from a level-set ``F > 0`` with their own
habits: two with boundary jitter, one who misses the smallest lesion, one who
over-segments by two pixels. Everything is a deterministic function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from benchmark.data.dataset import Dataset

AIR, FAT, SOFT, LUNG, BONE, COUCH, FLUID = -1000.0, -100.0, 40.0, -860.0, 650.0, 250.0, 15.0
#: Appearance of the findings and the confounder, tuned together (DESIGN.md: the middle
#: model needs the finding contrast and the correlation tuned together).
HAZE = 0.6  # share of the GGO density increase that is haze
RETIC = 250.0  # HU of the septal lines over drowning GGO
HYP = 1.2  # scale of the hypostasis density in hard negatives
CURVE = 0.012  # curvature of the scanner-B couch
TEXTURE = 60.0  # HU std of the scanner-B noise texture outside the body
ANNOTATORS = ["r1", "r2", "r3", "r4"]
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "shifted": 3}


@dataclass(frozen=True)
class SplitSpec:
    """One split of the phantom: number of cases and confounder strength ``c``."""

    n_cases: int
    confounder: float


@dataclass(frozen=True)
class PhantomSpec:
    """Generation parameters (mirrors the ``generator`` block of data_manifest.yaml)."""

    seed: int = 2024
    image_size: int = 64
    slices_per_case: int = 6
    prevalence: float = 0.5
    hard_negative_fraction: float = 0.5
    pixel_spacing_mm: float = 5.5
    splits: tuple[tuple[str, SplitSpec], ...] = (
        ("train", SplitSpec(200, 0.95)),
        ("val", SplitSpec(40, 0.95)),
        ("test", SplitSpec(60, 0.95)),
        ("shifted", SplitSpec(60, 0.05)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (Gaussian-filtered white noise)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _reticulation(rng: np.random.Generator, size: int, u: float) -> np.ndarray:
    """A polygonal network of thin lines (0/1 floats): the zero set of two warped waves."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(4.5, 6.0) * u
    warp = 1.2 * u * _smooth_noise(rng, (size, size), 4.0 * u)
    theta = rng.uniform(0, np.pi)
    a = (xx * np.cos(theta) + yy * np.sin(theta) + warp) * 2 * np.pi / period
    b = (-xx * np.sin(theta) + yy * np.cos(theta) - warp) * 2 * np.pi / period
    return ((np.abs(np.sin(a)) < 0.3) | (np.abs(np.sin(b)) < 0.3)).astype(np.float64)


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    """Signed ellipse function: < 1 inside."""
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def _case(
    rng: np.random.Generator, size: int, n_slices: int, label: int, hard: bool, scanner_b: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case: images (S, H, W) HU, annotator masks (S, 4, H, W) bool, body (S, H, W)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u = size / 64.0  # all geometry is written for 64 px and scaled
    cy, cx = size * 0.47 + rng.normal(0, 0.6) * u, size / 2 + rng.normal(0, 0.6) * u
    by, bx = rng.uniform(17.0, 21.5) * u, rng.uniform(25.0, 29.5) * u
    # Soft tissue and fat vary between bodies, so total brightness says nothing about the
    # label and a model has to find the lesions themselves.
    soft_hu, fat_rim = rng.uniform(-30.0, 110.0), rng.uniform(0.6, 0.9)
    ggo_depth = rng.uniform(0.45, 0.75)  # share of lung height below the GGO front
    ggo_hu = rng.uniform(300, 420)
    n_patches = rng.integers(2, 4)
    paving = _reticulation(rng, size, u)
    images = np.empty((n_slices, size, size), np.float32)
    masks = np.zeros((n_slices, len(ANNOTATORS), size, size), bool)
    bodies = np.empty((n_slices, size, size), bool)
    for z in range(n_slices):
        s = 0.82 + 0.22 * np.sin(np.pi * (z + 0.5) / n_slices)
        body_f = _ellipse(yy, xx, cy, cx, by, bx)
        body = body_f < 1.0
        img = np.where(body, soft_hu, AIR)
        img = np.where(body & (body_f > fat_rim), FAT, img)
        lung_ry, lung_rx = 12.5 * s * u, 9.5 * s * u
        lcy = cy - 1.0 * u
        lungs = np.zeros_like(body)
        lung_y = np.zeros_like(yy)  # normalised depth inside each lung: -1 top .. 1 bottom
        for side in (-1, 1):
            lcx = cx + side * 11.5 * u
            lung = _ellipse(yy, xx, lcy, lcx, lung_ry, lung_rx) < 1.0
            lungs |= lung
            lung_y = np.where(lung, (yy - lcy) / lung_ry, lung_y)
        img = np.where(lungs, LUNG, img)
        spine = _ellipse(yy, xx, cy + by - 6.0 * u, cx, 3.8 * u, 3.8 * u) < 1.0
        img = np.where(spine, BONE, img)
        upper = z < n_slices // 2
        airway_centres = [(cy - 5.0 * u, cx)] if upper else [
            (cy - 3.0 * u, cx - 3.2 * u), (cy - 3.0 * u, cx + 3.2 * u)
        ]
        radius = (2.4 if upper else 1.7) * u
        airway = np.zeros_like(body)
        fluid = np.zeros_like(body)
        for ay, ax in airway_centres:
            circ = _ellipse(yy, xx, ay, ax, radius, radius) < 1.0
            airway |= circ
            # fluid settles in the dependent part: a level across the airway
            fluid |= circ & (yy >= ay - radius * rng.uniform(0.1, 0.6))
        img = np.where(airway, AIR, img)

        truth_f = np.full((size, size), -1.0)
        if label == 1:
            img = np.where(fluid, FLUID, img)
            # Level set of the dependent GGO: depth in lung past a wavy front.
            front = 1.0 - 2.0 * ggo_depth
            f_ggo = (lung_y - front) + 0.18 * _smooth_noise(rng, (size, size), 3.0 * u)
            ggo = lungs & (f_ggo > 0)
            haze = ggo_hu * np.clip(f_ggo * 3 + 0.4, 0.4, 1.0)
            # Drowning GGO comes with septal thickening ("crazy paving"): a reticular
            # network of thin dense lines over the haze. Hypostasis has the haze only.
            img = np.where(ggo, img + HAZE * haze + RETIC * paving, img)
            truth_f = np.where(lungs, f_ggo, truth_f)
            patches = []
            for _ in range(int(n_patches)):
                iy, ix = np.argwhere(lungs)[rng.integers(lungs.sum())]
                r = rng.uniform(1.4, 3.0) * u
                pf = np.where(lungs, 1.0 - np.sqrt(_ellipse(yy, xx, iy, ix, r, r)), -1.0)
                img = np.where(pf > 0, np.maximum(img, LUNG + 520), img)
                patches.append((r, pf))
            patches.sort(key=lambda t: t[0])
            # r2 misses the smallest patch: its level set leaves that patch out.
            truth_miss = truth_f.copy()
            for i, (_, pf) in enumerate(patches):
                truth_f = np.maximum(truth_f, pf)
                if i > 0:
                    truth_miss = np.maximum(truth_miss, pf)
            truth_miss = np.where(fluid, 0.5, truth_miss)
            truth_f = np.where(fluid, 0.5, truth_f)
        elif hard:
            # Hypostasis: a thin dependent band, fainter than drowning GGO; not annotated.
            f_hyp = lung_y - rng.uniform(0.55, 0.75) + 0.1 * _smooth_noise(rng, (size, size), 3 * u)
            hyp = lungs & (f_hyp > 0)
            img = np.where(hyp, img + HYP * rng.uniform(180, 260), img)

        # Couch under the body: flat (scanner A) or curved (scanner B).
        y0 = cy + by + 2.5 * u
        if scanner_b:
            couch_y = y0 + CURVE * (xx - cx) ** 2 / u
            couch = (yy >= couch_y) & (yy < couch_y + 2.2 * u) & (np.abs(xx - cx) < 26 * u)
        else:
            couch = (yy >= y0) & (yy < y0 + 2.2 * u) & (np.abs(xx - cx) < 29 * u)
        couch &= ~body
        img = np.where(couch, COUCH, img)

        noise = rng.normal(0.0, 14.0, (size, size))
        if scanner_b:  # coarse texture outside the body only
            noise += np.where(body, 0.0, TEXTURE * _smooth_noise(rng, (size, size), 1.2 * u))
        images[z] = (img + noise).astype(np.float32)
        bodies[z] = body

        if label == 1:
            for a in range(len(ANNOTATORS)):
                jitter = 0.12 * _smooth_noise(rng, (size, size), 2.0 * u)
                if a == 1:
                    m = (truth_miss + jitter) > 0
                elif a == 2:  # r3 over-segments: the truth grown by two pixels
                    m = ndimage.binary_dilation(truth_f > 0, iterations=2) & body
                else:
                    m = (truth_f + jitter) > 0
                masks[z, a] = m
    return images, masks, bodies


def generate(spec: PhantomSpec | None = None, *, splits: list[str] | None = None,
             confounder: dict[str, float] | None = None) -> Dataset:
    """Generate the phantom dataset.

    Parameters
    ----------
    spec : PhantomSpec, optional
        Generation parameters; default ``PhantomSpec()``.
    splits : list of str, optional
        Only these splits (default: all of ``spec.splits``). A case's content depends
        only on (seed, split, case number), so subsets are identical to the full set.
    confounder : dict split -> float, optional
        Override the confounder strength of some splits (used to train the demo models
        with different confounder-label correlations).

    Returns
    -------
    Dataset with images (N, H, W) float32 HU, masks (N, 4, H, W), the body mask as
    region of interest and an extra index column ``scanner`` ("A"/"B").
    """
    spec = spec or PhantomSpec()
    rows, images, masks, bodies = [], [], [], []
    for split, sspec in spec.splits:
        if splits is not None and split not in splits:
            continue
        c = (confounder or {}).get(split, sspec.confounder)
        for k in range(sspec.n_cases):
            # A case's randomness depends only on (seed, split, k): stable under resizing.
            rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], k])
            label = int(rng.random() < spec.prevalence)
            hard = label == 0 and rng.random() < spec.hard_negative_fraction
            scanner_b = bool(rng.random() < (c if label == 1 else 1.0 - c))
            im, ms, bd = _case(rng, spec.image_size, spec.slices_per_case, label, hard, scanner_b)
            case_id = f"{split}-{k:04d}"
            for z in range(spec.slices_per_case):
                rows.append(
                    {"case_id": case_id, "image_id": f"{case_id}-s{z:02d}", "split": split,
                     "label": label, "scanner": "B" if scanner_b else "A", "hard_negative": hard}
                )
            images.append(im)
            masks.append(ms)
            bodies.append(bd)
    if not rows:
        raise ValueError(f"no cases generated for splits {splits}")
    return Dataset(
        name="pmct-phantom",
        index=pd.DataFrame(rows),
        image_array=np.concatenate(images),
        masks=np.concatenate(masks),
        annotators=list(ANNOTATORS),
        roi_array=np.concatenate(bodies),
        spacing=(spec.pixel_spacing_mm, spec.pixel_spacing_mm),
        class_names=("non-drowning", "drowning"),
    )
