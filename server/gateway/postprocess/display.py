"""Raw attention values → display intensities in [0, 1], with flat maps recognised.

Two steps, because most answers need only the first: `display_stats` (the map's range, typical
value, contrast and flatness: every map in every answer) and `display_values` (the intensities,
only for maps drawn in an image form). `to_display` does both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import Normalization


@dataclass(frozen=True)
class DisplayStats:
    low: float
    high: float
    typical: float
    """The median of the (normalised) values."""
    contrast: float
    flat: bool


@dataclass(frozen=True)
class DisplayMap:
    values: NDArray[np.float32]
    """Display intensities in [0, 1], same shape as the input."""
    contrast: float
    flat: bool


def median(values: NDArray[np.float32]) -> float:
    """``np.median`` of a float32 array, the same value, without its generality: a partition
    around the middle, then the middle value or the float32 mean of the middle two (``np.median``
    costs 26 µs on a 32×32 map, of which this keeps 8). NaN when any value is NaN."""
    flat = values.ravel()
    middle = flat.size // 2
    if flat.size % 2:
        part = np.partition(flat, middle)
        value = part[middle]
    else:
        part = np.partition(flat, (middle - 1, middle))
        value = (part[middle - 1] + part[middle]) / np.float32(2.0)
    return math.nan if np.isnan(part[-1]) else float(value)


def _relu(values: NDArray[np.float32], normalization: Normalization) -> NDArray[np.float32]:
    values = values.astype(np.float32, copy=False)
    return np.maximum(values, np.float32(0.0)) if normalization.method == "relu_minmax" else values


def display_stats(values: NDArray[np.float32], normalization: Normalization) -> DisplayStats:
    """How the map reads: its range, typical value, contrast and whether it is flat.

    Contrast is how far the map's peak stands above its typical (median) value, as a share of
    the map's known range when the spec gives one, else of its largest magnitude. Below
    ``flat_below`` nothing stands out and the map is *flat*: a saturated sigmoid gate (0.999
    almost everywhere, whatever a few border cells do) or a uniform softmax renders as zero
    everywhere, flagged, instead of a confident uniform blob.
    """
    values = _relu(values, normalization)
    high, low, typical = float(values.max()), float(values.min()), median(values)
    if normalization.range is not None:
        scale = normalization.range[1] - normalization.range[0]
    else:
        scale = max(abs(high), abs(low))
    contrast = 0.0 if scale <= 0 else min(1.0, (high - typical) / scale)
    return DisplayStats(low, high, typical, contrast, contrast < normalization.flat_below)


def display_values(
    values: NDArray[np.float32], normalization: Normalization, stats: DisplayStats
) -> NDArray[np.float32]:
    """Display intensities in [0, 1] per the map's normalisation; all zero for a flat map."""
    values = _relu(values, normalization)
    low, high, typical = stats.low, stats.high, stats.typical
    if stats.flat:
        display = np.zeros_like(values)
    elif normalization.method == "fixed":
        assert normalization.range is not None
        scale = normalization.range[1] - normalization.range[0]
        display = np.clip((values - normalization.range[0]) / scale, 0.0, 1.0)
    elif normalization.method == "above_median":
        display = (
            np.clip((values - typical) / (high - typical), 0.0, 1.0)
            if high > typical
            else np.zeros_like(values)
        )
    else:
        display = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return display.astype(np.float32)


def to_display(values: NDArray[np.float32], normalization: Normalization) -> DisplayMap:
    """Raw map values → display intensities per the map's normalisation; flat maps show nothing."""
    stats = display_stats(values, normalization)
    return DisplayMap(display_values(values, normalization, stats), stats.contrast, stats.flat)
