"""Training semantic segmentation on digit scenes, on the CPU, within a wall-clock budget.

The trainer of `Task.SEMANTIC_SEGMENTATION` (chosen by `attnserve.export.train.train`). Scenes
(`attnserve.export.data.scenes`) reach the model through the gateway's own transform: stored as
8 bits, letterboxed to the input size; the masks follow into input pixels through the same
geometry. The training set mixes 128 px scenes (some through a camera round trip) with scenes of
other sizes, because users send other sizes.

The schedule is `train.py`'s: AdamW, one-cycle learning rate over progress = max(step share,
time share), an EMA of the weights kept if it scores better on the validation split. The test
split (scans 1497–1796) is scored once, at the end, at the training size and at other sizes
(through the gateway's geometry: the served logits mapped back onto the scene's own pixels,
compared there).

Loss: cross-entropy on ``outputs[spec.logits_name]`` (bilinearly upsampled to the targets'
pixels when coarser) — unless the model defines

    def training_loss(self, images, targets: SegmentationTargets, progress, step) -> TrainingStep

(as Attention to Scale does, adding a loss per scale). ``targets`` carries the semantic and the
instance masks in model-input pixels, so a model may supervise per instance (e.g. a
task-partitioned FCN) without another trainer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from attnserve.spec import ModelSpec, PreprocessSpec, Task
from attnserve.transform import (
    ResizeGeometry,
    image_from_pixels,
    map_to_original,
    pixels_to_input,
    to_input_pixels,
)

from .data import DigitScenes, Scene, canvas_parts
from .models import ServingGraph, TrainingRecipe, TrainingStep
from .training import (
    SPLITS_RECORD,
    Fitted,
    TrainConfig,
    TrainResult,
    fit,
    keep_better,
    register_trainer,
    save_trained,
    start_training,
    training_record,
)

EVALUATION_SIZES = (96, 192)
"""Canvas sizes the test split is also scored at (letterboxed by the gateway's transform)."""
SIZE_BINS = (0, 16, 24, 32, 44, 10_000)
"""Digit size bins (the longer side of the visible ink's box, in canvas pixels)."""
_CHUNK = 1_000


@dataclass
class SegmentationTargets:
    """What a segmentation model trains on, in model-input pixels (N×H×W each)."""

    semantic: Tensor
    """int64: 0 background (also letterbox padding), digit d → d + 1."""
    instances: Tensor
    """int64: 0 none, k = 1..n the k-th digit of the scene (`Scene.instances`)."""
    instance_labels: list[Tensor]
    """Per image, the n digit classes (0..9) of its instances 1..n."""


@dataclass
class SceneBatch:
    pixels: NDArray[np.uint8]
    """N×H×W×C, the model input's 8-bit pixels."""
    semantic: NDArray[np.uint8]
    """N×H×W, in model-input pixels."""
    instances: NDArray[np.uint8]
    instance_labels: list[NDArray[np.int64]]
    preprocess: PreprocessSpec

    def __len__(self) -> int:
        return len(self.pixels)

    def inputs(self, index: slice | NDArray[np.int64] = slice(None)) -> Tensor:
        return torch.from_numpy(pixels_to_input(self.pixels[index], self.preprocess))

    def targets(self, index: NDArray[np.int64]) -> SegmentationTargets:
        return SegmentationTargets(
            semantic=torch.from_numpy(self.semantic[index].astype(np.int64)),
            instances=torch.from_numpy(self.instances[index].astype(np.int64)),
            instance_labels=[torch.from_numpy(self.instance_labels[i]) for i in index],
        )


def mask_to_input(mask: NDArray[Any], geometry: ResizeGeometry) -> NDArray[Any]:
    """A label image in original pixels sampled (nearest) at each model-input pixel's centre;
    0 where the input shows letterbox padding."""
    xs, ys = geometry.to_original(
        np.arange(geometry.input_width) + 0.5, np.arange(geometry.input_height) + 0.5
    )
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    inside_x = (cols >= 0) & (cols < geometry.width)
    inside_y = (rows >= 0) & (rows < geometry.height)
    sampled = mask[np.clip(rows, 0, geometry.height - 1)][:, np.clip(cols, 0, geometry.width - 1)]
    result: NDArray[Any] = np.where(inside_y[:, None] & inside_x[None, :], sampled, 0)
    return result


def scene_batch(scenes: Sequence[Scene], preprocess: PreprocessSpec) -> SceneBatch:
    """Scenes → model inputs and input-pixel targets, through the gateway's transform."""
    height, width = preprocess.input_size
    count = len(scenes)
    pixels = np.empty((count, height, width, preprocess.channels), dtype=np.uint8)
    semantic = np.empty((count, height, width), dtype=np.uint8)
    instances = np.empty((count, height, width), dtype=np.uint8)
    for index, scene in enumerate(scenes):
        pixels[index], geometry = to_input_pixels(image_from_pixels(scene.image), preprocess)
        semantic[index] = mask_to_input(scene.semantic, geometry)
        instances[index] = mask_to_input(scene.instances, geometry)
    return SceneBatch(pixels, semantic, instances, [s.labels for s in scenes], preprocess)


def _concatenate(batches: Sequence[SceneBatch]) -> SceneBatch:
    return SceneBatch(
        np.concatenate([b.pixels for b in batches]),
        np.concatenate([b.semantic for b in batches]),
        np.concatenate([b.instances for b in batches]),
        [labels for b in batches for labels in b.instance_labels],
        batches[0].preprocess,
    )


def training_scenes(
    samples: int, preprocess: PreprocessSpec, seed: int, other_sizes_share: float
) -> SceneBatch:
    """``samples`` training scenes: at the input size (30 % through a camera round trip), and a
    share at `OTHER_CANVAS_SIZES`, letterboxed as the gateway would."""
    batches = []
    parts = canvas_parts(samples, preprocess.input_size[0], other_sizes_share)
    for part, (canvas, count) in enumerate(parts):
        scenes = DigitScenes("train", count, canvas_size=canvas, seed=seed * 100 + part, resample_share=0.3)
        for start in range(0, count, _CHUNK):
            batches.append(
                scene_batch([scenes[i] for i in range(start, min(start + _CHUNK, count))], preprocess)
            )
    return _concatenate(batches)


def training_step(
    model: nn.Module,
    spec: ModelSpec,
    images: Tensor,
    targets: SegmentationTargets,
    progress: float,
    step: int,
) -> TrainingStep:
    own = getattr(model, "training_loss", None)
    if callable(own):
        result: TrainingStep = own(images, targets, progress, step)
        return result
    logits = model(images)[spec.logits_name]
    if logits.shape[-2:] != targets.semantic.shape[-2:]:
        logits = F.interpolate(logits, size=targets.semantic.shape[-2:], mode="bilinear", align_corners=False)
    return TrainingStep(F.cross_entropy(logits, targets.semantic))


# ---------------------------------------------------------------------------------------------
# Scoring


def _confusion(predicted: NDArray[np.int64], truth: NDArray[Any], classes: int) -> NDArray[np.int64]:
    counts = np.bincount(
        truth.astype(np.int64).ravel() * classes + predicted.ravel(), minlength=classes * classes
    )
    return counts.reshape(classes, classes)


def _iou_scores(confusion: NDArray[np.int64], labels: Sequence[str]) -> dict[str, Any]:
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    iou = np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)
    return {
        "miou": round(float(np.nanmean(iou)), 4),
        "digit_miou": round(float(np.nanmean(iou[1:])), 4),
        "pixel_accuracy": round(float(true_positive.sum() / confusion.sum()), 4),
        "iou": {label: round(float(value), 4) for label, value in zip(labels, iou, strict=True)},
    }


