"""The small CNN architecture of the three demo checkpoints.

Three 3x3 convolutions (two max-pools), global average pooling and one linear unit:
the output is one logit for the positive class (drowning). Input: (N, 1, H, W) images
already scaled by :func:`scale_hu`. The last convolution (``features.6``) keeps 1/4 of
the input resolution, which gives Grad-CAM 16 x 16 maps on 64 x 64 slices.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Window [-1200, 200] HU scaled to [0, 1]: wide enough below air to keep the scanner
#: noise texture, clipped above soft tissue so bone does not dominate.
HU_LOW, HU_HIGH = -1200.0, 200.0
TARGET_LAYER = "features.6"


def scale_hu(images: np.ndarray) -> np.ndarray:
    """Window HU to [0, 1]: ``clip((HU - low) / (high - low), 0, 1)``; 0 is below air."""
    return np.clip((images - HU_LOW) / (HU_HIGH - HU_LOW), 0.0, 1.0).astype(np.float32)


class DemoCNN(nn.Module):
    """Small CNN: ``(N, 1, H, W) -> (N, 1)`` logits."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h.mean(dim=(2, 3)))


def build(width: int = 16) -> DemoCNN:
    """Factory used by the checkpoint loader (``benchmark.demo.cnn:build``)."""
    return DemoCNN(width=width)
