"""Display values in [0, 1] → colour heatmaps and overlays, encoded as PNG."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

OVERLAY_ALPHA = 0.6
"""Opacity of the heatmap where attention is highest; where it is zero the image shows as is."""


def _turbo_lut() -> NDArray[np.uint8]:
    """Google's Turbo colormap (polynomial fit by its author), 256 entries."""
    x = np.linspace(0.0, 1.0, 256)
    red = 0.13572138 + x * (
        4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943)))
    )
    green = 0.09140261 + x * (
        2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604)))
    )
    blue = 0.10667330 + x * (
        12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973)))
    )
    lut = np.stack([red, green, blue], axis=1)
    return np.clip(lut * 255.0 + 0.5, 0, 255).astype(np.uint8)


TURBO = _turbo_lut()


def colorize(display: NDArray[np.float32]) -> NDArray[np.uint8]:
    """H×W values in [0, 1] → H×W×3 RGB."""
    index = np.clip(display * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return TURBO[index]


def overlay(
    image: Image.Image, display: NDArray[np.float32], alpha: float = OVERLAY_ALPHA
) -> NDArray[np.uint8]:
    """The heatmap blended onto the RGB image, opacity proportional to the display value.

    A map with no highlight (all zero, e.g. a flat map) leaves the image unchanged.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    if base.shape[:2] != display.shape:
        raise ValueError(f"image {base.shape[:2]} and map {display.shape} differ in size")
    weight = (alpha * np.clip(display, 0.0, 1.0))[:, :, None]
    blended = base * (1.0 - weight) + colorize(display).astype(np.float32) * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
