"""The gateway process: a `grpc.aio` server with the attention service, health and reflection.

Health (``grpc.health.v1``) starts NOT_SERVING and turns SERVING only when Triton is ready
and the default model is servable; a watcher keeps it true to Triton's state, rediscovering
the models whenever Triton comes back. Stopping is graceful: health goes NOT_SERVING, new RPCs
are refused, in-flight ones get ``grace_s`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from attnserve.errors import AttnserveError, SetupError
from attnserve.settings import Settings
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .catalog import ModelCatalog
from .interceptors import ErrorInterceptor
from .metrics import GatewayMetrics
from .pipeline import Pipeline
from .service import AttentionService
from .triton_client import TritonClient

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AttentionService"].full_name


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.catalog = ModelCatalog(configured_default=settings.gateway.default_model)
        # grpc.aio objects belong to the event loop they are made on: built in start().
        self._triton: TritonClient | None = None
        self._pipeline: Pipeline | None = None
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self._watcher: asyncio.Task[None] | None = None
        self._serving: bool | None = None

    @property
    def triton(self) -> TritonClient:
        assert self._triton is not None, "the gateway is not started"
        return self._triton

    def _model_of(self, request: Any) -> str:
        if isinstance(request, pb.PredictRequest):
            return request.model or self.catalog.default_model or ""
        if isinstance(request, pb.GetModelRequest):
            return request.name or self.catalog.default_model or ""
        return ""

    async def start(self) -> None:
        gateway = self.settings.gateway
        self._triton = TritonClient(self.settings.triton.grpc_target)
        self._pipeline = Pipeline(gateway, self.catalog, self._triton, self.metrics)
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor(self.metrics, self._model_of)],
            options=[
                ("grpc.max_receive_message_length", gateway.max_message_bytes),
                ("grpc.max_send_message_length", gateway.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_AttentionServiceServicer_to_server(AttentionService(self._pipeline, self.catalog), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        await self._set_serving(False)
        address = f"{gateway.host}:{gateway.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SetupError(f"the gateway cannot listen on {address}: {exc}") from None
        if self.port == 0:
            raise SetupError(f"the gateway cannot listen on {address}: the port is in use")
        if gateway.metrics_port:
            try:
                self._metrics_server, _ = start_http_server(
                    gateway.metrics_port, addr=gateway.host, registry=self.metrics.registry
                )
            except OSError as exc:
                raise SetupError(
                    f"the metrics port {gateway.metrics_port} is not available: {exc.strerror}"
                ) from None
            self.metrics_port = self._metrics_server.server_port
        await server.start()
        self.server = server
        await self.check_triton()
        self._watcher = asyncio.create_task(self._watch_triton(), name="triton-watcher")
        log.info(
            "gateway on %s:%d (metrics :%s), Triton at %s",
            gateway.host,
            self.port,
            self.metrics_port,
            self.settings.triton.grpc_target,
        )

    async def _set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)
        log.info("health: %s", "SERVING" if serving else "NOT_SERVING")

    async def check_triton(self) -> None:
        """One health round: Triton ready? models rediscovered when it (re)appears."""
        ready = await self.triton.is_ready()
        self.metrics.triton_ready.set(1 if ready else 0)
        if not ready:
            self.catalog.clear()
        elif not self._serving or not self.catalog.models:
            try:
                await self.catalog.refresh(self.triton)
            except AttnserveError as exc:
                log.warning("model discovery failed: %s", exc)
                self.catalog.clear()
        self.metrics.models_ready.set(len(self.catalog.models))
        await self._set_serving(ready and self.catalog.is_ready())

    async def _watch_triton(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway.health_interval_s)
            try:
                await self.check_triton()
            except Exception:  # the watcher must outlive any single failed round
                log.exception("health check round failed")

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.settings.gateway.grace_s if grace_s is None else grace_s
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.server is not None:
            await self._set_serving(False)
            await self.server.stop(grace)
            self.server = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        if self._triton is not None:
            await self._triton.close()
        if self._pipeline is not None:
            self._pipeline.close()

    async def wait_for_termination(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()
