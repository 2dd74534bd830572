"""The models the gateway serves, discovered from Triton's model configs — no per-model constants.

A model is served when Triton reports it READY and its config carries an attnserve spec
(`attnserve.spec.SPEC_PARAMETER`). Models without a spec are listed in the log and skipped:
without a preprocessing spec there is no honest way to feed them an image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.errors import ModelNotFound, ModelNotReady, shorten
from attnserve.model_info import ModelInfo, TensorInfo
from attnserve.spec import SPEC_PARAMETER, ModelSpec

from .backend import InferenceBackend

log = logging.getLogger(__name__)

_DTYPE_NAMES = {v: k.removeprefix("TYPE_") for k, v in mc.DataType.items()}


class NoSpec(ValueError):
    """The model config carries no (valid) attnserve spec."""


def model_info_from_config(config: mc.ModelConfig, version: str) -> ModelInfo:
    """Builds a `ModelInfo` from Triton's config; raises `NoSpec` when it has no valid spec."""
    parameter = config.parameters.get(SPEC_PARAMETER)
    if parameter is None or not parameter.string_value:
        raise NoSpec(f"{config.name}: no {SPEC_PARAMETER!r} parameter in its config")
    try:
        spec = ModelSpec.from_json(parameter.string_value)
    except ValidationError as exc:
        raise NoSpec(f"{config.name}: its {SPEC_PARAMETER!r} parameter is invalid: {exc}") from None
    batch = (-1,) if config.max_batch_size > 0 else ()

    def shapes(tensors: list[mc.ModelInput] | list[mc.ModelOutput]) -> tuple[TensorInfo, ...]:
        return tuple(
            TensorInfo(t.name, _DTYPE_NAMES.get(t.data_type, "UNKNOWN"), (*batch, *t.dims)) for t in tensors
        )

    inputs, outputs = shapes(list(config.input)), shapes(list(config.output))
    try:
        spec.check_output_dims({t.name: tuple(t.dims) for t in config.output})
    except ValueError as exc:
        raise NoSpec(f"{config.name}: its config does not fit its spec: {exc}") from None
    return ModelInfo(config.name, version, spec, config.max_batch_size, inputs, outputs)


@dataclass
class ModelCatalog:
    """What Triton serves now; refreshed by the gateway's health watcher."""

    configured_default: str | None = None
    models: dict[str, ModelInfo] = field(default_factory=dict)
    known_not_ready: dict[str, str] = field(default_factory=dict)
    """Models in Triton's repository that are not READY, with Triton's reason."""

    @property
    def default_model(self) -> str | None:
        if self.configured_default:
            return self.configured_default
        return min(self.models) if self.models else None

    async def refresh(self, backend: InferenceBackend) -> None:
        models: dict[str, ModelInfo] = {}
        not_ready: dict[str, str] = {}
        for entry in await backend.repository_index():
            if not entry.ready:
                not_ready[entry.name] = f"{entry.state or 'UNKNOWN'} {entry.reason}".strip()
                continue
            config = await backend.model_config(entry.name, entry.version)
            try:
                served = model_info_from_config(config, entry.version)
            except NoSpec as exc:
                log.warning("not serving %s", exc)
                continue
            current = models.get(entry.name)
            if current is None or _version_key(entry.version) > _version_key(current.version):
                models[entry.name] = served
        self.models = models
        self.known_not_ready = {n: r for n, r in not_ready.items() if n not in models}

    def clear(self) -> None:
        """Triton is gone: nothing is servable until it is back."""
        for name in self.models:
            self.known_not_ready[name] = "Triton is unavailable"
        self.models = {}

    def get(self, name: str | None) -> ModelInfo:
        resolved = name or self.default_model
        if resolved is None:
            raise ModelNotReady("no model is ready yet; wait until the gateway's health is SERVING")
        model = self.models.get(resolved)
        if model is not None:
            return model
        if resolved in self.known_not_ready:
            raise ModelNotReady(f"model {resolved!r} is not ready: {self.known_not_ready[resolved]}")
        served = ", ".join(sorted(self.models)) or "none"
        raise ModelNotFound(f"unknown model {shorten(resolved)}; served models: {served}")

    def is_ready(self) -> bool:
        default = self.default_model
        return default is not None and default in self.models


def _version_key(version: str) -> int:
    return int(version) if version.isdigit() else -1
