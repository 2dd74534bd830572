"""Training on cluttered digits, on the CPU, within a wall-clock budget.

Each architecture trains by its registered `TrainingRecipe`: which data variants (standard,
small digits, mixed sizes and aspect ratios), how many samples, how long. Every canvas reaches
the model through the gateway's own transform (`attnserve.export.data.model_batch`). A model
that defines ``training_loss`` (RAM's REINFORCE, RA-CNN's alternation) trains by it; the others
on cross-entropy over their logits.

The learning rate follows a one-cycle schedule over *progress*, the larger of the step share
and the time share: with a generous budget the run is deterministic (a fixed number of steps);
on a slower machine it compresses the schedule instead of overrunning. Selection (last or
averaged weights, the primary attention output) uses validation splits only; the test splits
(scans 1497–1796) are scored once, at the end.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import Task

from .data import ModelBatch, Split, concatenate, make_dataset, model_batch
from .models import (
    ServingGraph,
    TrainingRecipe,
    TrainingStep,
    TrainsItself,
    get_entry,
)
from .scoring import run_graph, score
from .training import (
    SPLITS_RECORD,
    TrainConfig,
    Trainer,
    TrainResult,
    fit,
    keep_better,
    one_cycle_lr,
    register_trainer,
    save_trained,
    start_training,
    trainer_for,
    training_record,
)

EVALUATION_VARIANTS = ("standard", "small", "mixed")
_CHUNK = 2_000


def build_batch(
    variant: str, split: Split, samples: int, preprocess: Any, seed: int, augment: bool = False
) -> ModelBatch:
    """``samples`` canvases of a variant, through the gateway's transform, built in chunks."""
    dataset = make_dataset(variant, split, samples, seed=seed, augment=augment)
    chunks = [
        model_batch([dataset[i] for i in range(start, min(start + _CHUNK, samples))], preprocess)
        for start in range(0, samples, _CHUNK)
    ]
    return concatenate(chunks)


def training_step(
    model: nn.Module, images: Tensor, labels: Tensor, progress: float, step: int, label_smoothing: float
) -> TrainingStep:
    if isinstance(model, TrainsItself):
        return model.training_loss(images, labels, progress, step)
    logits = model(images)["logits"]
    return TrainingStep(F.cross_entropy(logits, labels, label_smoothing=label_smoothing))


def train(config: TrainConfig, progress_bar: bool = True) -> TrainResult:
    """Trains ``config.architecture`` with its recipe's own trainer, or the one registered for
    its task."""
    from . import task_trainers  # noqa: F401  (registers the trainers of the other tasks)

    entry = get_entry(config.architecture)
    if entry.recipe.trainer:
        module, _, function = entry.recipe.trainer.partition(":")
        own: Trainer = getattr(importlib.import_module(module), function)
        return own(config, progress_bar)
    return trainer_for(entry.spec.task)(config, progress_bar)


@register_trainer(Task.CLASSIFICATION)
def train_classifier(config: TrainConfig, progress_bar: bool = True) -> TrainResult:
    setup = start_training(config)
    recipe, spec, model, started = setup.recipe, setup.spec, setup.model, setup.started

    preprocess = spec.preprocess
    shares = sum(share for _, share in recipe.data)
    train_data = concatenate(
        [
            build_batch(
                variant, "train", round(recipe.train_samples * share / shares), preprocess, config.seed, True
            )
            for variant, share in recipe.data
        ]
    )
    variants = tuple(dict.fromkeys((recipe.selection, *config.evaluate_on)))
    val_data = {v: build_batch(v, "val", config.val_samples, preprocess, config.seed) for v in variants}
    labels = torch.from_numpy(train_data.labels)
    data_seconds = time.monotonic() - started

    fitted = fit(
        model,
        recipe,
        len(labels),
        lambda index, progress, step: training_step(
            model, train_data.inputs(index), labels[index], progress, step, recipe.label_smoothing
        ),
        seed=config.seed,
        description=f"train {config.architecture}",
        progress_bar=progress_bar,
    )

    selection = val_data[recipe.selection]
    choice = keep_better(
        model,
        fitted,
        lambda weights: score(run_graph(ServingGraph(weights, spec), selection), selection, spec),
        lambda scores: scores["accuracy"],
    )
    graph = ServingGraph(model, spec)
    test_data = {v: build_batch(v, "test", config.test_samples, preprocess, config.seed) for v in variants}
    metrics: dict[str, Any] = {
        "architecture": config.architecture,
        "selection": recipe.selection,
        "weights": {
            "kept": choice.kept,
            "val_accuracy_last": choice.last["accuracy"],
            "val_accuracy_ema": choice.ema["accuracy"],
        },
        "val": {v: score(run_graph(graph, data), data, graph.spec) for v, data in val_data.items()},
        "test": {v: score(run_graph(graph, data), data, graph.spec) for v, data in test_data.items()},
        "train": training_record(fitted, len(labels), recipe.batch_size, data_seconds, started),
        "splits": SPLITS_RECORD,
    }
    return save_trained(config, recipe, model, spec, metrics, _summary(metrics))


def _summary(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for variant, test in metrics["test"].items():
        samples = test["samples"]
        lines.append(
            f"{variant} test split: accuracy {test['accuracy']:.2%} on {samples} images (scans 1497-1796)"
        )
        for name, quality in test["attention"].items():
            lines.append(f"  {name:<16} " + ", ".join(f"{k} {v:.3f}" for k, v in quality.items()))
        lines.append(f"  chance energy {test['chance_energy']:.3f}")
    return lines


__all__ = [
    "EVALUATION_VARIANTS",
    "TrainConfig",
    "TrainResult",
    "TrainingRecipe",
    "one_cycle_lr",
    "train",
    "train_classifier",
]
