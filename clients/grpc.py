"""gRPC clients of the attnserve gateway: `Client` (blocking) and `AsyncClient` (asyncio).

Both have the same methods, and so will the HTTP clients: ``predict``, ``predict_stream``,
``list_models``, ``get_model``, ``health``, ``wait_until_serving``, ``close``. Failures raise
`attnserve.errors` types (``InvalidInput``, ``ModelNotFound``, ``Unavailable``, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attnserve.codec import prediction_from_proto
from attnserve.errors import AttnserveError, Unavailable
from attnserve.prediction import Prediction
from attnserve.queueing import encodable_timeout, timeout_metadata
from attnserve.settings import DEFAULT_GATEWAY_ADDRESS
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from ._common import (
    NO_CREDENTIALS,
    Credentials,
    ImageLike,
    PredictOptions,
    SentItems,
    build_request,
    error_from_rpc,
    stream_requests,
)
from .retry import (
    OVERLOAD_RETRIES,
    OverloadRetry,
    call_with_retry,
    call_with_retry_async,
    resend_refused,
    resend_refused_async,
)
from .slots import DEFAULT_MAX_CONCURRENT_CALLS, AsyncCallSlots, CallSlots

_STATUS_NAMES = {v: k for k, v in health_pb2.HealthCheckResponse.ServingStatus.items()}


def sent_with(metadata: tuple[tuple[str, str], ...] | None, timeout_s: float | None) -> dict[str, Any]:
    """A call's timeout and metadata, the timeout stated in it, so that the gateway can tell how
    long the call waited before it was taken up (`attnserve.queueing`)."""
    if timeout_s is None:
        return {"timeout": None, "metadata": metadata}
    timeout_s = encodable_timeout(timeout_s)
    return {"timeout": timeout_s, "metadata": (*(metadata or ()), *timeout_metadata(timeout_s))}


class Client:
    """Blocking client. ``with Client("127.0.0.1:8500") as client: client.predict("digit.png")``.

    At most ``max_concurrent_calls`` predictions are in flight at once on its connection; more
    wait for a slot within their deadline (`slots`), so that a burst is not refused by the
    gateway's transport. A prediction the gateway refused as overloaded is sent again after the
    pause the gateway asked for, up to ``overload_retries`` times within its deadline, and less
    under a sustained overload (`retry.OverloadRetry`). Share one client between threads.
    """

    def __init__(
        self,
        address: str = DEFAULT_GATEWAY_ADDRESS,
        timeout_s: float | None = 30.0,
        credentials: Credentials = NO_CREDENTIALS,
        max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
        overload_retries: int = OVERLOAD_RETRIES,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.overload = OverloadRetry(overload_retries)
        self._slots = CallSlots(max_concurrent_calls)
        self._metadata = credentials.metadata()
        self._channel: grpc.Channel = credentials.channel(grpc, address)
        self._stub = pb_grpc.AttentionServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def predict(self, image: ImageLike, **options: Unpack[PredictOptions]) -> Prediction:
        """One image (bytes, a path or a float32 tensor) → classes and attention (see `PredictOptions`).
        A call the gateway's transport refused before seeing it, or its admission refused with a
        retry hint, is sent again (`retry`)."""
        request = build_request(image, **options)
        try:
            with self._slots.held(self.timeout_s) as timeout_s:
                answer = call_with_retry(
                    self._sending(request),
                    timeout_s,
                    self.overload,
                )
            return prediction_from_proto(answer)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    def _sending(self, request: pb.PredictRequest) -> Callable[[float | None], pb.PredictResponse]:
        """Sends ``request`` with a timeout, stated in its metadata (`sent_with`)."""
        return lambda timeout: self._stub.Predict(request, **sent_with(self._metadata, timeout))

    def predict_stream(
        self, images: Iterable[ImageLike], **options: Unpack[PredictOptions]
    ) -> Iterator[Prediction | AttnserveError]:
        """One result per image, in order, on one connection; a failed image yields its error.
        An image the gateway's admission refused with a retry hint is sent again on its own, as
        `predict` sends a refused call again, before the stream's next result."""
        sent = SentItems()
        try:
            for item in self._stub.PredictStream(
                sent.recording(stream_requests(images, **options)), timeout=None, metadata=self._metadata
            ):
                result, request, hint_s = sent.settle(item, self.overload)
                yield result if request is None else self._resend(request, hint_s, result)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    def _resend(
        self, request: pb.PredictRequest, hint_s: float | None, refused: Prediction | AttnserveError
    ) -> Prediction | AttnserveError:
        """A stream's item refused with a retry hint, sent again on its own (`resend_refused`)."""
        try:
            with self._slots.held(self.timeout_s) as timeout_s:
                answer = resend_refused(self._sending(request), hint_s, timeout_s, self.overload)
        except grpc.RpcError as exc:
            return error_from_rpc(exc, self.address)
        return refused if answer is None else prediction_from_proto(answer)

    def list_models(self) -> pb.ListModelsResponse:
        try:
            response: pb.ListModelsResponse = self._stub.ListModels(
                pb.ListModelsRequest(), timeout=self.timeout_s, metadata=self._metadata
            )
            return response
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    def get_model(self, name: str = "") -> pb.ModelInfo:
        try:
            info: pb.ModelInfo = self._stub.GetModel(
                pb.GetModelRequest(name=name), timeout=self.timeout_s, metadata=self._metadata
            )
            return info
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, ... or UNREACHABLE."""
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5.0)
        except grpc.RpcError:
            return "UNREACHABLE"
        return str(_STATUS_NAMES[response.status])

    def wait_until_serving(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        deadline = time.monotonic() + timeout_s
        status = self.health()
        while status != "SERVING":
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"the gateway at {self.address} is not SERVING after {timeout_s:.0f} s ({status})"
                )
            time.sleep(poll_s)
            status = self.health()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """asyncio client with the same methods as `Client`, as coroutines / async iterators, the
    same cap on predictions in flight and the same retries."""

    def __init__(
        self,
        address: str = DEFAULT_GATEWAY_ADDRESS,
        timeout_s: float | None = 30.0,
        credentials: Credentials = NO_CREDENTIALS,
        max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
        overload_retries: int = OVERLOAD_RETRIES,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.overload = OverloadRetry(overload_retries)
        self._slots = AsyncCallSlots(max_concurrent_calls)
        self._metadata = credentials.metadata()
        self._channel: grpc.aio.Channel = credentials.channel(grpc.aio, address)
        self._stub = pb_grpc.AttentionServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def predict(self, image: ImageLike, **options: Unpack[PredictOptions]) -> Prediction:
        request = build_request(image, **options)
        try:
            async with self._slots.held(self.timeout_s) as timeout_s:
                answer = await call_with_retry_async(
                    self._sending(request),
                    timeout_s,
                    self.overload,
                )
            return prediction_from_proto(answer)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    def _sending(self, request: pb.PredictRequest) -> Callable[[float | None], Awaitable[pb.PredictResponse]]:
        """Sends ``request`` with a timeout, stated in its metadata (`sent_with`)."""
        return lambda timeout: self._stub.Predict(request, **sent_with(self._metadata, timeout))

    async def predict_stream(
        self, images: Iterable[ImageLike], **options: Unpack[PredictOptions]
    ) -> AsyncIterator[Prediction | AttnserveError]:
        sent = SentItems()
        try:
            async for item in self._stub.PredictStream(
                sent.recording(stream_requests(images, **options)), metadata=self._metadata
            ):
                result, request, hint_s = sent.settle(item, self.overload)
                yield result if request is None else await self._resend(request, hint_s, result)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    async def _resend(
        self, request: pb.PredictRequest, hint_s: float | None, refused: Prediction | AttnserveError
    ) -> Prediction | AttnserveError:
        try:
            async with self._slots.held(self.timeout_s) as timeout_s:
                answer = await resend_refused_async(self._sending(request), hint_s, timeout_s, self.overload)
        except grpc.RpcError as exc:
            return error_from_rpc(exc, self.address)
        return refused if answer is None else prediction_from_proto(answer)

    async def list_models(self) -> pb.ListModelsResponse:
        try:
            response: pb.ListModelsResponse = await self._stub.ListModels(
                pb.ListModelsRequest(), timeout=self.timeout_s, metadata=self._metadata
            )
            return response
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    async def get_model(self, name: str = "") -> pb.ModelInfo:
        try:
            info: pb.ModelInfo = await self._stub.GetModel(
                pb.GetModelRequest(name=name), timeout=self.timeout_s, metadata=self._metadata
            )
            return info
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.address) from None

    async def health(self, service: str = "") -> str:
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5.0)
        except grpc.RpcError:
            return "UNREACHABLE"
        return str(_STATUS_NAMES[response.status])

    async def wait_until_serving(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        deadline = time.monotonic() + timeout_s
        status = await self.health()
        while status != "SERVING":
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"the gateway at {self.address} is not SERVING after {timeout_s:.0f} s ({status})"
                )
            await asyncio.sleep(poll_s)
            status = await self.health()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
