"""What every trainer shares: its configuration, its result, the learning-rate schedule, and the
registry that picks a trainer by the model spec's task (as the gateway picks a postprocessor).

`attnserve train NAME` calls `attnserve.export.train.train`, which looks the architecture's task
up here: classification trains in `train.py`, each other task in its own module, registered with
``@register_trainer(Task.X)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from attnserve.errors import InvalidInput
from attnserve.spec import Task


@dataclass
class TrainConfig:
    architecture: str = "cbam"
    out_dir: Path = Path("runs/cbam")
    seed: int = 0
    threads: int = 2
    val_samples: int = 1_000
    test_samples: int = 1_000
    evaluate_on: tuple[str, ...] = ("standard", "small", "mixed")
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    """Overrides of the architecture's recipe (train_samples, max_seconds, max_steps, ...)."""


@dataclass
class TrainResult:
    checkpoint_path: Path
    metrics_path: Path
    metrics: dict[str, Any]
    summary: list[str] = field(default_factory=list)
    """What `attnserve train` prints: the test split's figures, a line each."""


def one_cycle_lr(progress: float, max_lr: float, warmup_share: float) -> float:
    """Cosine warm-up from max_lr/25 to max_lr, then cosine annealing to ~0."""
    start, end = max_lr / 25.0, max_lr / 1e4
    if progress < warmup_share:
        phase = progress / warmup_share
        return start + (max_lr - start) * (1 - math.cos(math.pi * phase)) / 2
    phase = min(1.0, (progress - warmup_share) / (1 - warmup_share))
    return end + (max_lr - end) * (1 + math.cos(math.pi * phase)) / 2


Trainer = Callable[[TrainConfig, bool], TrainResult]
"""``trainer(config, progress_bar) -> TrainResult``: trains, scores on the test split, writes the
checkpoint and metrics.json atomically under ``config.out_dir``."""
T = TypeVar("T", bound=Trainer)

_TRAINERS: dict[Task, Trainer] = {}


def register_trainer(task: Task) -> Callable[[T], T]:
    def decorate(trainer: T) -> T:
        if task in _TRAINERS:
            raise ValueError(f"a trainer for the task {task.value!r} is registered already")
        _TRAINERS[task] = trainer
        return trainer

    return decorate


def trainer_for(task: Task) -> Trainer:
    try:
        return _TRAINERS[task]
    except KeyError:
        raise InvalidInput(f"no trainer is registered for the task {task.value!r}") from None
