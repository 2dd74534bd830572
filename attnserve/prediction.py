"""The prediction domain, one set of types for the gateway, its fronts and the clients.

`PredictionRequest` is what a front decodes from its wire format (gRPC, HTTP); the pipeline
answers with a `Prediction`. How these travel (protobuf, JSON) is `attnserve.codec`'s job, so
every front and every client agrees by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import AttentionKind


class MapForm(StrEnum):
    """The forms an attention map can be returned in (`attnserve.v1.MapFormat`)."""

    RAW = "raw"
    """Values at the model's native resolution (float32 unless `MapDType` says otherwise)."""
    UPSAMPLED = "upsampled"
    """Display values in [0, 1] at the render size (the original's unless it is larger than the
    request's or the gateway's ``render_max_side``)."""
    HEATMAP_PNG = "heatmap_png"
    """A colour heatmap image, encoded as the request's `ImageEncoding` says (PNG by default)."""
    OVERLAY_PNG = "overlay_png"
    """The heatmap blended onto the image (boxes, paths drawn on it), encoded likewise."""


IMAGE_FORMS = frozenset({MapForm.UPSAMPLED, MapForm.HEATMAP_PNG, MapForm.OVERLAY_PNG})
"""Forms drawn in the original image's pixels; only `render`ed maps get them."""

ENCODED_FORMS = frozenset({MapForm.HEATMAP_PNG, MapForm.OVERLAY_PNG})
"""Forms returned as encoded images, in the request's `ImageEncoding`."""


class ImageEncoding(StrEnum):
    """How the encoded image forms are encoded (`attnserve.v1.ImageEncoding`); the value is the
    MIME subtype and a file suffix."""

    PNG = "png"
    """Lossless, the default."""
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def default_quality(self) -> int | None:
        """The quality a lossy encoding uses unless asked; None: lossless (no quality)."""
        return _DEFAULT_QUALITY.get(self)


_DEFAULT_QUALITY = {ImageEncoding.JPEG: 85, ImageEncoding.WEBP: 80}

QUALITY_RANGE = (1, 100)
"""The qualities a lossy encoding accepts, both ends included."""


class MapDType(StrEnum):
    """The data type of the tensor forms (`attnserve.v1.DataType`)."""

    FLOAT32 = "float32"
    """The default."""
    FLOAT16 = "float16"
    """RAW and UPSAMPLED; magnitudes beyond float16's largest (65504) saturate."""
    UINT8 = "uint8"
    """UPSAMPLED only: a display value v as the level floor(v × 255 + 0.5) (the heatmap's colour
    index); level / 255 is within 1/510 of v. Raw values have no fixed range: RAW refuses it."""

    @property
    def itemsize(self) -> int:
        return np.dtype(self.value).itemsize


@dataclass(frozen=True)
class PredictionRequest:
    """A prediction request, decoded from the wire but not yet checked against a model."""

    image: bytes | None = None
    """Encoded image bytes (JPEG, PNG, WebP, BMP, TIFF)."""
    tensor: NDArray[np.float32] | None = None
    """Or a preprocessed float32 tensor in the model's input layout."""
    model: str | None = None
    model_version: str = ""
    top_k: int | None = None
    maps: tuple[str, ...] = ()
    forms: frozenset[MapForm] = frozenset()
    render: tuple[str, ...] = ()
    target_class: int | None = None
    omit_attention: bool = False
    request_id: str = ""
    render_max_side: int = 0
    """Longest side of the image forms; 0: the gateway's default."""
    image_encoding: ImageEncoding = ImageEncoding.PNG
    """Encoding of HEATMAP_PNG and OVERLAY_PNG."""
    image_quality: int | None = None
    """Quality of a lossy encoding, 1–100; None: the encoding's default."""
    map_dtype: MapDType = MapDType.FLOAT32
    """Data type of RAW and UPSAMPLED."""
    score_threshold: float | None = None
    """Instance segmentation: detections scored below it are left out; None: the default (0.5)."""
    max_instances: int = 0
    """Instance segmentation: at most this many, best first; 0: the gateway's limit."""
    task_overlay: bool = False
    """Segmentation, instances and captions: also draw the answer on the image."""
    model_options: tuple[tuple[str, int], ...] = ()
    """The model's own options (`attnserve.spec.InputOption`) as (name, value) pairs, e.g. a
    captioner's ``beam_size``; left out: the default."""


