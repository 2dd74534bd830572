"""Semantic segmentation's answer: the class of every pixel, in original pixels.

The model's logits (class × h × w over its input's field of view) are resampled bilinearly onto
the original shown at the render size — the original's own size unless its longer side exceeds
``render_max_side`` — and the class is the best score at each pixel. Resampling the scores and
not the labels keeps class boundaries smooth at any enlargement; row strips keep the memory to
a few MB whatever the image's size.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.prediction import ClassArea, Segmentation
from attnserve.spec import ModelSpec, Task
from attnserve.transform import ResizeGeometry
from attnserve.transform.geometry import interpolation_matrix

from ..render import STRIP_ROWS, class_colours, draw_segmentation
from .tasks import Outputs, TaskContext, TaskResult, register_task


def label_image(
    logits: NDArray[np.float32], geometry: ResizeGeometry, size: tuple[int, int]
) -> NDArray[np.uint8]:
    """Per-pixel argmax of ``logits`` (C×h×w over the input's field of view) resampled onto the
    original shown at ``size`` (width, height)."""
    classes, map_h, map_w = logits.shape
    out_w, out_h = size
    xs = (np.arange(out_w) + 0.5) * (geometry.width / out_w)
    ys = (np.arange(out_h) + 0.5) * (geometry.height / out_h)
    x_in, y_in = geometry.to_input(xs, ys)
    rows = interpolation_matrix(out_h, map_h, y_in * (map_h / geometry.input_height) - 0.5)
    cols = interpolation_matrix(out_w, map_w, x_in * (map_w / geometry.input_width) - 0.5)
    across = np.matmul(logits.astype(np.float32), cols.T)  # C × h × out_w
    labels = np.empty((out_h, out_w), dtype=np.uint8)
    for top in range(0, out_h, STRIP_ROWS):
        strip = np.matmul(rows[top : top + STRIP_ROWS], across)  # C × strip × out_w
        labels[top : top + STRIP_ROWS] = np.argmax(strip, axis=0)
    return labels


def encode_labels(labels: NDArray[np.uint8]) -> bytes:
    """An 8-bit grey PNG of class indices (lossless whatever the request's image encoding)."""
    buffer = io.BytesIO()
    Image.fromarray(labels, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def class_areas(labels: NDArray[np.uint8], spec: ModelSpec, original_pixels: int) -> list[ClassArea]:
    """The classes present, largest first, their pixels counted in original pixels."""
    counts = np.bincount(labels.ravel(), minlength=len(spec.labels))
    scale = original_pixels / labels.size
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return [
        ClassArea(i, spec.labels[i], int(round(counts[i] * scale)), float(counts[i] / labels.size))
        for i in present
    ]


@register_task(Task.SEMANTIC_SEGMENTATION, draws=True)
def semantic_segmentation(outputs: Outputs, spec: ModelSpec, context: TaskContext) -> TaskResult:
    """Logits → the label image, each class's area, and (when asked) the classes drawn."""
    geometry = context.geometry
    width, height = context.rendered
    labels = label_image(outputs[spec.task_output("logits")], geometry, (width, height))
    segmentation = Segmentation(
        width, height, encode_labels(labels), class_areas(labels, spec, geometry.width * geometry.height)
    )
    result = TaskResult(segmentation=segmentation)
    if context.options.overlay:
        if context.image is None:
            raise ValueError(
                "a drawn segmentation needs the original image (preprocess with keep_image=True)"
            )
        drawn = draw_segmentation(context.image, labels, class_colours(len(spec.labels)))
        result.overlay, result.overlay_encoding = context.encoder.encode(drawn), context.encoder.encoding
    return result
