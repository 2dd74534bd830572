"""Instance masks in original pixels: pasted from the model's box-local grids, as COCO RLE and
as outlines.

A detector's mask is a small grid of probabilities (e.g. 14×14) spanning its box. Pasting
samples it bilinearly at the centre of every whole pixel the box touches (two small matrix
products, as attention maps are resampled), so its cost grows with the box, never with the
image. Outlines are traced on the grid itself (marching squares at the same threshold), so they
stay a few dozen points whatever the box's size, and follow the pasted mask's edge.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from attnserve.prediction import Box, Polygon
from attnserve.transform.geometry import interpolation_matrix

MASK_THRESHOLD = 0.5
"""A pixel belongs to an instance where its mask's probability reaches this."""


def pixel_rect(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """The whole pixels a box (edge coordinates) touches, within the image: (x0, y0, x1, y1),
    end-exclusive, at least one pixel."""
    x0 = min(max(int(np.floor(box[0])), 0), width - 1)
    y0 = min(max(int(np.floor(box[1])), 0), height - 1)
    x1 = min(max(int(np.ceil(box[2])), x0 + 1), width)
    y1 = min(max(int(np.ceil(box[3])), y0 + 1), height)
    return x0, y0, x1, y1


def paste_mask(
    grid: NDArray[np.float32], box: Box, rect: tuple[int, int, int, int], threshold: float = MASK_THRESHOLD
) -> NDArray[np.bool_]:
    """The mask over ``rect``'s pixels: ``grid`` (mh×mw over ``box``) sampled bilinearly at each
    pixel centre (PyTorch's align_corners=False convention), thresholded; pixels whose centre is
    outside the box are outside the mask."""
    mask_h, mask_w = grid.shape
    x0, y0, x1, y1 = rect
    box_w, box_h = max(box[2] - box[0], 1e-6), max(box[3] - box[1], 1e-6)
    centres_x = np.arange(x0, x1) + 0.5
    centres_y = np.arange(y0, y1) + 0.5
    rows = interpolation_matrix(y1 - y0, mask_h, (centres_y - box[1]) * (mask_h / box_h) - 0.5)
    cols = interpolation_matrix(x1 - x0, mask_w, (centres_x - box[0]) * (mask_w / box_w) - 0.5)
    inside_y = (centres_y >= box[1]) & (centres_y < box[3])
    inside_x = (centres_x >= box[0]) & (centres_x < box[2])
    sampled = rows @ grid.astype(np.float32) @ cols.T
    mask: NDArray[np.bool_] = (sampled >= threshold) & inside_y[:, None] & inside_x[None, :]
    return mask


def rle_counts(mask: NDArray[np.bool_], origin: tuple[int, int], size: tuple[int, int]) -> list[int]:
    """COCO's uncompressed RLE of ``mask`` (placed at ``origin`` = (x, y)) on an image of
    ``size`` = (height, width): column-major runs, alternating 0s and 1s, starting with 0s."""
    height, width = size
    mask_h, mask_w = mask.shape
    x, y = origin
    padded = np.zeros((mask_w, mask_h + 2), dtype=np.int8)  # column by column
    padded[:, 1:-1] = mask.T
    columns, rows = np.nonzero(np.diff(padded, axis=1))  # starts and ends, in column-major order
    positions = (x + columns).astype(np.int64) * height + y + rows
    if positions.size > 1:  # a run that ends at a column's foot and goes on at the next's head
        joined = positions[1:] == positions[:-1]
        drop = np.zeros(positions.size, dtype=bool)
        drop[1:] |= joined
        drop[:-1] |= joined
        positions = positions[~drop]
    bounds = np.concatenate([[0], positions, [height * width]])
    counts = [int(c) for c in np.diff(bounds)]
    if len(counts) > 1 and counts[-1] == 0:  # the mask reaches the last pixel: no 0-run after it
        counts.pop()
    return counts


# Marching squares: for each case (corner bits tl=8, tr=4, br=2, bl=1 above the level), the
# cell edges its outline segments join. Saddles (5, 10) depend on the cell centre: see _segments.
_CASES: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("L", "B"),),
    2: (("B", "R"),),
    3: (("L", "R"),),
    4: (("T", "R"),),
    6: (("T", "B"),),
    7: (("L", "T"),),
    8: (("L", "T"),),
    9: (("T", "B"),),
    11: (("T", "R"),),
    12: (("L", "R"),),
    13: (("B", "R"),),
    14: (("L", "B"),),
}
_SADDLES = {  # (centre above the level, centre below)
    5: ((("L", "T"), ("B", "R")), (("L", "B"), ("T", "R"))),
    10: ((("T", "R"), ("L", "B")), (("L", "T"), ("B", "R"))),
}


def _segments(case: int, centre_high: bool) -> tuple[tuple[str, str], ...]:
    if case in _SADDLES:
        high, low = _SADDLES[case]
        return high if centre_high else low
    return _CASES.get(case, ())


