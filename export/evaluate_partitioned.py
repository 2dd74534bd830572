"""Scoring the task-partitioned FCN: digit centres as keypoints, and its coarse attention.

Scenes reach the model through the gateway's transform (`scene_batch`: 8 bits, letterboxed), as
served; everything is compared on the scene's own pixels. A digit's true centre is the centre
of its visible-ink box (`Scene.boxes`), as the model was trained.

Keypoints: the centre probability's local maxima (non-maximum suppression within `NMS_RADIUS`
input pixels: the width of a centre's target disk), each mapped to original pixels; a peak finds
a digit when it lies within `TOLERANCE_PX` input pixels (the model's resolution bounds its
precision) or `TOLERANCE_SHARE` of the digit's size, whichever is larger, of its centre (in
original pixels), one peak per digit, highest score first. Precision, recall and F1 count the peaks
whose probability is at least 0.5 (what the served label image shows); AP ranks every peak above
0.05.

Both probabilities are scored for every model: the shallow branch's own (``shallow``: what the
unpartitioned model serves) and the shallow branch's within the deep branch's dilated attention
(``gated``: what the partitioned model serves), so either model can be read either way.

`train_partitioned` is the segmentation trainer's loop (`train_segmentation`) with this scoring
in place of per-pixel mIoU over digit classes, which does not apply to two keypoint classes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve._io import atomic_write_text
from attnserve.transform import ResizeGeometry, map_to_original

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DigitScenes, Scene
from .models import get_entry, serving_spec
from .models.partitioned_fcn import KEYPOINT_RADIUS, PartitionedFCN, coarse_targets, dilate, to_grid
from .train_segmentation import EVALUATION_SIZES, SIZE_BINS, fit_on_scenes, scene_batch
from .training import SPLITS_RECORD, TrainConfig, TrainResult, keep_better, save_trained, training_record

TOLERANCE_PX = 4.0
"""Model-input pixels (3 original pixels of a 96 px scene, 6 of a 192 px one)."""
TOLERANCE_SHARE = 0.15
NMS_RADIUS = 2 * KEYPOINT_RADIUS
"""Input pixels: of two peaks closer than this, only the higher counts (a centre's target disk
is this wide, and a confident prediction is flat on it)."""
THRESHOLD = 0.5
AP_FLOOR = 0.05
READINGS = ("shallow", "gated")


def centre_probabilities(model: PartitionedFCN, images: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """({reading: N×h×w centre probability}, attention N×h'×w') for a batch of model inputs."""
    with torch.no_grad():
        fine, coarse = model.branches(images)
    attention = torch.sigmoid(coarse)
    shallow = torch.softmax(fine, dim=1)[:, 1]
    region = to_grid(dilate(attention), fine.shape[-2:])
    return {"shallow": shallow, "gated": shallow * region}, attention


def peaks(
    probability: Tensor, floor: float = AP_FLOOR, radius_cells: float = 2.0
) -> list[tuple[float, float, float]]:
    """(x, y, score) of one map's local maxima above ``floor``, in grid cells (cell centres at
    i + 0.5), the highest first, none within ``radius_cells`` of a higher one. Each position is
    refined to the probability-weighted mean of the cells within half that radius (three
    mean-shift steps): a confident prediction is flat over the target's disk, and its first
    cell in scan order is not its centre."""
    local_max = probability == F.max_pool2d(probability[None, None], 3, 1, padding=1)[0, 0]
    rows, cols = torch.nonzero(local_max & (probability >= floor), as_tuple=True)
    scores = probability[rows, cols]
    grid_y, grid_x = (
        axis.float() + 0.5
        for axis in torch.meshgrid(
            torch.arange(probability.shape[0]), torch.arange(probability.shape[1]), indexing="ij"
        )
    )
    kept: list[tuple[float, float, float]] = []
    for index in torch.argsort(scores, descending=True).tolist():
        x, y, score = float(cols[index]) + 0.5, float(rows[index]) + 0.5, float(scores[index])
        if any((x - kx) ** 2 + (y - ky) ** 2 < radius_cells**2 for kx, ky, _ in kept):
            continue
        for _ in range(3):
            near = ((grid_x - x) ** 2 + (grid_y - y) ** 2 <= (radius_cells / 2) ** 2).float() * probability
            total = float(near.sum())
            if total <= 0:
                break
            x, y = float((near * grid_x).sum()) / total, float((near * grid_y).sum()) / total
        kept.append((x, y, score))
    return kept


def match_peaks(
    found: Sequence[tuple[float, float, float]], centres: np.ndarray, tolerances: np.ndarray
) -> tuple[list[tuple[float, bool]], np.ndarray]:
    """Peaks (x, y, score) in original pixels against true centres (n×2) with their tolerances:
    (score, whether it found a digit) per peak, and which digits were found (n booleans)."""
    taken = np.zeros(len(centres), dtype=bool)
    outcomes = []
    for x, y, score in sorted(found, key=lambda peak: -peak[2]):
        distances = np.hypot(centres[:, 0] - x, centres[:, 1] - y) if len(centres) else np.zeros(0)
        candidates = np.flatnonzero(~taken & (distances <= tolerances))
        if candidates.size:
            taken[candidates[np.argmin(distances[candidates])]] = True
        outcomes.append((score, bool(candidates.size)))
    return outcomes, taken


def average_precision(outcomes: Sequence[tuple[float, bool]], digits: int) -> float:
    """Area under the precision-recall curve (all points, precision made monotone)."""
    if not outcomes or digits == 0:
        return 0.0
    hits = np.array([hit for _, hit in sorted(outcomes, key=lambda o: -o[0])], dtype=np.float64)
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / digits
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * precision))


def _size_bin(size: float) -> str:
    for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:], strict=True):
        if low <= size < high:
            return f"{low}-{high}px" if high < SIZE_BINS[-1] else f">={low}px"
    raise ValueError(size)


def evaluate_keypoints(
    model: PartitionedFCN, scenes: Sequence[Scene], batch_size: int = 50
) -> dict[str, Any]:
    """Digit-centre keypoints (per reading: precision, recall, F1 at 0.5, AP; recall per digit
    size at 0.5) and the attention's IoU with the digits, on the scenes' own pixels."""
    preprocess = serving_spec(get_entry("partitioned_fcn").spec, model).preprocess
    outcomes: dict[str, list[tuple[float, bool]]] = {reading: [] for reading in READINGS}
    found_by_bin: dict[str, dict[str, list[int]]] = {reading: {} for reading in READINGS}
    digits = 0
    ink_overlap = ink_union = cell_overlap = cell_union = 0
    model.eval()
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        batch = scene_batch(chunk, preprocess)
        probabilities, attention = centre_probabilities(model, batch.inputs())
        cells = coarse_targets(torch.from_numpy(batch.semantic.astype(np.int64)), 8) > 0
        opened = attention >= THRESHOLD
        if cells.shape == opened.shape:
            cell_overlap += int((cells & opened).sum())
            cell_union += int((cells | opened).sum())
        grid_h, grid_w = probabilities["gated"].shape[-2:]
        for index, scene in enumerate(chunk):
            height, width = scene.semantic.shape
            geometry = ResizeGeometry.for_spec(width, height, preprocess)
            on_original = map_to_original(attention[index].numpy(), geometry) >= THRESHOLD
            ink = scene.semantic > 0
            ink_overlap += int((on_original & ink).sum())
            ink_union += int((on_original | ink).sum())
            centres = np.stack(
                [(scene.boxes[:, 0] + scene.boxes[:, 2]) / 2, (scene.boxes[:, 1] + scene.boxes[:, 3]) / 2],
                axis=1,
            )
            tolerances = np.maximum(TOLERANCE_PX / geometry.scale_x, TOLERANCE_SHARE * scene.digit_sizes)
            digits += len(centres)
            radius_cells = NMS_RADIUS * grid_w / preprocess.input_size[1]
            for reading in READINGS:
                on_grid = peaks(probabilities[reading][index], radius_cells=radius_cells)
                xs, ys = geometry.to_original(
                    np.array([p[0] for p in on_grid]) * (preprocess.input_size[1] / grid_w),
                    np.array([p[1] for p in on_grid]) * (preprocess.input_size[0] / grid_h),
                )
                inside = [
                    (float(x), float(y), p[2])
                    for x, y, p in zip(xs, ys, on_grid, strict=True)
                    if 0 <= x < width and 0 <= y < height
                ]
                scored, _ = match_peaks(inside, centres, tolerances)
                outcomes[reading].extend(scored)
                _, taken = match_peaks([p for p in inside if p[2] >= THRESHOLD], centres, tolerances)
                for size, hit in zip(scene.digit_sizes, taken, strict=True):
                    entry = found_by_bin[reading].setdefault(_size_bin(float(size)), [0, 0])
                    entry[0] += 1
                    entry[1] += int(hit)
    result: dict[str, Any] = {"scenes": len(scenes), "digits": digits}
    for reading in READINGS:
        confident = [hit for score, hit in outcomes[reading] if score >= THRESHOLD]
        true_positives = sum(confident)
        precision = true_positives / max(len(confident), 1)
        recall = true_positives / max(digits, 1)
        result[reading] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-9), 4),
            "ap": round(average_precision(outcomes[reading], digits), 4),
            "recall_by_digit_size": {
                name: round(hits / max(count, 1), 4)
                for name, (count, hits) in sorted(
                    found_by_bin[reading].items(),
                    key=lambda item: int(item[0].strip(">=").split("-")[0].rstrip("px")),
                )
            },
        }
    result["attention_iou"] = {
        "ink": round(ink_overlap / max(ink_union, 1), 4),
        **({"ink_cells": round(cell_overlap / max(cell_union, 1), 4)} if cell_union else {}),
    }
    # what export attaches to the attention output as its measured quality
    result["attention"] = {"attention": {f"iou_{k}": v for k, v in result["attention_iou"].items()}}
    return result


def served_reading(model: PartitionedFCN) -> str:
    """The reading the model serves: gated when partitioned, the shallow branch's otherwise."""
    return "gated" if model.partition else "shallow"


