"""Which part of an attention output a user sees: one index on the leading axes a request selects.

Attention outputs are described by their axes (`attnserve.spec.AttentionSpec.axes`). Axes in
front of the spatial ones index a *stack* of maps: one per class (``class``), per input scale
(``scale``), per generated word (``word``), per glimpse (``step``). A task decides which index
of some of them an answer shows — classification shows the class it predicted, or the one the
request asks to explain — and names them in a *selection*: ``{"class": 6}``. Axes it does not
select stay whole.

One function for the gateway (numpy, one image) and for evaluation (torch, image by image):
it only indexes, so it works on any array type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from attnserve.errors import InvalidInput
from attnserve.spec import AttentionSpec

A = TypeVar("A")

REQUEST_OPTION = {"class": "target_class"}
"""The request option that chooses an index on an axis, for error messages."""


def select_leading(
    attention: AttentionSpec, values: A, selection: Mapping[str, int]
) -> tuple[A, dict[str, int]]:
    """``values`` (one image's output, axes as in the spec) with every selected leading axis
    indexed; returns the selected values and the indices actually taken, by axis name.

    An index outside an axis is `InvalidInput` naming the request option that chose it.
    """
    taken: dict[str, int] = {}
    kept = 0  # axes before the current one that stay in `values`
    for axis in attention.leading_axes:
        index = selection.get(axis)
        if index is None:
            kept += 1
            continue
        size = values.shape[kept]  # type: ignore[attr-defined]
        if not 0 <= index < size:
            option = REQUEST_OPTION.get(axis, axis)
            raise InvalidInput(f"{option} {index} is outside 0..{size - 1}")
        values = values[(slice(None),) * kept + (index,)]  # type: ignore[index]
        taken[axis] = index
    return values, taken


def cut_leading(
    attention: AttentionSpec, values: A, taken: Mapping[str, int], extent: Mapping[str, int]
) -> A:
    """``values`` as `select_leading` returned them (``taken``: the axes it indexed away) with each
    remaining leading axis named in ``extent`` cut to its first ``extent[axis]`` entries: the
    part of a stack an answer has (a caption's words, not the graph's padding after them)."""
    kept = 0  # axes before the current one that are still in `values`
    for axis in attention.leading_axes:
        if axis in taken:
            continue
        if axis in extent:
            values = values[(slice(None),) * kept + (slice(0, max(extent[axis], 0)),)]  # type: ignore[index]
        kept += 1
    return values
