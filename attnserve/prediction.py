"""The prediction domain, one set of types for the gateway, its fronts and the clients.

`PredictionRequest` is what a front decodes from its wire format (gRPC, HTTP); the pipeline
answers with a `Prediction`. How these travel (protobuf, JSON) is `attnserve.codec`'s job, so
every front and every client agrees by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import AttentionKind


class MapForm(StrEnum):
    """The forms an attention map can be returned in (`attnserve.v1.MapFormat`)."""

    RAW = "raw"
    """float32 values at the model's native resolution."""
    UPSAMPLED = "upsampled"
    """float32 display values in [0, 1] at the render size (the original's unless it is larger
    than the request's or the gateway's ``render_max_side``)."""
    HEATMAP_PNG = "heatmap_png"
    OVERLAY_PNG = "overlay_png"


IMAGE_FORMS = frozenset({MapForm.UPSAMPLED, MapForm.HEATMAP_PNG, MapForm.OVERLAY_PNG})
"""Forms drawn in the original image's pixels; only `render`ed maps get them."""


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
    raw: NDArray[np.float32] | None = None
    upsampled: NDArray[np.float32] | None = None
    heatmap_png: bytes = b""
    overlay_png: bytes = b""
    boxes: list[Box] = field(default_factory=list)
    """BOXES: one per index of the leading axes, in original pixels."""
    path: list[Glimpse] = field(default_factory=list)
    """PATH: the glimpses in order, in original pixels."""
    block: str = ""
    """The part of the network this attention belongs to."""

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
class Timings:
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0


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

    def attention_map(self, name: str) -> AttentionMap:
        for attention in self.attention:
            if attention.name == name:
                return attention
        raise KeyError(f"no attention map {name!r} in this prediction")
