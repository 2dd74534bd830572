"""How a model trains, when plain cross-entropy on its logits is not the whole story.

A model may define ``training_loss(images, labels, progress, step) -> TrainingStep``: RAM adds
REINFORCE for its locations, RA-CNN alternates classification with its ranking loss. Models
without one train on cross-entropy over ``forward(images)["logits"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@dataclass(frozen=True)
class TrainingRecipe:
    """How `attnserve train` trains an architecture: its data, budget and optimiser."""

    data: tuple[tuple[str, float], ...] = (("standard", 1.0),)
    """(data variant, share of the training samples)."""
    selection: str = "standard"
    """The variant whose validation split chooses between weights and the primary map."""
    train_samples: int = 48_000
    max_seconds: float = 225.0
    max_steps: int = 1_250
    batch_size: int = 128
    max_lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    ema_decay: float = 0.99
    trainer: str = ""
    """"module:function" of a trainer of the architecture's own (its scoring differs from its
    task's, e.g. keypoints found by a segmenter); empty: the trainer registered for its task."""

    def share(self, variant: str) -> float:
        """The share of the training samples `data` gives ``variant`` (0 when it names none)."""
        return dict(self.data).get(variant, 0.0) / sum(share for _, share in self.data)


@dataclass
class TrainingStep:
    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)
    update: Sequence[nn.Parameter] | None = None
    """The parameters this step may change (None: all); the others keep their values."""


@runtime_checkable
class TrainsItself(Protocol):
    def training_loss(self, images: Tensor, labels: Tensor, progress: float, step: int) -> TrainingStep: ...
