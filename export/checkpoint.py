"""Checkpoints: weights plus the spec and the measurements they were trained with.

A checkpoint holds only plain types and tensors, so it loads with ``weights_only=True``
(no pickled code runs when a file of unknown origin is opened).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from attnserve._io import atomic_open
from attnserve.errors import InvalidInput
from attnserve.spec import ModelSpec

from .models import create_model, get_spec, serving_spec

CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    architecture: str
    model: nn.Module
    spec: ModelSpec
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": checkpoint.architecture,
        "model_kwargs": json.dumps(checkpoint.model_kwargs),
        "spec": checkpoint.spec.to_json(),
        "metrics": json.dumps(checkpoint.metrics),
        "config": json.dumps(checkpoint.config),
        "state_dict": checkpoint.model.state_dict(),
    }
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: Path) -> Checkpoint:
    """Loads a checkpoint into an eval-mode model; every failure is one `InvalidInput` line."""
    if not path.is_file():
        raise InvalidInput(f"checkpoint {path} does not exist (train one: attnserve train cbam)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's parsers fail on foreign bytes with exceptions of any type
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidInput(f"checkpoint {path} is not a readable torch checkpoint: {first_line}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInput(f"checkpoint {path} is not an attnserve checkpoint (format {CHECKPOINT_FORMAT})")
    try:
        architecture = str(payload["architecture"])
        model_kwargs = json.loads(payload["model_kwargs"])
        spec = ModelSpec.from_json(payload["spec"])
        metrics = json.loads(payload["metrics"])
        config = json.loads(payload["config"])
        model = create_model(architecture, **model_kwargs)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, json.JSONDecodeError, ValidationError) as exc:
        raise InvalidInput(f"checkpoint {path} is incomplete or malformed: {exc}") from None
    except RuntimeError as exc:  # load_state_dict: missing/unexpected keys, shape mismatch
        first_line = str(exc).splitlines()[0]
        raise InvalidInput(f"checkpoint {path} does not fit {architecture!r}: {first_line}") from None
    model.eval()
    return Checkpoint(architecture, model, spec, model_kwargs, metrics, config)


def export_spec(checkpoint: Checkpoint) -> ModelSpec:
    """The spec a checkpoint is served with.

    The data contract (preprocessing, labels) is the checkpoint's: the weights were trained on
    it. How outputs are described and displayed is the architecture's code, so it comes from
    the registry as it is now; the outputs themselves must not have changed.
    """
    current = serving_spec(get_spec(checkpoint.architecture), checkpoint.model)
    trained = serving_spec(checkpoint.spec, checkpoint.model)
    if current.output_names != trained.output_names:
        name = checkpoint.architecture
        raise InvalidInput(
            f"the checkpoint's outputs {list(trained.output_names)} differ from {name!r}'s "
            f"{list(current.output_names)}: retrain it (attnserve train {name})"
        )
    return current.model_copy(update={"preprocess": trained.preprocess, "labels": trained.labels})
