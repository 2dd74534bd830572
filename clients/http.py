"""HTTP clients of the attnserve gateway: `HttpClient` (blocking) and `AsyncHttpClient` (asyncio).

The same methods as the gRPC clients (`attnserve.clients.grpc`), the same answers (domain
`Prediction`, and the proto `ListModelsResponse` / `ModelInfo`), the same errors. Requests are
the proto messages' JSON mapping (the image base64), so tensors go over HTTP too. A prediction
refused by the gateway's admission (429) is sent again after its hint (``Retry-After-Ms``, else
``Retry-After``) as the gRPC clients do (`retry.OverloadRetry`).
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any, Unpack

import httpx

from attnserve import codec
from attnserve.errors import (
    RETRY_AFTER_MS_HEADER,
    AttnserveError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMedia,
    UpstreamError,
)
from attnserve.prediction import Prediction
from attnserve.v1 import attnserve_pb2 as pb

from ._common import NO_CREDENTIALS, Credentials, ImageLike, PredictOptions, build_request, stream_requests
from .retry import OVERLOAD_RETRIES, Attempts, OverloadRetry

_ERRORS: dict[int, type[AttnserveError]] = {
    400: InvalidInput,
    404: ModelNotFound,
    413: TooLarge,
    415: UnsupportedMedia,
    401: Unauthenticated,
    429: Overloaded,
    503: Unavailable,
    504: DeadlineExceeded,
}


def error_from_response(response: httpx.Response) -> AttnserveError:
    try:
        message = str(response.json()["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    return _ERRORS.get(response.status_code, UpstreamError)(f"{response.status_code}: {message}")


def _unreachable(base_url: str, exc: httpx.HTTPError) -> AttnserveError:
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"no answer from {base_url} in time ({type(exc).__name__})")
    return Unavailable(f"cannot reach the attnserve gateway at {base_url} (is `attnserve serve` running?)")


def _transport_options(credentials: Credentials) -> dict[str, Any]:
    """httpx options: the key as a header, the CA to verify https:// with, a client certificate."""
    options: dict[str, Any] = {}
    if credentials.api_key is not None:
        options["headers"] = {"authorization": f"Bearer {credentials.api_key}"}
    if credentials.uses_tls:
        context = ssl.create_default_context(
            cafile=None if credentials.tls_ca is None else str(credentials.tls_ca)
        )
        if credentials.tls_cert is not None:
            context.load_cert_chain(
                str(credentials.tls_cert), None if credentials.tls_key is None else str(credentials.tls_key)
            )
        options["verify"] = context
    return options


def _not_serving(address: str, timeout_s: float, status: str) -> Unavailable:
    return Unavailable(f"the gateway at {address} is not SERVING after {timeout_s:.0f} s ({status})")


def _predict_call(message: pb.PredictRequest, timeout_s: float | None) -> tuple[str, dict[str, Any]]:
    """The path and request options of one prediction: the JSON mapping, the deadline header."""
    path = f"/v1/models/{message.model}:predict" if message.model else "/v1/predict"
    headers = {} if timeout_s is None else {"X-Request-Timeout": str(timeout_s)}
    return path, {"json": codec.message_to_json(message), "headers": headers}


def retry_hint_s(response: httpx.Response) -> float | None:
    """The gateway's retry hint on a 429 (s): ``Retry-After-Ms``, else ``Retry-After`` in
    seconds; None: not a refusal to send again."""
    if response.status_code != 429:
        return None
    for header, scale in ((RETRY_AFTER_MS_HEADER, 1e-3), ("Retry-After", 1.0)):
        try:
            hint = float(response.headers[header]) * scale
        except (KeyError, ValueError):  # absent, or Retry-After as an HTTP date
            continue
        return hint if math.isfinite(hint) and hint >= 0 else None
    return None


def _timeout(left_s: float | None) -> dict[str, Any]:
    """A retry's httpx timeout: what is left of the call's deadline (the client's own otherwise)."""
    return {} if left_s is None else {"timeout": max(left_s, 0.001)}


