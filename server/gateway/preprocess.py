"""The pipeline's first stage: image bytes (or a raw tensor) → the model's input and its geometry.

Pure functions over `attnserve.transform`, the one image transform training uses too. Errors
are `InvalidInput` with a message a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.spec import ColorMode, PreprocessSpec
from attnserve.transform import (
    HIGH_DEPTH_MODES,
    ImageLimits,
    ResizeGeometry,
    decode_image,
    denormalize,
    fit_within,
    to_color_mode,
    to_model_input,
)


@dataclass
class PreparedInput:
    tensor: NDArray[np.float32]
    """C×H×W, normalised."""
    geometry: ResizeGeometry
    format: str
    image: Image.Image | None = None
    """The oriented original as RGB at the render size, kept only when an overlay will be drawn
    on it."""


def preprocess_image(
    data: bytes,
    spec: PreprocessSpec,
    limits: ImageLimits,
    keep_image: bool = False,
    render_max_side: int | None = None,
) -> PreparedInput:
    """Encoded bytes → normalised tensor + geometry (+ the oriented original as RGB if asked,
    scaled down to fit ``render_max_side``).

    The model sees the same pixels whatever the answer draws: a large JPEG is decoded at the
    DCT scale its input needs and, when an image is kept that this decode is too small to show,
    decoded again at the scale it will be shown at (a 4000×3000 photo at 1024 px: 1/8 then 1/2,
    ~3× faster than one full decode and its resize).
    """
    decoded = decode_image(data, limits, draft_for=spec)
    prepared = to_model_input(decoded.image, spec, original_size=decoded.size)
    kept = None
    if keep_image:
        size = decoded.size if render_max_side is None else fit_within(*decoded.size, render_max_side)
        if decoded.image.width < size[0] or decoded.image.height < size[1]:  # too small to show
            decoded = decode_image(data, limits, draft_for=size)
        kept = shown_at(decoded.image, size, spec.pad_value)
    return PreparedInput(prepared.tensor, prepared.geometry, decoded.format, kept)


def shown_at(image: Image.Image, size: tuple[int, int], background: float) -> Image.Image:
    """The image as RGB at ``size`` (width, height), for drawing on: resized in its own mode
    first where Pillow can (a 40-megapixel original never gets a full-size RGB copy), then
    read as RGB the way the model reads colours (high bit depths scaled, transparency over
    ``background``)."""
    if image.size != size:
        if image.mode in HIGH_DEPTH_MODES:  # Pillow resizes these as 32-bit: 8 bits first, in strips
            image = to_color_mode(image, ColorMode.GRAY, background)
        elif image.mode in ("1", "P", "PA"):  # resized in these modes is nearest-neighbour
            image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
        try:
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        except (ValueError, OSError):  # a mode Pillow cannot resample: convert, then resize
            image = to_color_mode(image, ColorMode.RGB, background).resize(size, Image.Resampling.BILINEAR)
    return to_color_mode(image, ColorMode.RGB, background)


def preprocess_tensor(
    tensor: NDArray[np.float32],
    spec: PreprocessSpec,
    keep_image: bool = False,
    render_max_side: int | None = None,
) -> PreparedInput:
    """A client-preprocessed tensor, (C, H, W) or (1, C, H, W), checked against the spec."""
    expected = (spec.channels, *spec.input_size)
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dtype != np.float32:
        raise InvalidInput(f"the input tensor must be float32, got {tensor.dtype}")
    if tuple(tensor.shape) != expected:
        raise InvalidInput(
            f"the input tensor has shape {tuple(tensor.shape)}; this model takes {expected} (C, H, W)"
        )
    if not np.isfinite(tensor).all():
        raise InvalidInput("the input tensor holds NaN or infinite values")
    geometry = ResizeGeometry.identity(expected[2], expected[1])
    kept = None
    if keep_image:
        kept = denormalize(tensor, spec)
        if render_max_side is not None:
            kept = shown_at(kept, fit_within(*kept.size, render_max_side), spec.pad_value)
    return PreparedInput(np.ascontiguousarray(tensor), geometry, "TENSOR", kept)
