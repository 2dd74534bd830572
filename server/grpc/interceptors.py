"""Domain errors → gRPC status codes, in one table, plus per-RPC metrics.

Handlers raise `attnserve.errors` types and never touch status codes; `ErrorMapping` maps
them, counts every RPC by method/model/code and times it. An unexpected exception is logged
with its traceback and answered INTERNAL with a short message; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from attnserve.errors import (
    RETRY_PUSHBACK_TRAILER,
    AttnserveError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    SetupError,
    Unauthenticated,
    Unavailable,
    UpstreamError,
    describe,
    log_failure,
)

from ..gateway.metrics import GatewayMetrics
from ..gateway.security import ApiKeys

log = logging.getLogger(__name__)

_STATUS: dict[type[AttnserveError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    UpstreamError: grpc.StatusCode.INTERNAL,
    SetupError: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}


def status_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status of any exception: domain errors by type, anything else INTERNAL."""
    for error_type in type(error).__mro__:
        if error_type in _STATUS:
            return _STATUS[error_type]
    return grpc.StatusCode.INTERNAL


def retry_after_ms(error: BaseException) -> int | None:
    """A refusal's retry hint as it travels (ms): a call's trailer, a stream item's error."""
    return error.retry_after_ms if isinstance(error, Overloaded) else None


def retry_trailers(error: BaseException) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a refusal that carries a retry hint."""
    retry_ms = retry_after_ms(error)
    return () if retry_ms is None else ((RETRY_PUSHBACK_TRAILER, str(retry_ms)),)


ModelOf = Callable[[Any], str]
Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


class ErrorMapping:
    """Wraps each method of a service once, when the server is built: every call is counted,
    timed and tracked, and any exception becomes its status.

    Not a `grpc.aio.ServerInterceptor`: an interceptor runs per call, as coroutines that look the
    handler up and build a new one, 50–80 µs a call on the build machine, a quarter of what a
    refused call cost beyond grpc's own work (docs/overload.md); a method wrapped once costs
    nothing more per call.
    """

    def __init__(self, metrics: GatewayMetrics, model_of: ModelOf) -> None:
        self.metrics = metrics
        self.model_of = model_of

    def servicer(self, servicer: object, service: ServiceDescriptor) -> Any:
        """``servicer`` with each of ``service``'s methods wrapped, to register in its place."""
        methods: dict[str, Any] = {}
        for method in service.methods:
            behavior = getattr(servicer, method.name)
            streams = method.client_streaming or method.server_streaming
            methods[method.name] = (
                self.stream(behavior, method.name) if streams else self.unary(behavior, method.name)
            )
        return SimpleNamespace(**methods)

    def unary(self, behavior: Unary, method: str) -> Unary:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._rpc(method, self.model_of(request), context):
                return await behavior(request, context)

        return unary

    def stream(self, behavior: Stream, method: str) -> Stream:
        async def stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._rpc(method, "", context):
                async for response in behavior(request_iterator, context):
                    yield response

        return stream

    @contextlib.asynccontextmanager
    async def _rpc(self, method: str, model: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Counts, times and tracks one RPC; turns any exception into its status."""
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        code = grpc.StatusCode.OK
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            # The status is set, not raised with `context.abort`: an abort keeps the exception
            # (and through its traceback the call) in a reference cycle until the garbage
            # collector runs, and grpc-core counts a call against the connection's
            # max_concurrent_streams until it is freed (see `GrpcFront.start`).
            code = status_for(exc)
            log_failure(log, method, exc)
            context.set_code(code)
            context.set_details(describe(exc))
            if trailers := retry_trailers(exc):
                context.set_trailing_metadata(trailers)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels("grpc", method, model, code.name).inc()
            self.metrics.request_seconds.labels("grpc", method, model).observe(time.perf_counter() - started)


def _ignore_request(data: bytes) -> None:
    """The deserializer of a refused call: the request's bytes are never parsed."""
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid API key before their request is decoded; health is open.

    The refusal goes through ``errors`` (`ErrorMapping`), so it is counted and answered
    UNAUTHENTICATED like any other error.
    """

    OPEN = ("/grpc.health.v1.Health/",)

    def __init__(self, keys: ApiKeys, errors: ErrorMapping) -> None:
        self.keys = keys
        self.errors = errors

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self.OPEN):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        try:
            self.keys.check(lambda name: metadata.get(name))
        except Unauthenticated as refusal:
            method = handler_call_details.method.rsplit("/", 1)[-1]
            return self._refusing(handler, refusal, method)
        return handler

    def _refusing(
        self, handler: grpc.RpcMethodHandler, refusal: Unauthenticated, method: str
    ) -> grpc.RpcMethodHandler:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            raise refusal

        async def stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            raise refusal
            yield  # an async generator, as the stream handler it replaces

        serializer = handler.response_serializer
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self.errors.stream(stream, method),
                request_deserializer=_ignore_request,
                response_serializer=serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self.errors.unary(unary, method),
            request_deserializer=_ignore_request,
            response_serializer=serializer,
        )
