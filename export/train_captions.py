"""Training a captioner on digit scenes, on the CPU, within a wall-clock budget.

The trainer of `Task.CAPTIONING` (chosen by `attnserve.export.train.train`). Scenes and their
captions come from `attnserve.export.data.captions`; each image reaches the model as the gateway
would send it (8 bits, the spec's normalisation). The model trains by its own
``training_loss(images, tokens, progress, step)`` (teacher forcing, with Show-Attend-Tell's
doubly stochastic regularisation), on `training.fit`'s schedule.

Scoring runs the *served* decoding (the model's ``forward``: the in-graph beam search) on the
test split (scans 1497–1796), at the training size and at other sizes through the gateway's
geometry: BLEU-4 and exact match against the generated reference captions, and the share of
digit words whose attention peak falls on the digit they name (`caption_metrics.digit_pointing`).
The validation split chooses between the last and the averaged weights, by exact match.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor, nn

from attnserve.spec import ModelSpec, PreprocessSpec, Task
from attnserve.transform import (
    boxes_to_input,
    image_from_pixels,
    pixels_to_input,
    quantize,
    to_input_pixels,
)

from .caption_metrics import bleu4, digit_pointing, exact_match
from .data.captions import CaptionScene, CaptionScenes, caption_batch, decode
from .models import ServingGraph
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

EVALUATION_SIZES = (84, 224)
"""Test scenes are also scored enlarged or shrunk to these sides (the gateway letterboxes them
back to the input size): users send other sizes."""
OTHER_SIDES = (64, 256)
"""The range of sides (px) a share of the training scenes is resized to before the gateway's
transform brings them back to the input size (`TrainingRecipe.data`'s ``other_sizes``)."""
BEAM_SIZES = (1, 3)
"""Test scores are given for greedy decoding and for the default beam."""
_CHUNK = 2_000


def training_data(
    samples: int, seed: int, max_length: int, preprocess: PreprocessSpec, other_sizes_share: float = 0.0
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """``samples`` training scenes as 8-bit pixels (N×H×W×1, as the gateway quantises them) and
    their target tokens (N×max_length: words, end, padding). A share of them (``other_sizes_share``)
    is first resized to a side drawn log-uniformly from `OTHER_SIDES` and brought back to the
    input size by the gateway's own transform, as a user's smaller or larger picture would be."""
    dataset = CaptionScenes("train", samples, seed=seed)
    rng = np.random.default_rng((seed, 17))
    pixels, tokens = [], []
    for start in range(0, samples, _CHUNK):
        images, chunk_tokens = caption_batch(
            dataset, np.arange(start, min(start + _CHUNK, samples)), max_length
        )
        chunk = quantize(images[:, 0])[..., None]  # as an image file stores them
        for index in np.flatnonzero(rng.uniform(size=len(chunk)) < other_sizes_share):
            side = int(round(np.exp(rng.uniform(*np.log(OTHER_SIDES)))))
            resized = image_from_pixels(images[index, 0]).resize((side, side), Image.Resampling.BILINEAR)
            chunk[index] = to_input_pixels(resized, preprocess)[0]
        pixels.append(chunk)
        tokens.append(chunk_tokens)
    return np.concatenate(pixels), np.concatenate(tokens)


@dataclasses.dataclass
class ServedScene:
    """A scene as a user sends it (possibly resized) and what scoring needs of it."""

    scene: CaptionScene
    pixels: NDArray[np.uint8]
    """The model input's 8-bit pixels (H×W×1)."""
    boxes: NDArray[np.float32]
    """The scene's digit boxes in model-input pixels."""


def served_scenes(
    scenes: Sequence[CaptionScene], spec: ModelSpec, side: int | None = None
) -> list[ServedScene]:
    """Scenes through the gateway's transform, first resized to ``side`` px when given."""
    served = []
    for scene in scenes:
        image = image_from_pixels(scene.image)
        height, width = scene.image.shape
        if side is not None and side != width:
            image = image.resize((side, side), resample=2)  # bilinear, as a camera or an editor would
            scale = side / width
            boxes = scene.boxes * scale
            height = width = side
        else:
            boxes = scene.boxes
        pixels, geometry = to_input_pixels(image, spec.preprocess)
        assert geometry.width == width and geometry.height == height
        served.append(ServedScene(scene, pixels, boxes_to_input(boxes, geometry)))
    return served


def caption_words(tokens: NDArray[Any]) -> tuple[str, ...]:
    """Float token ids → the words before the first end or padding token."""
    return decode(np.asarray(tokens, dtype=np.int64))


def run_decoder(
    graph: nn.Module, inputs: Tensor, beam_size: int, max_length: int, batch_size: int = 200
) -> dict[str, NDArray[np.float32]]:
    """The served decoding (``graph(images, beam_size, max_length)``) in batches."""
    spec: ModelSpec = graph.spec  # type: ignore[assignment]
    parts: dict[str, list[NDArray[np.float32]]] = {}
    graph.eval()
    for start in range(0, len(inputs), batch_size):
        images = inputs[start : start + batch_size]
        count = len(images)
        with torch.no_grad():
            outputs = graph(
                images,
                torch.full((count, 1), beam_size, dtype=torch.int64),
                torch.full((count, 1), max_length, dtype=torch.int64),
            )
        for name, value in zip(spec.output_names, outputs, strict=True):
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def evaluate(graph: nn.Module, served: Sequence[ServedScene], beam_size: int) -> dict[str, Any]:
    """BLEU-4, exact match and digit pointing of the served decoding on ``served`` scenes."""
    spec: ModelSpec = graph.spec  # type: ignore[assignment]
    inputs = torch.from_numpy(pixels_to_input(np.stack([s.pixels for s in served]), spec.preprocess))
    longest = spec.option("max_length").maximum
    outputs = run_decoder(graph, inputs, beam_size, longest)
    attention = outputs[spec.primary_attention or ""]
    references, hypotheses = [], []
    hits = counted = 0
    by_digits: dict[int, list[bool]] = {}
    for index, item in enumerate(served):
        words = caption_words(outputs["tokens"][index])
        references.append(item.scene.words)
        hypotheses.append(words)
        by_digits.setdefault(len(item.scene.labels), []).append(words == item.scene.words)
        hit, count = digit_pointing(
            words,
            attention[index],
            item.scene.words,
            item.boxes,
            item.scene.word_digit,
            spec.preprocess.input_size,
        )
        hits += hit
        counted += count
    return {
        "scenes": len(served),
        "samples": len(served),
        "beam_size": beam_size,
        "bleu4": round(bleu4(references, hypotheses), 4),
        "exact_match": round(exact_match(references, hypotheses), 4),
        "digit_pointing": round(hits / max(counted, 1), 4),
        "digit_words_scored": counted,
        "attention": {spec.primary_attention or "": {"pointing": round(hits / max(counted, 1), 4)}},
        "exact_match_by_digits": {str(n): round(float(np.mean(v)), 4) for n, v in sorted(by_digits.items())},
        "examples": [
            {"reference": " ".join(r), "generated": " ".join(h)}
            for r, h in zip(references[:5], hypotheses[:5], strict=True)
        ],
    }


@register_trainer(Task.CAPTIONING)
def train_captions(config: TrainConfig, progress_bar: bool = True) -> TrainResult:
    setup = start_training(config)
    recipe, spec, model, started = setup.recipe, setup.spec, setup.model, setup.started
    max_tokens = spec.option("max_length").maximum + 1
    other_sizes = recipe.share("other_sizes")
    pixels, tokens = training_data(
        recipe.train_samples, config.seed, max_tokens, spec.preprocess, other_sizes
    )
    validation_scenes = CaptionScenes("val", config.val_samples, seed=config.seed)
    validation = served_scenes([validation_scenes[i] for i in range(len(validation_scenes))], spec)
    data_seconds = time.monotonic() - started

    def loss(index: NDArray[np.int64], progress: float, step: int):  # type: ignore[no-untyped-def]
        images = torch.from_numpy(pixels_to_input(pixels[index], spec.preprocess))
        return model.training_loss(images, torch.from_numpy(tokens[index]), progress, step)  # type: ignore[operator]

    fitted = fit(
        model,
        recipe,
        len(pixels),
        loss,
        seed=config.seed,
        description=f"train {config.architecture}",
        progress_bar=progress_bar,
        clip_grad_norm=5.0,
    )
    choice = keep_better(
        model,
        fitted,
        lambda weights: evaluate(ServingGraph(weights, spec), validation, beam_size=1),
        lambda scores: scores["exact_match"],
    )
    graph = ServingGraph(model, spec)

    test_scenes = CaptionScenes("test", config.test_samples, seed=config.seed)
    scenes = [test_scenes[i] for i in range(len(test_scenes))]
    canvas = test_scenes.canvas_size
    test: dict[str, Any] = {}
    for side in (canvas, *EVALUATION_SIZES):
        served = served_scenes(scenes, spec, side)
        for beam in BEAM_SIZES:
            test[f"{side}px_beam{beam}"] = evaluate(graph, served, beam)
    metrics: dict[str, Any] = {
        "architecture": config.architecture,
        "model_kwargs": config.model_kwargs,
        "selection": f"{canvas}px_beam1",
        "weights": {
            "kept": choice.kept,
            "val_exact_match_last": choice.last["exact_match"],
            "val_exact_match_ema": choice.ema["exact_match"],
        },
        "val": {f"{canvas}px_beam1": choice.chosen},
        "test": test,
        "train": training_record(fitted, len(pixels), recipe.batch_size, data_seconds, started),
        "splits": SPLITS_RECORD,
    }
    return save_trained(config, recipe, model, spec, metrics, _summary(metrics))


def _summary(metrics: dict[str, Any]) -> list[str]:
    lines = []
    for name, scores in metrics["test"].items():
        lines.append(
            f"{name} test scenes: BLEU-4 {scores['bleu4']:.3f}, exact match {scores['exact_match']:.2%}, "
            f"digit words pointing at their digit {scores['digit_pointing']:.2%} "
            f"({scores['digit_words_scored']} words) on {scores['scenes']} scenes (scans 1497-1796)"
        )
    return lines


__all__ = ["EVALUATION_SIZES", "evaluate", "served_scenes", "train_captions", "training_data"]
