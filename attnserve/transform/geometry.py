"""Where model-input pixels come from in the original image, and the way back.

Every resize mode is one axis-aligned affine map: the original image (``width``×``height``) is
scaled by ``(scale_x, scale_y)`` and placed at ``(offset_x, offset_y)`` on the model input
(``input_width``×``input_height``): ``x_in = x_orig * scale_x + offset_x``. A positive offset
is letterbox padding, a negative one a centre crop. Coordinates are continuous with pixel
centres at ``i + 0.5`` (the ``align_corners=False`` convention of PIL and PyTorch).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import PreprocessSpec, ResizeMode


@dataclass(frozen=True)
class ResizeGeometry:
    width: int
    height: int
    input_width: int
    input_height: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    @classmethod
    def identity(cls, width: int, height: int) -> ResizeGeometry:
        return cls(width, height, width, height, 1.0, 1.0, 0.0, 0.0)

    @classmethod
    def for_spec(cls, width: int, height: int, spec: PreprocessSpec) -> ResizeGeometry:
        """The geometry a resize of a ``width``×``height`` image per ``spec`` has."""
        return cls.fit(width, height, spec.input_size, spec.resize_mode, spec.crop_pct)

    @classmethod
    def fit(
        cls,
        width: int,
        height: int,
        input_size: tuple[int, int],
        mode: ResizeMode,
        crop_pct: float = 1.0,
    ) -> ResizeGeometry:
        """The geometry of resizing a ``width``×``height`` image into ``input_size`` (h, w)."""
        input_height, input_width = input_size
        if mode is ResizeMode.STRETCH:
            scale_x, scale_y = input_width / width, input_height / height
            return cls(width, height, input_width, input_height, scale_x, scale_y, 0.0, 0.0)
        if mode is ResizeMode.LETTERBOX:
            scale = min(input_width / width, input_height / height)
            resized_w = max(1, round(width * scale))
            resized_h = max(1, round(height * scale))
            return cls(
                width,
                height,
                input_width,
                input_height,
                resized_w / width,
                resized_h / height,
                float((input_width - resized_w) // 2),
                float((input_height - resized_h) // 2),
            )
        # centre crop: the shorter side becomes input/crop_pct, the centre is cut out
        scale = max(input_width / width, input_height / height) / crop_pct
        return cls(
            width,
            height,
            input_width,
            input_height,
            scale,
            scale,
            (input_width - width * scale) / 2.0,
            (input_height - height * scale) / 2.0,
        )

    def source_box(self) -> tuple[float, float, float, float]:
        """The part of the original image (x0, y0, x1, y1) that lands on the input canvas."""
        x0 = max(0.0, -self.offset_x / self.scale_x)
        y0 = max(0.0, -self.offset_y / self.scale_y)
        x1 = min(float(self.width), (self.input_width - self.offset_x) / self.scale_x)
        y1 = min(float(self.height), (self.input_height - self.offset_y) / self.scale_y)
        return x0, y0, x1, y1

    def destination_box(self) -> tuple[int, int, int, int]:
        """Where `source_box` lands on the input canvas, in whole pixels."""
        x0, y0, x1, y1 = self.source_box()
        return (
            round(x0 * self.scale_x + self.offset_x),
            round(y0 * self.scale_y + self.offset_y),
            round(x1 * self.scale_x + self.offset_x),
            round(y1 * self.scale_y + self.offset_y),
        )

    def to_original(self, x_in: NDArray[Any], y_in: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        return (x_in - self.offset_x) / self.scale_x, (y_in - self.offset_y) / self.scale_y

    def to_input(self, x: NDArray[Any], y: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y


def interpolation_matrix(out_size: int, map_size: int, to_grid: NDArray[Any]) -> NDArray[np.float32]:
    """Bilinear weights (out_size × map_size) sampling a map axis at grid positions ``to_grid``.

    ``to_grid`` are continuous map coordinates (cell centres at ``i``) for each output pixel;
    they are clamped to the map, as PyTorch's ``align_corners=False`` interpolation does.
    """
    position = np.clip(to_grid, 0.0, map_size - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, map_size - 1)
    weight_upper = position - lower
    matrix = np.zeros((out_size, map_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - weight_upper)
    np.add.at(matrix, (rows, upper), weight_upper)
    return matrix.astype(np.float32)


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so that the longer side is at most
    ``max_side``; unchanged when it fits already."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resampling(
    geometry: ResizeGeometry, map_h: int, map_w: int, size: tuple[int, int]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The row (out_h × map_h) and column (out_w × map_w) bilinear weights that resample a map
    over the model input's field of view onto the original shown at ``size``."""
    out_w, out_h = size
    xs = (np.arange(out_w) + 0.5) * (geometry.width / out_w)
    ys = (np.arange(out_h) + 0.5) * (geometry.height / out_h)
    x_in, y_in = geometry.to_input(xs, ys)
    grid_x = x_in * (map_w / geometry.input_width) - 0.5
    grid_y = y_in * (map_h / geometry.input_height) - 0.5
    return interpolation_matrix(out_h, map_h, grid_y), interpolation_matrix(out_w, map_w, grid_x)


