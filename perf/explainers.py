"""Throughput of the saliency methods beside a bare forward+backward pass and per-image Captum.

How to run (from the repository root)::

    .venv/bin/python perf/explainers.py                     # demo CNN, all methods: ~10 min
    .venv/bin/python perf/explainers.py --quick             # batch 16, 2 runs: ~2 min
    .venv/bin/python perf/explainers.py --methods gradcam,integrated_gradients --repeat 7
    .venv/bin/python perf/explainers.py --model resnet --methods gradcam,integrated_gradients

What is measured
----------------
``--model demo`` (default): the shipped ``clean`` checkpoint of
:class:`benchmark.demo.cnn.DemoCNN` (three 3x3 convolutions, two max-pools; target layer
``features.6``, a 16 x 16 grid) on ``--batch`` phantom test slices of the demo size
(64 x 64, windowed by ``scale_hu``). ``--model resnet``: a ResNet-18-like network built
here (basic blocks [2, 2, 2, 2], widths ``--width`` x 1/2/4/8, batch norm, seeded random
weights, no download; target layer ``layer4``, an 8 x 8 grid on 64 x 64), on the same
images. The batch is the pipeline's default ``batch_size`` (64) unless ``--batch`` says
otherwise; target unit 0 (the demo's single logit).

For every registered method (``benchmark.explainers.EXPLAINERS``, the non-default ones
included; ``--methods`` picks some), each run (``--repeat``, default 5, after one warm-up
call of each; fewer for a method whose warm-up takes more than ``--budget`` / runs, 60 s,
at least 1: RISE gets 1, printed as ``runs``) times, back to back so that the machine's
load is about the same for all:

- ``bare fwd+bwd``: ``x.requires_grad_(); torch.autograd.grad(model(x)[:, t].sum(), x)``
  on the same batch: the least work any gradient method can do (one forward, one
  backward to the input). ``bare fwd``: ``model(x)`` under ``torch.no_grad()``, the limit
  for the forward-only methods (occlusion, Score-CAM, RISE).
- ``ours``: ``get_explainer(name, model, layer=...).attribute(x)`` on the whole batch,
  default options (as ``bench run`` calls it).
- ``captum/img``: the same method by calling Captum's class directly, one image at a time
  (a Python loop, as one would write it without a batching layer), on the first
  ``--captum-sample`` (16) images of the batch; images/s = sampled images / loop time.
  Options that change the maps are ours (``n_steps``, window, baseline, ...), options that
  change only speed are Captum's defaults: integrated gradients with
  ``internal_batch_size=None`` (all ``n_steps`` points of an image in one pass),
  occlusion with ``perturbations_per_eval=1``, NoiseTunnel with all samples in one pass.
  Grad-CAM++, LayerCAM, Score-CAM and RISE have no Captum class (nor do the baselines).

Columns: images/s of each (median over runs); ``ours/bare`` = ours images/s / bare
fwd+bwd images/s; ``passes`` = nominal model passes per image (``n_steps`` for
integrated gradients, ``n_samples`` for SmoothGrad and GradientSHAP, 2 for DeepLIFT
(inputs and baselines in one doubled batch) and guided Grad-CAM (Grad-CAM + guided
backprop), patches + 1 for occlusion, layer channels + 1 for Score-CAM, ``n_masks`` for
RISE; forward-only passes marked ``f``); ``of limit`` = ours time as a share of the limit,
i.e. (passes x bare pass time) / ours time, 1.0 = as fast as that many bare passes
(> 1 is possible: CAM methods backpropagate only to the layer); ``ours/captum`` = ours
images/s / captum-per-image images/s. Each ratio is the median of the per-run ratios
(reference and method timed in the same run). ``max|diff|``: largest absolute difference
between ours and Captum per image on the sampled images, with the largest |map| for
scale ("rng" where both draw noise differently: SmoothGrad).

Targets (issue 8, item 3): Grad-CAM at least 0.7 of one bare fwd+bwd; integrated
gradients with n steps at least 0.7 of n bare fwd+bwd passes. Our integrated gradients
pass ``internal_batch_size = len(batch)`` to Captum: ``n_steps`` passes of the batch
(one path point of every image per pass), which is exactly n bare passes of the batch.

Threads: ``torch.set_num_threads(--threads)``, default 1, printed. The development
machine has 2 cores shared with other jobs; with 2 threads, a pass waits for the slower
core at every parallel region and small batches ran 3-50x slower and erratically, so one
thread gives the steadier ratios (``--threads 2`` on a quiet machine). The machine is
shared and noisy: the script prints figures and asserts nothing about time. It exits with
status 1 only if ours and Captum's maps differ by more than ``1e-4`` of the maps' scale
where they are comparable.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import captum
import numpy as np
import torch
from captum import attr as ca
from torch import nn

from benchmark.config import RunConfig
from benchmark.demo.cnn import TARGET_LAYER, scale_hu
from benchmark.demo.phantom import PhantomSpec, SplitSpec, generate
from benchmark.explainers import EXPLAINERS, Explainer, get_explainer
from benchmark.explainers.attribution import _seeded_global_rng
from benchmark.explainers.perturbation import occlusion_geometry
from benchmark.manifest import DEMO_CHECKPOINTS
from benchmark.models import load_checkpoint

Fn = Callable[[torch.Tensor], torch.Tensor]

# ------------------------------------------------------------------------------ models


class BasicBlock(nn.Module):
    """ResNet basic block; every ReLU its own module (DeepLIFT needs that)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.down: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + self.down(x))


