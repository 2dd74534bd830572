"""One map builder per attention kind, chosen through a registry.

Every builder gets one image's output (batch axis removed), already cut by the task's
selection on its leading axes (`attnserve.attention.select_leading`), and returns the
`AttentionMap` the user asked for. Adding a kind is one registered builder here, not an edit of
the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.attention import cut_leading, select_leading
from attnserve.errors import InvalidInput
from attnserve.prediction import IMAGE_FORMS, AttentionMap, Box, Glimpse, MapDType, MapForm
from attnserve.spec import AttentionKind, AttentionSpec
from attnserve.transform import ResizeGeometry, boxes_to_original, peak_in_original, stack_to_size

from ..render import ImageEncoder, colorize, display_levels, draw_boxes, draw_path, overlay
from .display import DisplayStats, display_stats, display_values


@dataclass(frozen=True)
class AttentionRequest:
    """Which maps (output names, resolved and validated), in which forms, how encoded."""

    maps: tuple[str, ...]
    forms: frozenset[MapForm]
    render: frozenset[str] | None = None
    """Maps to render in image forms; None: all of `maps`."""
    encoder: ImageEncoder = ImageEncoder()
    """How HEATMAP_PNG and OVERLAY_PNG are encoded."""
    map_dtype: MapDType = MapDType.FLOAT32
    """The data type of RAW and UPSAMPLED (UINT8: UPSAMPLED only, checked beforehand)."""
    tiles: Mapping[str, int] = field(default_factory=dict)
    """Maps that are stacks drawn as tiles (`spatial_map`), by name: how many (1 when absent)."""

    def renders(self, name: str) -> bool:
        return self.render is None or name in self.render

    @property
    def draws(self) -> bool:
        """Some map is asked for in an image form (drawn: the costly part of postprocessing)."""
        return bool(self.maps) and bool(self.forms & IMAGE_FORMS)

    @property
    def needs_image(self) -> bool:
        """An overlay is asked for: the original is kept (at the render size) to draw on."""
        return MapForm.OVERLAY_PNG in self.forms and bool(self.maps)


@dataclass(frozen=True)
class MapContext:
    """What every builder may need besides the values, the same for all maps of one answer."""

    geometry: ResizeGeometry
    request: AttentionRequest
    selection: Mapping[str, int]
    labels: tuple[str, ...]
    image: Image.Image | None = None
    """The oriented original (RGB) at `render_size`, present when an overlay was asked for."""
    render_size: tuple[int, int] | None = None
    """(width, height) of the image forms; None: the original's size."""
    extent: Mapping[str, int] = field(default_factory=dict)
    """Leading axes the answer cuts short (`TaskResult.extent`), by name."""

    @property
    def rendered(self) -> tuple[int, int]:
        return self.render_size or (self.geometry.width, self.geometry.height)

    @property
    def render_scale(self) -> float:
        """Rendered pixels per original pixel (1 unless the original was rendered smaller)."""
        return self.rendered[0] / self.geometry.width


MapBuilder = Callable[[AttentionSpec, NDArray[np.float32], AttentionMap, MapContext], AttentionMap]
B = TypeVar("B", bound=MapBuilder)

_BUILDERS: dict[AttentionKind, MapBuilder] = {}


def register_attention_kind(*kinds: AttentionKind) -> Callable[[B], B]:
    def decorate(builder: B) -> B:
        for kind in kinds:
            if kind in _BUILDERS:
                raise ValueError(f"a map builder for the kind {kind.value!r} is registered already")
            _BUILDERS[kind] = builder
        return builder

    return decorate


def build_attention_map(
    attention: AttentionSpec, values: NDArray[np.float32], context: MapContext
) -> AttentionMap:
    """One output (without its batch axis) → the map as the user asked for it."""
    builder = _BUILDERS.get(attention.kind)
    if builder is None:
        raise InvalidInput(f"this gateway cannot build {attention.kind.value} attention ({attention.name})")
    selected, taken = select_leading(attention, values, context.selection)
    selected = cut_leading(attention, selected, taken, context.extent)
    class_index = taken.get("class")
    result = AttentionMap(
        name=attention.name,
        kind=attention.kind,
        axes=attention.axes,
        shape=tuple(int(d) for d in values.shape),
        normalization=attention.normalization.method,
        class_index=class_index,
        class_label=context.labels[class_index] if class_index is not None else "",
        peak_value=float(selected.max()) if selected.size else 0.0,
        block=attention.block,
    )
    if MapForm.RAW in context.request.forms:
        result.raw = as_map_dtype(selected, context.request.map_dtype)
    built = builder(attention, selected, result, context)
    if built.heatmap_png or built.overlay_png:
        built.image_encoding = context.request.encoder.encoding
    return built


FLOAT16_MAX = float(np.finfo(np.float16).max)

_CONVERSIONS: dict[MapDType, Callable[[NDArray[np.float32]], NDArray[Any]]] = {
    MapDType.FLOAT32: lambda values: values.astype(np.float32),
    # saturated rather than infinite: a value beyond float16's range is still a large value
    MapDType.FLOAT16: lambda values: np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16),
    MapDType.UINT8: display_levels,  # display values in [0, 1] only (UPSAMPLED)
}


def as_map_dtype(values: NDArray[np.float32], dtype: MapDType) -> NDArray[Any]:
    """A tensor form's values in the requested data type."""
    return _CONVERSIONS[dtype](values)