def map_to_size(
    values: NDArray[np.float32], geometry: ResizeGeometry, size: tuple[int, int]
) -> NDArray[np.float32]:
    """A map over the model input's field of view (h×w), resampled onto the original image
    shown at ``size`` (width, height) — the original's own size or a scaled-down rendering.

    Separable bilinear resampling as two small matrix products (size × map side each), so the
    cost and memory grow with the rendered sides, not with the original's.
    """
    rows, cols = _resampling(geometry, values.shape[0], values.shape[1], size)
    result: NDArray[np.float32] = rows @ values.astype(np.float32) @ cols.T
    return result


def stack_to_size(
    values: NDArray[np.float32], geometry: ResizeGeometry, size: tuple[int, int]
) -> NDArray[np.float32]:
    """`map_to_size` for a stack of maps (n×h×w → n×height×width), the weights computed once."""
    rows, cols = _resampling(geometry, values.shape[1], values.shape[2], size)
    result: NDArray[np.float32] = np.matmul(np.matmul(rows, values.astype(np.float32)), cols.T)
    return result


def map_to_original(values: NDArray[np.float32], geometry: ResizeGeometry) -> NDArray[np.float32]:
    """A map over the model input's field of view (h×w), resampled onto original pixels (H×W)."""
    return map_to_size(values, geometry, (geometry.width, geometry.height))


@functools.lru_cache(maxsize=256)
def _cells_on_image(
    geometry: ResizeGeometry, map_h: int, map_w: int
) -> tuple[slice, slice, tuple[float, ...], tuple[float, ...]]:
    """The rows and columns of an h×w map whose cell centres fall on the image (one rectangle:
    centres move monotonically with the index; the whole map when none do), and every cell
    centre in original pixels, clipped to the image. Cached: images of one size share them."""
    centres_x = (np.arange(map_w) + 0.5) * (geometry.input_width / map_w)
    centres_y = (np.arange(map_h) + 0.5) * (geometry.input_height / map_h)
    orig_x, orig_y = geometry.to_original(centres_x, centres_y)
    cols = np.flatnonzero((orig_x >= 0) & (orig_x < geometry.width))
    rows = np.flatnonzero((orig_y >= 0) & (orig_y < geometry.height))
    if rows.size and cols.size:
        on_rows, on_cols = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    else:
        on_rows, on_cols = slice(0, map_h), slice(0, map_w)
    xs = tuple(float(x) for x in np.clip(orig_x, 0.0, geometry.width - 1e-3))
    ys = tuple(float(y) for y in np.clip(orig_y, 0.0, geometry.height - 1e-3))
    return on_rows, on_cols, xs, ys


def peak_in_original(values: NDArray[np.float32], geometry: ResizeGeometry) -> tuple[float, float, float]:
    """The map's peak as (x, y, value), (x, y) in original pixels: the highest cell whose
    centre is on the image.

    Cells over letterbox padding are not candidates; the position is clipped to the image.
    """
    map_h, map_w = values.shape
    rows, cols, xs, ys = _cells_on_image(geometry, map_h, map_w)
    top, left = rows.start, cols.start
    candidates = values[rows, cols]
    if not np.isfinite(candidates).any():
        candidates, top, left = values, 0, 0
    row, col = divmod(int(np.argmax(candidates)), candidates.shape[1])
    row, col = row + top, col + left
    return xs[col], ys[row], float(values[row, col])


def boxes_to_original(boxes: NDArray[Any], geometry: ResizeGeometry) -> NDArray[np.float32]:
    """Boxes (…×4: x0, y0, x1, y1) in the model input's field of view, as fractions of its width
    and height, → original image pixels, clipped to the image."""
    boxes = np.asarray(boxes, dtype=np.float64)
    x, y = geometry.to_original(
        boxes[..., 0::2] * geometry.input_width, boxes[..., 1::2] * geometry.input_height
    )
    result = np.empty(boxes.shape, dtype=np.float32)
    result[..., 0::2] = np.clip(x, 0.0, geometry.width)
    result[..., 1::2] = np.clip(y, 0.0, geometry.height)
    return result


def boxes_to_input(boxes: NDArray[Any], geometry: ResizeGeometry) -> NDArray[np.float32]:
    """Boxes (…×4) in original pixels → model input pixels (the way training sees them)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    x, y = geometry.to_input(boxes[..., 0::2], boxes[..., 1::2])
    result = np.empty(boxes.shape, dtype=np.float32)
    result[..., 0::2], result[..., 1::2] = x, y
    return result
