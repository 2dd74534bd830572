"""Detection machinery in plain torch that exports to ONNX: box IoU and coding, greedy NMS as a
fixed number of batched matrix steps, RoIAlign through ``F.grid_sample``, and the assignment of
feature cells to ground-truth boxes for a dense proposal head.

Boxes are (x0, y0, x1, y1) in continuous input pixels, pixel ``i`` spanning ``[i, i + 1)`` (the
``align_corners=False`` convention of `attnserve.transform.geometry`). Everything works on fixed
shapes (``B×K`` candidates with a validity mask), so one traced graph serves any batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
"""Fast R-CNN's scaling of (dx, dy, dw, dh), so that the regression targets have unit-ish spread."""
_LOG_CLAMP = math.log(1000.0 / 16.0)


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(first: Tensor, second: Tensor) -> Tensor:
    """Pairwise IoU, ``…×N×4`` and ``…×M×4`` → ``…×N×M`` (0 where both boxes are empty)."""
    top_left = torch.maximum(first[..., :, None, :2], second[..., None, :, :2])
    bottom_right = torch.minimum(first[..., :, None, 2:], second[..., None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    union = box_area(first)[..., :, None] + box_area(second)[..., None, :] - inter
    return inter / union.clamp(min=1e-6)


def greedy_nms(boxes: Tensor, valid: Tensor, iou_threshold: float, classes: Tensor | None = None) -> Tensor:
    """Greedy non-maximum suppression of candidates already sorted by score (best first).

    Args:
        boxes: B×K×4.
        valid: B×K, 1 for a candidate, 0 for padding (float).
        iou_threshold: a candidate overlapping a kept, better one by more than this goes.
        classes: B×K; when given, only candidates of the same class suppress each other.

    Returns:
        B×K float, 1 where the candidate is kept.

    Greedy NMS keeps candidate ``i`` iff it is valid and no *kept* better candidate ``j < i``
    overlaps it. That is a fixpoint over an acyclic dependency (``i`` depends on ``j < i``
    only), so the Jacobi iteration ``keep ← valid · [no kept j suppresses i]`` from
    ``keep = valid`` is exact after K − 1 steps (after step t, candidates 0..t are final): a
    fixed number of batched matrix products, which traces into a static ONNX graph, instead of a
    data-dependent Python loop.
    """
    count = boxes.shape[1]
    overlaps = (box_iou(boxes, boxes) > iou_threshold).to(boxes.dtype)
    if classes is not None:
        overlaps = overlaps * (classes[:, :, None] == classes[:, None, :]).to(boxes.dtype)
    earlier = torch.ones(count, count, dtype=boxes.dtype, device=boxes.device).triu(diagonal=1)
    suppresses = overlaps * earlier  # [j, i]: j is better than i and overlaps it
    keep = valid
    for _ in range(max(count - 1, 1)):
        suppressed = torch.bmm(keep[:, None, :], suppresses)[:, 0]
        keep = valid * (suppressed < 0.5).to(boxes.dtype)
    return keep


def roi_align(
    features: Tensor, boxes: Tensor, input_size: tuple[int, int], size: int, sampling: int = 2
) -> Tensor:
    """RoIAlign (He et al.): each box's size×size bins, each the mean of sampling×sampling
    bilinear samples of the feature map, with no rounding of coordinates.

    Args:
        features: B×C×h×w, covering the whole input (h·stride = input height).
        boxes: B×R×4 in input pixels.
        input_size: (height, width) of the input.
        size: bins per side.
        sampling: samples per bin and axis.

    Returns:
        (B·R)×C×size×size, box ``r`` of image ``b`` at row ``b·R + r``; samples outside the map
        read zero.
    """
    batch, rois = boxes.shape[:2]
    height, width = input_size
    points = size * sampling
    steps = (torch.arange(points, dtype=boxes.dtype, device=boxes.device) + 0.5) / points
    x = boxes[..., 0, None] + steps * (boxes[..., 2, None] - boxes[..., 0, None])  # B×R×P
    y = boxes[..., 1, None] + steps * (boxes[..., 3, None] - boxes[..., 1, None])
    grid_x = (x * (2.0 / width) - 1.0)[:, :, None, :].expand(batch, rois, points, points)
    grid_y = (y * (2.0 / height) - 1.0)[:, :, :, None].expand(batch, rois, points, points)
    grid = torch.stack([grid_x, grid_y], dim=-1).reshape(batch, rois * points, points, 2)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    channels = features.shape[1]
    sampled = sampled.reshape(batch, channels, rois, points, points).transpose(1, 2)
    sampled = sampled.reshape(batch * rois, channels, points, points)
    return F.avg_pool2d(sampled, sampling) if sampling > 1 else sampled


def encode_deltas(proposals: Tensor, targets: Tensor) -> Tensor:
    """Fast R-CNN's (dx, dy, dw, dh) that move ``proposals`` onto ``targets`` (…×4 each)."""
    pw, ph = _sizes(proposals)
    tw, th = _sizes(targets)
    wx, wy, ww, wh = DELTA_WEIGHTS
    return torch.stack(
        [
            wx * (_centre(targets, 0) - _centre(proposals, 0)) / pw,
            wy * (_centre(targets, 1) - _centre(proposals, 1)) / ph,
            ww * torch.log(tw / pw),
            wh * torch.log(th / ph),
        ],
        dim=-1,
    )


def decode_deltas(proposals: Tensor, deltas: Tensor) -> Tensor:
    pw, ph = _sizes(proposals)
    wx, wy, ww, wh = DELTA_WEIGHTS
    cx = _centre(proposals, 0) + deltas[..., 0] / wx * pw
    cy = _centre(proposals, 1) + deltas[..., 1] / wy * ph
    half_w = 0.5 * pw * torch.exp((deltas[..., 2] / ww).clamp(max=_LOG_CLAMP))
    half_h = 0.5 * ph * torch.exp((deltas[..., 3] / wh).clamp(max=_LOG_CLAMP))
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def _sizes(boxes: Tensor) -> tuple[Tensor, Tensor]:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-3), (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-3)


def _centre(boxes: Tensor, axis: int) -> Tensor:
    return 0.5 * (boxes[..., axis] + boxes[..., axis + 2])


def cell_centres(height: int, width: int, stride: int) -> Tensor:
    """(h·w)×2 (x, y) input-pixel centres of a stride-``stride`` map's cells, row-major."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * stride
    return torch.stack([xs.repeat(height), ys.repeat_interleave(width)], dim=1)


def assign_cells(centres: Tensor, gt_boxes: Tensor, gt_valid: Tensor, radius: float) -> Tensor:
    """Which ground-truth box each cell learns (FCOS with centre sampling): a cell whose centre
    lies inside a box and within ``radius`` pixels (per axis) of the box's centre; of several,
    the smallest box. Returns B×(h·w) indices, −1 for background.

    Every box gets at least the cell nearest its centre (a box narrower than a cell would
    otherwise have none).
    """
    x = centres[None, :, None, 0]  # 1×N×1
    y = centres[None, :, None, 1]
    cx, cy = _centre(gt_boxes, 0)[:, None, :], _centre(gt_boxes, 1)[:, None, :]  # B×1×M
    inside = (
        (x >= gt_boxes[:, None, :, 0])
        & (x < gt_boxes[:, None, :, 2])
        & (y >= gt_boxes[:, None, :, 1])
        & (y < gt_boxes[:, None, :, 3])
    )
    central = ((x - cx).abs() <= radius) & ((y - cy).abs() <= radius)
    distance = (x - cx) ** 2 + (y - cy) ** 2  # B×N×M
    nearest = distance == distance.min(dim=1, keepdim=True)[0]
    candidate = ((inside & central) | nearest) & gt_valid[:, None, :]
    area = box_area(gt_boxes)[:, None, :].expand_as(distance)
    area = torch.where(candidate, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(dim=2)
    return torch.where(torch.isfinite(best_area), best, torch.full_like(best, -1))
