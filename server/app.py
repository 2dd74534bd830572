"""The gateway process: the transport-neutral core, its fronts, and the Prometheus endpoint.

Start order: the gRPC front binds its port (health NOT_SERVING), the HTTP front (API, web page,
/metrics too) and the metrics endpoint start, then the core connects to Triton, discovers the
models and keeps watching — health turns SERVING only when Triton is ready and the default
model is servable. Stopping is graceful: health goes NOT_SERVING, new RPCs and connections are
refused, in-flight requests of both fronts get ``grace_s`` to finish.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import start_http_server

from attnserve.errors import SetupError
from attnserve.settings import SAMPLES_DIR, Settings

from .gateway.backend import InferenceBackend
from .gateway.core import GatewayCore
from .gateway.security import Security
from .grpc import GrpcFront
from .http import HttpFront

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: Settings, backend: InferenceBackend | None = None) -> None:
        self.settings = settings
        self.core = GatewayCore(settings, backend)
        security = Security.load(settings.gateway)
        self.grpc = GrpcFront(self.core, settings.gateway, security)
        self.http = (
            HttpFront(self.core, settings.gateway, SAMPLES_DIR, security) if settings.gateway.http else None
        )
        self.metrics_port: int | None = None
        self._metrics_server: Any = None

    @property
    def port(self) -> int | None:
        """The gRPC port, once started."""
        return self.grpc.port

    @property
    def http_port(self) -> int | None:
        """The HTTP port, once started (None: HTTP is off)."""
        return None if self.http is None else self.http.port

    async def start(self) -> None:
        gateway = self.settings.gateway
        await self.grpc.start()
        if self.http is not None:
            try:
                await self.http.start(gateway.grace_s)
            except SetupError:
                await self.grpc.stop(0)
                raise
        if gateway.metrics_port:
            try:
                self._metrics_server, _ = start_http_server(
                    gateway.metrics_port, addr=gateway.host, registry=self.core.metrics.registry
                )
            except OSError as exc:
                await self.grpc.stop(0)
                if self.http is not None:
                    await self.http.stop()
                raise SetupError(
                    f"the metrics port {gateway.metrics_port} is not available: {exc.strerror}"
                ) from None
            self.metrics_port = self._metrics_server.server_port
        await self.core.start()
        log.info(
            "gateway on %s: gRPC :%d, HTTP :%s, metrics :%s; Triton at %s",
            gateway.host,
            self.port,
            self.http_port,
            self.metrics_port,
            self.settings.triton.grpc_target,
        )

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.settings.gateway.grace_s if grace_s is None else grace_s
        await self.core.stop_watching()
        if self.http is None:
            await self.grpc.stop(grace)
        else:
            await asyncio.gather(self.grpc.stop(grace), self.http.stop())
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        await self.core.stop()

    async def wait_for_termination(self) -> None:
        await self.grpc.wait_for_termination()
