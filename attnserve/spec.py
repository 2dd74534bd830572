"""The model spec: everything a server needs to know about a model, travelling with it.

A registered architecture carries a `ModelSpec`; export writes it (as JSON) into the model's
`config.pbtxt` `parameters` under `SPEC_PARAMETER`, and the gateway reads it back from Triton's
model config at start-up. No preprocessing constant lives anywhere else.

Attention outputs are described generically by their *axes* so that families beyond
"class + spatial map" fit without a new schema: a spatial map is ``("y", "x")``, channel
weights ``("channel",)``, class activation maps ``("class", "y", "x")``; attention over input
scales would be ``("scale", "y", "x")`` and over words ``("word", "y", "x")``. Axes named
``y``/``x`` always come last and span the model input's field of view, which is what lets the
gateway map any spatial map back to original image pixels.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEC_PARAMETER = "attnserve_spec"
"""Key of the `config.pbtxt` parameter that holds the spec as JSON."""

SPEC_SCHEMA_VERSION = 1

SPATIAL_AXES = ("y", "x")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResizeMode(StrEnum):
    """How an image of any size becomes the model's input size."""

    STRETCH = "stretch"
    """Resize both axes to the input size; the aspect ratio is not kept."""
    LETTERBOX = "letterbox"
    """Fit the whole image inside the input size keeping its aspect ratio, pad the rest."""
    CENTER_CROP = "center_crop"
    """Resize the shorter side to input/crop_pct keeping the aspect ratio, crop the centre."""


class Interpolation(StrEnum):
    """How pixels are resampled to the input size (the model's training transform's filter)."""

    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class ColorMode(StrEnum):
    GRAY = "L"
    RGB = "RGB"


class PreprocessSpec(_Frozen):
    """What the gateway does to an image before the model sees it."""

    input_size: tuple[int, int] = Field(description="(height, width) of the model input")
    color_mode: ColorMode
    mean: tuple[float, ...] = Field(description="per channel, on pixels scaled to [0, 1]")
    std: tuple[float, ...]
    resize_mode: ResizeMode
    pad_value: float = Field(0.0, description="letterbox padding, on pixels scaled to [0, 1]")
    crop_pct: float = Field(1.0, gt=0.0, le=1.0)
    interpolation: Interpolation = Field(
        Interpolation.BILINEAR, description="the resampling filter (timm's configs often say bicubic)"
    )

    @property
    def channels(self) -> int:
        return 1 if self.color_mode is ColorMode.GRAY else 3

    @model_validator(mode="after")
    def _check_channels(self) -> PreprocessSpec:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} values for color mode {self.color_mode}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class Task(StrEnum):
    """What a model's answer is; the gateway picks the postprocessor by it (`TASK_OUTPUTS` says
    which graph outputs carry the answer, by role)."""

    CLASSIFICATION = "classification"
    """Logits over `labels` → the top-k classes."""
    SEMANTIC_SEGMENTATION = "semantic_segmentation"
    """Per-pixel logits over `labels` (index 0 the background) on the input's field of view → a
    label image in original pixels and each class's area."""
    INSTANCE_SEGMENTATION = "instance_segmentation"
    """Detections, each a box, a score, a class (an index into `labels`) and a mask over its box →
    instances in original pixels (box, mask, polygons). Rows scored 0 are padding."""
    CAPTIONING = "captioning"
    """Generated words: token ids over `labels` (the vocabulary, `CAPTION_SPECIAL_TOKENS` first)
    with each word's log-probability → the caption and its words with scores. The words end at
    the first end (or padding) token; attention stacks with a `WORD_AXIS` are cut to the words."""


DETECTION_AXIS = "detection"
"""The axis of detections: its length varies from image to image (dynamic in ONNX, -1 in
Triton's config); padding rows, if any, have score 0."""

WORD_AXIS = "word"
"""The axis of generated words: its length is the graph's longest caption; the words of one
answer are those before its first end token."""

CAPTION_SPECIAL_TOKENS = ("<pad>", "<start>", "<end>")
"""A captioner's first labels (token ids 0, 1, 2): padding, the start and the end of a caption."""

