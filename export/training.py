"""What every trainer shares: its configuration, its result, the learning-rate schedule, the
training loop (`fit`), and the registry that picks a trainer by the model spec's task (as the
gateway picks a postprocessor).

`attnserve train NAME` calls `attnserve.export.train.train`, which looks the architecture's task
up here: classification trains in `train.py`, each other task in its own module, registered with
``@register_trainer(Task.X)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from attnserve._io import atomic_write_text
from attnserve.errors import InvalidInput
from attnserve.spec import ModelSpec, Task

from .checkpoint import Checkpoint, save_checkpoint
from .models import TrainingRecipe, TrainingStep, create_model, get_entry, serving_spec


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


@dataclass
class Started:
    """What every trainer starts from (`start_training`)."""

    recipe: TrainingRecipe
    """The architecture's recipe with the configuration's overrides."""
    spec: ModelSpec
    model: nn.Module
    """A fresh model, initialised under the configuration's seed."""
    started: float
    """`time.monotonic()` when training began (data generation included)."""


def start_training(config: TrainConfig) -> Started:
    """Seeds torch, sets its threads, builds ``config.architecture`` with its recipe and spec:
    the same first steps for every registered architecture's trainer."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    entry = get_entry(config.architecture)
    recipe = dataclasses.replace(entry.recipe, **config.recipe)
    model = create_model(config.architecture, **config.model_kwargs)
    return Started(recipe, entry.spec, model, time.monotonic())


@dataclass
class Fitted:
    """What `fit` did: its steps, epochs and seconds, and the moving average of the weights."""

    steps: int
    epochs: int
    seconds: float
    averaged: nn.Module
    """The exponential moving average of the weights and BatchNorm statistics (`ema_decay`)."""


S = TypeVar("S")


@dataclass
class Kept(Generic[S]):
    """Which weights `keep_better` kept, and both validation scores."""

    kept: str
    """"last" or "ema"."""
    last: S
    ema: S

    @property
    def chosen(self) -> S:
        """The kept weights' score."""
        return self.ema if self.kept == "ema" else self.last


def keep_better(
    model: nn.Module, fitted: Fitted, score: Callable[[nn.Module], S], figure: Callable[[S], float]
) -> Kept[S]:
    """Scores the last weights (``model``) and their moving average (``fitted.averaged``), both in
    eval mode, on validation data, and leaves the better by ``figure`` in ``model`` (a tie keeps
    the average), in eval mode: the selection every trainer makes."""
    model.eval()
    last = score(model)
    averaged = fitted.averaged.eval()
    ema = score(averaged)
    kept = "ema" if figure(ema) >= figure(last) else "last"
    if kept == "ema":
        model.load_state_dict(averaged.state_dict())
    model.eval()
    return Kept(kept, last, ema)


StepLoss = Callable[[NDArray[np.int64], float, int], TrainingStep]
"""``loss(batch indices, progress, step) -> TrainingStep`` for one batch of the training data."""


def fit(
    model: nn.Module,
    recipe: TrainingRecipe,
    samples: int,
    loss: StepLoss,
    *,
    seed: int,
    description: str,
    progress_bar: bool = True,
    warmup_share: float = 0.25,
    clip_grad_norm: float | None = None,
) -> Fitted:
    """The loop every trainer shares: AdamW on a one-cycle learning rate over progress (the
    larger of the step share and the time share, so a slow machine compresses the schedule
    rather than overrun), shuffled batches of ``samples`` by a generator seeded with ``seed``,
    a step's ``update`` restriction honoured, the weights' moving average kept beside."""
    if samples < recipe.batch_size:  # not one batch: the loop would never progress
        raise InvalidInput(
            f"{samples} training samples make no batch of {recipe.batch_size}: ask for more samples"
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.max_lr, weight_decay=recipe.weight_decay)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True
    )
    model.train()
    loader_rng = np.random.default_rng(seed)
    step, epoch, started, progress = 0, 0, time.monotonic(), 0.0
    bar = tqdm(total=recipe.max_steps, desc=description, disable=not progress_bar)
    while progress < 1.0:
        order = loader_rng.permutation(samples)
        for start in range(0, samples - recipe.batch_size + 1, recipe.batch_size):
            progress = max(step / recipe.max_steps, (time.monotonic() - started) / recipe.max_seconds)
            if progress >= 1.0:
                break
            lr = one_cycle_lr(progress, recipe.max_lr, warmup_share)
            for group in optimizer.param_groups:
                group["lr"] = lr
            result = loss(order[start : start + recipe.batch_size], progress, step)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            if result.update is not None:  # this step may change only these parameters
                allowed = {id(p) for p in result.update}
                for parameter in model.parameters():
                    if id(parameter) not in allowed:
                        parameter.grad = None
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            ema.update_parameters(model)
            step += 1
            bar.update(1)
            bar.set_postfix(
                loss=f"{result.loss.item():.3f}",
                lr=f"{lr:.1e}",
                epoch=epoch,
                **{k: f"{v:.3f}" for k, v in result.logs.items()},
            )
        epoch += 1
    bar.close()
    return Fitted(step, epoch, time.monotonic() - started, ema.module)


SPLITS_RECORD = {"train": "scans 0-1296", "val": "scans 1297-1496", "test": "scans 1497-1796"}
"""How every trainer's data is split by source scan, as metrics.json records it."""


def training_record(
    fitted: Fitted, samples: int, batch_size: int, data_seconds: float, started: float
) -> dict[str, Any]:
    """metrics.json's ``train`` section: steps, epochs, throughput and where the time went
    (``started``: `time.monotonic()` when the trainer began, data included)."""
    return {
        "steps": fitted.steps,
        "samples": samples,
        "epochs": round(fitted.steps * batch_size / samples, 2),
        "samples_per_second": round(fitted.steps * batch_size / fitted.seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(fitted.seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def config_record(config: TrainConfig, recipe: TrainingRecipe) -> dict[str, Any]:
    """The configuration and the recipe a model was trained with, as plain JSON types."""
    record: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    record["recipe"] = asdict(recipe)
    return record


def save_trained(
    config: TrainConfig,
    recipe: TrainingRecipe,
    model: nn.Module,
    spec: ModelSpec,
    metrics: dict[str, Any],
    summary: list[str],
) -> TrainResult:
    """Writes ``checkpoint.pt`` and ``metrics.json`` (with the configuration and the summary)
    under ``config.out_dir``, each atomically; the model is saved with its serving spec."""
    metrics["config"] = config_record(config, recipe)
    metrics["summary"] = summary
    checkpoint_path = config.out_dir / "checkpoint.pt"
    metrics_path = config.out_dir / "metrics.json"
    save_checkpoint(
        checkpoint_path,
        Checkpoint(
            architecture=config.architecture,
            model=model,
            spec=serving_spec(spec, model),
            model_kwargs=config.model_kwargs,
            metrics=metrics,
            config=metrics["config"],
        ),
    )
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return TrainResult(checkpoint_path, metrics_path, metrics, summary)