def _size_bin(size: float) -> str:
    for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:], strict=True):
        if low <= size < high:
            return f"{low}-{high}px" if high < SIZE_BINS[-1] else f">={low}px"
    raise ValueError(size)


def evaluate(
    graph: ServingGraph, scenes: Sequence[Scene], batch_size: int = 50, weights_name: str | None = None
) -> dict[str, Any]:
    """Scores scenes as served: each through the gateway's transform, the logits (and scale
    weights) mapped back onto the scene's own pixels by the same geometry, compared there.

    Besides mIoU over all classes, pixel accuracy and the digits' mIoU: per digit-size bin, the
    share of each digit's pixels labelled with its class, and (with ``weights_name``, a
    ``("scale", "y", "x")`` output) the mean weight of each scale over the digit's pixels.
    """
    spec = graph.spec
    classes = len(spec.labels)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    by_bin: dict[str, dict[str, Any]] = {}
    graph.eval()
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        batch = scene_batch(chunk, spec.preprocess)
        with torch.no_grad():
            outputs = graph.named_outputs(batch.inputs())
        logits = outputs[spec.logits_name].numpy()
        weights = outputs[weights_name].numpy() if weights_name else None
        for index, scene in enumerate(chunk):
            height, width = scene.semantic.shape
            geometry = ResizeGeometry.for_spec(width, height, spec.preprocess)
            scores = np.stack([map_to_original(plane, geometry) for plane in logits[index]])
            predicted = scores.argmax(axis=0)
            confusion += _confusion(predicted, scene.semantic, classes)
            scale_maps = (
                np.stack([map_to_original(plane, geometry) for plane in weights[index]])
                if weights is not None
                else None
            )
            for k, (label, size) in enumerate(zip(scene.labels, scene.digit_sizes, strict=True), start=1):
                pixels = scene.instances == k
                entry = by_bin.setdefault(
                    _size_bin(float(size)), {"digits": 0, "pixels": 0, "correct": 0, "weights": []}
                )
                entry["digits"] += 1
                entry["pixels"] += int(pixels.sum())
                entry["correct"] += int((predicted[pixels] == label + 1).sum())
                if scale_maps is not None:
                    entry["weights"].append(scale_maps[:, pixels].mean(axis=1))
    result = _iou_scores(confusion, spec.labels)
    result["scenes"] = len(scenes)
    result["by_digit_size"] = {
        name: {
            "digits": entry["digits"],
            "pixel_accuracy": round(entry["correct"] / max(entry["pixels"], 1), 4),
            **(
                {"mean_scale_weights": [round(float(w), 4) for w in np.mean(entry["weights"], axis=0)]}
                if entry["weights"]
                else {}
            ),
        }
        for name, entry in sorted(
            by_bin.items(), key=lambda item: int(item[0].strip(">=").split("-")[0].rstrip("px"))
        )
    }
    if weights_name:
        result["attention"] = {weights_name: scale_weight_quality(result["by_digit_size"])}
    return result


