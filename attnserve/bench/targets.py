"""What a load run sends: one prepared prediction, over gRPC or HTTP, as cheaply as a client can.

The load generator shares the machine with the server more often than not, so the request is
serialised once and answers are not decoded: gRPC calls carry raw bytes (the answer's length is
its size), HTTP posts the same JSON as `HttpClient` and reads the body. Outcomes are codes, not
exceptions: `OK`, a gRPC status name (``RESOURCE_EXHAUSTED``, ...) or an HTTP status
(``HTTP 429``, ...), and ``TRANSPORT`` for a connection that failed below either.
"""

from __future__ import annotations

import itertools
import json
from typing import Protocol

import grpc
import grpc.aio
import httpx

from attnserve import codec
from attnserve.clients._common import NO_CREDENTIALS, Credentials
from attnserve.v1 import attnserve_pb2 as pb

from .stats import OK

PREDICT_METHOD = "/attnserve.v1.AttentionService/Predict"
TRANSPORT = "TRANSPORT"


class Target(Protocol):
    name: str

    async def send(self) -> tuple[str, int]: ...

    async def close(self) -> None: ...


class GrpcTarget:
    """``Predict`` over ``connections`` HTTP/2 connections, used in turn."""

    name = "grpc"

    def __init__(
        self,
        address: str,
        request: pb.PredictRequest,
        *,
        credentials: Credentials = NO_CREDENTIALS,
        connections: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        # a subchannel pool of its own per channel: one TCP connection each
        separate = [("grpc.use_local_subchannel_pool", 1)]
        self._channels: list[grpc.aio.Channel] = [
            credentials.channel(grpc.aio, address, separate) for _ in range(connections)
        ]
        self._calls = itertools.cycle(
            [
                channel.unary_unary(PREDICT_METHOD, request_serializer=None, response_deserializer=None)
                for channel in self._channels
            ]
        )
        self._payload = request.SerializeToString()
        self._metadata = credentials.metadata()
        self._timeout_s = timeout_s

    async def send(self) -> tuple[str, int]:
        try:
            answer: bytes = await next(self._calls)(
                self._payload, timeout=self._timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name, 0
        return OK, len(answer)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class HttpTarget:
    """``POST /v1/models/{model}:predict`` (or ``/v1/predict``) with the request's JSON mapping,
    over a pool of at most ``connections`` keep-alive connections."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        request: pb.PredictRequest,
        *,
        credentials: Credentials = NO_CREDENTIALS,
        connections: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        from attnserve.clients.http import _transport_options

        self._path = f"/v1/models/{request.model}:predict" if request.model else "/v1/predict"
        self._body = json.dumps(codec.message_to_json(request)).encode()
        options = _transport_options(credentials)
        headers = {
            **options.pop("headers", {}),
            "content-type": "application/json",
            "x-request-timeout": str(timeout_s),
        }
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=headers, limits=limits, timeout=timeout_s, **options
        )

    async def send(self) -> tuple[str, int]:
        try:
            response = await self._client.post(self._path, content=self._body)
        except httpx.HTTPError:
            return TRANSPORT, 0
        if response.status_code != 200:
            return f"HTTP {response.status_code}", 0
        return OK, len(response.content)

    async def close(self) -> None:
        await self._client.aclose()
