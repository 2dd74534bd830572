"""Instance segmentation's answer: each detection kept, as a box, a mask, COCO RLE and outlines
in original pixels.

The detector gives boxes as fractions of its input's field of view and one mask per detection
over its own box (for the class detected). Boxes are mapped back through the resize geometry
(letterboxing and EXIF orientation undone as for attention); each mask is pasted over the whole
pixels its box touches (`masks.paste_mask`). Rows scored 0 are padding (a batch's detections
are padded to its largest count); an image without a detection gives no instances, not an error.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.errors import UpstreamError
from attnserve.prediction import Box, Instance
from attnserve.spec import ModelSpec, Task
from attnserve.transform import ResizeGeometry

from ..render import DrawnInstance, class_colours, draw_instances
from .masks import mask_polygons, paste_mask, pixel_rect, rle_counts
from .tasks import Outputs, TaskContext, TaskResult, register_task


def unclipped_boxes(boxes: NDArray[np.float32], geometry: ResizeGeometry) -> NDArray[np.float64]:
    """Boxes (n×4, fractions of the input's field of view) → original pixels, not clipped (a
    mask spans the whole box the model predicted, also where it leaves the image)."""
    x, y = geometry.to_original(
        boxes[:, 0::2].astype(np.float64) * geometry.input_width,
        boxes[:, 1::2].astype(np.float64) * geometry.input_height,
    )
    result = np.empty(boxes.shape, dtype=np.float64)
    result[:, 0::2], result[:, 1::2] = x, y
    return result


def _clipped(box: NDArray[np.float64], width: int, height: int) -> Box:
    x0, x1 = (float(np.clip(v, 0.0, width)) for v in box[0::2])
    y0, y1 = (float(np.clip(v, 0.0, height)) for v in box[1::2])
    return x0, y0, x1, y1


def _png(mask: NDArray[np.bool_]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@register_task(Task.INSTANCE_SEGMENTATION, draws=True)
def instance_segmentation(outputs: Outputs, spec: ModelSpec, context: TaskContext) -> TaskResult:
    """Detections → instances above the score threshold, best first, at most ``max_instances``."""
    geometry, options = context.geometry, context.options
    scores = outputs[spec.task_output("scores")]
    classes = outputs[spec.task_output("classes")]
    grids = outputs[spec.task_output("masks")]
    order = np.argsort(-scores, kind="stable")
    order = order[(scores[order] >= options.score_threshold) & (scores[order] > 0.0)][: options.max_instances]
    class_indices = np.rint(classes[order]).astype(np.int64)
    if class_indices.size and not ((class_indices >= 0) & (class_indices < len(spec.labels))).all():
        raise UpstreamError("the model answered with class indices outside its labels")
    boxes = unclipped_boxes(outputs[spec.task_output("boxes")][order], geometry)
    width, height = geometry.width, geometry.height
    instances: list[Instance] = []
    for row, class_index, box in zip(order, class_indices, boxes, strict=True):
        unclipped: Box = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        rect = pixel_rect(unclipped, width, height)
        mask = paste_mask(grids[row], unclipped, rect)
        instances.append(
            Instance(
                class_index=int(class_index),
                label=spec.labels[class_index],
                score=float(scores[row]),
                box=_clipped(box, width, height),
                mask_png=_png(mask),
                mask_origin=(rect[0], rect[1]),
                rle_counts=rle_counts(mask, (rect[0], rect[1]), (height, width)),
                rle_size=(height, width),
                polygons=[
                    [(min(max(x, 0.0), width), min(max(y, 0.0), height)) for x, y in polygon]
                    for polygon in mask_polygons(grids[row], unclipped)
                ],
                area=int(np.count_nonzero(mask)),
            )
        )
    result = TaskResult(instances=instances)
    if options.overlay:
        result.overlay = context.encoder.encode(_drawn(instances, grids[order], boxes, spec, context))
        result.overlay_encoding = context.encoder.encoding
    return result


def _drawn(
    instances: list[Instance],
    grids: NDArray[np.float32],
    boxes: NDArray[np.float64],
    spec: ModelSpec,
    context: TaskContext,
) -> NDArray[np.uint8]:
    """The instances on the image at the render size (masks pasted again at that scale)."""
    if context.image is None:
        raise ValueError("drawn instances need the original image (preprocess with keep_image=True)")
    width, height = context.rendered
    scale = width / context.geometry.width
    colours = class_colours(len(spec.labels) + 1)  # index 0 stays the (undrawn) background's
    drawn: list[DrawnInstance] = []
    for instance, grid, box in zip(instances, grids, boxes, strict=True):
        scaled: Box = (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)
        rect = pixel_rect(scaled, width, height)
        colour = colours[instance.class_index + 1]
        drawn.append(
            DrawnInstance(
                box=tuple(v * scale for v in instance.box),  # type: ignore[arg-type]
                rect=rect,
                mask=paste_mask(grid, scaled, rect),
                colour=(int(colour[0]), int(colour[1]), int(colour[2])),
                caption=f"{instance.label} {instance.score:.2f}",
            )
        )
    return draw_instances(context.image, drawn)