def scale_weight_quality(by_digit_size: dict[str, Any]) -> dict[str, float]:
    """The mean weight of each scale over digits' pixels, per digit-size bin, as the flat
    figures export attaches to the attention output (``scale{index}_weight_{bin}``)."""
    return {
        f"scale{index}_weight_{name}": weight
        for name, entry in by_digit_size.items()
        for index, weight in enumerate(entry.get("mean_scale_weights", []))
    }


def _scale_weights_output(spec: ModelSpec) -> str | None:
    for attention in spec.attention:
        if attention.leading_axes == ("scale",) and attention.is_spatial:
            return attention.name
    return None


# ---------------------------------------------------------------------------------------------
# The trainer


@dataclass
class SceneFit:
    """A segmenter fitted on digit scenes, before its weights are chosen and it is scored."""

    model: nn.Module
    spec: ModelSpec
    recipe: TrainingRecipe
    fitted: Fitted
    validation: list[Scene]
    """The validation scenes at the input size, which choose between last and averaged weights."""
    samples: int
    data_seconds: float
    started: float
    """`time.monotonic()` when training began, data included."""


def fit_on_scenes(config: TrainConfig, progress_bar: bool = True) -> SceneFit:
    """Builds ``config.architecture`` and fits it on training scenes by its recipe (the part
    every segmentation trainer shares; they differ in how they score)."""
    setup = start_training(config)
    recipe, spec, model, started = setup.recipe, setup.spec, setup.model, setup.started

    preprocess = spec.preprocess
    other_share = recipe.share("other_sizes")
    train_data = training_scenes(recipe.train_samples, preprocess, config.seed, other_share)
    val_scenes = DigitScenes(
        "val", config.val_samples, canvas_size=preprocess.input_size[0], seed=config.seed
    )
    validation = [val_scenes[i] for i in range(len(val_scenes))]
    data_seconds = time.monotonic() - started

    fitted = fit(
        model,
        recipe,
        len(train_data),
        lambda index, progress, step: training_step(
            model, spec, train_data.inputs(index), train_data.targets(index), progress, step
        ),
        seed=config.seed,
        description=f"train {config.architecture}",
        progress_bar=progress_bar,
    )
    return SceneFit(model, spec, recipe, fitted, validation, len(train_data), data_seconds, started)


