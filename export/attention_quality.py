"""How well an attention map points at the object: the pointing game and the energy in the box.

- *Pointing game* (Zhang et al., "Top-down Neural Attention by Excitation Backprop"): the share
  of images whose map peak falls inside the object's box (strictly, no tolerance margin).
- *Energy in the box*: the share of the map's (non-negative) mass inside the box. A saturated
  map can win the pointing game through tiny differences while attending to nothing; its
  energy then sits at *chance*, the box's share of the image.
- Boxes (RA-CNN's zoom) score by IoU with the digit box, and by whether their centre is on the
  digit (their pointing game); glimpse paths (RAM) by whether the final glimpse is on the digit.

Everything is measured in the model input's pixels, where the digit's box is carried through
the same geometry the gateway uses.

Maps are upsampled bilinearly (``align_corners=False``, the same convention the gateway uses to
map attention back to image pixels) to the canvas before scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray


@dataclass(frozen=True)
class MapQuality:
    pointing: float
    energy: float

    def as_dict(self) -> dict[str, float]:
        return {"pointing": round(self.pointing, 4), "energy": round(self.energy, 4)}


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×h×w → N×H×W, bilinear, ``align_corners=False``."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def box_masks(boxes: NDArray[np.floating | np.integer], size: tuple[int, int]) -> NDArray[np.bool_]:
    """N×4 boxes (x0, y0, x1, y1; integer boxes end-exclusive) → N×H×W masks of the pixels whose
    centres lie in them."""
    height, width = size
    ys = np.arange(height)[None, :, None] + 0.5
    xs = np.arange(width)[None, None, :] + 0.5
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def map_quality(
    maps: torch.Tensor, boxes: NDArray[np.floating | np.integer], size: tuple[int, int]
) -> MapQuality:
    """Scores N native-resolution maps (N×h×w) against N boxes on a canvas of ``size``.

    Negative values carry no evidence (a CAM's negative side) and are clipped before energy.
    """
    upsampled = upsample_maps(maps, size).clamp_min(0).numpy()
    inside = box_masks(boxes, size)
    flat = upsampled.reshape(len(upsampled), -1)
    peaks = flat.argmax(axis=1)
    pointing = inside.reshape(len(inside), -1)[np.arange(len(peaks)), peaks].mean()
    total = flat.sum(axis=1)
    in_box = (upsampled * inside).reshape(len(upsampled), -1).sum(axis=1)
    energy = np.where(total > 0, in_box / np.maximum(total, 1e-12), 0.0).mean()
    return MapQuality(float(pointing), float(energy))


def chance_energy(boxes: NDArray[np.floating | np.integer], size: tuple[int, int]) -> float:
    """Energy of a uniform map: the mean share of the canvas the boxes cover."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float(areas.mean() / (size[0] * size[1]))


def inside_boxes(points: NDArray[np.floating], boxes: NDArray[np.floating | np.integer]) -> NDArray[np.bool_]:
    """Whether each of N points (x, y) lies in its box (x0, y0, x1, y1), end-exclusive."""
    x, y = points[:, 0], points[:, 1]
    return (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])


def box_quality(
    predicted: NDArray[np.floating], boxes: NDArray[np.floating | np.integer]
) -> dict[str, float]:
    """How well N attended boxes (x0, y0, x1, y1) match the N digit boxes: mean IoU, the share
    whose centre is on the digit (the pointing game of a box), and the mean share of the digit
    box they cover."""
    ix0, iy0 = np.maximum(predicted[:, 0], boxes[:, 0]), np.maximum(predicted[:, 1], boxes[:, 1])
    ix1, iy1 = np.minimum(predicted[:, 2], boxes[:, 2]), np.minimum(predicted[:, 3], boxes[:, 3])
    intersection = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_p = (predicted[:, 2] - predicted[:, 0]) * (predicted[:, 3] - predicted[:, 1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centres = (predicted[:, :2] + predicted[:, 2:]) / 2.0
    return {
        "iou": round(float(np.mean(intersection / np.maximum(area_p + area_b - intersection, 1e-9))), 4),
        "pointing": round(float(np.mean(inside_boxes(centres, boxes))), 4),
        "coverage": round(float(np.mean(intersection / np.maximum(area_b, 1e-9))), 4),
    }


def path_quality(centres: NDArray[np.floating], boxes: NDArray[np.floating | np.integer]) -> dict[str, float]:
    """N glimpse paths (N×T×2 centres) against the digit boxes: the share whose final glimpse is
    on the digit (its pointing game), and whose path visits the digit at all."""
    final = inside_boxes(centres[:, -1], boxes)
    visited = np.any([inside_boxes(centres[:, t], boxes) for t in range(centres.shape[1])], axis=0)
    return {"pointing": round(float(np.mean(final)), 4), "visited": round(float(np.mean(visited)), 4)}
