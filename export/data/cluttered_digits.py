"""Cluttered digits: real handwriting from scikit-learn's bundled `load_digits`, nothing downloaded.

Each sample places one 8×8 scan (1,797 real scans, 0–16 grey levels), upscaled by a random
factor, at a random position on a larger canvas, among fragments of *other* scans and noise
(the setting of cluttered MNIST in Mnih et al., "Recurrent Models of Visual Attention").
Every sample carries the ground truth for where attention should be: the digit's box and its
pixel mask.

Splits are by *source scan*, so no scan (as digit or as clutter) crosses splits. The project
convention: scans 1497–1796 are the final test split, never used for training or selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.spec import ColorMode, PreprocessSpec, ResizeMode
from attnserve.transform import ResizeGeometry, image_from_pixels, resize_to_input

Split = Literal["train", "val", "test"]

SPLITS: dict[str, range] = {
    "train": range(0, 1297),
    "val": range(1297, 1497),
    "test": range(1497, 1797),
}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

INK_THRESHOLD = 0.25
"""An upscaled digit pixel at or above this intensity belongs to the digit's mask."""


@cache
def _scans() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    return images, digits.target.astype(np.int64)


@cache
def _upscaled(scan_index: int, size: int) -> NDArray[np.float32]:
    scan = _scans()[0][scan_index]
    resized = Image.fromarray(scan, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _distorted(scan_index: int, size: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """The scan upscaled to size×size through a random rotation, shear and aspect change.

    Handwriting varies by writer more than by position; the test scans come from other
    writers, so training canvases vary the strokes' geometry and intensity too.
    """
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    shear = rng.uniform(-0.2, 0.2)
    aspect = rng.uniform(0.85, 1.15)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([aspect, 1.0 / aspect])
    inverse = np.linalg.inv(forward) * (8.0 / size)
    centre_out, centre_in = size / 2.0, 4.0
    offset = np.array([centre_in, centre_in]) - inverse @ np.array([centre_out, centre_out])
    coefficients = (
        inverse[0, 0],
        inverse[0, 1],
        offset[0],
        inverse[1, 0],
        inverse[1, 1],
        offset[1],
    )
    scan = Image.fromarray(_scans()[0][scan_index], mode="F")
    warped = scan.transform((size, size), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    # Pen pressure and stroke width differ by writer; in 8×8 scans both show as intensity.
    gain = rng.uniform(0.8, 1.4)
    return np.clip(np.asarray(warped, dtype=np.float32) * gain, 0.0, 1.0)


def _camera_round_trip(canvas: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """The canvas as it reaches a model through a server: stored as 8-bit, enlarged ×1–5 (a
    camera sees it bigger), then resized back by the gateway's own transform. Training on some
    of these removes the train/serve skew of a model that only ever saw pixel-exact canvases
    (measured: 98.0 % → 94.7 % accuracy through the gateway)."""
    size = canvas.shape[0]
    pixels = image_from_pixels(canvas)
    enlarged = round(size * rng.uniform(1.0, 5.0))
    pixels = pixels.resize((enlarged, enlarged), Image.Resampling.BILINEAR)
    geometry = ResizeGeometry.fit(enlarged, enlarged, (size, size), ResizeMode.LETTERBOX)
    return np.asarray(resize_to_input(pixels, geometry, pad_value=0.0), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class DigitSample:
    image: NDArray[np.float32]
    """H×W, values in [0, 1], white ink on black."""
    label: int
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) of the digit's ink, end-exclusive, in canvas pixels."""
    mask: NDArray[np.bool_]
    """H×W, True where the digit's own ink is."""
    scan_index: int
    """Which `load_digits` scan the digit is."""
    clutter_scans: tuple[int, ...] = ()
    """The scans the clutter fragments were cut from."""


@dataclass(frozen=True)
class DigitBatch:
    images: NDArray[np.float32]
    """N×H×W."""
    labels: NDArray[np.int64]
    boxes: NDArray[np.int64]
    """N×4, (x0, y0, x1, y1) end-exclusive."""
    masks: NDArray[np.bool_]
    scan_indices: NDArray[np.int64]


class ClutteredDigits:
    """A deterministic, indexable set of cluttered-digit canvases.

    Sample ``i`` depends only on ``(seed, split, i)`` and the constructor's parameters.
    """

    def __init__(
        self,
        split: Split,
        num_samples: int,
        *,
        canvas_size: int = 64,
        canvas_size_range: tuple[int, int] | None = None,
        seed: int = 0,
        scale_range: tuple[float, float] = (3.0, 5.0),
        clutter_range: tuple[int, int] = (4, 8),
        fragment_size_range: tuple[int, int] = (3, 5),
        noise_std: float = 0.05,
        distort: bool = False,
        resample_share: float = 0.0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
        smallest = canvas_size if canvas_size_range is None else canvas_size_range[0]
        if smallest < 8 * scale_range[1]:
            raise ValueError(f"a {smallest}px canvas cannot hold a digit upscaled ×{scale_range[1]}")
        self.split = split
        self.num_samples = num_samples
        self.canvas_size = canvas_size
        self.canvas_size_range = canvas_size_range
        self.seed = seed
        self.scale_range = scale_range
        self.clutter_range = clutter_range
        self.fragment_size_range = fragment_size_range
        self.noise_std = noise_std
        self.distort = distort
        self.resample_share = resample_share
        self.scan_indices = np.arange(SPLITS[split].start, SPLITS[split].stop)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> DigitSample:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, _SPLIT_CODES[self.split], index))
        images, targets = _scans()
        size = self.canvas_size
        if self.canvas_size_range is not None:
            size = int(rng.integers(self.canvas_size_range[0], self.canvas_size_range[1] + 1))
        canvas = np.zeros((size, size), dtype=np.float32)

        scan = int(rng.choice(self.scan_indices))
        digit_px = int(round(8 * rng.uniform(*self.scale_range)))
        digit = _distorted(scan, digit_px, rng) if self.distort else _upscaled(scan, digit_px)
        top, left = (int(v) for v in rng.integers(0, size - digit_px + 1, size=2))

        clutter_scans = []
        for _ in range(int(rng.integers(self.clutter_range[0], self.clutter_range[1] + 1))):
            other = int(rng.choice(self.scan_indices))
            while other == scan:
                other = int(rng.choice(self.scan_indices))
            clutter_scans.append(other)
            scale = rng.uniform(*self.scale_range)
            crop = int(rng.integers(self.fragment_size_range[0], self.fragment_size_range[1] + 1))
            cy, cx = (int(v) for v in rng.integers(0, 8 - crop + 1, size=2))
            upscaled_px = int(round(8 * scale))
            fragment = _upscaled(other, upscaled_px)
            f0y, f0x = int(cy * scale), int(cx * scale)
            extent = max(2, int(round(crop * scale)))
            fragment = fragment[f0y : f0y + extent, f0x : f0x + extent]
            fy, fx = _place_fragment(rng, fragment.shape, (top, left, digit_px), (size, size))
            region = canvas[fy : fy + fragment.shape[0], fx : fx + fragment.shape[1]]
            np.maximum(region, fragment, out=region)

        region = canvas[top : top + digit_px, left : left + digit_px]
        np.maximum(region, digit, out=region)
        if self.noise_std > 0:
            canvas += rng.normal(0.0, self.noise_std, size=canvas.shape).astype(np.float32)
        np.clip(canvas, 0.0, 1.0, out=canvas)
        if self.resample_share > 0 and rng.uniform() < self.resample_share:
            canvas = _camera_round_trip(canvas, rng)

        mask = np.zeros((size, size), dtype=bool)
        mask[top : top + digit_px, left : left + digit_px] = digit >= INK_THRESHOLD
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        return DigitSample(canvas, int(targets[scan]), box, mask, scan, tuple(clutter_scans))

    def batch(self, start: int = 0, stop: int | None = None) -> DigitBatch:
        """Samples ``start..stop`` stacked into arrays (canvases of one size only)."""
        stop = self.num_samples if stop is None else min(stop, self.num_samples)
        samples = [self[i] for i in range(start, stop)]
        return DigitBatch(
            images=np.stack([s.image for s in samples]),
            labels=np.array([s.label for s in samples], dtype=np.int64),
            boxes=np.array([s.box for s in samples], dtype=np.int64),
            masks=np.stack([s.mask for s in samples]),
            scan_indices=np.array([s.scan_index for s in samples], dtype=np.int64),
        )


def _place_fragment(
    rng: np.random.Generator, shape: tuple[int, ...], digit: tuple[int, int, int], canvas: tuple[int, int]
) -> tuple[int, int]:
    """A position on a ``canvas`` (height, width) for a clutter fragment that covers at most a
    third of it with the digit's square (``digit``: top, left, side).

    Clutter is there to distract, not to erase the digit: heavy overlap makes the label
    unknowable, which measures nothing about attention.
    """
    top, left, digit_px = digit
    height, width = shape
    for _ in range(10):
        fy = int(rng.integers(0, canvas[0] - height + 1))
        fx = int(rng.integers(0, canvas[1] - width + 1))
        overlap_y = max(0, min(fy + height, top + digit_px) - max(fy, top))
        overlap_x = max(0, min(fx + width, left + digit_px) - max(fx, left))
        if overlap_y * overlap_x * 3 <= height * width:
            break
    return fy, fx


def digit_labels() -> tuple[str, ...]:
    return tuple(str(d) for d in range(10))


def digit_preprocess(input_size: tuple[int, int]) -> PreprocessSpec:
    """How every digit model reads an image: gray, letterboxed on black, the canvases' statistics."""
    return PreprocessSpec(
        input_size=input_size,
        color_mode=ColorMode.GRAY,
        mean=(0.2,),
        std=(0.3,),
        resize_mode=ResizeMode.LETTERBOX,
        pad_value=0.0,
    )


def as_photo(
    sample: DigitSample, scale: float = 4.0, pad: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The canvas as a larger 8-bit image, as a camera might deliver it, and the digit's box in it.

    ``scale`` enlarges the canvas (bilinear); ``pad`` = (left, top, right, bottom) adds black
    borders, so the image's aspect ratio differs from the model's input. The box is returned
    in the new image's pixel coordinates (x0, y0, x1, y1), end-exclusive.
    """
    size = sample.image.shape[0]
    enlarged = round(size * scale)
    pixels = Image.fromarray(np.clip(sample.image * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    pixels = pixels.resize((enlarged, enlarged), Image.Resampling.BILINEAR)
    left, top, right, bottom = pad
    photo = Image.new("L", (enlarged + left + right, enlarged + top + bottom), 0)
    photo.paste(pixels, (left, top))
    factor = enlarged / size
    x0, y0, x1, y1 = sample.box
    return photo, (x0 * factor + left, y0 * factor + top, x1 * factor + left, y1 * factor + top)
