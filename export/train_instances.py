"""Training and scoring of instance segmentation (Mask R-CNN) on digit scenes, on the CPU, within a
wall-clock budget.

Scenes reach the model through the gateway's own transform (8-bit image, letterbox to the input);
boxes and instance masks follow through the same geometry. The learning rate follows the
one-cycle schedule over progress = max(step share, time share), as the classifiers' does. The
validation split (scans 1297–1496) chooses between the last and the averaged weights; the test
split (scans 1497–1796) is scored once, at the end, at the training canvas size and at others
(letterboxed to the input, answers mapped back to the scene's pixels).

Scores are COCO-style AP at IoU 0.5 (AP50, and AP75) with 101-point interpolated precision,
averaged over the classes present, for boxes and for masks; mask IoU is taken in scene pixels,
each detection's 28×28 mask pasted into its box (bilinear, threshold 0.5) as the gateway's
`paste_mask` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from attnserve.spec import PreprocessSpec, Task
from attnserve.transform import (
    ResizeGeometry,
    boxes_to_input,
    boxes_to_original,
    image_from_pixels,
    pixels_to_input,
    resize_to_input,
    to_input_pixels,
)

from .data.scenes import DigitScenes, Scene, canvas_parts
from .models.mask_rcnn import MaskRCNN
from .training import (
    SPLITS_RECORD,
    TrainConfig,
    TrainResult,
    fit,
    keep_better,
    register_trainer,
    save_trained,
    start_training,
    training_record,
)

TRAIN_CANVAS = 128
EVALUATION_CANVASES = (128, 96, 192)
"""Scene sizes scored on the test split; digit sizes scale with the canvas (12–56 px at 128)."""
MAX_INSTANCES = 5
RANKING_THRESHOLD = 0.05
"""Detections kept for AP (COCO keeps all above 0.05); serving keeps those above the model's
`score_threshold`."""


@dataclass
class SceneBatch:
    """Scenes as the model sees them, and their ground truth in both coordinate systems."""

    pixels: NDArray[np.uint8]
    """N×H×W×C model-input pixels."""
    boxes: NDArray[np.float32]
    """N×M×4 digit boxes in input pixels (padding rows zero)."""
    labels: NDArray[np.int64]
    """N×M digit classes, −1 for padding."""
    instances: NDArray[np.uint8]
    """N×H×W on the input grid: 0 none, k the k-th digit's visible pixels."""
    scenes: list[Scene]
    """The scenes themselves (kept for scoring in scene pixels); empty for training data."""
    geometries: list[ResizeGeometry]
    preprocess: PreprocessSpec

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, index: slice | NDArray[np.int64] = slice(None)) -> torch.Tensor:
        return torch.from_numpy(pixels_to_input(self.pixels[index], self.preprocess))

    def targets(self, index: NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes B×M×4, labels B×M, masks B×M×H×W) of the selected scenes."""
        instances = torch.from_numpy(self.instances[index].astype(np.int64))
        numbers = torch.arange(1, MAX_INSTANCES + 1)[None, :, None, None]
        masks = (instances[:, None] == numbers).float()
        return torch.from_numpy(self.boxes[index]), torch.from_numpy(self.labels[index]), masks


def scene_batch(scenes: Sequence[Scene], preprocess: PreprocessSpec, keep_scenes: bool) -> SceneBatch:
    height, width = preprocess.input_size
    count = len(scenes)
    pixels = np.empty((count, height, width, preprocess.channels), dtype=np.uint8)
    boxes = np.zeros((count, MAX_INSTANCES, 4), dtype=np.float32)
    labels = np.full((count, MAX_INSTANCES), -1, dtype=np.int64)
    instances = np.zeros((count, height, width), dtype=np.uint8)
    geometries = []
    for index, scene in enumerate(scenes):
        pixels[index], geometry = to_input_pixels(image_from_pixels(scene.image), preprocess)
        geometries.append(geometry)
        found = len(scene.labels)
        boxes[index, :found] = boxes_to_input(scene.boxes, geometry)
        labels[index, :found] = scene.labels
        instances[index] = _instances_to_input(scene.instances, found, geometry)
    return SceneBatch(
        pixels, boxes, labels, instances, list(scenes) if keep_scenes else [], geometries, preprocess
    )


def _instances_to_input(
    instances: NDArray[np.int32], count: int, geometry: ResizeGeometry
) -> NDArray[np.uint8]:
    """The instance map on the input grid: each digit's mask resized as the image is (bilinear),
    then thresholded at one half."""
    if geometry.scale_x == geometry.scale_y == 1.0 and geometry.offset_x == geometry.offset_y == 0.0:
        return instances.astype(np.uint8)
    result = np.zeros((geometry.input_height, geometry.input_width), dtype=np.uint8)
    for number in range(1, count + 1):
        mask = image_from_pixels((instances == number).astype(np.float32))
        resized = np.asarray(resize_to_input(mask, geometry, 0.0), dtype=np.uint8)
        result[resized >= 128] = number
    return result


def make_scenes(
    split: str,
    samples: int,
    canvas: int,
    seed: int,
    keep_scenes: bool,
    preprocess: PreprocessSpec,
    resample_share: float = 0.0,
) -> SceneBatch:
    """``samples`` scenes on a ``canvas``-pixel canvas whose digits scale with it (12–56 px at
    128), so that letterboxed to the input they have the sizes of the training canvas."""
    low, high = (max(8, round(side * canvas / TRAIN_CANVAS)) for side in (12, 56))
    dataset = DigitScenes(
        split,  # type: ignore[arg-type]
        samples,
        canvas_size=canvas,
        seed=seed,
        size_range=(low, high),
        resample_share=resample_share,
    )
    return scene_batch([dataset[i] for i in range(samples)], preprocess, keep_scenes)


RESAMPLE_SHARE = 0.3
"""Training scenes passed through a camera round trip (8-bit, enlarged, shrunk back)."""


def training_scenes(
    samples: int, preprocess: PreprocessSpec, seed: int, other_sizes_share: float
) -> SceneBatch:
    """``samples`` training scenes: at the training canvas and a share at other canvas sizes
    (`canvas_parts`), letterboxed as the gateway would; `RESAMPLE_SHARE` of each through a camera
    round trip. Users send other sizes: trained on 128 px canvases alone, box AP50 fell from
    0.883 to 0.805 at 96 px and 0.833 at 192 px."""
    batches = [
        make_scenes("train", count, canvas, seed * 100 + part, False, preprocess, RESAMPLE_SHARE)
        for part, (canvas, count) in enumerate(canvas_parts(samples, TRAIN_CANVAS, other_sizes_share))
        if count
    ]
    return SceneBatch(
        np.concatenate([b.pixels for b in batches]),
        np.concatenate([b.boxes for b in batches]),
        np.concatenate([b.labels for b in batches]),
        np.concatenate([b.instances for b in batches]),
        [],
        [g for b in batches for g in b.geometries],
        preprocess,
    )


@contextmanager
def ranking_threshold(model: MaskRCNN, threshold: float) -> Iterator[None]:
    saved = model.score_threshold
    model.score_threshold = threshold
    try:
        yield
    finally:
        model.score_threshold = saved


@torch.no_grad()
def predict(model: MaskRCNN, data: SceneBatch, chunk: int = 64) -> list[dict[str, NDArray[np.float32]]]:
    """Each scene's detections (rows scored 0 dropped) and objectness map, as numpy."""
    model.eval()
    results = []
    for start in range(0, len(data), chunk):
        outputs = model(data.inputs(slice(start, start + chunk)))
        for row in range(outputs["scores"].shape[0]):
            kept = outputs["scores"][row] > 0
            results.append(
                {
                    **{
                        name: outputs[name][row][kept].numpy()
                        for name in ("boxes", "scores", "classes", "masks")
                    },
                    "objectness": outputs["objectness"][row].numpy(),
                }
            )
    return results


