"""The gRPC front: `attnserve.v1.AttentionService`, health and reflection on one `grpc.aio` server.

With `tls_cert_file` it listens with TLS only (mutual TLS with `tls_client_ca_file`); with
`api_keys_file` every call but health checks needs a key (`AuthInterceptor`).

Health (``grpc.health.v1``) starts NOT_SERVING and follows the core's readiness. The message
size limit is this front's own (`GatewaySettings.max_message_bytes`).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from attnserve.errors import SetupError
from attnserve.settings import GatewaySettings
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from ..gateway.core import GatewayCore
from ..gateway.security import OPEN, Security
from .interceptors import AuthInterceptor, ErrorMapping
from .servicer import AttentionService

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["AttentionService"]
SERVICE_NAME = SERVICE.full_name
REQUEST_OVERHEAD_BYTES = 4 * 2**20
MAX_CONCURRENT_STREAMS = 128
"""Per connection; the in-flight cap (`max_in_flight`) still bounds the work across all."""


class GrpcFront:
    def __init__(self, core: GatewayCore, settings: GatewaySettings, security: Security = OPEN) -> None:
        self.core = core
        self.settings = settings
        self.security = security
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None

    def _model_of(self, request: Any) -> str:
        """The model label of a request's metrics: a served model's name, else "unknown" (labels
        must not grow with what clients send)."""
        if isinstance(request, pb.PredictRequest):
            name = request.model
        elif isinstance(request, pb.GetModelRequest):
            name = request.name
        else:
            return ""
        return self.core.metric_label(name)

    async def start(self) -> int:
        """Binds ``host:port`` (0: a free port), starts serving; returns the port."""
        limit = self.settings.max_message_bytes
        errors = ErrorMapping(self.core.metrics, self._model_of)
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.security.keys is not None:
            interceptors.append(AuthInterceptor(self.security.keys, errors))
        # A request is an image (or a tensor) and a few options: gRPC refuses anything much larger
        # before parsing it, so oversized requests cost no memory (an image just over the limit
        # still gets the gateway's own clear message). Answers may be larger (UPSAMPLED maps).
        receive_limit = min(limit, self.settings.max_image_bytes + REQUEST_OVERHEAD_BYTES)
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", receive_limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
                ("grpc.so_reuseport", 0),
                # grpc-core's overload protection (on by default, kept): it counts a stream
                # against max_concurrent_streams until the Python call object is freed, not until
                # the stream closes. Off, an HTTP/2 rapid reset (CVE-2023-44487: HEADERS, DATA,
                # RST_STREAM, ~6,000 a second on one socket) took a well-behaved client from p50
                # 55 ms and no errors to p50 472 ms with 42 % CANCELLED. On, a burst of hundreds of
                # calls on one connection can outrun the event loop's freeing of calls, and
                # grpc-core refuses some streams (RST_STREAM REFUSED_STREAM → UNAVAILABLE): nothing
                # was processed: attnserve's clients keep below it (`clients.slots`) and send
                # those again (`clients.retry`).
                ("grpc.http.overload_protection", 1),
            ],
        )
        servicer = errors.servicer(AttentionService(self.core, limit), SERVICE)
        pb_grpc.add_AttentionServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self.core.add_listener(self.set_serving)
        await self.set_serving(self.core.serving)
        address = f"{self.settings.host}:{self.settings.port}"
        tls = self.security.tls
        try:
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                credentials = grpc.ssl_server_credentials(
                    [(tls.private_key, tls.certificate_chain)],
                    root_certificates=tls.client_ca,
                    require_client_auth=tls.client_ca is not None,
                )
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise SetupError(f"the gateway cannot listen on {address}: {exc}") from None
        if port == 0:
            raise SetupError(f"the gateway cannot listen on {address}: the port is in use")
        await server.start()
        self.server, self.port = server, port
        return port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, new RPCs refused, in-flight ones get ``grace_s`` to finish."""
        if self.server is not None:
            await self.set_serving(False)
            await self.server.stop(grace_s)
            self.server = None

    async def wait_for_termination(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()