def _partitioned(model: nn.Module) -> PartitionedFCN:
    assert isinstance(model, PartitionedFCN)
    return model


def train_partitioned(config: TrainConfig, progress_bar: bool = True) -> TrainResult:
    """Trains ``partitioned_fcn`` (``config.model_kwargs``: e.g. ``partition=False``) as the
    segmentation trainer does, scored and selected by digit-centre F1 (`evaluate_keypoints`)."""
    run = fit_on_scenes(config, progress_bar)
    model, recipe, fitted, val_list = run.model, run.recipe, run.fitted, run.validation
    assert isinstance(model, PartitionedFCN)
    reading = served_reading(model)
    canvas = run.spec.preprocess.input_size[0]

    choice = keep_better(
        model,
        fitted,
        lambda weights: evaluate_keypoints(_partitioned(weights), val_list),
        lambda scores: scores[reading]["f1"],
    )

    test = score_test_split(model, config.test_samples, config.seed, canvas)
    metrics: dict[str, Any] = {
        "architecture": config.architecture,
        "model_kwargs": config.model_kwargs,
        "served_reading": reading,
        "selection": f"{canvas}px",
        "weights": {
            "kept": choice.kept,
            "val_f1_last": choice.last[reading]["f1"],
            "val_f1_ema": choice.ema[reading]["f1"],
        },
        "val": {f"{canvas}px": choice.chosen},
        "test": test,
        "train": training_record(fitted, run.samples, recipe.batch_size, run.data_seconds, run.started),
        "splits": SPLITS_RECORD,
    }
    return save_trained(config, recipe, model, run.spec, metrics, summary_lines(metrics))


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = []
    served = metrics["served_reading"]
    for size, scores in metrics["test"].items():
        for reading in READINGS:
            figures = scores[reading]
            lines.append(
                f"{size} test scenes, {reading}{' (served)' if reading == served else ''}: digit centres "
                f"P {figures['precision']:.3f} R {figures['recall']:.3f} F1 {figures['f1']:.3f} "
                f"AP {figures['ap']:.3f} ({scores['digits']} digits)"
            )
        lines.append(f"{size} attention IoU with the digits' ink: {scores['attention_iou']['ink']:.3f}")
    return lines


