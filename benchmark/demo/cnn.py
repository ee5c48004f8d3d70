"""The small CNN architecture of the three demo checkpoints.

Three 3x3 convolutions (two max-pools), global average pooling and one linear unit:
the output is one logit for the positive class (drowning). Input: (N, 1, H, W) images
already scaled by :func:`scale_hu`. The last convolution (``features.6``) keeps 1/4 of
the input resolution, which gives Grad-CAM 16 x 16 maps on 64 x 64 slices.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.demo.window import HU_HIGH, HU_LOW, scale_hu

__all__ = ["HU_HIGH", "HU_LOW", "TARGET_LAYER", "DemoCNN", "build", "scale_hu"]

TARGET_LAYER = "features.6"


class DemoCNN(nn.Module):
    """Small CNN: ``(N, 1, H, W) -> (N, outputs)`` logits; with ``dims=3`` the same on
    ``(N, 1, D, H, W)`` volumes (Conv3d), for 3D datasets and tests."""

    def __init__(self, width: int = 16, dims: int = 2, outputs: int = 1) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, not {dims}")
        conv, pool = (nn.Conv2d, nn.MaxPool2d) if dims == 2 else (nn.Conv3d, nn.MaxPool3d)
        self.features = nn.Sequential(
            conv(1, width, 3, padding=1),
            nn.ReLU(),
            pool(2),
            conv(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            pool(2),
            conv(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if h.dim() == 5:
            return self.head(h.mean(dim=(2, 3, 4)))
        return self.head(h.mean(dim=(2, 3)))


def build(width: int = 16, dims: int = 2, outputs: int = 1) -> DemoCNN:
    """Factory used by the checkpoint loader (``benchmark.demo.cnn:build``).

    2D models come in the channels-last memory format (``load_state_dict`` keeps it):
    PyTorch's CPU max-pool runs a scalar loop over NCHW tensors, 7x slower than over
    NHWC ones, and was a third of every forward and backward pass of the demo
    (perf/RESULTS.md, section 4). Outputs agree with NCHW to float32 rounding.
    """
    model = DemoCNN(width=width, dims=dims, outputs=outputs)
    if dims == 2:  # torch's stubs of Module.to leave out memory_format
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model
