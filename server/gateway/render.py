"""Display values in [0, 1] → colour heatmaps and overlays; boxes and glimpse paths drawn on the
image; the images encoded (PNG, JPEG, WebP)."""

from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from attnserve.prediction import Glimpse, ImageEncoding

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


STRIP_ROWS = 64
"""Overlays are blended this many rows at a time: the temporaries stay about 1 MB for a
640-pixel-wide strip, mostly in cache, whatever the image's size (at 640×480, 64 rows measured
as fast as 32 and faster than 128 or 256)."""


def display_levels(display: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Values in [0, 1] → levels 0–255, floor(v × 255 + 0.5): the heatmap's colour index, and
    the UINT8 form of UPSAMPLED maps."""
    return np.clip(display * 255.0 + 0.5, 0, 255).astype(np.uint8)


def colorize(display: NDArray[np.float32]) -> NDArray[np.uint8]:
    """H×W values in [0, 1] → H×W×3 RGB."""
    return TURBO.take(display_levels(display), axis=0)  # 4× faster than TURBO[levels]


@functools.cache
def _weighted_colours(alpha: float) -> tuple[NDArray[np.uint64], int]:
    """Turbo's colours times every blend weight, plus the rounding term: entry ``level ×
    weights + weight`` holds TURBO[level] × weight + 128, one pixel's three channels in the
    16-bit lanes of a uint64, so a strip's colours are one gather of whole pixels."""
    weights = int(np.rint(alpha * 256.0)) + 1
    lanes = np.zeros((256, weights, 4), dtype=np.uint16)
    lanes[..., :3] = TURBO.astype(np.uint16)[:, None, :] * np.arange(weights, dtype=np.uint16)[None, :, None]
    lanes[..., :3] += 128
    return lanes.reshape(-1, 4).view(np.uint64).reshape(-1), weights


def overlay(
    image: Image.Image, display: NDArray[np.float32], alpha: float = OVERLAY_ALPHA
) -> NDArray[np.uint8]:
    """The heatmap blended onto the RGB image, opacity proportional to the display value.

    A map with no highlight (all zero, e.g. a flat map) leaves the image unchanged. Integer
    blending with weights w in 1/256 steps (within one level of exact float blending):
    (image × (256 − w) + colour × w + 128) >> 8, row strip by row strip. The products come
    from a table (`_weighted_colours`) and each channel is one long loop (a 640×480 overlay in
    about 3 ms on a 2-core machine, against 10–14 ms broadcasting over the 3 channels).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha is an opacity in [0, 1], not {alpha}")
    base = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    if base.shape[:2] != display.shape:
        raise ValueError(f"image {base.shape[:2]} and map {display.shape} differ in size")
    colours, weights = _weighted_colours(alpha)
    result = np.empty_like(base)
    for top in range(0, base.shape[0], STRIP_ROWS):
        rows = slice(top, top + STRIP_ROWS)
        strip = np.clip(display[rows], 0.0, 1.0)
        weight = np.rint(strip * (alpha * 256.0)).astype(np.uint16)
        key = display_levels(strip).astype(np.uint32)  # up to 256 × 257 (alpha 1)
        key *= weights
        key += weight
        weighted = colours.take(key).view(np.uint16).reshape(*key.shape, 4)
        inverse = 256 - weight
        blended = base[rows].astype(np.uint16)
        for channel in range(3):
            plane = blended[..., channel]
            plane *= inverse
            plane += weighted[..., channel]
        blended >>= 8
        result[rows] = blended
    return result


WEBP_METHOD = 0
"""libwebp's effort, 0 (fastest) – 6. A 640×480 overlay of a photo at quality 80 took 8, 9, 12,
27, 27, 30 and 54 ms for methods 0–6 and 35, 34, 28, 27, 27, 26 and 26 KB: the slower methods
save a quarter of the bytes at 2–7× the time; every one is far below PNG's 440–480 KB."""

_PILLOW_FORMATS = {ImageEncoding.PNG: "PNG", ImageEncoding.JPEG: "JPEG", ImageEncoding.WEBP: "WEBP"}

# PNG, pixel for pixel the same either way. zlib's run-length strategy suits photos (overlays,
# drawn boxes and paths): 640×480 overlays of photos came out 9–15 % smaller than the default
# strategy's at level 3, and 30–40 % faster to encode. Smooth synthetic heatmaps compress better
# with the default strategy (RLE: +13–30 % bytes), kept at level 3.
_PNG_PHOTO_OPTIONS: dict[str, Any] = {"compress_level": 3, "compress_type": zlib.Z_RLE}
_PNG_SYNTHETIC_OPTIONS: dict[str, Any] = {"compress_level": 3}

_LOSSY_OPTIONS: dict[ImageEncoding, dict[str, Any]] = {
    # Pillow's defaults otherwise: 4:2:0 chroma (4:4:4 took +70 % time and +30 % bytes for ~0.3
    # levels less error), no Huffman optimisation (2× the time for 2 % fewer bytes).
    ImageEncoding.JPEG: {},
    ImageEncoding.WEBP: {"method": WEBP_METHOD},
}

_WORKING_BYTES_PER_PIXEL = {ImageEncoding.WEBP: 8}
"""Encoder memory beyond its input and output: libwebp converts to ARGB and to YUV (about 7
bytes a pixel measured); zlib and libjpeg work a few rows at a time."""

LOSSY_SHARE_QUALITY = 90
"""Up to this quality a lossy encoding is counted at `LOSSY_SIZE_SHARE` of PNG's bytes."""
LOSSY_SIZE_SHARE = 0.5
"""Measured at 640×480, quality ≤ 90, JPEG and WebP: about 0.1 of PNG's bytes for a photo,
at most 0.3 for uniform noise (the worst case). Above quality 90 noise reaches 0.9: counted
as PNG."""


@dataclass(frozen=True)
class ImageEncoder:
    """How the image forms of one answer are encoded; the options are checked beforehand (see
    `attnserve.server.gateway.pipeline.resolve_image_encoder`)."""

    encoding: ImageEncoding = ImageEncoding.PNG
    quality: int | None = None
    """1–100 for a lossy encoding (None: its default); None for PNG."""

    @property
    def effective_quality(self) -> int | None:
        return self.quality if self.quality is not None else self.encoding.default_quality

    def encode(self, pixels: NDArray[np.uint8], *, photographic: bool = True) -> bytes:
        """H×W×3 RGB → the encoded image. ``photographic``: the pixels are a photo's (an
        overlay, boxes or a path drawn on the image), not a synthetic heatmap; PNG compresses
        the two differently."""
        quality = self.effective_quality
        if quality is None:
            options = _PNG_PHOTO_OPTIONS if photographic else _PNG_SYNTHETIC_OPTIONS
        else:
            options = {"quality": quality, **_LOSSY_OPTIONS[self.encoding]}
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=_PILLOW_FORMATS[self.encoding], **options)
        return buffer.getvalue()

    @property
    def size_share(self) -> float:
        """An upper estimate of the encoded size as a share of PNG's, for admission."""
        quality = self.effective_quality
        return LOSSY_SIZE_SHARE if quality is not None and quality <= LOSSY_SHARE_QUALITY else 1.0

    @property
    def working_bytes_per_pixel(self) -> int:
        """The encoder's own memory at its peak, beyond its input and output, for admission."""
        return _WORKING_BYTES_PER_PIXEL.get(self.encoding, 0)


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


