from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]

class MapFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAP_FORMAT_UNSPECIFIED: _ClassVar[MapFormat]
    MAP_FORMAT_RAW: _ClassVar[MapFormat]
    MAP_FORMAT_UPSAMPLED: _ClassVar[MapFormat]
    MAP_FORMAT_HEATMAP_PNG: _ClassVar[MapFormat]
    MAP_FORMAT_OVERLAY_PNG: _ClassVar[MapFormat]

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_WEBP: _ClassVar[ImageEncoding]

class AttentionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTENTION_KIND_UNSPECIFIED: _ClassVar[AttentionKind]
    ATTENTION_KIND_SPATIAL: _ClassVar[AttentionKind]
    ATTENTION_KIND_CHANNEL: _ClassVar[AttentionKind]
    ATTENTION_KIND_CLASS_ACTIVATION: _ClassVar[AttentionKind]
    ATTENTION_KIND_BOXES: _ClassVar[AttentionKind]
    ATTENTION_KIND_PATH: _ClassVar[AttentionKind]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_FLOAT16: DataType
MAP_FORMAT_UNSPECIFIED: MapFormat
MAP_FORMAT_RAW: MapFormat
MAP_FORMAT_UPSAMPLED: MapFormat
MAP_FORMAT_HEATMAP_PNG: MapFormat
MAP_FORMAT_OVERLAY_PNG: MapFormat
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
IMAGE_ENCODING_WEBP: ImageEncoding
ATTENTION_KIND_UNSPECIFIED: AttentionKind
ATTENTION_KIND_SPATIAL: AttentionKind
ATTENTION_KIND_CHANNEL: AttentionKind
ATTENTION_KIND_CLASS_ACTIVATION: AttentionKind
ATTENTION_KIND_BOXES: AttentionKind
ATTENTION_KIND_PATH: AttentionKind

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DataType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class AttentionOptions(_message.Message):
    __slots__ = ("maps", "formats", "target_class", "omit", "render", "render_max_side", "image_encoding", "image_quality", "map_dtype")
    MAPS_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    OMIT_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    RENDER_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    IMAGE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAP_DTYPE_FIELD_NUMBER: _ClassVar[int]
    maps: _containers.RepeatedScalarFieldContainer[str]
    formats: _containers.RepeatedScalarFieldContainer[MapFormat]
    target_class: int
    omit: bool
    render: _containers.RepeatedScalarFieldContainer[str]
    render_max_side: int
    image_encoding: ImageEncoding
    image_quality: int
    map_dtype: DataType
    def __init__(self, maps: _Optional[_Iterable[str]] = ..., formats: _Optional[_Iterable[_Union[MapFormat, str]]] = ..., target_class: _Optional[int] = ..., omit: _Optional[bool] = ..., render: _Optional[_Iterable[str]] = ..., render_max_side: _Optional[int] = ..., image_encoding: _Optional[_Union[ImageEncoding, str]] = ..., image_quality: _Optional[int] = ..., map_dtype: _Optional[_Union[DataType, str]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "model_version", "image", "tensor", "top_k", "attention", "request_id", "task")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    image: bytes
    tensor: Tensor
    top_k: int
    attention: AttentionOptions
    request_id: str
    task: TaskOptions
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., image: _Optional[bytes] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., top_k: _Optional[int] = ..., attention: _Optional[_Union[AttentionOptions, _Mapping]] = ..., request_id: _Optional[str] = ..., task: _Optional[_Union[TaskOptions, _Mapping]] = ...) -> None: ...

