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
from .variants import VARIANTS, DataVariant, DigitDataset, ReshapedDigits, make_dataset

__all__ = [
    "SPLITS",
    "VARIANTS",
    "ClutteredDigits",
    "DataVariant",
    "DigitBatch",
    "DigitDataset",
    "DigitSample",
    "ModelBatch",
    "ReshapedDigits",
    "Split",
    "as_photo",
    "concatenate",
    "digit_labels",
    "digit_preprocess",
    "make_dataset",
    "model_batch",
]