SEGMENT_ALPHA = 0.5
"""Opacity of a class's colour over the image in drawn segmentations and instance masks."""


def class_colours(count: int) -> NDArray[np.uint8]:
    """A colour per class index along Turbo; index 0 (the background) black, never drawn."""
    colours = np.zeros((max(count, 1), 3), dtype=np.uint8)
    for index in range(1, count):
        colours[index] = _colour(index - 1, count - 1)
    return colours


def draw_segmentation(
    image: Image.Image, labels: NDArray[np.uint8], colours: NDArray[np.uint8]
) -> NDArray[np.uint8]:
    """Each pixel's class colour blended onto the RGB image (the background, 0, left as it is)."""
    base = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    if base.shape[:2] != labels.shape:
        raise ValueError(f"image {base.shape[:2]} and labels {labels.shape} differ in size")
    weight = int(round(SEGMENT_ALPHA * 256))
    result = base.copy()
    for top in range(0, base.shape[0], STRIP_ROWS):
        rows = slice(top, top + STRIP_ROWS)
        strip = labels[rows]
        painted = strip > 0
        if not painted.any():
            continue
        blended = base[rows][painted].astype(np.uint16) * (256 - weight)
        blended += colours[strip[painted]].astype(np.uint16) * weight + 128
        result[rows][painted] = (blended >> 8).astype(np.uint8)
    return result


@dataclass(frozen=True)
class DrawnInstance:
    """One instance as drawn: its box (render pixels), its mask over ``rect`` and its caption."""

    box: tuple[float, float, float, float]
    rect: tuple[int, int, int, int]
    mask: NDArray[np.bool_]
    colour: tuple[int, int, int]
    caption: str


def draw_instances(image: Image.Image, instances: list[DrawnInstance]) -> NDArray[np.uint8]:
    """Instances on the RGB image: masks tinted in their class's colour, boxes outlined and
    captioned (label and score), the best drawn last (on top)."""
    canvas = np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    weight = int(round(SEGMENT_ALPHA * 256))
    for instance in reversed(instances):
        x0, y0, x1, y1 = instance.rect
        region = canvas[y0:y1, x0:x1]
        inside = region[instance.mask].astype(np.uint16) * (256 - weight)
        inside += np.array(instance.colour, dtype=np.uint16) * weight + 128
        region[instance.mask] = (inside >> 8).astype(np.uint8)
    drawn = Image.fromarray(canvas)
    draw = ImageDraw.Draw(drawn)
    width = _stroke(drawn)
    for instance in reversed(instances):
        draw.rectangle(_inside(instance.box, drawn), outline=instance.colour, width=width)
        draw.text(
            (instance.box[0] + width + 1, instance.box[1] + width), instance.caption, fill=instance.colour
        )
    return np.asarray(drawn, dtype=np.uint8)
