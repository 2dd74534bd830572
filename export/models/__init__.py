"""Registered attention architectures. Importing this package registers every family."""

from . import (  # noqa: F401  (registers their architectures)
    attention_to_scale,
    cbam,
    mask_rcnn,
    partitioned_fcn,
    racnn,
    ram,
    ran,
    se,
    show_attend_tell,
)
from ._cam import CAM_OUTPUT, has_gap_linear_head
from ._registry import ModelEntry, create_model, get_entry, get_spec, list_models, register_model
from ._serving import ServingGraph, serving_spec
from ._training import TrainingRecipe, TrainingStep, TrainsItself

__all__ = [
    "CAM_OUTPUT",
    "ModelEntry",
    "ServingGraph",
    "TrainingRecipe",
    "TrainingStep",
    "TrainsItself",
    "create_model",
    "get_entry",
    "get_spec",
    "has_gap_linear_head",
    "list_models",
    "register_model",
    "serving_spec",
]