class TaskOptions(_message.Message):
    __slots__ = ("score_threshold", "max_instances", "overlay", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    score_threshold: float
    max_instances: int
    overlay: bool
    options: _containers.ScalarMap[str, int]
    def __init__(self, score_threshold: _Optional[float] = ..., max_instances: _Optional[int] = ..., overlay: _Optional[bool] = ..., options: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "index", "score", "log_prob", "peak")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    text: str
    index: int
    score: float
    log_prob: float
    peak: Point
    def __init__(self, text: _Optional[str] = ..., index: _Optional[int] = ..., score: _Optional[float] = ..., log_prob: _Optional[float] = ..., peak: _Optional[_Union[Point, _Mapping]] = ...) -> None: ...

class Caption(_message.Message):
    __slots__ = ("text", "words", "log_prob", "max_length_reached")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_REACHED_FIELD_NUMBER: _ClassVar[int]
    text: str
    words: _containers.RepeatedCompositeFieldContainer[Word]
    log_prob: float
    max_length_reached: bool
    def __init__(self, text: _Optional[str] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., log_prob: _Optional[float] = ..., max_length_reached: _Optional[bool] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("index", "label", "score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    label: str
    score: float
    def __init__(self, index: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class Glimpse(_message.Message):
    __slots__ = ("center", "patches")
    CENTER_FIELD_NUMBER: _ClassVar[int]
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    center: Point
    patches: _containers.RepeatedCompositeFieldContainer[Box]
    def __init__(self, center: _Optional[_Union[Point, _Mapping]] = ..., patches: _Optional[_Iterable[_Union[Box, _Mapping]]] = ...) -> None: ...

class AttentionMap(_message.Message):
    __slots__ = ("name", "kind", "axes", "shape", "raw", "upsampled", "heatmap_png", "overlay_png", "peak", "peak_value", "class_index", "class_label", "normalization", "flat", "contrast", "boxes", "path", "block", "image_encoding")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AXES_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    UPSAMPLED_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PNG_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    PEAK_VALUE_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABEL_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    FLAT_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: AttentionKind
    axes: _containers.RepeatedScalarFieldContainer[str]
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw: Tensor
    upsampled: Tensor
    heatmap_png: bytes
    overlay_png: bytes
    peak: Point
    peak_value: float
    class_index: int
    class_label: str
    normalization: str
    flat: bool
    contrast: float
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    path: _containers.RepeatedCompositeFieldContainer[Glimpse]
    block: str
    image_encoding: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[AttentionKind, str]] = ..., axes: _Optional[_Iterable[str]] = ..., shape: _Optional[_Iterable[int]] = ..., raw: _Optional[_Union[Tensor, _Mapping]] = ..., upsampled: _Optional[_Union[Tensor, _Mapping]] = ..., heatmap_png: _Optional[bytes] = ..., overlay_png: _Optional[bytes] = ..., peak: _Optional[_Union[Point, _Mapping]] = ..., peak_value: _Optional[float] = ..., class_index: _Optional[int] = ..., class_label: _Optional[str] = ..., normalization: _Optional[str] = ..., flat: _Optional[bool] = ..., contrast: _Optional[float] = ..., boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ..., path: _Optional[_Iterable[_Union[Glimpse, _Mapping]]] = ..., block: _Optional[str] = ..., image_encoding: _Optional[str] = ...) -> None: ...

class ClassArea(_message.Message):
    __slots__ = ("index", "label", "pixels", "share")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    index: int
    label: str
    pixels: int
    share: float
    def __init__(self, index: _Optional[int] = ..., label: _Optional[str] = ..., pixels: _Optional[int] = ..., share: _Optional[float] = ...) -> None: ...

class Segmentation(_message.Message):
    __slots__ = ("width", "height", "label_png", "areas")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LABEL_PNG_FIELD_NUMBER: _ClassVar[int]
    AREAS_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    label_png: bytes
    areas: _containers.RepeatedCompositeFieldContainer[ClassArea]
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., label_png: _Optional[bytes] = ..., areas: _Optional[_Iterable[_Union[ClassArea, _Mapping]]] = ...) -> None: ...

class Polygon(_message.Message):
    __slots__ = ("xy",)
    XY_FIELD_NUMBER: _ClassVar[int]
    xy: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, xy: _Optional[_Iterable[float]] = ...) -> None: ...

