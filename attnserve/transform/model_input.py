"""An image → the model's input tensor, and the geometry that maps answers back.

This is the one image transform of attnserve: the gateway runs it on every request, training
runs it on every canvas it learns from, evaluation and export's parity check run it on theirs.
A model can then never see at serving time pixels made another way than those it was trained
on (three hand-kept copies of this code are how a train/serve skew came back once).

Pure functions of (pixels, spec); torch-free, so the gateway needs neither torch nor a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.spec import Interpolation, PreprocessSpec

from .decode import to_color_mode
from .geometry import ResizeGeometry


@dataclass
class ModelInput:
    tensor: NDArray[np.float32]
    """C×H×W, normalised."""
    geometry: ResizeGeometry
    """How the original image's pixels map onto the input (and back)."""


_FILTERS = {
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
}


def resize_to_input(
    image: Image.Image,
    geometry: ResizeGeometry,
    pad_value: float,
    interpolation: Interpolation = Interpolation.BILINEAR,
) -> Image.Image:
    """The model input canvas: the source box resized into the destination box, padding around.

    ``image`` may be smaller than ``geometry``'s original size (a JPEG decoded at reduced
    scale): the source box is mapped onto it.
    """
    src = geometry.source_box()
    dst = geometry.destination_box()
    size = (max(1, dst[2] - dst[0]), max(1, dst[3] - dst[1]))
    sx, sy = image.width / geometry.width, image.height / geometry.height
    box = (src[0] * sx, src[1] * sy, src[2] * sx, src[3] * sy)
    resized = image.resize(size, _FILTERS[interpolation], box=box, reducing_gap=3.0)
    if size == (geometry.input_width, geometry.input_height):
        return resized
    pad = int(round(pad_value * 255))
    fill: int | tuple[int, int, int] = pad if image.mode == "L" else (pad, pad, pad)
    canvas = Image.new(image.mode, (geometry.input_width, geometry.input_height), fill)
    canvas.paste(resized, (dst[0], dst[1]))
    return canvas


def normalize_pixels(pixels: NDArray[Any], spec: PreprocessSpec) -> NDArray[np.float32]:
    """Pixels in [0, 1], channels last (…×H×W×C, C = 1 or the model's) → ``(p - mean) / std``,
    channels first (…×C×H×W), float32. One channel is repeated for a colour model."""
    pixels = np.asarray(pixels, dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    normalised = (pixels - mean) / std
    if normalised.shape[-1] != spec.channels:
        normalised = np.broadcast_to(normalised, (*normalised.shape[:-1], spec.channels))
    return np.ascontiguousarray(np.moveaxis(normalised, -1, -3))


def pixels_to_input(pixels: NDArray[np.uint8], spec: PreprocessSpec) -> NDArray[np.float32]:
    """8-bit pixels, channels last (…×H×W×C) → ``(pixel / 255 - mean) / std``, channels first."""
    return normalize_pixels(np.asarray(pixels).astype(np.float32) * np.float32(1.0 / 255.0), spec)


def normalize(image: Image.Image, spec: PreprocessSpec) -> NDArray[np.float32]:
    """8-bit L/RGB image → C×H×W float32, ``(pixel / 255 - mean) / std``."""
    return pixels_to_input(_channels_last(image), spec)


def _channels_last(image: Image.Image) -> NDArray[np.uint8]:
    pixels = np.asarray(image)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def denormalize(tensor: NDArray[np.float32], spec: PreprocessSpec) -> Image.Image:
    """A C×H×W model input back to the RGB image it shows (for overlays on tensor inputs)."""
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    pixels = np.clip((tensor * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("RGB")


def to_input_pixels(
    image: Image.Image, spec: PreprocessSpec, original_size: tuple[int, int] | None = None
) -> tuple[NDArray[np.uint8], ResizeGeometry]:
    """Any Pillow image → colour mode → geometry-aware resize (every resize mode): the model
    input's 8-bit pixels (H×W×C) and the geometry.

    ``original_size`` is the (width, height) the answer's coordinates refer to, when ``image``
    was decoded at reduced scale; by default the image's own size.
    """
    width, height = original_size or image.size
    geometry = ResizeGeometry.for_spec(width, height, spec)
    converted = to_color_mode(image, spec.color_mode, spec.pad_value)
    return _channels_last(resize_to_input(converted, geometry, spec.pad_value, spec.interpolation)), geometry


def to_model_input(
    image: Image.Image, spec: PreprocessSpec, original_size: tuple[int, int] | None = None
) -> ModelInput:
    """Any Pillow image → the normalised model input and its geometry (`to_input_pixels`,
    then `pixels_to_input`)."""
    pixels, geometry = to_input_pixels(image, spec, original_size)
    return ModelInput(pixels_to_input(pixels, spec), geometry)


def quantize(pixels: NDArray[Any]) -> NDArray[np.uint8]:
    """Pixels in [0, 1] → 8-bit, rounding to nearest: what an image file stores."""
    return np.clip(np.asarray(pixels, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def image_from_pixels(pixels: NDArray[Any]) -> Image.Image:
    """An H×W (grey) or H×W×3 (RGB) array in [0, 1] as the 8-bit image a file would hold."""
    data = quantize(pixels)
    return Image.fromarray(data, "L" if data.ndim == 2 else "RGB")