def _with_display(result: AttentionMap, stats: DisplayStats) -> AttentionMap:
    result.flat, result.contrast = stats.flat, stats.contrast
    return result


@register_attention_kind(AttentionKind.SPATIAL, AttentionKind.CLASS_ACTIVATION)
def spatial_map(
    attention: AttentionSpec, values: NDArray[np.float32], result: AttentionMap, context: MapContext
) -> AttentionMap:
    """A map over the input's field of view: its peak and image forms in original pixels.

    A stack the selection left whole (a leading axis no task selects: per input scale, per
    word) is drawn as tiles, one per index in order, side by side (UPSAMPLED: the stack); its
    display values share one normalisation, so tiles compare, and its peak is the highest
    cell's, in the tile that holds it. Deeper stacks come back raw only.
    """
    if values.size == 0:  # a stack cut to nothing (a caption of no words): nothing to show
        return result
    _with_display(result, stats := display_stats(values, attention.normalization))
    if values.ndim not in (2, 3):
        return result
    stack = values if values.ndim == 3 else values[None]
    strongest = int(np.argmax(stack.reshape(len(stack), -1).max(axis=1)))
    x, y, result.peak_value = peak_in_original(stack[strongest], context.geometry)
    result.peak = (x, y)
    request = context.request
    if not request.forms & IMAGE_FORMS or not request.renders(attention.name):
        return result
    display = display_values(stack, attention.normalization, stats)
    upsampled = np.clip(stack_to_size(display, context.geometry, context.rendered), 0.0, 1.0)
    if MapForm.UPSAMPLED in request.forms:
        result.upsampled = as_map_dtype(upsampled if values.ndim == 3 else upsampled[0], request.map_dtype)
    if MapForm.HEATMAP_PNG in request.forms:
        tiles = [colorize(tile) for tile in upsampled]
        result.heatmap_png = request.encoder.encode(_side_by_side(tiles), photographic=False)
    if MapForm.OVERLAY_PNG in request.forms:
        if context.image is None:
            raise ValueError("an overlay needs the original image (preprocess with keep_image=True)")
        result.overlay_png = request.encoder.encode(
            _side_by_side([overlay(context.image, t) for t in upsampled])
        )
    return result


TILE_GAP = 4
"""Pixels of white between the tiles of a drawn stack."""


def _side_by_side(tiles: list[NDArray[np.uint8]]) -> NDArray[np.uint8]:
    if len(tiles) == 1:
        return tiles[0]
    height, width = tiles[0].shape[:2]
    canvas = np.full((height, len(tiles) * (width + TILE_GAP) - TILE_GAP, 3), 255, dtype=np.uint8)
    for index, tile in enumerate(tiles):
        left = index * (width + TILE_GAP)
        canvas[:, left : left + width] = tile
    return canvas


@register_attention_kind(AttentionKind.CHANNEL)
def channel_weights(
    attention: AttentionSpec, values: NDArray[np.float32], result: AttentionMap, context: MapContext
) -> AttentionMap:
    """Weights over channels: no position, so raw values, the largest weight and contrast."""
    return _with_display(result, display_stats(values, attention.normalization))


def _drawn(attention: AttentionSpec, context: MapContext) -> bool:
    """Boxes and paths have one image form: drawn on the overlay."""
    request = context.request
    if MapForm.OVERLAY_PNG not in request.forms or not request.renders(attention.name):
        return False
    if context.image is None:
        raise ValueError("an overlay needs the original image (preprocess with keep_image=True)")
    return True


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


@register_attention_kind(AttentionKind.BOXES)
def attended_boxes(
    attention: AttentionSpec, values: NDArray[np.float32], result: AttentionMap, context: MapContext
) -> AttentionMap:
    """Boxes (…×4, fractions of the input's field of view) → original pixels, in order; the
    peak is the last box's centre (where a zooming cascade ends up)."""
    boxes = boxes_to_original(values.reshape(-1, 4), context.geometry)
    result.boxes = [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in boxes]
    result.peak_value = 0.0
    if result.boxes:
        result.peak = _centre(result.boxes[-1])
    if _drawn(attention, context):
        assert context.image is not None
        result.overlay_png = context.request.encoder.encode(
            draw_boxes(context.image, result.boxes, context.render_scale)
        )
    return result


@register_attention_kind(AttentionKind.PATH)
def glimpse_path(
    attention: AttentionSpec, values: NDArray[np.float32], result: AttentionMap, context: MapContext
) -> AttentionMap:
    """A path (steps × patches × 4) → the glimpses in original pixels, in order; each centre is
    its patches' common centre (clipped to the image), the peak is where the path ends."""
    geometry = context.geometry
    steps = values.reshape(values.shape[0], -1, 4)
    unclipped_centres = (steps[:, 0, :2] + steps[:, 0, 2:]) / 2.0  # fractions of the input
    points = boxes_to_original(np.concatenate([unclipped_centres, unclipped_centres], axis=1), geometry)
    result.path = [
        Glimpse(
            (float(point[0]), float(point[1])),
            [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in boxes_to_original(step, geometry)],
        )
        for point, step in zip(points, steps, strict=True)
    ]
    result.peak_value = 0.0
    if result.path:
        result.peak = result.path[-1].center
    if _drawn(attention, context):
        assert context.image is not None
        result.overlay_png = context.request.encoder.encode(
            draw_path(context.image, result.path, context.render_scale)
        )
    return result
