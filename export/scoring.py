"""Accuracy and attention quality of a model on cluttered digits, in the model input's pixels.

Every attention output the model serves is scored as the gateway would show it: spatial maps
directly, class-conditioned maps for the predicted class (the same slicing as the gateway's,
`attnserve.attention.select_leading`), boxes by the last (finest) one, paths by their final
glimpse. Inputs and the digits' boxes go through the gateway's own transform
(`attnserve.export.data.model_batch`). Used at the end of training, by ``attnserve evaluate``
and by export (the primary map).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from attnserve.attention import select_leading
from attnserve.spec import AttentionKind, AttentionSpec, ModelSpec, PreprocessSpec
from attnserve.transform import image_from_pixels, to_model_input

from .attention_quality import box_quality, chance_energy, map_quality, path_quality
from .data import ModelBatch

if TYPE_CHECKING:
    from .onnx_export import ExportableGraph


def canvases_to_input(
    images: NDArray[np.float32] | list[NDArray[np.float32]], preprocess: PreprocessSpec
) -> Tensor:
    """N canvases (H×W, values in [0, 1], any size) → the N×C×H×W tensor the model sees.

    Each canvas goes the way an image file goes through the gateway: stored as 8 bits, then
    the one transform (colour mode, resize per the spec, normalisation).
    """
    return torch.from_numpy(
        np.stack([to_model_input(image_from_pixels(c), preprocess).tensor for c in images])
    )


@torch.no_grad()
def run_graph(graph: ExportableGraph, batch: ModelBatch, batch_size: int = 250) -> dict[str, Tensor]:
    """Every output of a serving graph (ours, or a captured one) for a batch, by the spec's
    names, concatenated over chunks."""
    graph.eval()
    names = graph.spec.output_names
    chunks: dict[str, list[Tensor]] = {name: [] for name in names}
    for start in range(0, len(batch), batch_size):
        for name, value in zip(names, graph(batch.inputs(slice(start, start + batch_size))), strict=True):
            chunks[name].append(value)
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


def attention_quality(
    attention: AttentionSpec, value: Tensor, predicted: Tensor, batch: ModelBatch
) -> dict[str, float] | None:
    """The quality figures of one attention output on a batch (None: nothing to score)."""
    height, width = batch.input_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    if attention.kind is AttentionKind.BOXES:
        last = value.reshape(len(value), -1, 4)[:, -1].double().numpy() * scale
        return box_quality(last, batch.boxes)
    if attention.kind is AttentionKind.PATH:
        boxes = value.reshape(len(value), value.shape[1], -1, 4)[:, :, 0].double().numpy()
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0 * scale[:2]
        return path_quality(centres, batch.boxes)
    shown = displayed_map(attention, value, predicted)
    return None if shown is None else map_quality(shown, batch.boxes, (height, width)).as_dict()


def score(outputs: dict[str, Tensor], batch: ModelBatch, spec: ModelSpec) -> dict[str, Any]:
    """Accuracy (and that of auxiliary logits, e.g. each RA-CNN scale's), and the quality of
    every attention output the model serves."""
    predicted = outputs[spec.logits_name].argmax(dim=1)
    attention_scores: dict[str, dict[str, float]] = {}
    for attention in spec.attention:
        quality = attention_quality(attention, outputs[attention.name], predicted, batch)
        if quality is not None:
            attention_scores[attention.name] = quality
    result: dict[str, Any] = {
        "samples": len(batch),
        "accuracy": round(float((predicted.numpy() == batch.labels).mean()), 4),
        "attention": attention_scores,
        "chance_energy": round(chance_energy(batch.boxes, batch.input_size), 4),
    }
    auxiliary = {
        o.name: round(float((outputs[o.name].argmax(dim=1).numpy() == batch.labels).mean()), 4)
        for o in spec.auxiliary_outputs
        if outputs[o.name].shape[1:] == (len(spec.labels),)
    }
    if auxiliary:
        result["auxiliary_accuracy"] = auxiliary
    return result


def with_measured_quality(spec: ModelSpec, metrics: dict[str, Any]) -> ModelSpec:
    """The spec with each attention output's measured quality and the primary one chosen.

    The primary output is chosen on the *validation* split of the selection variant (the test
    splits select nothing): among the outputs that point at the digit at least as often as the
    best pointer minus 5 points, the map that concentrates best (energy in the box) — so that a
    map which points but spreads its mass (a saturated gate) does not win — or, for boxes and
    paths, the best pointer. The quality attached to each output is the test splits': the
    selection variant's under plain names, every other variant's prefixed by its name.
    """
    selection_variant = metrics.get("selection", "standard")
    tests: dict[str, Any] = metrics.get("test", {})
    attention = tuple(
        a.model_copy(update={"quality": _quality(a.name, tests, selection_variant)}) for a in spec.attention
    )
    val: dict[str, Any] = metrics.get("val", {}).get(selection_variant, {})
    measured: dict[str, dict[str, float]] = val.get("attention", {})
    if not measured:
        return spec.model_copy(update={"attention": attention})
    best_pointing = max(s["pointing"] for s in measured.values())
    candidates = {n: s for n, s in measured.items() if s["pointing"] >= best_pointing - 0.05}
    ranked = sorted(
        candidates, key=lambda n: (candidates[n].get("energy", -1.0), candidates[n]["pointing"]), reverse=True
    )
    primary = ranked[0]
    chosen = measured[primary]
    count = val.get("samples", val.get("scenes"))  # classifiers count images, the dense tasks scenes
    where = f"the validation split of the {selection_variant} data" + (f" ({count} images)" if count else "")
    if "energy" in chosen:
        chance = val.get("chance_energy")  # measured for one digit per image; none for scenes
        reason = f"concentrates best on {where}: energy in the digit box {chosen['energy']:.3f}" + (
            f" (chance {chance:.3f})" if chance is not None else ""
        )
        if len(ranked) > 1 and "energy" in measured[ranked[1]]:
            reason += f", next {ranked[1]} {measured[ranked[1]]['energy']:.3f}"
    else:
        reason = f"points at the digit best on {where}: {chosen['pointing']:.1%}"
    test = tests.get(selection_variant, {}).get("attention", {}).get(primary)
    if test is not None:
        figures = ", ".join(f"{k} {v:.3f}" for k, v in test.items())
        reason += f"; on the test split: {figures}"
    return spec.model_copy(
        update={"attention": attention, "primary_attention": primary, "primary_reason": reason}
    )


def _quality(name: str, tests: dict[str, Any], selection_variant: str) -> dict[str, float]:
    quality: dict[str, float] = {}
    for variant, result in tests.items():
        figures = result.get("attention", {}).get(name, {})
        prefix = "" if variant == selection_variant else f"{variant}_"
        quality.update({f"{prefix}{key}": value for key, value in figures.items()})
    return quality
