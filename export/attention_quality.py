"""How well an attention map points at the object: the pointing game and the energy in the box.

- *Pointing game* (Zhang et al., "Top-down Neural Attention by Excitation Backprop"): the share
  of images whose map peak falls inside the object's box (strictly, no tolerance margin).
- *Energy in the box*: the share of the map's (non-negative) mass inside the box. A saturated
  map can win the pointing game through tiny differences while attending to nothing; its
  energy then sits at *chance*, the box's share of the image.

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


def box_masks(boxes: NDArray[np.int64], size: tuple[int, int]) -> NDArray[np.bool_]:
    """N×4 end-exclusive (x0, y0, x1, y1) boxes → N×H×W masks."""
    height, width = size
    ys = np.arange(height)[None, :, None]
    xs = np.arange(width)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def map_quality(maps: torch.Tensor, boxes: NDArray[np.int64], size: tuple[int, int]) -> MapQuality:
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


def chance_energy(boxes: NDArray[np.int64], size: tuple[int, int]) -> float:
    """Energy of a uniform map: the mean share of the canvas the boxes cover."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float(areas.mean() / (size[0] * size[1]))