def grid_outlines(grid: NDArray[np.float32], level: float = MASK_THRESHOLD) -> list[NDArray[np.float64]]:
    """The closed outlines of ``grid >= level``, each a k×2 array of (x, y) in grid coordinates
    (cell ``[i, j]``'s centre at (j, i)); the grid is taken as surrounded by zeros, so every
    outline closes. Holes are outlines too (see `outer_outlines`)."""
    values = np.pad(grid.astype(np.float64), 1, constant_values=0.0)
    high = values >= level
    corner_bits = (
        high[:-1, :-1].astype(np.int8) * 8
        + high[:-1, 1:].astype(np.int8) * 4
        + high[1:, 1:].astype(np.int8) * 2
        + high[1:, :-1].astype(np.int8)
    )
    points: dict[tuple[str, int, int], tuple[float, float]] = {}
    neighbours: dict[tuple[str, int, int], list[tuple[str, int, int]]] = {}

    def crossing(edge: str, i: int, j: int) -> tuple[str, int, int]:
        key = {"T": ("h", i, j), "B": ("h", i + 1, j), "L": ("v", i, j), "R": ("v", i, j + 1)}[edge]
        if key not in points:
            kind, a, b = key
            start = values[a, b]
            end = values[a, b + 1] if kind == "h" else values[a + 1, b]
            t = (level - start) / (end - start) if end != start else 0.5
            points[key] = (b + t - 1.0, a - 1.0) if kind == "h" else (b - 1.0, a + t - 1.0)
        return key

    for i, j in zip(*np.nonzero((corner_bits > 0) & (corner_bits < 15)), strict=True):
        case = int(corner_bits[i, j])
        centre_high = bool(values[i : i + 2, j : j + 2].mean() >= level)
        for first, second in _segments(case, centre_high):
            a, b = crossing(first, int(i), int(j)), crossing(second, int(i), int(j))
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)

    outlines: list[NDArray[np.float64]] = []
    unvisited = set(neighbours)
    # each outline from its least crossing, not a set's first: a set of keys holding strings is
    # ordered by string hashes, which differ from one process to the next (gateway restarts,
    # replicas, render worker processes would trace the same mask from other starting points)
    for start in sorted(neighbours):
        if start not in unvisited:
            continue
        unvisited.discard(start)
        loop, previous, current = [start], None, start
        while True:
            following = [n for n in neighbours[current] if n != previous] or neighbours[current]
            step = following[0]
            if step == start:
                break
            if step not in unvisited:  # a degenerate junction: close what we have
                break
            unvisited.discard(step)
            loop.append(step)
            previous, current = current, step
        if len(loop) >= 3:
            outlines.append(np.array([points[key] for key in loop], dtype=np.float64))
    return outlines


def _area(outline: NDArray[np.float64]) -> float:
    x, y = outline[:, 0], outline[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _contains(outline: NDArray[np.float64], point: NDArray[np.float64]) -> bool:
    """Ray casting: whether ``point`` lies inside the closed ``outline``."""
    x, y = outline[:, 0], outline[:, 1]
    x_next, y_next = np.roll(x, -1), np.roll(y, -1)
    straddles = (y > point[1]) != (y_next > point[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x + (point[1] - y) * (x_next - x) / (y_next - y)
    return bool(np.count_nonzero(straddles & (point[0] < at)) % 2)


MAX_OUTLINES = 16
"""At most this many outlines per mask, the largest: a noisy mask's specks (73 outlines on a
random 28×28 grid) would otherwise cost a quarter of a second of nesting tests."""
MIN_OUTLINE_AREA = 0.5
"""Outlines enclosing less than this (in grid cells) are specks, not shapes."""


def outer_outlines(outlines: list[NDArray[np.float64]]) -> list[NDArray[np.float64]]:
    """The outlines that are not holes, largest first: of the `MAX_OUTLINES` largest (specks
    dropped), those inside an even number of the larger ones (a hole lies inside its outline,
    which is larger)."""
    ranked = sorted((o for o in outlines if _area(o) >= MIN_OUTLINE_AREA), key=_area, reverse=True)
    ranked = ranked[:MAX_OUTLINES]
    return [
        outline
        for index, outline in enumerate(ranked)
        if sum(_contains(larger, outline[0]) for larger in ranked[:index]) % 2 == 0
    ]


def mask_polygons(grid: NDArray[np.float32], box: Box, level: float = MASK_THRESHOLD) -> list[Polygon]:
    """The mask's outer outlines in original pixels (grid cell centres at (j + 0.5) / mw of the
    box's width from its left edge, likewise down), clipped to the box, largest first."""
    mask_h, mask_w = grid.shape
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    polygons: list[Polygon] = []
    for outline in outer_outlines(grid_outlines(grid, level)):
        xs = np.clip(box[0] + (outline[:, 0] + 0.5) * (box_w / mask_w), box[0], box[2])
        ys = np.clip(box[1] + (outline[:, 1] + 0.5) * (box_h / mask_h), box[1], box[3])
        polygons.append([(float(x), float(y)) for x, y in zip(xs, ys, strict=True)])
    return polygons
