"""Datasets built from what installed packages ship; nothing is downloaded."""

from .cluttered_digits import (
    SPLITS,
    ClutteredDigits,
    DigitBatch,
    DigitSample,
    as_photo,
    digit_labels,
)

__all__ = ["SPLITS", "ClutteredDigits", "DigitBatch", "DigitSample", "as_photo", "digit_labels"]
