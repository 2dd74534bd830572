"""Domain types ↔ the wire: protobuf (`attnserve.v1`) and its JSON mapping, lossless both ways.

Every front and every client goes through here: the gRPC servicer decodes requests and encodes
answers with these functions, an HTTP front uses the JSON forms (the proto messages' JSON
mapping, field names as in the proto), and the clients decode answers with the same code. A
field added to the proto and to a domain type here appears on every transport.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from numpy.typing import NDArray

from attnserve.errors import InvalidInput
from attnserve.model_info import ListedModel, ModelStatus
from attnserve.prediction import (
    AttentionMap,
    Box,
    Caption,
    ClassArea,
    ClassScore,
    Glimpse,
    ImageEncoding,
    ImageInfo,
    Instance,
    MapDType,
    MapForm,
    Prediction,
    PredictionRequest,
    Segmentation,
    Timings,
    Word,
)
from attnserve.spec import AttentionKind
from attnserve.v1 import attnserve_pb2 as pb

# --- enums ---------------------------------------------------------------------------------

# Proto enum values are ints at run time; their generated stub types are not worth threading.
_FORM_TO_PROTO: dict[MapForm, Any] = {
    MapForm.RAW: pb.MAP_FORMAT_RAW,
    MapForm.UPSAMPLED: pb.MAP_FORMAT_UPSAMPLED,
    MapForm.HEATMAP_PNG: pb.MAP_FORMAT_HEATMAP_PNG,
    MapForm.OVERLAY_PNG: pb.MAP_FORMAT_OVERLAY_PNG,
}
_PROTO_TO_FORM: dict[Any, MapForm] = {value: key for key, value in _FORM_TO_PROTO.items()}

_KIND_TO_PROTO: dict[AttentionKind, Any] = {
    AttentionKind.SPATIAL: pb.ATTENTION_KIND_SPATIAL,
    AttentionKind.CHANNEL: pb.ATTENTION_KIND_CHANNEL,
    AttentionKind.CLASS_ACTIVATION: pb.ATTENTION_KIND_CLASS_ACTIVATION,
    AttentionKind.BOXES: pb.ATTENTION_KIND_BOXES,
    AttentionKind.PATH: pb.ATTENTION_KIND_PATH,
}
_PROTO_TO_KIND: dict[Any, AttentionKind] = {value: key for key, value in _KIND_TO_PROTO.items()}

# The defaults travel as the proto's zero values (UNSPECIFIED): a request with default options
# is the message it was before these options existed.
_ENCODING_TO_PROTO: dict[ImageEncoding, Any] = {
    ImageEncoding.PNG: pb.IMAGE_ENCODING_UNSPECIFIED,
    ImageEncoding.JPEG: pb.IMAGE_ENCODING_JPEG,
    ImageEncoding.WEBP: pb.IMAGE_ENCODING_WEBP,
}
_PROTO_TO_ENCODING: dict[Any, ImageEncoding] = {
    **{value: key for key, value in _ENCODING_TO_PROTO.items()},
    pb.IMAGE_ENCODING_PNG: ImageEncoding.PNG,
}

_DTYPE_TO_PROTO: dict[MapDType, Any] = {
    MapDType.FLOAT32: pb.DATA_TYPE_UNSPECIFIED,
    MapDType.FLOAT16: pb.DATA_TYPE_FLOAT16,
    MapDType.UINT8: pb.DATA_TYPE_UINT8,
}
_PROTO_TO_DTYPE: dict[Any, MapDType] = {
    **{value: key for key, value in _DTYPE_TO_PROTO.items()},
    pb.DATA_TYPE_FLOAT32: MapDType.FLOAT32,
}


def form_to_proto(form: MapForm) -> Any:
    return _FORM_TO_PROTO[form]


def form_from_proto(value: Any) -> MapForm:
    """Raises KeyError for MAP_FORMAT_UNSPECIFIED and unknown values."""
    return _PROTO_TO_FORM[value]


def kind_to_proto(kind: AttentionKind) -> Any:
    return _KIND_TO_PROTO[kind]


def kind_from_proto(value: Any) -> AttentionKind:
    return _PROTO_TO_KIND[value]


def encoding_to_proto(encoding: ImageEncoding) -> Any:
    return _ENCODING_TO_PROTO[encoding]


def encoding_from_proto(value: Any) -> ImageEncoding:
    """UNSPECIFIED is PNG; unknown values are `InvalidInput`."""
    encoding = _PROTO_TO_ENCODING.get(value)
    if encoding is None:
        raise InvalidInput(f"unknown image_encoding {value}; use PNG, JPEG or WEBP")
    return encoding


def map_dtype_to_proto(dtype: MapDType) -> Any:
    return _DTYPE_TO_PROTO[dtype]


def map_dtype_from_proto(value: Any) -> MapDType:
    """UNSPECIFIED is FLOAT32; unknown values are `InvalidInput`."""
    dtype = _PROTO_TO_DTYPE.get(value)
    if dtype is None:
        raise InvalidInput(f"unknown map_dtype {value}; use FLOAT32, FLOAT16 or UINT8")
    return dtype


# --- tensors -------------------------------------------------------------------------------


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
        name = pb.DataType.Name(tensor.dtype) if tensor.dtype in pb.DataType.values() else str(tensor.dtype)
        raise ValueError(f"unsupported tensor dtype {name}; send DATA_TYPE_FLOAT32")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(tensor.data):
        raise ValueError(f"shape {shape} of {dtype.name} needs {expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


# --- requests ------------------------------------------------------------------------------


def request_to_proto(request: PredictionRequest) -> pb.PredictRequest:
    message = pb.PredictRequest(
        model=request.model or "", model_version=request.model_version, request_id=request.request_id
    )
    if request.tensor is not None:
        message.tensor.CopyFrom(tensor_to_proto(request.tensor))
    elif request.image is not None:
        message.image = request.image
    if request.top_k is not None:
        message.top_k = request.top_k
    options = message.attention
    options.maps.extend(request.maps)
    options.render.extend(request.render)
    options.formats.extend(form_to_proto(form) for form in MapForm if form in request.forms)
    if request.target_class is not None:
        options.target_class = request.target_class
    options.omit = request.omit_attention
    options.render_max_side = request.render_max_side
    options.image_encoding = encoding_to_proto(request.image_encoding)
    if request.image_quality is not None:
        options.image_quality = request.image_quality
    options.map_dtype = map_dtype_to_proto(request.map_dtype)
    if (
        request.score_threshold is not None
        or request.max_instances
        or request.task_overlay
        or request.model_options
    ):
        task = message.task  # set only when used: a classifier's request is the message it always was
        if request.score_threshold is not None:
            task.score_threshold = request.score_threshold
        task.max_instances = request.max_instances
        task.overlay = request.task_overlay
        for name, value in request.model_options:
            task.options[name] = value
    return message


def request_from_proto(message: pb.PredictRequest) -> PredictionRequest:
    """Decodes a request; malformed fields are `InvalidInput`."""
    which = message.WhichOneof("input")
    tensor = None
    if which == "tensor":
        try:
            tensor = tensor_from_proto(message.tensor)
        except ValueError as exc:
            raise InvalidInput(f"the input tensor is malformed: {exc}") from None
    forms = []
    for value in message.attention.formats:
        try:
            forms.append(form_from_proto(value))
        except KeyError:
            raise InvalidInput(
                f"unknown attention format {value}; use RAW, UPSAMPLED, HEATMAP_PNG or OVERLAY_PNG"
            ) from None
    options, task = message.attention, message.task  # each access builds a view: once
    return PredictionRequest(
        image=message.image if which == "image" else None,
        tensor=tensor,
        model=message.model or None,
        model_version=message.model_version,
        top_k=message.top_k if message.HasField("top_k") else None,
        maps=tuple(options.maps),
        forms=frozenset(forms),
        render=tuple(options.render),
        target_class=options.target_class if options.HasField("target_class") else None,
        omit_attention=options.omit,
        request_id=message.request_id,
        render_max_side=options.render_max_side,
        image_encoding=encoding_from_proto(options.image_encoding),
        image_quality=options.image_quality if options.HasField("image_quality") else None,
        map_dtype=map_dtype_from_proto(options.map_dtype),
        score_threshold=task.score_threshold if task.HasField("score_threshold") else None,
        max_instances=task.max_instances,
        task_overlay=task.overlay,
        model_options=tuple(sorted(task.options.items())),
    )


# --- predictions ---------------------------------------------------------------------------


def prediction_to_proto(prediction: Prediction) -> pb.PredictResponse:
    response = pb.PredictResponse(
        model=prediction.model,
        model_version=prediction.model_version,
        predictions=[
            pb.ClassScore(index=c.index, label=c.label, score=c.score) for c in prediction.predictions
        ],
        timings=pb.Timings(**vars(prediction.timings)),
        image=pb.ImageInfo(
            width=prediction.image.width, height=prediction.image.height, format=prediction.image.format
        ),
        request_id=prediction.request_id,
        task=prediction.task,
        task_overlay=prediction.task_overlay,
        task_overlay_encoding=prediction.task_overlay_encoding.value
        if prediction.task_overlay_encoding
        else "",
        instances=[_instance_to_proto(instance) for instance in prediction.instances],
    )
    if (caption := prediction.caption) is not None:
        response.caption.CopyFrom(_caption_to_proto(caption))
    if (segmentation := prediction.segmentation) is not None:
        response.segmentation.CopyFrom(
            pb.Segmentation(
                width=segmentation.width,
                height=segmentation.height,
                label_png=segmentation.label_png,
                areas=[
                    pb.ClassArea(index=a.index, label=a.label, pixels=a.pixels, share=a.share)
                    for a in segmentation.areas
                ],
            )
        )
    for a in prediction.attention:
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
            block=a.block,
            image_encoding=a.image_encoding.value if a.image_encoding is not None else "",
            boxes=[_box_to_proto(box) for box in a.boxes],
            path=[
                pb.Glimpse(
                    center=pb.Point(x=g.center[0], y=g.center[1]),
                    patches=[_box_to_proto(box) for box in g.patches],
                )
                for g in a.path
            ],
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


def prediction_from_proto(response: pb.PredictResponse) -> Prediction:
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
            boxes=[_box_from_proto(box) for box in a.boxes],
            path=[
                Glimpse((g.center.x, g.center.y), [_box_from_proto(box) for box in g.patches]) for g in a.path
            ],
            block=a.block,
            image_encoding=ImageEncoding(a.image_encoding) if a.image_encoding else None,
        )
        for a in response.attention
    ]
    t = response.timings
    return Prediction(
        model=response.model,
        model_version=response.model_version,
        predictions=[ClassScore(c.index, c.label, c.score) for c in response.predictions],
        attention=attention,
        image=ImageInfo(response.image.width, response.image.height, response.image.format),
        timings=Timings(
            t.preprocess_ms,
            t.inference_ms,
            t.postprocess_ms,
            t.total_ms,
            t.queued_ms if t.HasField("queued_ms") else None,
        ),
        request_id=response.request_id,
        task=response.task or "classification",
        segmentation=_segmentation_from_proto(response.segmentation)
        if response.HasField("segmentation")
        else None,
        instances=[_instance_from_proto(instance) for instance in response.instances],
        caption=_caption_from_proto(response.caption) if response.HasField("caption") else None,
        task_overlay=response.task_overlay,
        task_overlay_encoding=ImageEncoding(response.task_overlay_encoding)
        if response.task_overlay_encoding
        else None,
    )


def _caption_to_proto(caption: Caption) -> pb.Caption:
    message = pb.Caption(
        text=caption.text, log_prob=caption.log_prob, max_length_reached=caption.max_length_reached
    )
    for word in caption.words:
        entry = message.words.add(text=word.text, index=word.index, score=word.score, log_prob=word.log_prob)
        if word.peak is not None:
            entry.peak.x, entry.peak.y = word.peak
    return message


def _caption_from_proto(caption: pb.Caption) -> Caption:
    return Caption(
        words=[
            Word(w.text, w.index, w.log_prob, (w.peak.x, w.peak.y) if w.HasField("peak") else None)
            for w in caption.words
        ],
        log_prob=caption.log_prob,
        max_length_reached=caption.max_length_reached,
    )


def _segmentation_from_proto(segmentation: pb.Segmentation) -> Segmentation:
    return Segmentation(
        width=segmentation.width,
        height=segmentation.height,
        label_png=segmentation.label_png,
        areas=[ClassArea(a.index, a.label, a.pixels, a.share) for a in segmentation.areas],
    )


def _instance_to_proto(instance: Instance) -> pb.Instance:
    return pb.Instance(
        class_index=instance.class_index,
        label=instance.label,
        score=instance.score,
        box=_box_to_proto(instance.box),
        mask_png=instance.mask_png,
        mask_x=instance.mask_origin[0],
        mask_y=instance.mask_origin[1],
        rle=pb.MaskRle(size=list(instance.rle_size), counts=instance.rle_counts),
        polygons=[pb.Polygon(xy=[v for point in polygon for v in point]) for polygon in instance.polygons],
        area=instance.area,
    )


def _instance_from_proto(instance: pb.Instance) -> Instance:
    size = tuple(instance.rle.size)
    return Instance(
        class_index=instance.class_index,
        label=instance.label,
        score=instance.score,
        box=_box_from_proto(instance.box),
        mask_png=instance.mask_png,
        mask_origin=(instance.mask_x, instance.mask_y),
        rle_counts=list(instance.rle.counts),
        rle_size=(size[0], size[1]) if len(size) == 2 else (0, 0),
        polygons=[list(zip(p.xy[0::2], p.xy[1::2], strict=True)) for p in instance.polygons],
        area=instance.area,
    )


def _box_to_proto(box: Box) -> pb.Box:
    return pb.Box(x0=box[0], y0=box[1], x1=box[2], y1=box[3])


def _box_from_proto(box: pb.Box) -> Box:
    return (box.x0, box.y0, box.x1, box.y1)


# --- models --------------------------------------------------------------------------------


def model_info_to_proto(model: ListedModel) -> pb.ModelInfo:
    """A model's description; one the gateway cannot describe carries only its name, version,
    readiness and reason."""
    if isinstance(model, ModelStatus):
        return pb.ModelInfo(name=model.name, version=model.version, ready=False, reason=model.reason)
    spec = model.spec
    prep = spec.preprocess
    info = pb.ModelInfo(
        name=model.name,
        version=model.version,
        ready=model.ready,
        architecture=spec.architecture,
        description=spec.description,
        task=spec.task,
        labels=list(spec.labels),
        inputs=[pb.TensorInfo(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in model.inputs],
        outputs=[pb.TensorInfo(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in model.outputs],
        preprocess=pb.PreprocessInfo(
            height=prep.input_size[0],
            width=prep.input_size[1],
            color_mode=prep.color_mode.value,
            mean=list(prep.mean),
            std=list(prep.std),
            resize_mode=prep.resize_mode.value,
            pad_value=prep.pad_value,
            crop_pct=prep.crop_pct,
            interpolation=prep.interpolation.value,
        ),
        primary_attention=spec.primary_attention or "",
        primary_reason=spec.primary_reason,
        max_batch_size=model.max_batch_size,
        reason=model.reason,
        release_error=model.release_error,
        options=[
            pb.ModelOption(
                name=o.name,
                description=o.description,
                default_value=o.default,
                minimum=o.minimum,
                maximum=o.maximum,
            )
            for o in spec.options
        ],
    )
    for attention in spec.attention:
        norm = attention.normalization
        info.attention.append(
            pb.AttentionInfo(
                name=attention.name,
                kind=kind_to_proto(attention.kind),
                axes=list(attention.axes),
                shape=list(model.item_shape(attention.name)),
                description=attention.description,
                value_range=attention.value_range,
                normalization=pb.Normalization(
                    method=norm.method, range=list(norm.range or ()), flat_below=norm.flat_below
                ),
                quality=attention.quality,
                block=attention.block,
            )
        )
    return info


def model_list_to_proto(models: list[ListedModel], default_model: str | None) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[model_info_to_proto(m) for m in models], default_model=default_model or ""
    )


# --- JSON: the proto messages' JSON mapping -------------------------------------------------

M = TypeVar("M", bound=Message)


def message_to_json(message: Message) -> dict[str, Any]:
    """A proto message as JSON-able data: field names as in the proto, bytes as base64, 64-bit
    integers as strings (the protobuf JSON mapping); default values are left out."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def message_from_json(data: Any, message_type: type[M]) -> M:
    """JSON-able data → a proto message; unknown fields and wrong types are `InvalidInput`."""
    if not isinstance(data, dict):
        raise InvalidInput(f"expected a JSON object for {message_type.DESCRIPTOR.name}")
    try:
        return json_format.ParseDict(data, message_type())
    except json_format.ParseError as exc:
        raise InvalidInput(f"the JSON body is not a valid {message_type.DESCRIPTOR.name}: {exc}") from None


def request_to_json(request: PredictionRequest) -> dict[str, Any]:
    return message_to_json(request_to_proto(request))


def request_from_json(data: Any) -> PredictionRequest:
    return request_from_proto(message_from_json(data, pb.PredictRequest))


def prediction_to_json(prediction: Prediction) -> dict[str, Any]:
    return message_to_json(prediction_to_proto(prediction))


def prediction_from_json(data: Any) -> Prediction:
    return prediction_from_proto(message_from_json(data, pb.PredictResponse))