@dataclass
class ClassScore:
    index: int
    label: str
    score: float


Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in original image pixels."""


@dataclass
class Glimpse:
    """One step of a glimpse path."""

    center: tuple[float, float]
    """(x, y) in original image pixels."""
    patches: list[Box]
    """The patches seen there, smallest first."""


@dataclass
class AttentionMap:
    name: str
    kind: AttentionKind
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    normalization: str
    flat: bool = False
    contrast: float = 0.0
    peak: tuple[float, float] | None = None
    """(x, y) in original image pixels."""
    peak_value: float = 0.0
    class_index: int | None = None
    class_label: str = ""
    raw: NDArray[Any] | None = None
    """float32, or float16 when asked."""
    upsampled: NDArray[Any] | None = None
    """float32, or float16 or uint8 (levels 0–255) when asked."""
    heatmap_png: bytes = b""
    """Encoded as `image_encoding` says."""
    overlay_png: bytes = b""
    """Encoded as `image_encoding` says."""
    boxes: list[Box] = field(default_factory=list)
    """BOXES: one per index of the leading axes, in original pixels."""
    path: list[Glimpse] = field(default_factory=list)
    """PATH: the glimpses in order, in original pixels."""
    block: str = ""
    """The part of the network this attention belongs to."""
    image_encoding: ImageEncoding | None = None
    """The encoding of `heatmap_png` and `overlay_png`; None when the map carries neither."""

    @property
    def forms(self) -> list[MapForm]:
        """The forms this map carries, in `MapForm` order."""
        present = {
            MapForm.RAW: self.raw is not None,
            MapForm.UPSAMPLED: self.upsampled is not None,
            MapForm.HEATMAP_PNG: bool(self.heatmap_png),
            MapForm.OVERLAY_PNG: bool(self.overlay_png),
        }
        return [form for form in MapForm if present[form]]


@dataclass
class ClassArea:
    """Semantic segmentation: how much of the image a class covers."""

    index: int
    label: str
    pixels: int
    """In original pixels."""
    share: float
    """Of the image's pixels."""


@dataclass
class Segmentation:
    """Semantic segmentation: the class of every pixel."""

    width: int
    height: int
    """The label image's size: the original's, or the render size where that is smaller."""
    label_png: bytes
    """8-bit grey PNG, each pixel its class index (0: background)."""
    areas: list[ClassArea] = field(default_factory=list)
    """The classes present, largest first."""

    def label_image(self) -> NDArray[np.uint8]:
        """The label image as an H×W array of class indices."""
        return _decode_grey_png(self.label_png)


Polygon = list[tuple[float, float]]
"""A closed outline, (x, y) points in original pixels; the last point joins the first."""


@dataclass
class Instance:
    """Instance segmentation: one detected object, in original image pixels."""

    class_index: int
    label: str
    score: float
    box: Box
    mask_png: bytes
    """8-bit grey PNG over the box's whole pixels, 255 inside."""
    mask_origin: tuple[int, int]
    """(x, y) of the mask's top-left pixel in the original image."""
    rle_counts: list[int]
    """The mask over the whole image, COCO's uncompressed RLE (column-major, 0-runs first)."""
    rle_size: tuple[int, int]
    """(height, width) of the RLE's image."""
    polygons: list[Polygon] = field(default_factory=list)
    """The mask's outer outlines, largest first."""
    area: int = 0
    """The mask's pixels."""

    def mask(self) -> NDArray[np.bool_]:
        """The mask over its box's pixels (starting at `mask_origin`)."""
        return _decode_grey_png(self.mask_png) > 127


def _decode_grey_png(data: bytes) -> NDArray[np.uint8]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


@dataclass
class Word:
    """Captioning: one generated word."""

    text: str
    index: int
    """Its token id (an index into the model's vocabulary, its labels)."""
    log_prob: float
    """Its natural log-probability given the image and the words before it."""
    peak: tuple[float, float] | None = None
    """(x, y) where its attention map peaks, in original image pixels."""

    @property
    def score(self) -> float:
        """Its probability."""
        return float(np.exp(self.log_prob))


@dataclass
class Caption:
    """Captioning's answer."""

    words: list[Word]
    log_prob: float
    """The caption's: its words' and its end token's log-probabilities summed."""
    max_length_reached: bool = False
    """Ended by the request's ``max_length`` rather than by the model."""

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)


@dataclass
class Timings:
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0
    queued_ms: float | None = None
    """How long the call waited before the gateway took it up, when its client said
    (`attnserve.queueing`); not part of ``total_ms``."""


@dataclass
class ImageInfo:
    width: int
    height: int
    format: str


@dataclass
class Prediction:
    model: str
    model_version: str
    predictions: list[ClassScore]
    attention: list[AttentionMap]
    image: ImageInfo
    timings: Timings = field(default_factory=Timings)
    request_id: str = ""
    task: str = "classification"
    """The model's task (`attnserve.spec.Task`); `predictions` belong to classification."""
    segmentation: Segmentation | None = None
    """Semantic segmentation's answer."""
    instances: list[Instance] = field(default_factory=list)
    """Instance segmentation's answer, best first."""
    caption: Caption | None = None
    """Captioning's answer."""
    task_overlay: bytes = b""
    """The answer drawn on the image, when asked, encoded as `task_overlay_encoding` says."""
    task_overlay_encoding: ImageEncoding | None = None

    def attention_map(self, name: str) -> AttentionMap:
        for attention in self.attention:
            if attention.name == name:
                return attention
        raise KeyError(f"no attention map {name!r} in this prediction")