def score_test_split(model: PartitionedFCN, samples: int, seed: int = 0, canvas: int = 128) -> dict[str, Any]:
    """`evaluate_keypoints` on the test split (scans 1497–1796) at the training size and at
    `EVALUATION_SIZES`, keyed "128px", "96px", ..."""
    test: dict[str, Any] = {}
    for size in (canvas, *EVALUATION_SIZES):
        scenes = DigitScenes("test", samples, canvas_size=size, seed=seed)
        test[f"{size}px"] = evaluate_keypoints(model, [scenes[i] for i in range(len(scenes))])
    return test


def rescore_checkpoint(path: Path, samples: int = 1_000) -> dict[str, Any]:
    """Scores a trained checkpoint's test split again (after a change to the scoring) and writes
    the figures into its metrics, in the checkpoint and in metrics.json beside it."""
    checkpoint = load_checkpoint(path)
    model = checkpoint.model
    assert isinstance(model, PartitionedFCN)
    metrics = dict(checkpoint.metrics)
    canvas = checkpoint.spec.preprocess.input_size[0]
    metrics["test"] = score_test_split(model, samples, int(checkpoint.config.get("seed", 0)), canvas)
    metrics["selection"] = f"{canvas}px"
    metrics["summary"] = summary_lines(metrics)
    save_checkpoint(path, dataclasses.replace(checkpoint, metrics=metrics))
    atomic_write_text(path.parent / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


__all__ = [
    "average_precision",
    "evaluate_keypoints",
    "match_peaks",
    "peaks",
    "rescore_checkpoint",
    "score_test_split",
    "train_partitioned",
]


if __name__ == "__main__":
    import sys

    for line in rescore_checkpoint(Path(sys.argv[1]))["summary"]:
        print(line)
