"""The one image transform, shared by the gateway, training, evaluation and export.

decode (bytes → oriented image, refusing bombs and foreign bytes) → colour mode → resize per
the model's `PreprocessSpec` (stretch, letterbox, centre crop) → normalise; and the
`ResizeGeometry` that maps anything the model says about its input (maps, boxes, paths) back
to the original image's pixels. Torch-free.
"""

from .decode import (
    HIGH_DEPTH_MODES,
    SUPPORTED_FORMATS,
    DecodedImage,
    ImageHeader,
    ImageLimits,
    decode_image,
    draft_reduction,
    jpeg_draft_scale,
    probe_image,
    to_color_mode,
)
from .geometry import (
    ResizeGeometry,
    boxes_to_input,
    boxes_to_original,
    fit_within,
    interpolation_matrix,
    map_to_original,
    map_to_size,
    peak_in_original,
    stack_to_size,
)
from .model_input import (
    ModelInput,
    denormalize,
    image_from_pixels,
    normalize,
    normalize_pixels,
    pixels_to_input,
    quantize,
    resize_to_input,
    to_input_pixels,
    to_model_input,
)

__all__ = [
    "HIGH_DEPTH_MODES",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageHeader",
    "ImageLimits",
    "ModelInput",
    "ResizeGeometry",
    "boxes_to_input",
    "boxes_to_original",
    "decode_image",
    "draft_reduction",
    "denormalize",
    "fit_within",
    "image_from_pixels",
    "interpolation_matrix",
    "jpeg_draft_scale",
    "map_to_original",
    "map_to_size",
    "stack_to_size",
    "normalize",
    "normalize_pixels",
    "peak_in_original",
    "pixels_to_input",
    "probe_image",
    "quantize",
    "resize_to_input",
    "to_color_mode",
    "to_input_pixels",
    "to_model_input",
]