@register_trainer(Task.SEMANTIC_SEGMENTATION)
def train_segmentation(config: TrainConfig, progress_bar: bool = True) -> TrainResult:
    run = fit_on_scenes(config, progress_bar)
    model, spec, recipe, fitted, val_list = run.model, run.spec, run.recipe, run.fitted, run.validation
    canvas = spec.preprocess.input_size[0]

    weights_name = _scale_weights_output(spec)
    choice = keep_better(
        model,
        fitted,
        lambda weights: evaluate(ServingGraph(weights, spec), val_list, weights_name=weights_name),
        lambda scores: scores["miou"],
    )
    graph = ServingGraph(model, spec)

    test: dict[str, Any] = {}
    for size in (canvas, *EVALUATION_SIZES):
        scenes = DigitScenes("test", config.test_samples, canvas_size=size, seed=config.seed)
        test[f"{size}px"] = evaluate(
            graph, [scenes[i] for i in range(len(scenes))], weights_name=weights_name
        )
    metrics: dict[str, Any] = {
        "architecture": config.architecture,
        "model_kwargs": config.model_kwargs,
        "selection": f"{canvas}px",
        "weights": {
            "kept": choice.kept,
            "val_miou_last": choice.last["miou"],
            "val_miou_ema": choice.ema["miou"],
        },
        # without "attention": export picks a primary map by its pointing on the validation
        # split's figures, which scale weights have none of (their weights by size stay here)
        "val": {f"{canvas}px": {k: v for k, v in choice.chosen.items() if k != "attention"}},
        "test": test,
        "train": training_record(fitted, run.samples, recipe.batch_size, run.data_seconds, run.started),
        "splits": SPLITS_RECORD,
    }
    return save_trained(config, recipe, model, spec, metrics, _summary(metrics, spec))


def _summary(metrics: dict[str, Any], spec: ModelSpec) -> list[str]:
    lines = []
    for size, scores in metrics["test"].items():
        lines.append(
            f"{size} test scenes: mIoU {scores['miou']:.3f}, digit mIoU {scores['digit_miou']:.3f}, "
            f"pixel accuracy {scores['pixel_accuracy']:.2%} on {scores['scenes']} scenes (scans 1497-1796)"
        )
    first = next(iter(metrics["test"].values()))
    for name, entry in first["by_digit_size"].items():
        weights = entry.get("mean_scale_weights")
        shown = f", mean scale weights {weights}" if weights else ""
        lines.append(
            f"  digits {name:>8}: {entry['digits']} digits, "
            f"pixel accuracy {entry['pixel_accuracy']:.2%}{shown}"
        )
    return lines


__all__ = [
    "EVALUATION_SIZES",
    "SceneBatch",
    "SegmentationTargets",
    "evaluate",
    "scene_batch",
    "train_segmentation",
]
