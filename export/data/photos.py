"""Handwritten digits on photographs: real scans in colour over crops of real photos.

Each sample is a crop of one of the photographs scikit-image ships (astronaut, coffee, the cat
Chelsea, the rocket, ...; all bundled, nothing downloaded), taken at a random zoom and place,
with one real `load_digits` scan composited on it in a random colour, at a random size and
opacity, among 0–2 fragments of other scans in other colours. The photo is the clutter: colour,
texture, edges, the natural things a digit classifier must look past.

Splits hold out both ways: digits by *source scan*, with the project's `SPLITS` (scans 1497–1796
are the final test split, never used for training or selection), and backgrounds by *photo*:
the test split's photos (`PHOTO_SPLITS`) are never seen in training or selection either. A
test sample is a test writer's digit on a test photograph.

Canvases are larger than the model input (146 px by default, for a 96 px input read the timm
way: shorter side resized to input / crop_pct, the centre cropped) and the digit lies within the
centre crop, so the crop is exercised and never cuts the digit. Every sample is deterministic by
``(seed, split, index)``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from attnserve.spec import ColorMode, PreprocessSpec, ResizeMode

from .cluttered_digits import (
    _SPLIT_CODES,
    INK_THRESHOLD,
    SPLITS,
    DigitSample,
    Split,
    _distorted,
    _place_fragment,
    _scans,
)

PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut",
        "hubble_deep_field",
        "retina",
        "motorcycle_left",
        "motorcycle_right",
        "camera",
        "coins",
        "clock",
        "brick",
        "grass",
        "gravel",
    ),
    "val": ("coffee",),
    "test": ("chelsea", "rocket", "immunohistochemistry"),
}
"""The photographs behind each split; no photo is in two. Train also has six grey photos
(tinted per sample) for more textures than five colour photos give; val and test are colour."""

GREY_PHOTOS = frozenset({"camera", "coins", "clock", "brick", "grass", "gravel"})

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTO_INPUT_SIZE = (96, 96)
PHOTO_CROP_PCT = 0.875
PHOTO_CANVAS = (146, 146)
"""(width, height) of a default canvas: the centre crop keeps its central 128 px (146 × 0.875),
resized to the 96 px input."""

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SHAPE_CODE = 11  # keeps the canvas-shape draws apart from the samples' own


def _skimage_photo(name: str) -> NDArray[np.uint8]:
    from skimage import data

    loaders: dict[str, Callable[[], NDArray[np.uint8]]] = {
        "motorcycle_left": lambda: data.stereo_motorcycle()[0],
        "motorcycle_right": lambda: data.stereo_motorcycle()[1],
    }
    image = loaders[name]() if name in loaders else getattr(data, name)()
    return np.asarray(image, dtype=np.uint8)


@cache
def photo(name: str) -> Image.Image:
    """One bundled photograph as an 8-bit RGB image (grey ones as three equal channels)."""
    pixels = _skimage_photo(name)
    if pixels.ndim == 2:
        return Image.fromarray(pixels, "L").convert("RGB")
    return Image.fromarray(pixels[:, :, :3], "RGB")


@dataclass(frozen=True)
class PhotoSample(DigitSample):
    """A digit on a photograph: ``image`` is H×W×3 RGB in [0, 1]; box and mask as for digits."""

    photo: str = ""
    """The photograph the background was cropped from."""


def photo_preprocess(input_size: tuple[int, int] = PHOTO_INPUT_SIZE) -> PreprocessSpec:
    """How a photo model reads an image: RGB, ImageNet statistics, timm's centre crop (shorter
    side to input / 0.875, the centre cut out)."""
    return PreprocessSpec(
        input_size=input_size,
        color_mode=ColorMode.RGB,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        resize_mode=ResizeMode.CENTER_CROP,
        crop_pct=PHOTO_CROP_PCT,
    )


class DigitsOnPhotos:
    """A deterministic, indexable set of digits on photographs.

    Args:
        split: which scans and which photos.
        num_samples: the set's length.
        canvas_size: (width, height) of every canvas, unless ``shape_share`` draws another.
        shape_share: the share of canvases of a random shape: shorter side 112–256 px, aspect
            ratio up to 7:4 either way (as photos arrive); the digit keeps its size relative to
            the shorter side, so the model sees it at the same scale.
        size_range: the digit's side as a share of the canvas's shorter side.
        contrast_range: the ink's luminance difference from the photo under it.
        opacity_range: the ink's opacity (below 1 the photo's texture shows through the strokes).
        clutter_range: how many fragments of other scans, in other colours.
        texture_range: how much of the photo's contrast about its mean colour is kept (1: the
            photo as it is; lower: faded towards a flat colour, a curriculum's easy start).
        within: the digit lies inside the centred square of this share of the shorter side (the
            part a centre crop of this ``crop_pct`` keeps).
    """

    def __init__(
        self,
        split: Split,
        num_samples: int,
        *,
        canvas_size: tuple[int, int] = PHOTO_CANVAS,
        shape_share: float = 0.0,
        seed: int = 0,
        size_range: tuple[float, float] = (0.2, 0.4),
        contrast_range: tuple[float, float] = (0.35, 0.7),
        opacity_range: tuple[float, float] = (0.8, 1.0),
        clutter_range: tuple[int, int] = (0, 2),
        texture_range: tuple[float, float] = (1.0, 1.0),
        within: float = PHOTO_CROP_PCT,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
        if size_range[1] >= within:
            raise ValueError(
                f"a digit of {size_range[1]:.0%} of the canvas does not fit in its centre {within:.0%}"
            )
        self.split = split
        self.num_samples = num_samples
        self.canvas_size = canvas_size
        self.shape_share = shape_share
        self.seed = seed
        self.size_range = size_range
        self.contrast_range = contrast_range
        self.opacity_range = opacity_range
        self.clutter_range = clutter_range
        self.texture_range = texture_range
        self.within = within
        self.scan_indices = np.arange(SPLITS[split].start, SPLITS[split].stop)
        self.photos = PHOTO_SPLITS[split]

    def __len__(self) -> int:
        return self.num_samples

    def _shape(self, index: int) -> tuple[int, int]:
        rng = np.random.default_rng((self.seed, _SPLIT_CODES[self.split], index, _SHAPE_CODE))
        if self.shape_share <= 0 or rng.uniform() >= self.shape_share:
            return self.canvas_size
        short = int(rng.integers(112, 257))
        long = int(round(short * np.exp(rng.uniform(0.0, np.log(7 / 4)))))
        return (long, short) if rng.uniform() < 0.5 else (short, long)

    def __getitem__(self, index: int) -> PhotoSample:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        width, height = self._shape(index)
        rng = np.random.default_rng((self.seed, _SPLIT_CODES[self.split], index))
        name = self.photos[int(rng.integers(len(self.photos)))]
        canvas = _background(name, width, height, rng, self.texture_range)
        short = min(width, height)

        scan = int(rng.choice(self.scan_indices))
        digit_px = int(round(short * rng.uniform(*self.size_range)))
        region = short * self.within
        x_lo, y_lo = (width - region) / 2, (height - region) / 2
        left = int(np.ceil(x_lo)) + int(rng.integers(0, max(1, int(region - digit_px))))
        top = int(np.ceil(y_lo)) + int(rng.integers(0, max(1, int(region - digit_px))))
        digit = _distorted(scan, digit_px, rng)

        clutter_scans = []
        for _ in range(int(rng.integers(self.clutter_range[0], self.clutter_range[1] + 1))):
            other = int(rng.choice(self.scan_indices))
            while other == scan:
                other = int(rng.choice(self.scan_indices))
            clutter_scans.append(other)
            fragment = _fragment(other, int(round(short * rng.uniform(*self.size_range))), rng)
            fy, fx = _place_fragment(rng, fragment.shape, (top, left, digit_px), (height, width))
            self._paint(canvas, fragment, fx, fy, rng)

        self._paint(canvas, digit, left, top, rng)
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.03))
        np.clip(canvas, 0.0, 1.0, out=canvas)

        mask = np.zeros((height, width), dtype=bool)
        mask[top : top + digit_px, left : left + digit_px] = digit >= INK_THRESHOLD
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        label = int(_scans()[1][scan])
        return PhotoSample(canvas, label, box, mask, scan, tuple(clutter_scans), photo=name)

    def _paint(
        self,
        canvas: NDArray[np.float32],
        strokes: NDArray[np.float32],
        x: int,
        y: int,
        rng: np.random.Generator,
    ) -> None:
        """Composites ``strokes`` (intensities in [0, 1]) at (x, y) in a colour that stands off
        the photo under it by a drawn luminance contrast."""
        height, width = strokes.shape
        under = canvas[y : y + height, x : x + width]
        ink = _ink_colour(float(under.reshape(-1, 3).mean(axis=0) @ _LUMA), rng, self.contrast_range)
        alpha = (strokes * rng.uniform(*self.opacity_range))[:, :, None]
        under *= 1.0 - alpha
        under += alpha * ink


def _background(
    name: str, width: int, height: int, rng: np.random.Generator, texture_range: tuple[float, float]
) -> NDArray[np.float32]:
    """A crop of the photo at a random zoom (log-uniform, from a fifth of the largest crop that
    fits to all of it) and place, resized to the canvas, flipped half the time, its contrast
    (times a draw from ``texture_range``) and brightness jittered; a grey photo is tinted."""
    source = photo(name)
    largest = min(source.width / width, source.height / height)
    zoom = float(np.exp(rng.uniform(np.log(max(0.6, largest / 5)), np.log(max(0.6, largest)))))
    crop_w, crop_h = min(width * zoom, source.width), min(height * zoom, source.height)
    x0 = rng.uniform(0.0, source.width - crop_w)
    y0 = rng.uniform(0.0, source.height - crop_h)
    crop = source.resize(
        (width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h), reducing_gap=3.0
    )
    if rng.uniform() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(crop, dtype=np.float32)
    # one affine map per channel: (tint ×) contrast about the mean, plus brightness, in [0, 1]
    texture = rng.uniform(*texture_range)
    gain = np.full(3, rng.uniform(0.75, 1.2) * texture / 255.0, dtype=np.float32)
    if name in GREY_PHOTOS:
        tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
        gain *= tint / tint.max()
    mean = pixels.reshape(-1, 3).mean(axis=0)
    offset = (rng.uniform(-0.08, 0.08) + mean * (1 / 255.0 - gain)).astype(np.float32)
    pixels *= gain
    pixels += offset
    return np.clip(pixels, 0.0, 1.0, out=pixels)


def _ink_colour(
    background_luma: float, rng: np.random.Generator, contrast_range: tuple[float, float]
) -> NDArray[np.float32]:
    """A random colour, lightened or darkened until its luminance differs from the background's
    by at least a contrast drawn from ``contrast_range`` (towards the side with more room)."""
    hue, saturation, value = rng.uniform(), rng.uniform(0.2, 1.0), rng.uniform()
    colour = np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)
    luma = float(colour @ _LUMA)
    contrast = rng.uniform(*contrast_range)
    if abs(luma - background_luma) >= contrast:
        return colour
    if background_luma < 0.5:  # lighten towards white
        target = min(1.0, background_luma + contrast)
        share = (target - luma) / max(1e-6, 1.0 - luma)
        return colour + (1.0 - colour) * np.float32(np.clip(share, 0.0, 1.0))
    target = max(0.0, background_luma - contrast)  # darken towards black
    return colour * np.float32(target / max(luma, 1e-6))


def _fragment(scan: int, size: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """A piece (3–5 of 8 rows and columns) of another scan at a digit's scale."""
    whole = _distorted(scan, size, rng)
    extent = max(2, int(round(size * int(rng.integers(3, 6)) / 8)))
    y0, x0 = (int(v) for v in rng.integers(0, size - extent + 1, size=2))
    return whole[y0 : y0 + extent, x0 : x0 + extent]
