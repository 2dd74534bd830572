"""Display values in [0, 1] → colour heatmaps and overlays; boxes and glimpse paths drawn on the
image; PNG encoding."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from attnserve.prediction import Glimpse

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


STRIP_ROWS = 256
"""Overlays are blended this many rows at a time: the temporaries stay a few MB whatever the
image's size."""


def colorize(display: NDArray[np.float32]) -> NDArray[np.uint8]:
    """H×W values in [0, 1] → H×W×3 RGB."""
    index = np.clip(display * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return TURBO[index]


def overlay(
    image: Image.Image, display: NDArray[np.float32], alpha: float = OVERLAY_ALPHA
) -> NDArray[np.uint8]:
    """The heatmap blended onto the RGB image, opacity proportional to the display value.

    A map with no highlight (all zero, e.g. a flat map) leaves the image unchanged. Integer
    blending with weights in 1/256 steps (within one level of exact float blending), row strip
    by row strip.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if base.shape[:2] != display.shape:
        raise ValueError(f"image {base.shape[:2]} and map {display.shape} differ in size")
    result = np.empty_like(base)
    for top in range(0, base.shape[0], STRIP_ROWS):
        rows = slice(top, top + STRIP_ROWS)
        strip = np.clip(display[rows], 0.0, 1.0)
        weight = np.rint(strip * (alpha * 256.0)).astype(np.uint16)[:, :, None]
        blended = base[rows].astype(np.uint16) * (256 - weight)
        blended += colorize(strip).astype(np.uint16) * weight
        blended += 128
        result[rows] = (blended >> 8).astype(np.uint8)
    return result


def encode_png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _stroke(image: Image.Image) -> int:
    return max(1, round(min(image.size) / 160))


def draw_boxes(
    image: Image.Image, boxes: list[tuple[float, float, float, float]], scale: float = 1.0
) -> NDArray[np.uint8]:
    """Boxes as rectangles on the RGB image, coloured along Turbo in order and numbered
    (1 = the first, e.g. the coarsest scale's zoom). ``scale``: image pixels per unit of the
    boxes' coordinates (the original shown at a smaller render size)."""
    boxes = [_scaled(box, scale) for box in boxes]
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = _stroke(canvas)
    for index, box in enumerate(boxes):
        colour = _colour(index, len(boxes))
        draw.rectangle(_inside(box, canvas), outline=colour, width=width)
        draw.text((box[0] + width + 1, box[1] + width), str(index + 1), fill=colour)
    return np.asarray(canvas, dtype=np.uint8)


def draw_path(image: Image.Image, path: list[Glimpse], scale: float = 1.0) -> NDArray[np.uint8]:
    """A glimpse path: each glimpse's sharpest patch as a numbered square, joined in order by a
    line through the centres; the first glimpse's widest patch is outlined for context.
    ``scale`` as in `draw_boxes`."""
    path = [
        Glimpse((g.center[0] * scale, g.center[1] * scale), [_scaled(b, scale) for b in g.patches])
        for g in path
    ]
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = _stroke(canvas)
    centres = [g.center for g in path]
    if len(centres) > 1:
        draw.line(centres, fill=(255, 255, 255), width=width)
    for index, glimpse in enumerate(path):
        colour = _colour(index, len(path))
        if glimpse.patches:
            draw.rectangle(_inside(glimpse.patches[0], canvas), outline=colour, width=width)
            draw.text(
                (glimpse.patches[0][0] + width + 1, glimpse.patches[0][1] + width),
                str(index + 1),
                fill=colour,
            )
        x, y = glimpse.center
        draw.ellipse((x - 2 * width, y - 2 * width, x + 2 * width, y + 2 * width), fill=colour)
    return np.asarray(canvas, dtype=np.uint8)


def _scaled(box: tuple[float, float, float, float], scale: float) -> tuple[float, float, float, float]:
    return box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale


def _colour(index: int, count: int) -> tuple[int, int, int]:
    position = 0.15 + 0.8 * (index / max(1, count - 1))
    red, green, blue = TURBO[int(position * 255)]
    return int(red), int(green), int(blue)


def _inside(box: tuple[float, float, float, float], image: Image.Image) -> tuple[float, float, float, float]:
    """A box in pixel-edge coordinates as the rectangle of pixels it covers, within the image."""
    x0, y0, x1, y1 = box
    return (
        min(max(x0, 0.0), image.width - 1),
        min(max(y0, 0.0), image.height - 1),
        min(max(x1 - 1, x0), image.width - 1),
        min(max(y1 - 1, y0), image.height - 1),
    )
