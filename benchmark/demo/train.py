"""``bench demo train``: train the three demo checkpoints on the phantom.

The models share one architecture (:mod:`benchmark.demo.cnn`), one seed and one schedule;
they differ only in the confounder-label correlation of their training split (the
``train_confounder`` of each model in the manifest): none for ``clean``, moderate for
``partial``, strong for ``shortcut``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.demo.cnn import build, scale_hu
from benchmark.demo.phantom import generate
from benchmark.manifest import (
    DEMO_CHECKPOINTS,
    DEMO_TRAIN_CONFOUNDER,
    ManifestError,
    PhantomDataset,
    load_manifest,
)
from benchmark.store import atomic_write, sha256_file


def train_model(
    images: np.ndarray, labels: np.ndarray, *, epochs: int = 10, seed: int = 0,
    lr: float = 3e-3, weight_decay: float = 0.05, batch_size: int = 64, width: int = 16,
) -> nn.Module:
    """Train one DemoCNN with AdamW on HU images ``(N, H, W)`` and 0/1 ``labels`` ``(N,)``."""
    torch.manual_seed(seed)
    x = torch.from_numpy(scale_hu(images))[:, None]
    y = torch.from_numpy(np.array(labels, dtype=np.float32))
    model = build(width)
    # Decoupled weight decay shrinks the head weights of channels that fire on constant
    # anatomy (their pooled value only shifts the bias), which keeps them out of Grad-CAM.
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            b = perm[i : i + batch_size]
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[b])[:, 0], y[b])
            loss.backward()
            opt.step()
    return model.eval()


def train_all(
    *, out_dir: Path | None = None, epochs: int = 10, seed: int = 0,
    manifest: str | None = None, log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every model of the manifest's phantom entry; write ``NAME.pt`` (state dict)
    and ``SHA256SUMS`` to ``out_dir``. Returns one row per model."""
    entry = load_manifest(manifest).dataset()
    if not isinstance(entry, PhantomDataset):
        raise ManifestError(
            f"dataset {entry.name!r} is not the phantom; `bench demo train` trains the demo's "
            "checkpoints on the phantom only"
        )
    spec = entry.generator.to_spec()
    out = Path(out_dir) if out_dir is not None else DEMO_CHECKPOINTS
    rows = []
    for m in entry.models:
        c = m.train_confounder if m.train_confounder is not None else DEMO_TRAIN_CONFOUNDER[m.name]
        t0 = time.perf_counter()
        ds = generate(spec, splits=["train"], confounder={"train": c})
        model = train_model(ds.image_array, ds.index["label"].to_numpy(), epochs=epochs,
                            seed=seed)
        path = out / f"{m.name}.pt"
        atomic_write(path, _saver(model.state_dict()))
        rows.append({"name": m.name, "confounder": c, "sha256": sha256_file(path),
                     "seconds": time.perf_counter() - t0})
        log(f"trained {m.name} (train confounder {c:.2f}) in {rows[-1]['seconds']:.1f} s")
    sums = "".join(f"{r['sha256']}  {r['name']}.pt\n" for r in rows)
    atomic_write(out / "SHA256SUMS", lambda tmp: _write_text(tmp, sums))
    return rows


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _saver(state: dict[str, torch.Tensor]) -> Callable[[Path], None]:
    def save(tmp: Path) -> None:
        # A file object, not the path: torch names the archive's root folder after the
        # file, and the temporary name would change the bytes (and the sha256) every time.
        with open(tmp, "wb") as f:
            torch.save(state, f)

    return save
