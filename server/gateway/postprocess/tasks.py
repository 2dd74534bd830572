"""One postprocessor per task, chosen by the model spec's `task` through a registry.

A task postprocessor reads the task's own outputs (for classification: the logits) and returns
the task's answer plus the *selection* it implies for attention stacks (classification selects
the class to explain; see `attnserve.attention`). Adding a task is one registered function
here and a field in the answer, not an edit of the pipeline or of the other tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from attnserve.errors import InvalidInput
from attnserve.prediction import ClassScore
from attnserve.spec import ModelSpec, Task


@dataclass(frozen=True)
class TaskOptions:
    """The request's options that concern the task's answer, resolved against the spec."""

    top_k: int
    target_class: int | None = None


@dataclass
class TaskResult:
    predictions: list[ClassScore] = field(default_factory=list)
    """Classification: the top-k classes, best first."""
    selection: dict[str, int] = field(default_factory=dict)
    """Index to show on leading attention axes, by axis name (e.g. ``{"class": 6}``)."""


Outputs = Mapping[str, NDArray[np.float32]]
TaskPostprocessor = Callable[[Outputs, ModelSpec, TaskOptions], TaskResult]
P = TypeVar("P", bound=TaskPostprocessor)

_TASKS: dict[Task, TaskPostprocessor] = {}


def register_task(task: Task) -> Callable[[P], P]:
    def decorate(postprocessor: P) -> P:
        if task in _TASKS:
            raise ValueError(f"a postprocessor for the task {task.value!r} is registered already")
        _TASKS[task] = postprocessor
        return postprocessor

    return decorate


def task_postprocessor(task: Task) -> TaskPostprocessor:
    try:
        return _TASKS[task]
    except KeyError:
        raise InvalidInput(f"this gateway cannot postprocess the task {task.value!r}") from None


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
def classification(outputs: Outputs, spec: ModelSpec, options: TaskOptions) -> TaskResult:
    """Logits → top-k classes; class-conditioned maps show the top-1 class or the target."""
    predictions = top_k(outputs[spec.logits_name], spec.labels, options.top_k)
    shown = predictions[0].index if options.target_class is None else options.target_class
    return TaskResult(predictions=predictions, selection={"class": shown})