def paste_mask(
    mask: NDArray[np.float32], box: NDArray[np.float32], height: int, width: int
) -> NDArray[np.bool_]:
    """A detection's mask over its box (x0, y0, x1, y1 in image pixels) → an image-sized boolean
    mask: bilinear at each pixel centre inside the box, at least one half."""
    result = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return result
    cols = np.arange(max(0, int(np.floor(x0))), min(width, int(np.ceil(x1))))
    rows = np.arange(max(0, int(np.floor(y0))), min(height, int(np.ceil(y1))))
    cols = cols[(cols + 0.5 >= x0) & (cols + 0.5 < x1)]
    rows = rows[(rows + 0.5 >= y0) & (rows + 0.5 < y1)]
    if not len(cols) or not len(rows):
        return result
    size_y, size_x = mask.shape
    u = np.clip((cols + 0.5 - x0) / (x1 - x0) * size_x - 0.5, 0, size_x - 1)
    v = np.clip((rows + 0.5 - y0) / (y1 - y0) * size_y - 0.5, 0, size_y - 1)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    u1, v1 = np.minimum(u0 + 1, size_x - 1), np.minimum(v0 + 1, size_y - 1)
    fu, fv = (u - u0)[None, :], (v - v0)[:, None]
    top = mask[v0][:, u0] * (1 - fu) + mask[v0][:, u1] * fu
    bottom = mask[v1][:, u0] * (1 - fu) + mask[v1][:, u1] * fu
    result[np.ix_(rows, cols)] = (top * (1 - fv) + bottom * fv) >= 0.5
    return result