class MaskRle(_message.Message):
    __slots__ = ("size", "counts")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, size: _Optional[_Iterable[int]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("class_index", "label", "score", "box", "mask_png", "mask_x", "mask_y", "rle", "polygons", "area")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    MASK_X_FIELD_NUMBER: _ClassVar[int]
    MASK_Y_FIELD_NUMBER: _ClassVar[int]
    RLE_FIELD_NUMBER: _ClassVar[int]
    POLYGONS_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    score: float
    box: Box
    mask_png: bytes
    mask_x: int
    mask_y: int
    rle: MaskRle
    polygons: _containers.RepeatedCompositeFieldContainer[Polygon]
    area: int
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., mask_png: _Optional[bytes] = ..., mask_x: _Optional[int] = ..., mask_y: _Optional[int] = ..., rle: _Optional[_Union[MaskRle, _Mapping]] = ..., polygons: _Optional[_Iterable[_Union[Polygon, _Mapping]]] = ..., area: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms", "queued_ms")
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    queued_ms: float
    def __init__(self, preprocess_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., queued_ms: _Optional[float] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("width", "height", "format")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    format: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "model_version", "predictions", "attention", "timings", "image", "request_id", "task", "segmentation", "instances", "task_overlay", "task_overlay_encoding", "caption")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    TASK_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    TASK_OVERLAY_ENCODING_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    predictions: _containers.RepeatedCompositeFieldContainer[ClassScore]
    attention: _containers.RepeatedCompositeFieldContainer[AttentionMap]
    timings: Timings
    image: ImageInfo
    request_id: str
    task: str
    segmentation: Segmentation
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    task_overlay: bytes
    task_overlay_encoding: str
    caption: Caption
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., predictions: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., attention: _Optional[_Iterable[_Union[AttentionMap, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., image: _Optional[_Union[ImageInfo, _Mapping]] = ..., request_id: _Optional[str] = ..., task: _Optional[str] = ..., segmentation: _Optional[_Union[Segmentation, _Mapping]] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., task_overlay: _Optional[bytes] = ..., task_overlay_encoding: _Optional[str] = ..., caption: _Optional[_Union[Caption, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("request_id", "response", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response: PredictResponse
    error: Error
    def __init__(self, request_id: _Optional[str] = ..., response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Normalization(_message.Message):
    __slots__ = ("method", "range", "flat_below")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    FLAT_BELOW_FIELD_NUMBER: _ClassVar[int]
    method: str
    range: _containers.RepeatedScalarFieldContainer[float]
    flat_below: float
    def __init__(self, method: _Optional[str] = ..., range: _Optional[_Iterable[float]] = ..., flat_below: _Optional[float] = ...) -> None: ...

class AttentionInfo(_message.Message):
    __slots__ = ("name", "kind", "axes", "shape", "description", "value_range", "normalization", "quality", "block")
    class QualityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AXES_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VALUE_RANGE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: AttentionKind
    axes: _containers.RepeatedScalarFieldContainer[str]
    shape: _containers.RepeatedScalarFieldContainer[int]
    description: str
    value_range: str
    normalization: Normalization
    quality: _containers.ScalarMap[str, float]
    block: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[AttentionKind, str]] = ..., axes: _Optional[_Iterable[str]] = ..., shape: _Optional[_Iterable[int]] = ..., description: _Optional[str] = ..., value_range: _Optional[str] = ..., normalization: _Optional[_Union[Normalization, _Mapping]] = ..., quality: _Optional[_Mapping[str, float]] = ..., block: _Optional[str] = ...) -> None: ...

class PreprocessInfo(_message.Message):
    __slots__ = ("height", "width", "color_mode", "mean", "std", "resize_mode", "pad_value", "crop_pct", "interpolation")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    COLOR_MODE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    RESIZE_MODE_FIELD_NUMBER: _ClassVar[int]
    PAD_VALUE_FIELD_NUMBER: _ClassVar[int]
    CROP_PCT_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    color_mode: str
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    resize_mode: str
    pad_value: float
    crop_pct: float
    interpolation: str
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., color_mode: _Optional[str] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., resize_mode: _Optional[str] = ..., pad_value: _Optional[float] = ..., crop_pct: _Optional[float] = ..., interpolation: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "ready", "architecture", "description", "task", "labels", "inputs", "outputs", "attention", "preprocess", "primary_attention", "primary_reason", "max_batch_size", "reason", "options", "release_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_REASON_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    ready: bool
    architecture: str
    description: str
    task: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    attention: _containers.RepeatedCompositeFieldContainer[AttentionInfo]
    preprocess: PreprocessInfo
    primary_attention: str
    primary_reason: str
    max_batch_size: int
    reason: str
    options: _containers.RepeatedCompositeFieldContainer[ModelOption]
    release_error: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., ready: _Optional[bool] = ..., architecture: _Optional[str] = ..., description: _Optional[str] = ..., task: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., attention: _Optional[_Iterable[_Union[AttentionInfo, _Mapping]]] = ..., preprocess: _Optional[_Union[PreprocessInfo, _Mapping]] = ..., primary_attention: _Optional[str] = ..., primary_reason: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., reason: _Optional[str] = ..., options: _Optional[_Iterable[_Union[ModelOption, _Mapping]]] = ..., release_error: _Optional[str] = ...) -> None: ...

class ModelOption(_message.Message):
    __slots__ = ("name", "description", "default_value", "minimum", "maximum")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    default_value: int
    minimum: int
    maximum: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., default_value: _Optional[int] = ..., minimum: _Optional[int] = ..., maximum: _Optional[int] = ...) -> None: ...
