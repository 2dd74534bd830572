"""One registry of architectures (after timm's `_registry.py` / torchvision's `_api.py`).

An architecture is a builder function registered with the `ModelSpec` it is served with:
``@register_model(spec)`` over ``def cbam(**kwargs) -> nn.Module``. The function's name is
the architecture's name; registering a name twice raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from attnserve.errors import ModelNotFound
from attnserve.spec import ModelSpec

from ._training import TrainingRecipe

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder
    spec: ModelSpec
    recipe: TrainingRecipe


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(spec: ModelSpec, recipe: TrainingRecipe | None = None) -> Callable[[B], B]:
    """Register ``builder`` under its function name, with the spec it is served with and the
    recipe it trains with."""

    def decorate(builder: B) -> B:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"an architecture named {name!r} is registered already")
        if spec.architecture != name:
            raise ValueError(f"spec.architecture {spec.architecture!r} must equal {name!r}")
        _REGISTRY[name] = ModelEntry(name, builder, spec, recipe or TrainingRecipe())
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models()) or "none"
        raise ModelNotFound(f"unknown architecture {name!r}; registered: {known}") from None


def get_spec(name: str) -> ModelSpec:
    return get_entry(name).spec


def create_model(name: str, **kwargs: Any) -> nn.Module:
    return get_entry(name).builder(**kwargs)
