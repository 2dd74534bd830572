"""Accuracy and attention-map quality of a model on cluttered digits.

Every map the model serves is scored as the gateway would show it: spatial maps directly,
class activation maps for the predicted class. Used at the end of training and by
``attnserve evaluate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from attnserve.spec import AttentionKind, AttentionSpec, ModelSpec, PreprocessSpec

from .attention_quality import chance_energy, map_quality
from .data import DigitBatch
from .models import ServingGraph


def canvases_to_input(images: NDArray[np.float32], preprocess: PreprocessSpec) -> Tensor:
    """N×H×W canvases in [0, 1] (already at the input size) → normalised N×C×H×W."""
    if images.shape[1:] != tuple(preprocess.input_size):
        raise ValueError(f"canvases are {images.shape[1:]}, the model takes {preprocess.input_size}")
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    tensor = tensor.expand(-1, preprocess.channels, -1, -1)
    mean = torch.tensor(preprocess.mean, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(preprocess.std, dtype=torch.float32)[None, :, None, None]
    return (tensor - mean) / std


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
    """The N×h×w map a user sees for this output, or None when it has no spatial extent."""
    if not attention.is_spatial:
        return None
    if attention.kind is AttentionKind.CLASS_ACTIVATION:
        return value[torch.arange(len(value)), predicted]
    if value.dim() != 3:
        raise ValueError(f"{attention.name}: expected N×h×w, got {tuple(value.shape)}")
    return value


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
