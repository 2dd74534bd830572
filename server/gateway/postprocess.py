"""Triton's output tensors → a `Prediction`: top-k classes and attention maps in original pixels.

Pure functions of (outputs, spec, geometry, request); the image is only needed for overlays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.prediction import AttentionMap, ClassScore, MapForm
from attnserve.spec import AttentionKind, AttentionSpec, ModelSpec, Normalization

from .geometry import ResizeGeometry, map_to_original, peak_in_original
from .render import colorize, encode_png, overlay


@dataclass(frozen=True)
class AttentionRequest:
    """Which maps (output names, resolved and validated), in which forms, for which class."""

    maps: tuple[str, ...]
    forms: frozenset[MapForm]
    target_class: int | None = None
    render: frozenset[str] | None = None
    """Maps to render in image forms; None: all of `maps`."""

    def renders(self, name: str) -> bool:
        return self.render is None or name in self.render


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = logits.astype(np.float64) - np.max(logits)
    exp = np.exp(shifted)
    result: NDArray[np.float32] = (exp / exp.sum()).astype(np.float32)
    return result


def top_k(logits: NDArray[np.float32], labels: tuple[str, ...], k: int) -> list[ClassScore]:
    probabilities = softmax(logits)
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [ClassScore(int(i), labels[i], float(probabilities[i])) for i in order]


@dataclass(frozen=True)
class DisplayMap:
    values: NDArray[np.float32]
    """Display intensities in [0, 1], same shape as the input."""
    contrast: float
    flat: bool


def to_display(values: NDArray[np.float32], normalization: Normalization) -> DisplayMap:
    """Raw map values → display intensities per the map's normalisation; flat maps show nothing.

    Contrast is how far the map's peak stands above its typical (median) value, as a share of
    the map's known range when the spec gives one, else of its largest magnitude. Below
    ``flat_below`` nothing stands out and the map is *flat*: a saturated sigmoid gate (0.999
    almost everywhere, whatever a few border cells do) or a uniform softmax renders as zero
    everywhere, flagged, instead of a confident uniform blob.
    """
    values = values.astype(np.float32)
    if normalization.method == "relu_minmax":
        values = np.maximum(values, 0.0)
    high, low, typical = float(values.max()), float(values.min()), float(np.median(values))
    if normalization.range is not None:
        scale = normalization.range[1] - normalization.range[0]
    else:
        scale = max(abs(high), abs(low))
    contrast = 0.0 if scale <= 0 else min(1.0, (high - typical) / scale)
    if normalization.method == "fixed":
        assert normalization.range is not None
        display = np.clip((values - normalization.range[0]) / scale, 0.0, 1.0)
    elif normalization.method == "above_median":
        display = (
            np.clip((values - typical) / (high - typical), 0.0, 1.0)
            if high > typical
            else np.zeros_like(values)
        )
    else:
        display = (values - low) / (high - low) if high > low else np.zeros_like(values)
    flat = contrast < normalization.flat_below
    if flat:
        display = np.zeros_like(values)
    return DisplayMap(display.astype(np.float32), contrast, flat)


def select_slice(
    attention: AttentionSpec,
    values: NDArray[np.float32],
    predicted_class: int,
    target_class: int | None,
) -> tuple[NDArray[np.float32], int | None]:
    """The part of an output a user sees: for class-conditioned maps, one class's map."""
    if attention.kind is AttentionKind.CLASS_ACTIVATION:
        class_index = predicted_class if target_class is None else target_class
        if not 0 <= class_index < values.shape[0]:
            raise InvalidInput(f"target_class {class_index} is outside 0..{values.shape[0] - 1}")
        return values[class_index], class_index
    return values, None


def build_attention_map(
    attention: AttentionSpec,
    values: NDArray[np.float32],
    geometry: ResizeGeometry,
    request: AttentionRequest,
    predicted_class: int,
    labels: tuple[str, ...],
    image: Image.Image | None,
) -> AttentionMap:
    """One output (without its batch axis) → the map as the user asked for it."""
    selected, class_index = select_slice(attention, values, predicted_class, request.target_class)
    display = to_display(selected, attention.normalization)
    result = AttentionMap(
        name=attention.name,
        kind=attention.kind,
        axes=attention.axes,
        shape=tuple(int(d) for d in values.shape),
        normalization=attention.normalization.method,
        flat=display.flat,
        contrast=display.contrast,
        class_index=class_index,
        class_label=labels[class_index] if class_index is not None else "",
        peak_value=float(selected.max()),
    )
    if MapForm.RAW in request.forms:
        result.raw = selected.astype(np.float32)
    if not attention.is_spatial or selected.ndim != 2:
        return result  # channel weights and other non-spatial outputs: raw values only
    x, y, result.peak_value = peak_in_original(selected, geometry)
    result.peak = (x, y)
    spatial_forms = request.forms & {MapForm.UPSAMPLED, MapForm.HEATMAP_PNG, MapForm.OVERLAY_PNG}
    if not spatial_forms or not request.renders(attention.name):
        return result
    upsampled = np.clip(map_to_original(display.values, geometry), 0.0, 1.0)
    if MapForm.UPSAMPLED in request.forms:
        result.upsampled = upsampled
    if MapForm.HEATMAP_PNG in request.forms:
        result.heatmap_png = encode_png(colorize(upsampled))
    if MapForm.OVERLAY_PNG in request.forms:
        if image is None:
            raise ValueError("an overlay needs the original image (preprocess with keep_image=True)")
        result.overlay_png = encode_png(overlay(image, upsampled))
    return result


def postprocess(
    outputs: dict[str, NDArray[np.float32]],
    spec: ModelSpec,
    geometry: ResizeGeometry,
    top: int,
    request: AttentionRequest,
    image: Image.Image | None = None,
) -> tuple[list[ClassScore], list[AttentionMap]]:
    """Outputs of one image (batch axis removed) → top-k classes and the requested maps."""
    logits = outputs[spec.logits_name]
    predictions = top_k(logits, spec.labels, top)
    predicted_class = predictions[0].index
    maps = [
        build_attention_map(
            spec.attention_by_name(name),
            outputs[name],
            geometry,
            request,
            predicted_class,
            spec.labels,
            image,
        )
        for name in request.maps
    ]
    return predictions, maps
