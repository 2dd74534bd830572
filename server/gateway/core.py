"""The gateway's core, the same for every front: models, readiness and predictions.

`GatewayCore` owns the inference backend (Triton), the catalog of served models and the
watcher that keeps it current, the pipeline and the metrics. A front (gRPC in
`attnserve.server.grpc`, HTTP beside it) decodes its wire format, calls these methods, encodes
the answers, and maps `attnserve.errors` to its own status codes — nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from attnserve.errors import SetupError
from attnserve.model_info import ListedModel, ModelInfo
from attnserve.prediction import Prediction, PredictionRequest
from attnserve.settings import Settings

from .backend import InferenceBackend, ModelControl
from .catalog import ModelCatalog
from .metrics import GatewayMetrics
from .pipeline import Pipeline
from .reloader import ModelReloader
from .triton import TritonBackend
from .watcher import Listener, ReadinessWatcher

log = logging.getLogger(__name__)


class GatewayCore:
    """Start with `start()` on the event loop that will serve (gRPC-aio objects belong to it)."""

    def __init__(
        self,
        settings: Settings,
        backend: InferenceBackend | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.catalog = ModelCatalog(configured_default=settings.gateway.default_model)
        self._backend = backend
        self._pipeline: Pipeline | None = None
        self._watcher: ReadinessWatcher | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []

    @property
    def pipeline(self) -> Pipeline:
        assert self._pipeline is not None, "the gateway core is not started"
        return self._pipeline

    @property
    def serving(self) -> bool:
        """Triton is ready and the default model is servable."""
        return bool(self._watcher is not None and self._watcher.serving)

    def add_listener(self, listener: Listener) -> None:
        """``listener(serving)`` is awaited whenever servability changes."""
        self._listeners.append(listener)
        if self._watcher is not None:
            self._watcher.add_listener(listener)

    async def start(self) -> None:
        """Connects to the backend, discovers the models once, then keeps watching."""
        if self._backend is None:
            self._backend = TritonBackend(self.settings.triton.grpc_target)
        gateway = self.settings.gateway
        self._pipeline = Pipeline(gateway, self.catalog, self._backend, self.metrics)
        self._watcher = ReadinessWatcher(self._backend, self.catalog, self.metrics, gateway.health_interval_s)
        for listener in self._listeners:
            self._watcher.add_listener(listener)
        await self._watcher.check()
        self._watch_task = asyncio.create_task(self._watcher.run(), name="readiness-watcher")

    def watch_repository(self, repository: Path, interval_s: float) -> ModelReloader:
        """Loads, reloads and unloads models as ``repository`` changes (`ModelReloader`), from
        now until `stop_watching`. The backend must load models on request (Triton started with
        explicit model control on this repository)."""
        backend = self._backend
        if not isinstance(backend, ModelControl):
            raise SetupError("watch_repository: the inference backend does not load models on request")
        reloader = ModelReloader(
            backend,
            self.catalog,
            self.pipeline.admission,
            self.metrics,
            repository,
            interval_s,
        )
        self._reload_task = asyncio.create_task(reloader.run(), name="repository-reloader")
        return reloader

    async def check(self) -> bool:
        """One readiness round now (the watcher runs them every interval)."""
        assert self._watcher is not None, "the gateway core is not started"
        return await self._watcher.check()

    async def stop_watching(self) -> None:
        """No more readiness rounds (a front draining must not be turned SERVING again), and no
        more model loads."""
        for task in (self._watch_task, self._reload_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watch_task = self._reload_task = None

    async def stop(self) -> None:
        await self.stop_watching()
        if self._backend is not None:
            await self._backend.close()
        if self._pipeline is not None:
            self._pipeline.close()

    async def predict(
        self,
        request: PredictionRequest,
        deadline_s: float | None = None,
        response_limit_bytes: int | None = None,
        queued_s: float | None = None,
    ) -> Prediction:
        return await self.pipeline.predict(request, deadline_s, response_limit_bytes, queued_s)

    def list_models(self) -> list[ListedModel]:
        """Every model Triton lists, ready or not (a not-ready one says why), by name."""
        return self.catalog.listing()

    def get_model(self, name: str | None) -> ModelInfo:
        """``None``: the default model."""
        return self.catalog.served(name)

    def metric_label(self, name: str | None) -> str:
        """A requested model as a metric label: the served name, or "unknown" for any other."""
        resolved = name or self.catalog.default_model or ""
        return resolved if resolved in self.catalog.models else "unknown"

    @property
    def default_model(self) -> str | None:
        return self.catalog.default_model
