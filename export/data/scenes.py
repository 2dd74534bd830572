"""Digit scenes: several real handwritten digits of very different sizes on one canvas, with
per-pixel ground truth for semantic and instance segmentation.

The digits are the same real scans as `cluttered_digits` (scikit-learn's `load_digits`), split
by *source scan* with the same `SPLITS` (scans 1497–1796 are the final test split, never used for
training or selection). A scene places 1–5 digits, each upscaled (and, by default, distorted as
a writer would) to a side drawn log-uniformly from `size_range`, so that a 12 px digit and a 56 px
one share a canvas: what a model must see at one scale it cannot see at another, the setting of
Chen et al., "Attention to Scale" (CVPR 2016).

Later digits are drawn over earlier ones: where a later digit's ink is, its ink replaces what was
there, and those pixels belong to it. A digit left with fewer than `min_visible_pixels` visible
pixels is dropped from the annotations (its few pixels count as background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from attnserve.spec import ColorMode, PreprocessSpec, ResizeMode

from .cluttered_digits import (
    _SPLIT_CODES,
    INK_THRESHOLD,
    SPLITS,
    Split,
    _camera_round_trip,
    _distorted,
    _scans,
    _upscaled,
)

SCENE_LABELS: tuple[str, ...] = ("background", *(str(d) for d in range(10)))
"""Semantic classes: index 0 the background, digit d is class d + 1."""

SCENE_MEAN = 0.07
SCENE_STD = 0.185
"""Pixel statistics of 128 px training scenes (mean 0.069, std 0.185 over 2,000 scenes)."""


@dataclass(frozen=True)
class Scene:
    image: NDArray[np.float32]
    """H×W, values in [0, 1], white ink on black."""
    semantic: NDArray[np.int64]
    """H×W: 0 background, digit d → d + 1."""
    instances: NDArray[np.int32]
    """H×W: 0 none, k = 1..n where the k-th annotated digit's ink is visible."""
    boxes: NDArray[np.float32]
    """n×4 (x0, y0, x1, y1), end-exclusive canvas pixels of each digit's visible ink."""
    labels: NDArray[np.int64]
    """n digit classes 0..9."""
    scan_indices: NDArray[np.int64]
    """n source scans."""

    @property
    def digit_sizes(self) -> NDArray[np.float32]:
        """Each digit's size in pixels: the longer side of its visible ink's box."""
        return np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])