TASK_OUTPUTS: dict[Task, dict[str, tuple[str, ...]]] = {
    Task.CLASSIFICATION: {"logits": ("class",)},
    Task.SEMANTIC_SEGMENTATION: {"logits": ("class", "y", "x")},
    Task.INSTANCE_SEGMENTATION: {
        "boxes": (DETECTION_AXIS, "box"),
        "scores": (DETECTION_AXIS,),
        "classes": (DETECTION_AXIS,),
        "masks": (DETECTION_AXIS, "mask_y", "mask_x"),
    },
    Task.CAPTIONING: {"tokens": (WORD_AXIS,), "word_scores": (WORD_AXIS,)},
}
"""Each task's outputs by *role*, with their axes (without the batch axis). Boxes are (x0, y0, x1,
y1) as fractions of the input's field of view (as attention boxes are); classes are float class
indices; masks are probabilities over each detection's own box (mask_y, mask_x span the box), for
the class detected; y, x span the input's field of view. Tokens are float token ids (indices into
`labels`, as classes are), word scores each word's log-probability given the words before it. A
role's graph output is named as the role unless `ModelSpec.task_output_names` says otherwise
(classification: `logits_name`)."""


class AttentionKind(StrEnum):
    SPATIAL = "spatial"
    """Weights over positions of a feature map."""
    CHANNEL = "channel"
    """Weights over the channels of a feature map."""
    CLASS_ACTIVATION = "class_activation"
    """Class activation maps (one spatial map per class), computed in the graph."""
    BOXES = "boxes"
    """Regions the model attends to (a zoom box per scale): (x0, y0, x1, y1) per box."""
    PATH = "path"
    """An ordered path of glimpses, each one or more patches (x0, y0, x1, y1) around a point."""


BOX_AXIS = "box"
"""The last axis of boxes and paths: (x0, y0, x1, y1) as fractions of the input's width and
height (its field of view, like a spatial map's), so the gateway maps them to original pixels."""

KIND_AXES: dict[AttentionKind, tuple[str, ...]] = {
    AttentionKind.SPATIAL: SPATIAL_AXES,
    AttentionKind.CHANNEL: ("channel",),
    AttentionKind.CLASS_ACTIVATION: SPATIAL_AXES,
    AttentionKind.BOXES: (BOX_AXIS,),
    AttentionKind.PATH: ("step", "patch", BOX_AXIS),
}
"""The axes each kind's values end with; axes before them index a stack (class, scale, word)."""


