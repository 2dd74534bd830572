"""The models the gateway serves, discovered from Triton's model configs — no per-model constants.

A model is served when Triton reports it READY and its config carries an attnserve spec
(`attnserve.spec.SPEC_PARAMETER`). Models without a spec are logged and listed as not servable:
without a preprocessing spec there is no honest way to feed them an image.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field, replace

from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.errors import DeadlineExceeded, ModelNotFound, ModelNotReady, shorten
from attnserve.model_info import ListedModel, ModelInfo, ModelStatus, TensorInfo
from attnserve.spec import SPEC_PARAMETER, ModelSpec

from .backend import InferenceBackend, RepositoryModel

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


TRITON_UNAVAILABLE = "Triton is unavailable"


HOUSE_DEFAULT_MODEL = "cbam"
"""The model a request naming none gets when no default is configured and the repository serves
it (this repository's default model); otherwise the first model by name."""


@dataclass
class ModelCatalog:
    """What Triton serves now, and what it lists but cannot serve; refreshed by the gateway's
    health watcher.

    A model that stops being servable keeps its last description (``ready=False`` and a
    reason), so the listing can still say what it is; one never described is a `ModelStatus`.
    """

    configured_default: str | None = None
    models: dict[str, ModelInfo] = field(default_factory=dict)
    """The servable models."""
    not_ready: dict[str, ListedModel] = field(default_factory=dict)
    """Models Triton lists that are not READY (or Triton is gone), each with its reason."""
    unsupported: dict[str, ModelStatus] = field(default_factory=dict)
    """READY models whose config carries no valid attnserve spec: listed, never served."""
    paused: dict[str, asyncio.Event] = field(default_factory=dict)
    """Models being replaced by a release with another interface: calls wait for the new one
    (`wait_resumed`), so that no answer mixes one release's spec with the other's graph."""
    release_errors: dict[str, str] = field(default_factory=dict)
    """Models whose last release in the repository could not be loaded, each with why (callers'
    form), while the release before keeps serving (`note_release`)."""

    @property
    def default_model(self) -> str | None:
        if self.configured_default:
            return self.configured_default
        # while none is servable (Triton gone), the one that will be, so a call can say why not
        candidates = self.models or self.not_ready
        if HOUSE_DEFAULT_MODEL in candidates:
            return HOUSE_DEFAULT_MODEL
        return min(candidates) if candidates else None

    async def refresh(self, backend: InferenceBackend) -> None:
        models: dict[str, ModelInfo] = {}
        unsupported: dict[str, ModelStatus] = {}
        failed: dict[str, RepositoryModel] = {}
        for entry in await backend.repository_index():
            if not entry.ready:
                if _newer(entry.version, failed.get(entry.name)):
                    failed[entry.name] = entry
                continue
            config = await backend.model_config(entry.name, entry.version)
            try:
                served = model_info_from_config(config, entry.version)
            except NoSpec as exc:
                log.warning("not serving %s", exc)
                reason = str(exc).removeprefix(f"{entry.name}: ").splitlines()[0]
                unsupported[entry.name] = ModelStatus(entry.name, entry.version, f"not servable: {reason}")
                continue
            if _newer(entry.version, models.get(entry.name)):
                models[entry.name] = served
        not_ready = {
            name: self._not_ready(entry.name, entry.version, _state_reason(entry))
            for name, entry in failed.items()
            if name not in models
        }
        self.models = models
        self.not_ready = not_ready
        self.unsupported = {n: m for n, m in unsupported.items() if n not in models and n not in not_ready}

    def pause(self, name: str) -> None:
        """New calls on ``name`` wait (within their deadline) until `resume`."""
        self.paused.setdefault(name, asyncio.Event())

    def resume(self, name: str) -> None:
        event = self.paused.pop(name, None)
        if event is not None:
            event.set()

    def paused_as(self, name: str | None) -> str | None:
        """The model a call on ``name`` (None: the default) is for, when that model is paused;
        None when it is not."""
        resolved = name or self.default_model
        return resolved if resolved is not None and resolved in self.paused else None

    async def wait_resumed(self, name: str | None, timeout_s: float, deadline_bound: bool) -> None:
        """Returns at once unless ``name`` is paused; then when it resumes, or raises after
        ``timeout_s`` (`DeadlineExceeded` when the caller's deadline set it, else
        `ModelNotReady`: retry)."""
        resolved = self.paused_as(name)
        if resolved is None:
            return
        try:
            await asyncio.wait_for(self.paused[resolved].wait(), timeout_s)
        except TimeoutError:
            what = f"model {resolved!r} is being replaced by a new release"
            if deadline_bound:
                raise DeadlineExceeded(f"{what}, and the deadline passed while the call waited") from None
            raise ModelNotReady(f"{what}; retry in a few seconds") from None

    def drop(self, name: str) -> None:
        """``name`` left the repository: calls on it are NOT_FOUND from now on."""
        self.models.pop(name, None)
        self.not_ready.pop(name, None)
        self.unsupported.pop(name, None)

    def clear(self) -> None:
        """Triton is gone: nothing is servable until it is back; what was known stays listed."""
        known = [*self.models.values(), *self.not_ready.values(), *self.unsupported.values()]
        self.not_ready = {m.name: self._not_ready(m.name, m.version, TRITON_UNAVAILABLE) for m in known}
        self.models, self.unsupported = {}, {}

    def _not_ready(self, name: str, version: str, reason: str) -> ListedModel:
        """A not-ready entry: the model's last description when there is one."""
        last = self.models.get(name) or self.not_ready.get(name)
        if isinstance(last, ModelInfo):
            return replace(last, ready=False, reason=reason)
        return ModelStatus(name, version, reason)

    def note_release(self, name: str, error: str) -> None:
        """The outcome of putting ``name``'s release from the repository into service: why it
        failed (`for_callers` is applied), or "" when it went in (or the model left)."""
        if error:
            self.release_errors[name] = for_callers(error)
        else:
            self.release_errors.pop(name, None)

    def listing(self) -> list[ListedModel]:
        """Every model Triton lists (or listed before it went away), by name, ready or not."""
        every: dict[str, ListedModel] = {**self.unsupported, **self.not_ready, **self.models}
        return [self._noted(every[name]) for name in sorted(every)]

    def describe(self, name: str | None) -> ListedModel:
        """A model's description, ready or not (``None``: the default model)."""
        resolved = self._resolve(name)
        known = self.models.get(resolved) or self.not_ready.get(resolved) or self.unsupported.get(resolved)
        if known is None:
            raise self._not_found(resolved)
        return self._noted(known)

    def _noted(self, model: ListedModel) -> ListedModel:
        return self._with_release_error(model) if isinstance(model, ModelInfo) else model

    def _with_release_error(self, model: ModelInfo) -> ModelInfo:
        error = self.release_errors.get(model.name)
        return replace(model, release_error=error) if error else model

    def served(self, name: str | None) -> ModelInfo:
        """A servable model as it is described to callers: with why its last release did not go
        into service, if it did not (`get` is what predictions use)."""
        return self._with_release_error(self.get(name))

    def get(self, name: str | None) -> ModelInfo:
        """A servable model; `ModelNotReady` (with the reason) or `ModelNotFound` otherwise."""
        resolved = self._resolve(name)
        model = self.models.get(resolved)
        if model is not None:
            return model
        if resolved in self.not_ready:
            raise ModelNotReady(f"model {resolved!r} is not ready: {self.not_ready[resolved].reason}")
        raise self._not_found(resolved)

    def _resolve(self, name: str | None) -> str:
        resolved = name or self.default_model
        if resolved is None:
            raise ModelNotReady("no model is ready yet; wait until the gateway's health is SERVING")
        return resolved

    def _not_found(self, name: str) -> ModelNotFound:
        served = ", ".join(sorted(self.models)) or "none"
        if name in self.unsupported:
            return ModelNotFound(
                f"model {name!r} is {self.unsupported[name].reason}; served models: {served}"
            )
        return ModelNotFound(f"unknown model {shorten(name)}; served models: {served}")

    def is_ready(self) -> bool:
        default = self.default_model
        return default is not None and default in self.models


_SERVER_PATH = re.compile(r"(?:/[^\s/:'\"()]+)+/([^\s/:'\"()]+)")


def for_callers(text: str) -> str:
    """Triton's text fit for callers: its first line only (a backend that fails to load appends
    its Python traceback) and files on the server by name only (the repository's location is
    nobody's business; Triton's log has it)."""
    lines = text.strip().splitlines()
    return _SERVER_PATH.sub(r"\1", lines[0].strip()) if lines else ""


def _state_reason(entry: RepositoryModel) -> str:
    """Triton's state and reason, as "UNAVAILABLE: load failed ...", fit for callers."""
    state = entry.state or "UNKNOWN"
    reason = for_callers(entry.reason)
    return f"{state}: {reason}" if reason else state


def _newer(version: str, than: RepositoryModel | ModelInfo | None) -> bool:
    """``version`` is the one to keep over ``than`` (none yet, or an older version)."""
    return than is None or _version_key(version) > _version_key(than.version)


def _version_key(version: str) -> int:
    return int(version) if version.isdigit() else -1
