"""Encoded bytes → an oriented Pillow image in an 8-bit mode, refusing what should not be decoded.

Every failure is `InvalidInput` with a message a user can act on: empty or foreign bytes,
unsupported formats, truncated data, and images whose header declares more pixels than the
limit (decompression bombs are refused before a single pixel is decoded).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from attnserve.errors import InvalidInput, TooLarge, UnsupportedMedia
from attnserve.spec import ColorMode, PreprocessSpec

from .geometry import ResizeGeometry

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
_EXIF_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)

# Our own pixel limit is checked from the header before decoding; Pillow's (which only warns
# below 2× its default) is lifted so that ours is the one that speaks.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_side: int = 16_384
    """Each side: memory for maps and overlays grows with a side, not only with the area."""
    max_decoded_bytes: int = 256 * 2**20
    """The decoded raster (area × bands × bytes per band: 16-bit and float images cost more)."""


# Bytes per pixel of Pillow's modes in memory (it keeps 3 and 2 bands in 4 bytes); others 4.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
"""Modes of more than 8 bits a band; read as 8-bit L by `to_color_mode`."""


CORRUPT = (OSError, ValueError, SyntaxError, TypeError, KeyError, EOFError)
"""What Pillow raises on damaged data, depending on the format and where the damage is (a TIFF
frame without its width: TypeError; an unknown tag type: KeyError)."""


def bytes_per_pixel(mode: str) -> int:
    """What one pixel of a Pillow image in ``mode`` takes in memory."""
    return _BYTES_PER_PIXEL.get(mode, 4)


@dataclass
class DecodedImage:
    image: Image.Image
    """EXIF-oriented; smaller than `size` when a JPEG was decoded at reduced scale."""
    format: str
    size: tuple[int, int]
    """(width, height) of the full-resolution, oriented image: the coordinates answers use."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding a pixel."""

    width: int
    height: int
    mode: str
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """The raster Pillow allocates to decode it."""
        return self.pixels * bytes_per_pixel(self.mode)


def check_header(image: Image.Image, header: ImageHeader, limits: ImageLimits) -> None:
    """What the header alone says is refused: several frames, no pixels, too large."""
    try:
        frames = getattr(image, "n_frames", 1)  # reads every frame's header
    except CORRUPT as exc:
        raise InvalidInput(f"the image data is corrupt or truncated: {exc}") from None
    if frames > 1:
        raise InvalidInput(
            f"the {header.format} holds {frames} frames (an animation or a multi-page file); send one image"
        )
    width, height = header.width, header.height
    if width < 1 or height < 1:
        raise InvalidInput(f"the image has no pixels ({width}×{height})")
    if header.pixels > limits.max_pixels:
        raise TooLarge(
            f"the image is {width}×{height} = {header.pixels:,} pixels; the limit is {limits.max_pixels:,}"
        )
    if max(width, height) > limits.max_side:
        raise TooLarge(f"the image is {width}×{height}; each side may be at most {limits.max_side:,} pixels")
    if (decoded := header.decoded_bytes) > limits.max_decoded_bytes:
        raise TooLarge(
            f"the {width}×{height} {header.mode} image decodes to {decoded / 2**20:.0f} MiB; the limit is "
            f"{limits.max_decoded_bytes / 2**20:.0f} MiB (send 8-bit pixels or a smaller image)"
        )


