"""One postprocessor per task, chosen by the model spec's `task` through a registry.

A task postprocessor reads the task's own outputs (`attnserve.spec.TASK_OUTPUTS`: for
classification the logits; for segmentation per-pixel logits; for instances boxes, scores,
classes and masks) and returns the task's answer plus the *selection* it implies for attention
stacks (classification selects the class to explain; see `attnserve.attention`). Adding a task
is one registered function (in its own module: `segmentation`, `instances`) and a field in the
answer, not an edit of the pipeline or of the other tasks. A task that draws (its answer holds
images) says so when it registers, so that admission counts it as rendering work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.prediction import Caption, ClassScore, ImageEncoding, Instance, Segmentation
from attnserve.spec import ModelSpec, Task
from attnserve.transform import ResizeGeometry

from ..render import ImageEncoder

DEFAULT_SCORE_THRESHOLD = 0.5
MAX_INSTANCES = 100


@dataclass(frozen=True)
class TaskOptions:
    """The request's options that concern the task's answer, resolved against the spec."""

    top_k: int = 0
    """Classification: how many classes."""
    target_class: int | None = None
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    """Instances: the lowest score kept."""
    max_instances: int = MAX_INSTANCES
    overlay: bool = False
    """Draw the answer on the image (segmentation, instances, captions)."""
    model_options: Mapping[str, int] = field(default_factory=dict)
    """The model's own options (the spec's `InputOption`s), every one resolved to its value."""


@dataclass(frozen=True)
class TaskContext:
    """What a task postprocessor may need besides the outputs."""

    options: TaskOptions
    geometry: ResizeGeometry
    encoder: ImageEncoder = ImageEncoder()
    image: Image.Image | None = None
    """The oriented original (RGB) at `render_size`, present when an overlay was asked for."""
    render_size: tuple[int, int] | None = None
    """(width, height) of drawn answers; None: the original's size."""

    @property
    def rendered(self) -> tuple[int, int]:
        return self.render_size or (self.geometry.width, self.geometry.height)


@dataclass
class TaskResult:
    predictions: list[ClassScore] = field(default_factory=list)
    """Classification: the top-k classes, best first."""
    selection: dict[str, int] = field(default_factory=dict)
    """Index to show on leading attention axes, by axis name (e.g. ``{"class": 6}``)."""
    segmentation: Segmentation | None = None
    instances: list[Instance] = field(default_factory=list)
    caption: Caption | None = None
    extent: dict[str, int] = field(default_factory=dict)
    """How many entries of a leading attention axis belong to the answer, by axis name (e.g.
    ``{"word": 7}``: the caption's words); the rest of the stack is cut off."""
    overlay: bytes = b""
    """The answer drawn on the image, when asked."""
    overlay_encoding: ImageEncoding | None = None


Outputs = Mapping[str, NDArray[np.float32]]
TaskPostprocessor = Callable[[Outputs, ModelSpec, TaskContext], TaskResult]
P = TypeVar("P", bound=TaskPostprocessor)


@dataclass(frozen=True)
class _Registered:
    postprocessor: TaskPostprocessor
    draws: bool
    reads_primary: bool


_TASKS: dict[Task, _Registered] = {}


def register_task(task: Task, *, draws: bool = False, reads_primary: bool = False) -> Callable[[P], P]:
    """Registers the postprocessor of ``task``; ``draws``: its answer holds images (rendering
    work, admitted as such); ``reads_primary``: its answer reads the primary attention output
    (a caption's word peaks), which is then fetched whatever maps the request asks for."""

    def decorate(postprocessor: P) -> P:
        if task in _TASKS:
            raise ValueError(f"a postprocessor for the task {task.value!r} is registered already")
        _TASKS[task] = _Registered(postprocessor, draws, reads_primary)
        return postprocessor

    return decorate


def _registered(task: Task) -> _Registered:
    try:
        return _TASKS[task]
    except KeyError:
        raise InvalidInput(f"this gateway cannot postprocess the task {task.value!r}") from None


def task_postprocessor(task: Task) -> TaskPostprocessor:
    return _registered(task).postprocessor


def task_draws(task: Task) -> bool:
    """Whether the task's answer holds images (drawn whatever the attention request)."""
    return _registered(task).draws


def task_inputs(spec: ModelSpec) -> tuple[str, ...]:
    """The graph outputs the task's postprocessor reads: its roles', and the primary attention
    output where it reads that too."""
    extra = (
        (spec.primary_attention,) if _registered(spec.task).reads_primary and spec.primary_attention else ()
    )
    return (*spec.task_outputs, *extra)


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = logits.astype(np.float64) - np.max(logits)
    exp = np.exp(shifted)
    result: NDArray[np.float32] = (exp / exp.sum()).astype(np.float32)
    return result


def top_k(logits: NDArray[np.float32], labels: tuple[str, ...], k: int) -> list[ClassScore]:
    probabilities = softmax(logits)
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [ClassScore(int(i), labels[i], float(probabilities[i])) for i in order]


@register_task(Task.CLASSIFICATION)
def classification(outputs: Outputs, spec: ModelSpec, context: TaskContext) -> TaskResult:
    """Logits → top-k classes; class-conditioned maps show the top-1 class or the target."""
    options = context.options
    predictions = top_k(outputs[spec.logits_name], spec.labels, options.top_k)
    shown = predictions[0].index if options.target_class is None else options.target_class
    return TaskResult(predictions=predictions, selection={"class": shown})