def _json(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise error_from_response(response)
    return response.json()


class HttpClient:
    """Blocking client. ``with HttpClient("http://127.0.0.1:8501") as client: client.predict(...)``."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float | None = 30.0,
        credentials: Credentials = NO_CREDENTIALS,
        overload_retries: int = OVERLOAD_RETRIES,
    ) -> None:
        self.address = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.overload = OverloadRetry(overload_retries)
        self._http = httpx.Client(base_url=self.address, timeout=timeout_s, **_transport_options(credentials))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self.address, exc) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _json(self._send(method, path, **kwargs))

    def _predict(self, message: pb.PredictRequest) -> Prediction:
        attempts = Attempts(self.timeout_s, self.overload)
        while True:
            left = attempts.remaining()
            path, options = _predict_call(message, left)
            response = self._send("POST", path, **options, **_timeout(left))
            pause = attempts.pause_after_refusal(retry_hint_s(response))
            if pause is None:
                break
            time.sleep(pause)
        if response.status_code == 200:
            attempts.answered()
        return codec.prediction_from_json(_json(response))

    def predict(self, image: ImageLike, **options: Unpack[PredictOptions]) -> Prediction:
        """One image (bytes, a path or a float32 tensor) → classes and attention (see `PredictOptions`)."""
        return self._predict(build_request(image, **options))

    def predict_stream(
        self, images: Iterable[ImageLike], **options: Unpack[PredictOptions]
    ) -> Iterator[Prediction | AttnserveError]:
        """One result per image, in order, on one connection; a failed image yields its error."""
        for message in stream_requests(images, **options):
            try:
                yield self._predict(message)
            except (Unavailable, DeadlineExceeded):
                raise
            except AttnserveError as exc:
                yield exc

    def list_models(self) -> pb.ListModelsResponse:
        return codec.message_from_json(self._call("GET", "/v1/models"), pb.ListModelsResponse)

    def get_model(self, name: str = "") -> pb.ModelInfo:
        if not name:
            name = self.list_models().default_model
        return codec.message_from_json(self._call("GET", f"/v1/models/{name}"), pb.ModelInfo)

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING or UNREACHABLE (from ``/ready``)."""
        try:
            response = self._http.get("/ready", timeout=5.0)
        except httpx.HTTPError:
            return "UNREACHABLE"
        return "SERVING" if response.status_code == 200 else "NOT_SERVING"

    def wait_until_serving(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        deadline = time.monotonic() + timeout_s
        while (status := self.health()) != "SERVING":
            if time.monotonic() > deadline:
                raise _not_serving(self.address, timeout_s, status)
            time.sleep(poll_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncHttpClient:
    """The asyncio twin of `HttpClient`."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float | None = 30.0,
        credentials: Credentials = NO_CREDENTIALS,
        overload_retries: int = OVERLOAD_RETRIES,
    ) -> None:
        self.address = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.overload = OverloadRetry(overload_retries)
        self._http = httpx.AsyncClient(
            base_url=self.address, timeout=timeout_s, **_transport_options(credentials)
        )

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self.address, exc) from None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _json(await self._send(method, path, **kwargs))

    async def _predict(self, message: pb.PredictRequest) -> Prediction:
        attempts = Attempts(self.timeout_s, self.overload)
        while True:
            left = attempts.remaining()
            path, options = _predict_call(message, left)
            response = await self._send("POST", path, **options, **_timeout(left))
            pause = attempts.pause_after_refusal(retry_hint_s(response))
            if pause is None:
                break
            await asyncio.sleep(pause)
        if response.status_code == 200:
            attempts.answered()
        return codec.prediction_from_json(_json(response))

    async def predict(self, image: ImageLike, **options: Unpack[PredictOptions]) -> Prediction:
        return await self._predict(build_request(image, **options))

    async def predict_stream(
        self, images: Iterable[ImageLike], **options: Unpack[PredictOptions]
    ) -> AsyncIterator[Prediction | AttnserveError]:
        for message in stream_requests(images, **options):
            try:
                yield await self._predict(message)
            except (Unavailable, DeadlineExceeded):
                raise
            except AttnserveError as exc:
                yield exc

    async def list_models(self) -> pb.ListModelsResponse:
        return codec.message_from_json(await self._call("GET", "/v1/models"), pb.ListModelsResponse)

    async def get_model(self, name: str = "") -> pb.ModelInfo:
        if not name:
            name = (await self.list_models()).default_model
        return codec.message_from_json(await self._call("GET", f"/v1/models/{name}"), pb.ModelInfo)

    async def health(self, service: str = "") -> str:
        try:
            response = await self._http.get("/ready", timeout=5.0)
        except httpx.HTTPError:
            return "UNREACHABLE"
        return "SERVING" if response.status_code == 200 else "NOT_SERVING"

    async def wait_until_serving(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        deadline = time.monotonic() + timeout_s
        while (status := await self.health()) != "SERVING":
            if time.monotonic() > deadline:
                raise _not_serving(self.address, timeout_s, status)
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHttpClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