class Normalization(_Frozen):
    """How a map's values become display intensities in [0, 1].

    - ``fixed``: ``(v - lo) / (hi - lo)`` with the map's known range ``(lo, hi)``; for maps whose
      absolute value reads directly (a gate that is mostly closed and opens on the object).
    - ``above_median``: ``(v - median) / (max - median)``, clipped at 0: where the map rises
      above its typical level. For gates that are open almost everywhere (CBAM's sigmoid maps
      sit at 0.9–0.99): their absolute value would paint the whole image, while what they
      select is where they open *more*.
    - ``minmax``: per-map ``(v - min) / (max - min)``; for maps whose scale is arbitrary, such
      as a softmax over positions (its values shrink with the map's size).
    - ``relu_minmax``: ``minmax`` after clipping negatives to zero (class activation maps: only
      positive evidence is shown, as in CAM/Grad-CAM).

    In every method a *flat* map renders as zero everywhere and is flagged: one whose peak
    stands less than `flat_below` above its median, as a share of ``range`` when given, else of
    the map's largest magnitude. A saturated gate or a constant map never shows up as a
    confident uniform blob. Raw values are always available (the RAW form).
    """

    method: Literal["fixed", "above_median", "minmax", "relu_minmax"]
    range: tuple[float, float] | None = Field(
        None, description="(lo, hi): the values' known range; required by the fixed method"
    )
    flat_below: float = Field(0.05, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_range(self) -> Normalization:
        if self.range is not None and not self.range[1] > self.range[0]:
            raise ValueError("a range (lo, hi) needs hi > lo")
        if self.method == "fixed" and self.range is None:
            raise ValueError("the fixed method needs a range (lo, hi)")
        return self


class AttentionSpec(_Frozen):
    """One attention output of the graph."""

    name: str = Field(description="the graph output's name")
    kind: AttentionKind
    axes: tuple[str, ...] = Field(description="meaning of each non-batch axis")
    description: str
    value_range: str = Field(description="what the raw values are, in words")
    normalization: Normalization = Normalization(method="minmax")
    block: str = Field("", description="the part of the network this attention belongs to")
    quality: dict[str, float] = Field(
        default_factory=dict,
        description="measured on the test split: pointing game, energy in the digit box, ...",
    )

    @property
    def is_spatial(self) -> bool:
        return self.axes[-2:] == SPATIAL_AXES

    @property
    def is_located(self) -> bool:
        """Boxes and paths: attention as places in the image rather than a map over it."""
        return self.axes[-1:] == (BOX_AXIS,)

    @property
    def leading_axes(self) -> tuple[str, ...]:
        """The axes before the kind's own (a stack of maps: per class, scale, word, ...)."""
        return self.axes[: len(self.axes) - len(KIND_AXES[self.kind])]

    @model_validator(mode="after")
    def _check_axes(self) -> AttentionSpec:
        if "y" in self.axes or "x" in self.axes:
            if not self.is_spatial:
                raise ValueError(f"{self.name}: spatial axes must be the last two, as ('y', 'x')")
        own = KIND_AXES[self.kind]
        if self.axes[len(self.axes) - len(own) :] != own:
            raise ValueError(f"{self.name}: {self.kind.value} outputs end with the axes {own}")
        if len(set(self.axes)) != len(self.axes):
            raise ValueError(f"{self.name}: axis names repeat: {self.axes}")
        if self.kind is AttentionKind.CLASS_ACTIVATION and self.axes[:1] != ("class",):
            raise ValueError(f"{self.name}: class activation maps have axes ('class', 'y', 'x')")
        return self


class AuxiliaryOutput(_Frozen):
    """A graph output that is neither the task's nor attention (e.g. RA-CNN's logits per scale):
    served by Triton to whoever asks for it, described here, not postprocessed."""

    name: str
    description: str


class InputOption(_Frozen):
    """A request option the graph takes as an input of its own: one integer per image, fed as an
    ``int64`` input named as the option (a captioner's beam size and longest caption). The
    gateway checks it against the bounds and sends the default when a request leaves it out;
    the graph itself clamps it into the bounds as well (Triton's warm-up sends zeros)."""

    name: str
    description: str
    default: int
    minimum: int
    maximum: int

    @model_validator(mode="after")
    def _check_bounds(self) -> InputOption:
        if not self.minimum <= self.default <= self.maximum:
            raise ValueError(
                f"option {self.name}: default {self.default} is outside {self.minimum}..{self.maximum}"
            )
        return self


class ModelSpec(_Frozen):
    """Everything the gateway needs to serve a model; written into `config.pbtxt`."""

    schema_version: int = SPEC_SCHEMA_VERSION
    architecture: str
    description: str
    task: Task = Task.CLASSIFICATION
    input_name: str = "image"
    logits_name: str = "logits"
    task_output_names: dict[str, str] = Field(
        default_factory=dict, description="graph output name by task role, where it is not the role's own"
    )
    preprocess: PreprocessSpec
    labels: tuple[str, ...]
    attention: tuple[AttentionSpec, ...]
    auxiliary_outputs: tuple[AuxiliaryOutput, ...] = ()
    primary_attention: str | None = Field(None, description="the map an overlay shows by default")
    primary_reason: str = ""
    options: tuple[InputOption, ...] = Field(
        (), description="request options the graph takes as inputs after the image, in order"
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        option_names = [self.input_name, *(o.name for o in self.options)]
        if len(set(option_names)) != len(option_names):
            raise ValueError(f"input names repeat: {option_names}")
        names = [a.name for a in self.attention]
        outputs = [*self.task_outputs, *names, *(o.name for o in self.auxiliary_outputs)]
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"output names repeat: {outputs}")
        if self.primary_attention is not None and self.primary_attention not in names:
            raise ValueError(f"primary attention {self.primary_attention!r} is not one of {names}")
        roles = TASK_OUTPUTS[self.task]
        if unknown := sorted(set(self.task_output_names) - set(roles)):
            raise ValueError(f"{self.task.value} has no output roles {unknown}; its roles: {sorted(roles)}")
        least = 1 if self.task is Task.INSTANCE_SEGMENTATION else 2
        if len(self.labels) < least:
            raise ValueError(f"a {self.task.value} model needs at least {least} labels")
        if (
            self.task is Task.CAPTIONING
            and self.labels[: len(CAPTION_SPECIAL_TOKENS)] != CAPTION_SPECIAL_TOKENS
        ):
            raise ValueError(f"a captioner's vocabulary (labels) starts with {CAPTION_SPECIAL_TOKENS}")
        return self

    @property
    def input_names(self) -> tuple[str, ...]:
        """Graph inputs in order: the image, then one per option."""
        return (self.input_name, *(o.name for o in self.options))

    def option(self, name: str) -> InputOption:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def task_output(self, role: str) -> str:
        """The graph output that plays ``role`` in the task's answer (e.g. "logits", "boxes")."""
        if role not in TASK_OUTPUTS[self.task]:
            raise KeyError(f"{self.task.value} has no output role {role!r}")
        default = self.logits_name if role == "logits" else role
        return self.task_output_names.get(role, default)

    @property
    def task_outputs(self) -> tuple[str, ...]:
        """The graph outputs the task's answer is read from, in role order (classification: the
        logits)."""
        return tuple(self.task_output(role) for role in TASK_OUTPUTS[self.task])

    def output_axes(self, name: str) -> tuple[str, ...]:
        """The axes (without the batch axis) of any output: a task role's or an attention's;
        auxiliary outputs have none declared (an empty tuple)."""
        for role, axes in TASK_OUTPUTS[self.task].items():
            if self.task_output(role) == name:
                return axes
        for attention in self.attention:
            if attention.name == name:
                return attention.axes
        return ()

    def dynamic_axes(self, name: str) -> tuple[int, ...]:
        """Positions (without the batch axis) of an output's axes whose length varies per image."""
        return tuple(i for i, axis in enumerate(self.output_axes(name)) if axis == DETECTION_AXIS)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Graph outputs in order: the task's, every attention output, the auxiliary ones."""
        return (
            *self.task_outputs,
            *(a.name for a in self.attention),
            *(o.name for o in self.auxiliary_outputs),
        )

    def check_output_dims(self, dims: dict[str, tuple[int, ...]]) -> None:
        """Raises ValueError unless every output exists with dims (without the batch axis) that
        fit its description: one per axis, a class axis as long as the labels, boxes of 4."""
        missing = [name for name in self.output_names if name not in dims]
        if missing:
            raise ValueError(f"the spec names outputs the model lacks: {missing}")
        for role, axes in TASK_OUTPUTS[self.task].items():
            name = self.task_output(role)
            shape = dims[name]
            if len(shape) != len(axes):
                raise ValueError(f"{name}: dims {shape} do not match the {role} axes {axes}")
            if "class" in axes and shape[axes.index("class")] != len(self.labels):
                raise ValueError(f"{name}: {shape} has no class axis of {len(self.labels)}")
            if BOX_AXIS in axes and shape[-1] != 4:
                raise ValueError(f"{name}: boxes need 4 values (x0, y0, x1, y1), not {shape[-1]}")
        self._check_shared_axes(dims)
        for attention in self.attention:
            shape = dims[attention.name]
            if len(shape) != len(attention.axes):
                raise ValueError(f"{attention.name}: dims {shape} do not match the axes {attention.axes}")
            if "class" in attention.axes and shape[attention.axes.index("class")] != len(self.labels):
                raise ValueError(f"{attention.name}: its class axis is not {len(self.labels)} long")
            if attention.is_located and shape[-1] != 4:
                raise ValueError(f"{attention.name}: boxes need 4 values (x0, y0, x1, y1), not {shape[-1]}")

    def _check_shared_axes(self, dims: dict[str, tuple[int, ...]]) -> None:
        """Detections and words: every output with such an axis agrees on its length."""
        for shared in (DETECTION_AXIS, WORD_AXIS):
            lengths = {
                dims[name][i]
                for name in self.output_names
                for i, axis in enumerate(self.output_axes(name))
                if axis == shared and len(dims[name]) == len(self.output_axes(name))
            }
            if len(lengths) > 1:
                raise ValueError(f"the outputs disagree on the number of {shared}s: {sorted(lengths)}")

    def attention_by_name(self, name: str) -> AttentionSpec:
        for attention in self.attention:
            if attention.name == name:
                return attention
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.model_validate_json(text)
