"""Triton's output tensors → the answer: the task's result and the attention maps, in original pixels.

Pure functions of (outputs, spec, geometry, request); the image is only needed for overlays.
The task's postprocessor is chosen by ``spec.task`` and each map's builder by its attention
kind, both through registries (`tasks` with `segmentation`, `instances` and `captions`, `attention`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.prediction import AttentionMap
from attnserve.spec import ModelSpec
from attnserve.transform import ResizeGeometry

from . import captions, instances, segmentation  # noqa: F401  (register their tasks)
from .attention import AttentionRequest, MapContext, build_attention_map, register_attention_kind
from .display import DisplayMap, to_display
from .tasks import (
    TaskContext,
    TaskOptions,
    TaskResult,
    register_task,
    softmax,
    task_draws,
    task_inputs,
    task_postprocessor,
    top_k,
)


def answer_draws(spec: ModelSpec, attention: AttentionRequest, options: TaskOptions) -> bool:
    """Whether the answer holds images (the costly part of postprocessing, admitted and run as
    rendering work): a map in an image form, a task that always draws, or the task's drawing."""
    return attention.draws or task_draws(spec.task) or options.overlay


@dataclass
class Answer:
    task: TaskResult
    attention: list[AttentionMap]


def postprocess(
    outputs: Mapping[str, NDArray[np.float32]],
    spec: ModelSpec,
    geometry: ResizeGeometry,
    options: TaskOptions,
    request: AttentionRequest,
    image: Image.Image | None = None,
    render_size: tuple[int, int] | None = None,
) -> Answer:
    """Outputs of one image (batch axis removed) → the task's answer and the requested maps.

    Image forms are drawn at ``render_size`` (width, height; default the original's), on
    ``image`` which must be that size."""
    task_context = TaskContext(options, geometry, request.encoder, image, render_size)
    result = task_postprocessor(spec.task)(outputs, spec, task_context)
    context = MapContext(geometry, request, result.selection, spec.labels, image, render_size, result.extent)
    maps = [
        build_attention_map(spec.attention_by_name(name), outputs[name], context) for name in request.maps
    ]
    return Answer(result, maps)


__all__ = [
    "Answer",
    "answer_draws",
    "AttentionRequest",
    "DisplayMap",
    "MapContext",
    "TaskContext",
    "TaskOptions",
    "TaskResult",
    "build_attention_map",
    "postprocess",
    "register_attention_kind",
    "register_task",
    "softmax",
    "task_draws",
    "task_inputs",
    "to_display",
    "top_k",
]