def _box_iou(first: NDArray[np.float32], second: NDArray[np.float32]) -> NDArray[np.float64]:
    first, second = first.astype(np.float64), second.astype(np.float64)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area = lambda b: np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)  # noqa: E731
    return inter / np.maximum(area(first)[:, None] + area(second)[None, :] - inter, 1e-9)


def _mask_iou(first: NDArray[np.bool_], second: NDArray[np.bool_]) -> NDArray[np.float64]:
    a = first.reshape(len(first), -1).astype(np.float64)
    b = second.reshape(len(second), -1).astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def average_precision(matches: list[tuple[float, bool]], ground_truths: int, points: int = 101) -> float:
    """COCO's interpolated AP: precision made monotone, read at 101 recall levels 0, 0.01, …, 1."""
    if ground_truths == 0:
        return float("nan")
    if not matches:
        return 0.0
    ordered = sorted(matches, key=lambda m: -m[0])
    hits = np.array([hit for _, hit in ordered], dtype=np.float64)
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / ground_truths
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    levels = np.linspace(0.0, 1.0, points)
    at = np.searchsorted(recall, levels, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in at]))


IOU_THRESHOLDS = (0.5, 0.75)


def score_instances(
    predictions: list[dict[str, NDArray[np.float32]]],
    data: SceneBatch,
    num_classes: int,
    serving_threshold: float,
) -> dict[str, Any]:
    """Box and mask AP at IoU 0.5 and 0.75 in scene pixels; at the serving threshold, precision,
    recall and the mask IoU of the detections whose box found its digit; how the objectness map
    points at digits."""
    matches: dict[tuple[str, float], dict[int, list[tuple[float, bool]]]] = {
        (kind, iou): {} for kind in ("box", "mask") for iou in IOU_THRESHOLDS
    }
    ground_truths = np.zeros(num_classes, dtype=np.int64)
    served, served_true, matched_mask_iou = 0, 0, list[float]()
    pointing, energy = [], []
    for prediction, scene, geometry in zip(predictions, data.scenes, data.geometries, strict=True):
        height, width = scene.image.shape
        gt_labels = scene.labels
        gt_masks = np.stack([scene.instances == k + 1 for k in range(len(gt_labels))]).reshape(
            -1, height, width
        )
        np.add.at(ground_truths, gt_labels, 1)
        boxes = boxes_to_original(prediction["boxes"], geometry)
        masks = np.stack(
            [paste_mask(m, b, height, width) for m, b in zip(prediction["masks"], boxes, strict=True)]
        ).reshape(-1, height, width)
        classes = prediction["classes"].astype(np.int64)
        scores = prediction["scores"]
        overlaps = {"box": _box_iou(boxes, scene.boxes), "mask": _mask_iou(masks, gt_masks)}
        for (kind, iou), found in matches.items():
            matched = _match(overlaps[kind], scores, classes, gt_labels, iou)
            for index, target in enumerate(matched):
                found.setdefault(int(classes[index]), []).append((float(scores[index]), target >= 0))
            if (kind, iou) == ("box", 0.5):
                at_threshold = scores >= serving_threshold
                served += int(at_threshold.sum())
                served_true += int((at_threshold & (matched >= 0)).sum())
                matched_mask_iou.extend(
                    overlaps["mask"][index, target] for index, target in enumerate(matched) if target >= 0
                )
        objectness = prediction["objectness"]
        if len(gt_labels):
            inside = _cells_in_boxes(
                objectness.shape, data.preprocess.input_size, boxes_to_input(scene.boxes, geometry)
            )
            pointing.append(float(inside.flat[int(objectness.argmax())]))
            energy.append(float(objectness[inside].sum() / max(objectness.sum(), 1e-9)))
    result: dict[str, Any] = {"scenes": len(predictions), "digits": int(ground_truths.sum())}
    for (kind, iou), found in matches.items():
        per_class = [average_precision(found.get(c, []), int(ground_truths[c])) for c in range(num_classes)]
        result[f"{kind}_ap{round(iou * 100)}"] = float(np.nanmean(per_class))
        if iou == 0.5:
            result[f"{kind}_ap50_per_class"] = [round(v, 4) for v in per_class]
    result.update(
        {
            "serving_threshold": serving_threshold,
            "precision_at_threshold": served_true / max(served, 1),
            "recall_at_threshold": served_true / max(result["digits"], 1),
            "matched_mask_iou": float(np.mean(matched_mask_iou)) if matched_mask_iou else 0.0,
            "attention": {
                "objectness": {"pointing": float(np.mean(pointing)), "energy": float(np.mean(energy))}
            },
            "ap": "COCO-style AP at IoU 0.5 / 0.75, 101-point interpolation, mean over the classes",
        }
    )
    return result