class DigitScenes:
    """A deterministic, indexable set of multi-digit scenes.

    Scene ``i`` depends only on ``(seed, split, i)`` and the constructor's parameters.
    """

    def __init__(
        self,
        split: Split,
        num_samples: int,
        *,
        canvas_size: int = 128,
        seed: int = 0,
        digits_range: tuple[int, int] = (1, 5),
        size_range: tuple[int, int] = (12, 56),
        max_cover: float = 0.5,
        min_visible_pixels: int = 8,
        noise_std: float = 0.04,
        distort: bool = True,
        resample_share: float = 0.0,
    ) -> None:
        """
        Args:
            digits_range: fewest and most digits drawn per scene (inclusive).
            size_range: smallest and largest side (px) a digit's 8×8 scan is upscaled to; drawn
                log-uniformly, so small digits are as common as large ones.
            max_cover: a new digit's square is placed (10 tries) so that it covers at most this
                share of any earlier digit's square; occlusion happens, erasure is rare.
            min_visible_pixels: a digit with fewer visible ink pixels is not annotated.
            resample_share: share of scenes passed through an 8-bit, enlarge-and-shrink round
                trip (as through a camera and the gateway's resize); masks are unchanged.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
        if not 8 <= size_range[0] <= size_range[1] <= canvas_size:
            raise ValueError(f"digit sizes {size_range} must lie in [8, {canvas_size}]")
        if not 1 <= digits_range[0] <= digits_range[1]:
            raise ValueError(f"bad digits range {digits_range}")
        self.split = split
        self.num_samples = num_samples
        self.canvas_size = canvas_size
        self.seed = seed
        self.digits_range = digits_range
        self.size_range = size_range
        self.max_cover = max_cover
        self.min_visible_pixels = min_visible_pixels
        self.noise_std = noise_std
        self.distort = distort
        self.resample_share = resample_share
        self.scan_indices = np.arange(SPLITS[split].start, SPLITS[split].stop)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Scene:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, _SPLIT_CODES[self.split], index))
        targets = _scans()[1]
        size = self.canvas_size
        canvas = np.zeros((size, size), dtype=np.float32)
        owner = np.zeros((size, size), dtype=np.int32)
        squares: list[tuple[int, int, int]] = []
        scans: list[int] = []

        low, high = np.log(self.size_range[0]), np.log(self.size_range[1])
        for number in range(1, int(rng.integers(self.digits_range[0], self.digits_range[1] + 1)) + 1):
            scan = int(rng.choice(self.scan_indices))
            digit_px = int(round(np.exp(rng.uniform(low, high))))
            digit = _distorted(scan, digit_px, rng) if self.distort else _upscaled(scan, digit_px)
            top, left = self._place(rng, digit_px, squares)
            squares.append((top, left, digit_px))
            scans.append(scan)
            ink = digit >= INK_THRESHOLD
            region = canvas[top : top + digit_px, left : left + digit_px]
            # The new digit's ink hides what is under it; its faint edges only add light.
            np.copyto(region, np.where(ink, digit, np.maximum(region, digit)))
            owner[top : top + digit_px, left : left + digit_px][ink] = number

        if self.noise_std > 0:
            canvas += rng.normal(0.0, self.noise_std, size=canvas.shape).astype(np.float32)
        np.clip(canvas, 0.0, 1.0, out=canvas)
        if self.resample_share > 0 and rng.uniform() < self.resample_share:
            canvas = _camera_round_trip(canvas, rng)

        instances = np.zeros((size, size), dtype=np.int32)
        semantic = np.zeros((size, size), dtype=np.int64)
        boxes: list[tuple[int, int, int, int]] = []
        labels: list[int] = []
        kept_scans: list[int] = []
        for number, scan in enumerate(scans, start=1):
            visible = owner == number
            if visible.sum() < self.min_visible_pixels:
                continue
            instances[visible] = len(labels) + 1
            semantic[visible] = targets[scan] + 1
            ys, xs = np.nonzero(visible)
            boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
            labels.append(int(targets[scan]))
            kept_scans.append(scan)
        return Scene(
            image=canvas,
            semantic=semantic,
            instances=instances,
            boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.array(labels, dtype=np.int64),
            scan_indices=np.array(kept_scans, dtype=np.int64),
        )

    def _place(
        self, rng: np.random.Generator, digit_px: int, squares: list[tuple[int, int, int]]
    ) -> tuple[int, int]:
        """A top-left corner for a new digit's square that covers at most `max_cover` of any
        earlier square (the last of 10 tries if none does)."""
        for _ in range(10):
            top, left = (int(v) for v in rng.integers(0, self.canvas_size - digit_px + 1, size=2))
            covers = (
                max(0, min(top + digit_px, y + side) - max(top, y))
                * max(0, min(left + digit_px, x + side) - max(left, x))
                / (side * side)
                for y, x, side in squares
            )
            if max(covers, default=0.0) <= self.max_cover:
                break
        return top, left


OTHER_CANVAS_SIZES = (96, 112, 160, 192)
"""Canvas sizes of training scenes that are not a model's input size: users send other sizes,
which the gateway letterboxes (enlarged or shrunk, with the resampling that brings)."""


def canvas_parts(samples: int, canvas: int, other_share: float) -> list[tuple[int, int]]:
    """How ``samples`` training scenes split over canvas sizes, as (canvas, count): ``other_share``
    of them evenly over `OTHER_CANVAS_SIZES`, the rest at ``canvas``."""
    at_input = round(samples * (1 - other_share))
    others, sizes = samples - at_input, OTHER_CANVAS_SIZES
    return [(canvas, at_input)] + [
        (size, others // len(sizes) + (i < others % len(sizes))) for i, size in enumerate(sizes)
    ]


def scene_preprocess(input_size: tuple[int, int] = (128, 128)) -> PreprocessSpec:
    """How every scene model reads an image: gray, letterboxed on black, the scenes' statistics."""
    return PreprocessSpec(
        input_size=input_size,
        color_mode=ColorMode.GRAY,
        mean=(SCENE_MEAN,),
        std=(SCENE_STD,),
        resize_mode=ResizeMode.LETTERBOX,
        pad_value=0.0,
    )