def probe_image(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Reads and checks the header only (fast: no pixel is decoded); every failure is
    `InvalidInput`, the same as `decode_image` would raise."""
    return _open(data, limits)[1]


def jpeg_draft_scale(width: int, height: int, target: PreprocessSpec | tuple[int, int]) -> float:
    """The scale a JPEG of this (oriented) size needs, at most 1: for a model's input (a
    `PreprocessSpec`), twice the model's resolution; to be shown at a (width, height), that size.
    libjpeg decodes at the next 1/1, 1/2, 1/4 or 1/8 at or above it (`draft_reduction`)."""
    if isinstance(target, tuple):
        return min(1.0, max(target[0] / width, target[1] / height))
    geometry = ResizeGeometry.for_spec(width, height, target)
    return min(1.0, 2.0 * max(geometry.scale_x, geometry.scale_y))


def draft_reduction(scale: float) -> int:
    """The factor (1, 2, 4 or 8) libjpeg divides each side by when asked for ``scale``: the
    largest whose result is still at least that scale."""
    return 1 if scale >= 1.0 else 2 ** min(3, math.floor(math.log2(1.0 / scale)))


def _open(data: bytes, limits: ImageLimits) -> tuple[Image.Image, ImageHeader]:
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise TooLarge(f"the image is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            f"the bytes are not an image in a supported format ({', '.join(SUPPORTED_FORMATS)})"
        ) from None
    except (*CORRUPT, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"the image data is corrupt or truncated: {exc}") from None
    image_format = image.format or "UNKNOWN"
    if image_format not in SUPPORTED_FORMATS:
        supported = ", ".join(SUPPORTED_FORMATS)
        raise UnsupportedMedia(f"{image_format} images are not supported; send {supported}")
    header = ImageHeader(image.width, image.height, image.mode, image_format)
    check_header(image, header, limits)
    return image, header


def decode_image(
    data: bytes, limits: ImageLimits, draft_for: PreprocessSpec | tuple[int, int] | None = None
) -> DecodedImage:
    """Decodes and orients an image; every failure is `InvalidInput`.

    With ``draft_for``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
    has twice the resolution a model's input needs (a `PreprocessSpec`), or the (oriented)
    width and height it will be shown at: a large photo then costs a fraction of a full decode,
    and the answer's coordinates stay those of the full image.
    """
    image, header = _open(data, limits)
    image_format, width, height = header.format, header.width, header.height
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except CORRUPT:
        orientation = 1
    size = (height, width) if orientation in _SWAPPED_ORIENTATIONS else (width, height)
    if draft_for is not None and image_format == "JPEG":
        scale = jpeg_draft_scale(size[0], size[1], draft_for)
        image.draft(image.mode, (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not a copy: 152 MiB for 40 MP of RGB
    except CORRUPT as exc:
        raise InvalidInput(f"the image data is corrupt or truncated: {exc}") from None
    return DecodedImage(image, image_format, size)


_CONVERT_ROWS = 256


def _to_8bit(image: Image.Image, scale: Callable[[NDArray[np.float32]], NDArray[np.float32]]) -> Image.Image:
    """A 16/32-bit or float image → 8-bit L, ``scale`` mapping values to 0–255, a strip of rows
    at a time (float copies of a whole 6000×6600 image would cost 150 MiB)."""
    result = np.empty((image.height, image.width), dtype=np.uint8)
    top = 0
    for rows in _row_strips(image):
        result[top : top + len(rows)] = np.clip(scale(rows) + 0.5, 0, 255).astype(np.uint8)
        top += len(rows)
    return Image.fromarray(result, "L")


def _largest(image: Image.Image) -> float:
    """The largest value of a one-band image."""
    extrema = image.getextrema()
    high = extrema[1]
    assert not isinstance(high, tuple), "a one-band image has one (low, high) pair"
    return float(high)


def _row_strips(image: Image.Image) -> Iterator[NDArray[np.float32]]:
    width, height = image.size
    for top in range(0, height, _CONVERT_ROWS):
        yield np.asarray(image.crop((0, top, width, min(height, top + _CONVERT_ROWS))), dtype=np.float32)


def to_color_mode(image: Image.Image, color_mode: ColorMode, background: float) -> Image.Image:
    """Any Pillow mode (1, L, P, RGBA, LA, CMYK, I;16, I, F, ...) as 8-bit L or RGB.

    High bit depths are scaled to 8 bits by their full range; transparency is composited over
    ``background`` (the model's padding grey level), not dropped to black-or-garbage.
    """
    if image.mode in HIGH_DEPTH_MODES and image.mode != "F":
        high = _largest(image)
        full_scale = 65535.0 if image.mode.startswith("I;16") or high > 255 else 255.0
        image = _to_8bit(image, lambda rows: rows / full_scale * 255.0)
    elif image.mode == "F":

        def finite(rows: NDArray[np.float32]) -> NDArray[np.float32]:
            return np.nan_to_num(rows, nan=0.0, posinf=255.0, neginf=0.0)

        high = _largest(image)
        if not np.isfinite(high):  # NaN or ±inf somewhere: the largest value once they are replaced
            high = max(float(finite(rows).max(initial=0)) for rows in _row_strips(image))
        scale = 255.0 if high <= 1.0 else 1.0
        image = _to_8bit(image, lambda rows: finite(rows) * scale)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        grey = int(round(background * 255))
        canvas = Image.new("RGBA", rgba.size, (grey, grey, grey, 255))
        image = Image.alpha_composite(canvas, rgba)
    try:
        return image.convert(color_mode.value)
    except ValueError:  # LAB, HSV, ...: modes Pillow cannot convert
        raise UnsupportedMedia(
            f"{image.mode} images cannot be read as {color_mode.value}; send RGB, grayscale or CMYK"
        ) from None
