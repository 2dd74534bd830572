"""Samples of any size → what a model sees, through the gateway's own transform.

Each canvas is stored as 8 bits (as an image file would be), then colour mode, resize per the
model's `PreprocessSpec` and normalisation (`attnserve.transform`); the digit's box follows
into model-input pixels through the same geometry. Pixels are kept as 8 bits until a batch is
used, so large training sets stay small in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from attnserve.spec import PreprocessSpec
from attnserve.transform import boxes_to_input, image_from_pixels, pixels_to_input, to_input_pixels

from .cluttered_digits import DigitSample


@dataclass
class ModelBatch:
    pixels: NDArray[np.uint8]
    """N×H×W×C, the model input's 8-bit pixels."""
    boxes: NDArray[np.float32]
    """N×4 digit boxes (x0, y0, x1, y1) in model-input pixels."""
    labels: NDArray[np.int64]
    scan_indices: NDArray[np.int64]
    preprocess: PreprocessSpec

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocess.input_size

    def inputs(self, index: slice | NDArray[np.int64] | Tensor = slice(None)) -> Tensor:
        """The normalised N×C×H×W inputs of the selected samples."""
        if isinstance(index, Tensor):
            index = index.numpy()
        return torch.from_numpy(pixels_to_input(self.pixels[index], self.preprocess))

    def select(self, index: slice | NDArray[np.int64]) -> ModelBatch:
        return ModelBatch(
            self.pixels[index],
            self.boxes[index],
            self.labels[index],
            self.scan_indices[index],
            self.preprocess,
        )


def model_batch(samples: Sequence[DigitSample], preprocess: PreprocessSpec) -> ModelBatch:
    height, width = preprocess.input_size
    pixels = np.empty((len(samples), height, width, preprocess.channels), dtype=np.uint8)
    boxes = np.empty((len(samples), 4), dtype=np.float32)
    for index, sample in enumerate(samples):
        pixels[index], geometry = to_input_pixels(image_from_pixels(sample.image), preprocess)
        boxes[index] = boxes_to_input(np.asarray(sample.box, dtype=np.float64), geometry)
    return ModelBatch(
        pixels,
        boxes,
        np.array([s.label for s in samples], dtype=np.int64),
        np.array([s.scan_index for s in samples], dtype=np.int64),
        preprocess,
    )


def concatenate(batches: Sequence[ModelBatch]) -> ModelBatch:
    return ModelBatch(
        np.concatenate([b.pixels for b in batches]),
        np.concatenate([b.boxes for b in batches]),
        np.concatenate([b.labels for b in batches]),
        np.concatenate([b.scan_indices for b in batches]),
        batches[0].preprocess,
    )