def _match(
    overlap: NDArray[np.float64],
    scores: NDArray[np.float32],
    classes: NDArray[np.int64],
    gt_labels: NDArray[np.int64],
    threshold: float,
) -> NDArray[np.int64]:
    """COCO's greedy matching: best detection first, each takes the unmatched digit of its class
    it overlaps most (at least ``threshold``). The digit each detection found, −1 for none."""
    matched = np.full(len(scores), -1, dtype=np.int64)
    taken = np.zeros(len(gt_labels), dtype=bool)
    for index in np.argsort(-scores, kind="stable"):
        candidates = np.where((gt_labels == classes[index]) & ~taken, overlap[index], -1.0)
        if len(candidates) and candidates.max() >= threshold:
            matched[index] = int(candidates.argmax())
            taken[matched[index]] = True
    return matched


def _cells_in_boxes(
    shape: tuple[int, ...], input_size: tuple[int, int], boxes: NDArray[np.float32]
) -> NDArray[np.bool_]:
    """Cells of a map over the input whose centres lie in any box (input pixels)."""
    rows, cols = shape
    ys = (np.arange(rows) + 0.5) * input_size[0] / rows
    xs = (np.arange(cols) + 0.5) * input_size[1] / cols
    inside = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return inside


def evaluate(model: MaskRCNN, data: SceneBatch) -> dict[str, Any]:
    with ranking_threshold(model, RANKING_THRESHOLD):
        predictions = predict(model, data)
    return score_instances(predictions, data, model.num_classes, model.score_threshold)


