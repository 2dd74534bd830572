"""Checks Triton's answer against the model's declared outputs before anything reads it.

A backend that answers with a missing tensor, a wrong shape or a non-float dtype (a bug, a
model swapped under the same name) must not crash postprocessing nor leak its tensors: the
caller gets `UpstreamError` (INTERNAL / 502) with a generic message, the gateway log the details.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from attnserve.errors import UpstreamError
from attnserve.model_info import ModelInfo

log = logging.getLogger(__name__)


def expected_answer_shape(model: ModelInfo, name: str) -> tuple[int, ...]:
    """An output's shape in the answer to a one-image request (-1: any size)."""
    if model.max_batch_size > 0:
        return (1, *model.item_shape(name))
    return model.output_shape(name)


def _matches(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    if len(shape) != len(expected):
        return False
    return all(e == -1 or s == e for s, e in zip(shape, expected, strict=True))


def check_output_shapes(outputs: Mapping[str, object], model: ModelInfo, requested: Sequence[str]) -> None:
    """Raises `UpstreamError` unless every ``requested`` output is in Triton's answer to one image
    (batch axis first), as a float array of its declared shape."""
    for name in requested:
        value = outputs.get(name)
        if value is None:
            problem = "is missing"
        elif not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            problem = f"is a {type(value).__name__} of {getattr(value, 'dtype', '?')}, not a float array"
        elif not _matches(value.shape, expected := expected_answer_shape(model, name)):
            problem = f"has shape {value.shape}, declared {expected}"
        else:
            continue
        log.warning("model %s: Triton's output %r %s", model.name, name, problem)
        raise UpstreamError(
            f"model {model.name!r} answered with outputs that do not match its declared ones; "
            "the gateway log has the details"
        )
