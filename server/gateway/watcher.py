"""Keeps the model catalog true to Triton's state and says when the gateway can serve.

Each round asks Triton whether it is ready; when it (re)appears the models are rediscovered,
when it goes away the catalog is emptied. Servable means: Triton is ready and the default model
is in the catalog. Listeners (the fronts' health endpoints) hear every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from attnserve.errors import AttnserveError

from .backend import InferenceBackend
from .catalog import ModelCatalog
from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

Listener = Callable[[bool], Awaitable[None]]


class ReadinessWatcher:
    def __init__(
        self,
        backend: InferenceBackend,
        catalog: ModelCatalog,
        metrics: GatewayMetrics,
        interval_s: float,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.metrics = metrics
        self.interval_s = interval_s
        self.serving: bool | None = None
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def check(self) -> bool:
        """One round: Triton ready? models rediscovered when it (re)appears. Returns servability."""
        ready = await self.backend.is_ready()
        self.metrics.triton_ready.set(1 if ready else 0)
        if not ready:
            self.catalog.clear()
        elif not self.serving or not self.catalog.models:
            try:
                await self.catalog.refresh(self.backend)
            except AttnserveError as exc:
                log.warning("model discovery failed: %s", exc)
                self.catalog.clear()
        self.metrics.models_ready.set(len(self.catalog.models))
        await self._set_serving(ready and self.catalog.is_ready())
        return bool(self.serving)

    async def _set_serving(self, serving: bool) -> None:
        if serving == self.serving:
            return
        self.serving = serving
        log.info("health: %s", "SERVING" if serving else "NOT_SERVING")
        for listener in self._listeners:
            await listener(serving)

    async def run(self) -> None:
        """Rounds every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # the watcher must outlive any single failed round
                log.exception("health check round failed")
