"""Imports the trainers of every task other than classification, so they register."""

from . import (
    train_captions,  # noqa: F401
    train_instances,  # noqa: F401
    train_segmentation,  # noqa: F401
)
