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
from attnserve.spec import PreprocessSpec
from attnserve.transform import ImageLimits, ResizeGeometry, decode_image, denormalize, to_model_input


@dataclass
class PreparedInput:
    tensor: NDArray[np.float32]
    """C×H×W, normalised."""
    geometry: ResizeGeometry
    format: str
    image: Image.Image | None = None
    """The oriented original as RGB, kept only when an overlay will be drawn on it."""


def preprocess_image(
    data: bytes, spec: PreprocessSpec, limits: ImageLimits, keep_image: bool = False
) -> PreparedInput:
    """Encoded bytes → normalised tensor + geometry (+ the oriented RGB original if asked)."""
    decoded = decode_image(data, limits, draft_for=None if keep_image else spec)
    prepared = to_model_input(decoded.image, spec, original_size=decoded.size)
    kept = decoded.image.convert("RGB") if keep_image else None
    return PreparedInput(prepared.tensor, prepared.geometry, decoded.format, kept)


def preprocess_tensor(
    tensor: NDArray[np.float32], spec: PreprocessSpec, keep_image: bool = False
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
    kept = denormalize(tensor, spec) if keep_image else None
    return PreparedInput(np.ascontiguousarray(tensor), geometry, "TENSOR", kept)
