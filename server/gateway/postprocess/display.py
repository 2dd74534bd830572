"""Raw attention values → display intensities in [0, 1], with flat maps recognised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import Normalization


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
