"""Named variants of the cluttered-digit data, all from the same source-scan splits.

- ``standard``: one digit of 24–40 px on a 64×64 canvas among 4–8 clutter fragments.
- ``small``: one digit of 10–20 px on a 96–128 px square canvas among 6–12 fragments (a quarter
  to a half of a scan, at the digit's scales): the digit covers 1–4 % of the picture, so a model
  must find it before it can read it (the setting the zooming models, RA-CNN and RAM, are for).
- ``mixed``: standard canvases as users send them: padded to aspect ratios from 4:7 to 7:4 and
  enlarged ×1–3, so that letterboxing shrinks the digit to 14–40 px of a 64 px input.

Every variant is deterministic by ``(seed, split, index)``; no scan crosses splits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from .cluttered_digits import _SPLIT_CODES, ClutteredDigits, DigitSample, Split

_RESHAPE_CODE = 7  # keeps the reshaping draws apart from the canvases' own


class DigitDataset(Protocol):
    split: Split

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> DigitSample: ...


class ReshapedDigits:
    """Samples of ``base`` padded to another aspect ratio and enlarged, as photos arrive."""

    def __init__(
        self,
        base: ClutteredDigits,
        aspect_range: tuple[float, float] = (4 / 7, 7 / 4),
        enlarge_range: tuple[float, float] = (1.0, 3.0),
    ) -> None:
        self.base = base
        self.split = base.split
        self.aspect_range = aspect_range
        self.enlarge_range = enlarge_range

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> DigitSample:
        sample = self.base[index]
        rng = np.random.default_rng((self.base.seed, _SPLIT_CODES[self.split], index, _RESHAPE_CODE))
        aspect = float(np.exp(rng.uniform(*np.log(self.aspect_range))))
        scale = float(rng.uniform(*self.enlarge_range))
        height, width = sample.image.shape
        side = round(width * scale)
        extra = round(side * (max(aspect, 1 / aspect) - 1))
        first = int(rng.integers(0, extra + 1))
        # aspect > 1: wider than tall (pad left/right); < 1: taller (pad top/bottom)
        pad = (first, 0, extra - first, 0) if aspect >= 1 else (0, first, 0, extra - first)
        image = _reshape(Image.fromarray(sample.image, "F"), side, pad, Image.Resampling.BILINEAR)
        mask = _reshape(Image.fromarray(sample.mask), side, pad, Image.Resampling.NEAREST)
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        pixels = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return DigitSample(
            pixels, sample.label, box, mask.astype(bool), sample.scan_index, sample.clutter_scans
        )


def _reshape(
    image: Image.Image, side: int, pad: tuple[int, int, int, int], resample: Image.Resampling
) -> np.ndarray:
    left, top, right, bottom = pad
    enlarged = image.resize((side, side), resample)
    canvas = Image.new(image.mode, (side + left + right, side + top + bottom), 0)
    canvas.paste(enlarged, (left, top))
    return np.asarray(canvas)


@dataclass(frozen=True)
class DataVariant:
    name: str
    description: str
    build: Callable[[Split, int, int, bool], DigitDataset]
    """(split, samples, seed, augment) → the dataset; ``augment`` adds training's distortions."""


def _standard(split: Split, samples: int, seed: int, augment: bool) -> DigitDataset:
    return ClutteredDigits(split, samples, seed=seed, distort=augment, resample_share=0.5 if augment else 0.0)


def _small(split: Split, samples: int, seed: int, augment: bool) -> DigitDataset:
    return ClutteredDigits(
        split,
        samples,
        seed=seed,
        canvas_size_range=(96, 128),
        scale_range=(1.25, 2.5),
        clutter_range=(6, 12),
        fragment_size_range=(2, 4),
        distort=augment,
        resample_share=0.3 if augment else 0.0,
    )


def _mixed(split: Split, samples: int, seed: int, augment: bool) -> DigitDataset:
    base = ClutteredDigits(
        split,
        samples,
        seed=seed,
        scale_range=(2.2, 5.0) if augment else (3.0, 5.0),
        distort=augment,
    )
    return ReshapedDigits(base)


VARIANTS: dict[str, DataVariant] = {
    "standard": DataVariant(
        "standard", "one digit of 24–40 px on a 64×64 canvas, 4–8 clutter fragments", _standard
    ),
    "small": DataVariant(
        "small", "one digit of 10–20 px on a 96–128 px canvas, 6–12 smaller clutter fragments", _small
    ),
    "mixed": DataVariant(
        "mixed", "standard canvases padded to aspect ratios 4:7–7:4 and enlarged ×1–3", _mixed
    ),
}


def make_dataset(
    variant: str, split: Split, samples: int, seed: int = 0, augment: bool = False
) -> DigitDataset:
    try:
        chosen = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown data variant {variant!r}; choose one of {sorted(VARIANTS)}") from None
    return chosen.build(split, samples, seed, augment)
