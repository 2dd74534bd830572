"""Accuracy and attention-map quality of a model on cluttered digits.

Every map the model serves is scored as the gateway would show it: spatial maps directly,
class-conditioned maps for the predicted class (the same slicing as the gateway's,
`attnserve.attention.select_leading`). Inputs are made by the gateway's own transform
(`attnserve.transform`). Used at the end of training, by ``attnserve evaluate`` and by export
(the primary map).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from attnserve.attention import select_leading
from attnserve.spec import AttentionSpec, ModelSpec, PreprocessSpec
from attnserve.transform import image_from_pixels, to_model_input

from .attention_quality import chance_energy, map_quality
from .data import DigitBatch
from .models import ServingGraph


def canvases_to_input(images: NDArray[np.float32], preprocess: PreprocessSpec) -> Tensor:
    """N canvases (H×W, values in [0, 1], any size) → the N×C×H×W tensor the model sees.

    Each canvas goes the way an image file goes through the gateway: stored as 8 bits, then
    the one transform (colour mode, resize per the spec, normalisation).
    """
    inputs = np.empty((len(images), preprocess.channels, *preprocess.input_size), dtype=np.float32)
    for index, canvas in enumerate(images):
        inputs[index] = to_model_input(image_from_pixels(canvas), preprocess).tensor
    return torch.from_numpy(inputs)


@torch.no_grad()
def run_graph(graph: ServingGraph, images: NDArray[np.float32], batch_size: int = 250) -> dict[str, Tensor]:
    """Every named output of the serving graph for N canvases, concatenated over batches."""
    graph.eval()
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, len(images), batch_size):
        inputs = canvases_to_input(images[start : start + batch_size], graph.spec.preprocess)
        for name, value in graph.named_outputs(inputs).items():
            chunks.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in chunks.items()}


def displayed_map(attention: AttentionSpec, value: Tensor, predicted: Tensor) -> Tensor | None:
    """The N×h×w maps a user sees for this output, or None when it has no spatial extent."""
    if not attention.is_spatial:
        return None
    shown = [
        select_leading(attention, item, {"class": int(p)})[0]
        for item, p in zip(value, predicted, strict=True)
    ]
    if shown[0].dim() != 2:
        raise ValueError(f"{attention.name}: expected one h×w map per image, got {tuple(shown[0].shape)}")
    return torch.stack(shown)


def score(outputs: dict[str, Tensor], data: DigitBatch, spec: ModelSpec) -> dict[str, Any]:
    """Accuracy, and pointing/energy for every spatial map the model serves."""
    logits = outputs[spec.logits_name]
    predicted = logits.argmax(dim=1)
    size = data.images.shape[1:]
    canvas = (int(size[0]), int(size[1]))
    attention_scores: dict[str, dict[str, float]] = {}
    for attention in spec.attention:
        shown = displayed_map(attention, outputs[attention.name], predicted)
        if shown is not None:
            attention_scores[attention.name] = map_quality(shown, data.boxes, canvas).as_dict()
    accuracy = float((predicted.numpy() == data.labels).mean())
    return {
        "samples": len(data.labels),
        "accuracy": round(accuracy, 4),
        "attention": attention_scores,
        "chance_energy": round(chance_energy(data.boxes, canvas), 4),
    }


def with_measured_quality(spec: ModelSpec, metrics: dict[str, Any]) -> ModelSpec:
    """The spec with each map's measured quality and the primary map chosen from it.

    The primary map is chosen on the *validation* split (the test split selects nothing): the
    one that concentrates best (highest energy in the box) among the maps that point at the
    object at least as often as the best pointer minus 5 points, so that a map which points
    but spreads its mass (a saturated gate) does not win. The quality attached to each map is
    the test split's.
    """
    test: dict[str, Any] = metrics.get("test", {})
    val: dict[str, Any] = metrics.get("val", {})
    reported: dict[str, dict[str, float]] = test.get("attention", {})
    attention = tuple(
        a.model_copy(update={"quality": reported[a.name]}) if a.name in reported else a
        for a in spec.attention
    )
    selection: dict[str, dict[str, float]] = val.get("attention", {})
    if not selection:
        return spec.model_copy(update={"attention": attention})
    best_pointing = max(s["pointing"] for s in selection.values())
    candidates = {n: s for n, s in selection.items() if s["pointing"] >= best_pointing - 0.05}
    ranked = sorted(candidates, key=lambda n: candidates[n]["energy"], reverse=True)
    primary = ranked[0]
    reason = (
        f"concentrates best on the validation split ({val.get('samples', '?')} images): energy in the "
        f"digit box {selection[primary]['energy']:.3f} (chance {val.get('chance_energy', 0):.3f})"
    )
    if len(ranked) > 1:
        reason += f", next {ranked[1]} {selection[ranked[1]]['energy']:.3f}"
    if primary in reported:
        reason += (
            f"; on the test split: energy {reported[primary]['energy']:.3f}, "
            f"pointing game {reported[primary]['pointing']:.1%}"
        )
    return spec.model_copy(
        update={"attention": attention, "primary_attention": primary, "primary_reason": reason}
    )
