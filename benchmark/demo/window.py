"""The demo's input window: Hounsfield units to the [0, 1] range the demo CNN reads.

Kept apart from :mod:`benchmark.demo.cnn` (torch) so that describing a run, as
``bench report`` does, needs no torch import.
"""

from __future__ import annotations

import numpy as np

#: Window [-1200, 200] HU scaled to [0, 1]: wide enough below air to keep the scanner
#: noise texture, clipped above soft tissue so bone does not dominate.
HU_LOW, HU_HIGH = -1200.0, 200.0


def scale_hu(images: np.ndarray) -> np.ndarray:
    """Window HU to [0, 1]: ``clip((HU - low) / (high - low), 0, 1)``; 0 is below air."""
    return np.clip((images - HU_LOW) / (HU_HIGH - HU_LOW), 0.0, 1.0).astype(np.float32)
