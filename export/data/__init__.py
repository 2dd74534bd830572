"""Datasets built from what installed packages ship; nothing is downloaded."""

from .cluttered_digits import (
    SPLITS,
    ClutteredDigits,
    DigitBatch,
    DigitSample,
    Split,
    as_photo,
    digit_labels,
    digit_preprocess,
)
from .model_batch import ModelBatch, concatenate, model_batch
from .scenes import OTHER_CANVAS_SIZES, SCENE_LABELS, DigitScenes, Scene, canvas_parts, scene_preprocess
from .variants import VARIANTS, DataVariant, DigitDataset, ReshapedDigits, make_dataset

__all__ = [
    "OTHER_CANVAS_SIZES",
    "SCENE_LABELS",
    "SPLITS",
    "VARIANTS",
    "ClutteredDigits",
    "DataVariant",
    "DigitBatch",
    "DigitDataset",
    "DigitSample",
    "DigitScenes",
    "ModelBatch",
    "ReshapedDigits",
    "Scene",
    "Split",
    "as_photo",
    "canvas_parts",
    "concatenate",
    "digit_labels",
    "digit_preprocess",
    "make_dataset",
    "model_batch",
    "scene_preprocess",
]