class ResNetLike(nn.Module):
    """ResNet-18-like for 1-channel slices: 3x3 stem (stride 1), four stages of two basic
    blocks (strides 1, 2, 2, 2), global average pooling, one logit."""

    def __init__(self, width: int = 16, outputs: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = nn.Linear(cin, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.head(h.mean(dim=(2, 3)))


def load_model(kind: str, width: int, seed: int) -> tuple[nn.Module, nn.Module, str]:
    """(model in eval mode, target layer, description)."""
    if kind == "demo":
        sums: dict[str, str] = {}
        for line in (DEMO_CHECKPOINTS / "SHA256SUMS").read_text().splitlines():
            if line.strip():
                digest, file = line.split()
                sums[file] = digest
        lm = load_checkpoint(
            DEMO_CHECKPOINTS / "clean.pt", name="clean", sha256=sums["clean.pt"],
            factory="benchmark.demo.cnn:build", target_layer=TARGET_LAYER,
        )
        return lm.module, lm.layer(), f"demo CNN 'clean' (layer {TARGET_LAYER})"
    torch.manual_seed(seed)
    model = ResNetLike(width).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model, model.layer4, f"ResNet-like, width {width}, random weights (layer layer4)"


def phantom_batch(n: int, size: int) -> torch.Tensor:
    """``n`` phantom test slices, ``(n, 1, size, size)``, scaled like the demo."""
    slices = PhantomSpec().slices_per_case
    spec = PhantomSpec(image_size=size, splits=(("test", SplitSpec(-(-n // slices), 0.95)),))
    images = generate(spec).image_array[:n]
    return torch.from_numpy(scale_hu(images))[:, None]


# ------------------------------------------------------------------------- references


def bare_fwd_bwd(model: nn.Module, target: int) -> Fn:
    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
        return grad

    return run


def bare_fwd(model: nn.Module) -> Fn:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    return run


# ----------------------------------------------------------------- per-image Captum


def layer_channels(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> int:
    out: list[int] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: out.append(o.shape[1]))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    return out[0]


@dataclass
class Case:
    """One method: our explainer, Captum one image at a time, the nominal limit."""

    name: str
    ours: Explainer
    captum_one: Fn | None  # (1, C, *spatial) -> (1, *spatial)
    passes: int  # nominal model passes per image (0: none)
    forward_only: bool
    comparable: bool  # ours and captum_one should give the same maps


def make_case(
    name: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int
) -> Case:
    prior = {"prior": np.full(tuple(x.shape[2:]), 0.1, np.float32)}
    ours = get_explainer(name, model, layer=layer,
                         **(prior if EXPLAINERS[name].info.needs_prior else {}))
    o = ours.options
    one: Fn | None = None
    passes, fwd_only, comparable = 1, False, True
    if name == "saliency":
        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.Saliency(model).attribute(
                xi.clone().requires_grad_(True), target=target, abs=False).sum(1)
    elif name == "input_x_gradient":
        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.InputXGradient(model).attribute(
                xi.clone().requires_grad_(True), target=target).sum(1)
    elif name == "integrated_gradients":
        passes = int(o["n_steps"])

        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.IntegratedGradients(model).attribute(
                xi, baselines=float(o["baseline"]), target=target, n_steps=int(o["n_steps"])
            ).sum(1)
    elif name == "smoothgrad":
        passes, comparable = int(o["n_samples"]), False

        def one(xi: torch.Tensor) -> torch.Tensor:
            span = float(xi.max() - xi.min())
            return ca.NoiseTunnel(ca.Saliency(model)).attribute(
                xi.clone().requires_grad_(True), nt_type="smoothgrad",
                nt_samples=int(o["n_samples"]), stdevs=float(o["noise"]) * span,
                target=target, abs=False,
            ).sum(1)
    elif name == "gradcam":
        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.LayerGradCam(model, layer).attribute(
                xi, target=target, relu_attributions=False).sum(1)
    elif name == "hirescam":
        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.LayerGradientXActivation(model, layer).attribute(xi, target=target).sum(1)
    elif name == "guided_gradcam":
        passes = 2

        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.GuidedGradCam(model, layer).attribute(
                xi.clone().requires_grad_(True), target=target, interpolate_mode="bilinear"
            ).sum(1)
    elif name == "deeplift":
        passes = 2

        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.DeepLift(model).attribute(
                xi.clone().requires_grad_(True), baselines=float(o["baseline"]), target=target
            ).sum(1)
    elif name == "gradient_shap":
        passes = int(o["n_samples"])
        shap_ours = ours
        assert hasattr(shap_ours, "baseline_set")

        def one(xi: torch.Tensor) -> torch.Tensor:
            with _seeded_global_rng(int(o["seed"]), xi.device):
                return ca.GradientShap(model).attribute(
                    xi, baselines=shap_ours.baseline_set(xi), n_samples=int(o["n_samples"]),
                    stdevs=float(o["stdevs"]) * float(xi.max() - xi.min()), target=target,
                ).sum(1)
    elif name == "occlusion":
        windows, strides = occlusion_geometry(
            tuple(int(n) for n in x.shape[2:]), int(o["window"]), int(o["stride"]))
        grid = zip(x.shape[2:], windows, strides, strict=True)
        passes = 1 + math.prod(math.ceil((n - w) / s) + 1 for n, w, s in grid)
        fwd_only = True
        channels = x.shape[1]

        def one(xi: torch.Tensor) -> torch.Tensor:
            return ca.Occlusion(model).attribute(
                xi, sliding_window_shapes=(channels, *windows), strides=(channels, *strides),
                baselines=float(o["baseline"]), target=target,
            ).sum(1)
    elif name in ("gradcam_plusplus", "layercam"):
        pass  # one forward and one backward to the layer; Captum has no class
    elif name == "scorecam":
        passes = 1 + layer_channels(model, layer, x) + (o["weights"] == "increase")
        fwd_only = True
    elif name == "rise":
        passes, fwd_only = int(o["n_masks"]), True
    else:  # baselines: no model pass
        passes = 0
    return Case(name, ours, one, passes, fwd_only, comparable and one is not None)


# ---------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"


@dataclass
class Row:
    name: str
    runs: int
    ours: float  # images/s
    bare: float
    fwd: float
    captum: float | None
    ours_over_bare: float
    of_limit: float | None
    ours_over_captum: float | None
    passes: str
    diff: str
    bad: bool


def measure(
    case: Case, x: torch.Tensor, target: int, fb: Fn, fwd: Fn, repeat: int, sample: int,
    budget: float,
) -> Row:
    n = len(x)
    xs = x[:sample]
    call_ours = lambda: case.ours.attribute(x, target=target)  # noqa: E731

    def call_captum() -> torch.Tensor:
        return torch.cat([case.captum_one(xs[i : i + 1]).detach()  # type: ignore[misc]
                          for i in range(len(xs))])

    t0 = time.perf_counter()
    ours_maps = call_ours()  # warm-up (and the maps)
    captum_maps = call_captum() if case.captum_one is not None else None
    t_warm = time.perf_counter() - t0
    fb(x), fwd(x)
    runs = max(1, min(repeat, int(budget / max(t_warm, 1e-9))))
    t_fb, t_fwd, t_ours, t_cap = [], [], [], []
    for _ in range(runs):
        t_fb.append(timed(lambda: fb(x)))
        if case.forward_only:
            t_fwd.append(timed(lambda: fwd(x)))
        t_ours.append(timed(call_ours))
        if case.captum_one is not None:
            t0 = time.perf_counter()
            captum_maps = call_captum()
            t_cap.append((time.perf_counter() - t0) * n / len(xs))  # per batch of n
    med = statistics.median
    ref = t_fwd if case.forward_only else t_fb
    of_limit = (med([case.passes * r / o for r, o in zip(ref, t_ours, strict=True)])
                if case.passes else None)
    diff, bad = "", False
    if captum_maps is not None:
        if case.comparable:
            gap = float((ours_maps[: len(xs)] - captum_maps).abs().max())
            scale = float(ours_maps.abs().max())
            bad = gap > 1e-4 * max(scale, 1e-12)
            diff = f"{gap:.1e} (of {scale:.2g})"
        else:
            diff = "rng"
    return Row(
        name=case.name,
        runs=runs,
        ours=n / med(t_ours),
        bare=n / med(t_fb),
        fwd=n / med(t_fwd) if t_fwd else float("nan"),
        captum=n / med(t_cap) if t_cap else None,
        ours_over_bare=med([b / o for b, o in zip(t_fb, t_ours, strict=True)]),
        of_limit=of_limit,
        ours_over_captum=(med([c / o for c, o in zip(t_cap, t_ours, strict=True)])
                          if t_cap else None),
        passes=(f"{case.passes}{'f' if case.forward_only else ''}" if case.passes else "-"),
        diff=diff,
        bad=bad,
    )


def print_table(rows: Sequence[Row]) -> None:
    head = ("method", "runs", "ours img/s", "bare f+b", "bare fwd", "ours/bare", "passes",
            "of limit", "captum/img", "ours/captum", "max|diff| ours vs captum")
    lines = [head]
    for r in rows:
        lines.append((
            r.name, str(r.runs), fmt_rate(r.ours), fmt_rate(r.bare),
            fmt_rate(r.fwd) if not math.isnan(r.fwd) else "",
            f"{r.ours_over_bare:.2f}", r.passes,
            f"{r.of_limit:.2f}" if r.of_limit is not None else "",
            fmt_rate(r.captum) if r.captum is not None else "-",
            f"{r.ours_over_captum:.1f}x" if r.ours_over_captum is not None else "",
            r.diff or "",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for k, line in enumerate(lines):
        print("  " + "  ".join(
            c.ljust(w) if i in (0, len(head) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


# ------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    default_batch = RunConfig.model_fields["batch_size"].default
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("demo", "resnet"), default="demo")
    ap.add_argument("--width", type=int, default=16, help="ResNet-like base width")
    ap.add_argument("--size", type=int, default=PhantomSpec().image_size,
                    help="image side (the demo's 64)")
    ap.add_argument("--batch", type=int, default=default_batch,
                    help=f"images per call (the pipeline's batch_size, {default_batch})")
    ap.add_argument("--methods", default="all", help="comma-separated method names, or all")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs (medians are quoted)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds per method: runs = min(repeat, budget / warm-up call time), "
                         "at least 1")
    ap.add_argument("--captum-sample", type=int, default=16,
                    help="images explained one at a time by Captum per run")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the ResNet-like weights")
    ap.add_argument("--quick", action="store_true", help="batch 16, 2 runs, 4 Captum images")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.repeat, args.captum_sample = 16, 2, 4
    args.repeat = max(1, args.repeat)
    torch.set_num_threads(args.threads)
    names = list(EXPLAINERS) if args.methods == "all" else args.methods.split(",")
    for name in names:
        if name not in EXPLAINERS:
            ap.error(f"unknown method {name!r}; valid: {', '.join(EXPLAINERS)}")
    warnings.filterwarnings("ignore", message="Setting (forward, backward|backward) hooks")
    warnings.filterwarnings("ignore", message=".*requires_grad.*")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"saliency-bench explainer throughput: torch {torch.__version__}, captum "
        f"{captum.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), torch threads {torch.get_num_threads()}, load average "
        f"{load:.1f} at start"
    )
    model, layer, desc = load_model(args.model, args.width, args.seed)
    x = phantom_batch(args.batch, args.size)
    target = 0
    sample = max(1, min(args.captum_sample, args.batch))
    print(
        f"model: {desc}; batch {tuple(x.shape)} float32; target unit {target}; medians of "
        f"{args.repeat} run(s); Captum per image on {sample} image(s) per run\n"
    )
    fb, fwd = bare_fwd_bwd(model, target), bare_fwd(model)
    rows, bad = [], []
    for name in names:
        case = make_case(name, model, layer, x, target)
        t0 = time.perf_counter()
        row = measure(case, x, target, fb, fwd, args.repeat, sample, args.budget)
        rows.append(row)
        print(f"  {name}: {fmt_rate(row.ours)} img/s ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        if row.bad:
            bad.append(name)
    print()
    print_table(rows)
    print(
        "\n  ours/bare: ours img/s / one bare fwd+bwd img/s; of limit: (passes x bare pass "
        "time) / ours time,\n  the bare pass being fwd+bwd, or fwd (no grad) for passes "
        "marked f; ratios are medians of per-run ratios."
    )
    if "integrated_gradients" in names:
        ig = EXPLAINERS["integrated_gradients"].defaults
        print(f"  integrated_gradients: n_steps {ig['n_steps']}, internal_batch_size = batch "
              f"({args.batch}): {ig['n_steps']} passes of {args.batch} images per call.")
    by = {r.name: r for r in rows}
    print("\ntargets (issue 8, item 3):")
    for name, label in (("gradcam", "Grad-CAM vs 1 bare fwd+bwd"),
                        ("integrated_gradients", "integrated gradients vs n bare fwd+bwd")):
        v = by[name].of_limit if name in by else None
        if v is not None:
            print(f"  {label}: {v:.2f} (target >= 0.70: {'met' if v >= 0.7 else 'MISSED'})")
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average at the end: {load_end:.1f} ({os.cpu_count()} CPUs)")
    if bad:
        print(f"maps differ from Captum per image beyond 1e-4 of their scale: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