def score_test_split(model: MaskRCNN, preprocess: PreprocessSpec, samples: int, seed: int) -> dict[str, Any]:
    """The test split's figures at every evaluation canvas (``samples`` scenes at the training
    size, half as many at the others)."""
    return {
        f"canvas{canvas}": evaluate(
            model,
            make_scenes(
                "test", samples if canvas == TRAIN_CANVAS else samples // 2, canvas, seed, True, preprocess
            ),
        )
        for canvas in EVALUATION_CANVASES
    }


def _mask_rcnn(model: nn.Module) -> MaskRCNN:
    if not isinstance(model, MaskRCNN):
        raise TypeError(f"instance segmentation trains Mask R-CNN models, not {type(model).__name__}")
    return model


@register_trainer(Task.INSTANCE_SEGMENTATION)
def train_instances(config: TrainConfig, progress_bar: bool = True) -> TrainResult:
    setup = start_training(config)
    recipe, spec, model = setup.recipe, setup.spec, _mask_rcnn(setup.model)
    preprocess = spec.preprocess
    started = time.monotonic()
    train_data = training_scenes(recipe.train_samples, preprocess, config.seed, recipe.share("other_sizes"))
    val_data = make_scenes("val", config.val_samples, TRAIN_CANVAS, config.seed, True, preprocess)
    data_seconds = time.monotonic() - started

    fitted = fit(
        model,
        recipe,
        len(train_data),
        lambda index, progress, step: model.detection_loss(
            train_data.inputs(index), *train_data.targets(index)
        ),
        seed=config.seed,
        description=f"train {config.architecture}",
        progress_bar=progress_bar,
        warmup_share=0.15,
        clip_grad_norm=10.0,
    )

    choice = keep_better(
        model,
        fitted,
        lambda weights: evaluate(_mask_rcnn(weights), val_data),
        lambda scores: scores["mask_ap50"],
    )
    selection = f"canvas{TRAIN_CANVAS}"
    test = score_test_split(model, preprocess, config.test_samples, config.seed)
    metrics: dict[str, Any] = {
        "architecture": config.architecture,
        "mask_mode": model.mask_mode,
        "selection": selection,
        "weights": {
            "kept": choice.kept,
            "val_mask_ap50_last": choice.last["mask_ap50"],
            "val_mask_ap50_ema": choice.ema["mask_ap50"],
        },
        "val": {selection: choice.chosen},
        "test": test,
        "train": training_record(fitted, len(train_data), recipe.batch_size, data_seconds, started),
        "splits": SPLITS_RECORD,
    }
    return save_trained(config, recipe, model, spec, metrics, summary_lines(metrics))


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"{metrics['architecture']} ({metrics['mask_mode']} masks), test split (scans 1497-1796):"]
    for variant, result in metrics["test"].items():
        lines.append(
            f"  {variant}: box AP50 {result['box_ap50']:.3f}, mask AP50 {result['mask_ap50']:.3f} "
            f"on {result['scenes']} scenes ({result['digits']} digits); at score ≥ "
            f"{result['serving_threshold']}: precision {result['precision_at_threshold']:.3f}, "
            f"recall {result['recall_at_threshold']:.3f}, mask IoU of found digits "
            f"{result['matched_mask_iou']:.3f}; box/mask AP75 {result['box_ap75']:.3f}/"
            f"{result['mask_ap75']:.3f}"
        )
    train = metrics["train"]
    lines.append(
        f"  trained {train['steps']} steps in {train['train_seconds']} s (data {train['data_seconds']} s)"
    )
    return lines
