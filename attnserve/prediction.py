"""The answer to a prediction, one set of types for the gateway and the clients.

The gateway's postprocessing builds a `Prediction`; the gRPC layer turns it into
`attnserve.v1.PredictResponse` with `to_proto`; clients turn the response back with
`from_proto`, so both sides agree by construction. `to_json` is the CLI's ``--json`` form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import AttentionKind
from attnserve.v1 import attnserve_pb2 as pb


class MapForm(StrEnum):
    """The forms an attention map can be returned in (`attnserve.v1.MapFormat`)."""

    RAW = "raw"
    """float32 values at the model's native resolution."""
    UPSAMPLED = "upsampled"
    """float32 display values in [0, 1] at the original image size."""
    HEATMAP_PNG = "heatmap_png"
    OVERLAY_PNG = "overlay_png"


# Proto enum values are ints at run time; their generated stub types are not worth threading.
_FORM_TO_PROTO: dict[MapForm, Any] = {
    MapForm.RAW: pb.MAP_FORMAT_RAW,
    MapForm.UPSAMPLED: pb.MAP_FORMAT_UPSAMPLED,
    MapForm.HEATMAP_PNG: pb.MAP_FORMAT_HEATMAP_PNG,
    MapForm.OVERLAY_PNG: pb.MAP_FORMAT_OVERLAY_PNG,
}
_PROTO_TO_FORM: dict[Any, MapForm] = {value: key for key, value in _FORM_TO_PROTO.items()}


def form_to_proto(form: MapForm) -> Any:
    return _FORM_TO_PROTO[form]


def form_from_proto(value: Any) -> MapForm:
    """Raises KeyError for MAP_FORMAT_UNSPECIFIED and unknown values."""
    return _PROTO_TO_FORM[value]


_KIND_TO_PROTO: dict[AttentionKind, Any] = {
    AttentionKind.SPATIAL: pb.ATTENTION_KIND_SPATIAL,
    AttentionKind.CHANNEL: pb.ATTENTION_KIND_CHANNEL,
    AttentionKind.CLASS_ACTIVATION: pb.ATTENTION_KIND_CLASS_ACTIVATION,
}
_PROTO_TO_KIND: dict[Any, AttentionKind] = {value: key for key, value in _KIND_TO_PROTO.items()}


def kind_to_proto(kind: AttentionKind) -> Any:
    return _KIND_TO_PROTO[kind]


def kind_from_proto(value: Any) -> AttentionKind:
    return _PROTO_TO_KIND[value]


def tensor_to_proto(array: NDArray[Any]) -> pb.Tensor:
    if array.dtype == np.uint8:
        dtype = pb.DATA_TYPE_UINT8
    elif array.dtype == np.float16:
        dtype = pb.DATA_TYPE_FLOAT16
    else:
        array, dtype = array.astype(np.float32, copy=False), pb.DATA_TYPE_FLOAT32
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return pb.Tensor(shape=list(array.shape), dtype=dtype, data=data)


_PROTO_DTYPES: dict[int, Any] = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
}


def tensor_from_proto(tensor: pb.Tensor) -> NDArray[Any]:
    """Raises ValueError when dtype, shape and byte count do not agree."""
    dtype = _PROTO_DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ValueError(f"unsupported tensor dtype {tensor.dtype}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(tensor.data):
        raise ValueError(f"shape {shape} of {dtype.name} needs {expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass
class ClassScore:
    index: int
    label: str
    score: float


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

    def to_proto(self) -> pb.PredictResponse:
        response = pb.PredictResponse(
            model=self.model,
            model_version=self.model_version,
            predictions=[
                pb.ClassScore(index=c.index, label=c.label, score=c.score) for c in self.predictions
            ],
            timings=pb.Timings(**vars(self.timings)),
            image=pb.ImageInfo(width=self.image.width, height=self.image.height, format=self.image.format),
            request_id=self.request_id,
        )
        for a in self.attention:
            item = response.attention.add(
                name=a.name,
                kind=kind_to_proto(a.kind),
                axes=list(a.axes),
                shape=list(a.shape),
                peak_value=a.peak_value,
                class_label=a.class_label,
                normalization=a.normalization,
                flat=a.flat,
                contrast=a.contrast,
                heatmap_png=a.heatmap_png,
                overlay_png=a.overlay_png,
            )
            if a.raw is not None:
                item.raw.CopyFrom(tensor_to_proto(a.raw))
            if a.upsampled is not None:
                item.upsampled.CopyFrom(tensor_to_proto(a.upsampled))
            if a.peak is not None:
                item.peak.x, item.peak.y = a.peak
            if a.class_index is not None:
                item.class_index = a.class_index
        return response

    @classmethod
    def from_proto(cls, response: pb.PredictResponse) -> Prediction:
        attention = [
            AttentionMap(
                name=a.name,
                kind=kind_from_proto(a.kind),
                axes=tuple(a.axes),
                shape=tuple(a.shape),
                normalization=a.normalization,
                flat=a.flat,
                contrast=a.contrast,
                peak=(a.peak.x, a.peak.y) if a.HasField("peak") else None,
                peak_value=a.peak_value,
                class_index=a.class_index if a.HasField("class_index") else None,
                class_label=a.class_label,
                raw=tensor_from_proto(a.raw) if a.HasField("raw") else None,
                upsampled=tensor_from_proto(a.upsampled) if a.HasField("upsampled") else None,
                heatmap_png=a.heatmap_png,
                overlay_png=a.overlay_png,
            )
            for a in response.attention
        ]
        t = response.timings
        return cls(
            model=response.model,
            model_version=response.model_version,
            predictions=[ClassScore(c.index, c.label, c.score) for c in response.predictions],
            attention=attention,
            image=ImageInfo(response.image.width, response.image.height, response.image.format),
            timings=Timings(t.preprocess_ms, t.inference_ms, t.postprocess_ms, t.total_ms),
            request_id=response.request_id,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary: tensors and PNGs are left out, their presence is not."""
        return {
            "model": self.model,
            "model_version": self.model_version,
            "image": vars(self.image),
            "predictions": [
                {"index": c.index, "label": c.label, "score": round(c.score, 6)} for c in self.predictions
            ],
            "attention": [
                {
                    "name": a.name,
                    "kind": a.kind.value,
                    "axes": list(a.axes),
                    "shape": list(a.shape),
                    "peak": None if a.peak is None else [round(a.peak[0], 2), round(a.peak[1], 2)],
                    "peak_value": a.peak_value,
                    "class_index": a.class_index,
                    "class_label": a.class_label or None,
                    "normalization": a.normalization,
                    "flat": a.flat,
                    "contrast": round(a.contrast, 4),
                    "forms": [
                        form
                        for form, present in (
                            ("raw", a.raw is not None),
                            ("upsampled", a.upsampled is not None),
                            ("heatmap_png", bool(a.heatmap_png)),
                            ("overlay_png", bool(a.overlay_png)),
                        )
                        if present
                    ],
                }
                for a in self.attention
            ],
            "timings": vars(self.timings),
            "request_id": self.request_id,
        }
