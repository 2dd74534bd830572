"""The one image transform, shared by the gateway, training, evaluation and export.

decode (bytes → oriented image, refusing bombs and foreign bytes) → colour mode → resize per
the model's `PreprocessSpec` (stretch, letterbox, centre crop) → normalise; and the
`ResizeGeometry` that maps anything the model says about its input (maps, boxes, paths) back
to the original image's pixels. Torch-free.
"""

from .decode import SUPPORTED_FORMATS, DecodedImage, ImageLimits, decode_image, to_color_mode
from .geometry import ResizeGeometry, interpolation_matrix, map_to_original, peak_in_original
from .model_input import (
    ModelInput,
    denormalize,
    image_from_pixels,
    normalize,
    normalize_pixels,
    quantize,
    resize_to_input,
    to_model_input,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageLimits",
    "ModelInput",
    "ResizeGeometry",
    "decode_image",
    "denormalize",
    "image_from_pixels",
    "interpolation_matrix",
    "map_to_original",
    "normalize",
    "normalize_pixels",
    "peak_in_original",
    "quantize",
    "resize_to_input",
    "to_color_mode",
    "to_model_input",
]
