"""Keeps the model catalog true to Triton's state and says when the gateway can serve.

Each round asks Triton whether it is ready; when it (re)appears the models are rediscovered,
when it goes away the catalog is emptied. Servable means: Triton is ready and the default model
is in the catalog. Listeners (the fronts' health endpoints) hear every change.

A Triton that is gone refuses the probe at once, and one such round empties the catalog. A probe
that goes unanswered for `UNANSWERED_S` is different: the gateway's own event loop may be late
under a flood of calls, or Triton busy, while both are fine. So while serving, one unanswered
round changes nothing and the next decides; otherwise a flood would turn every call away as
"Triton is unavailable" for a round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from attnserve.errors import AttnserveError

from .backend import InferenceBackend
from .catalog import ModelCatalog
from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

Listener = Callable[[bool], Awaitable[None]]

UNANSWERED_S = 1.0
"""A readiness probe that fails after this long went unanswered (the backend's own timeout is
2 s); a refused connection or a Triton that says "not ready" answers in milliseconds."""


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
        self._unanswered = False
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def check(self) -> bool:
        """One round: Triton ready? models rediscovered when it (re)appears. Returns servability."""
        started = time.monotonic()
        ready = await self.backend.is_ready()
        unanswered = not ready and time.monotonic() - started >= UNANSWERED_S
        if unanswered and self.serving and not self._unanswered:
            self._unanswered = True
            log.warning("Triton did not answer a readiness probe in %.1f s: next round decides", UNANSWERED_S)
            return True
        self._unanswered = False
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
