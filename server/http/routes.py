"""The HTTP API as a Starlette app: a thin front over the gateway core, like the gRPC servicer.

Each endpoint decodes (`.requests`), calls the core, and answers the proto message's JSON
mapping (`attnserve.codec`); errors are mapped once (`.errors`). Endpoints are counted and timed
in the same Prometheus metrics as gRPC, with ``transport="http"``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from attnserve import codec
from attnserve.errors import DeadlineExceeded, InvalidInput, describe, log_failure
from attnserve.settings import GatewaySettings

from ..gateway.core import GatewayCore
from ..gateway.security import ApiKeys
from .auth import ApiKeyMiddleware
from .errors import error_body, error_headers, status_for
from .openapi import openapi_document
from .requests import predict_request

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

Endpoint = Callable[[Request], Awaitable[Response]]


def _sample_files(folder: Path | None) -> dict[str, Path]:
    """The sample images the page offers, by name (listed once, at start)."""
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in SAMPLE_SUFFIXES}


def _deadline(request: Request) -> float | None:
    value = request.headers.get("x-request-timeout")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidInput(f"X-Request-Timeout is a positive number of seconds, not {value!r}")
    return seconds


class HttpApi:
    def __init__(
        self, core: GatewayCore, settings: GatewaySettings, samples_dir: Path | None, keys: ApiKeys | None
    ) -> None:
        self.core = core
        self.settings = settings
        self.keys = keys
        self.samples = _sample_files(samples_dir)
        self._openapi = openapi_document()

    def app(self) -> Starlette:
        routes = [
            Route("/v1/models", self._observed("ListModels", self.list_models)),
            Route("/v1/models/{model}:predict", self._observed("Predict", self.predict), methods=["POST"]),
            Route("/v1/models/{model}", self._observed("GetModel", self.get_model)),
            Route("/v1/predict", self._observed("Predict", self.predict), methods=["POST"]),
            Route("/live", self.live),
            Route("/ready", self.ready),
            Route("/metrics", self.metrics),
            Route("/openapi.json", self.openapi),
            Route("/samples", self.sample_list),
            Route("/samples/{name}", self.sample),
            Route("/", self.index),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
        middleware = []
        if self.keys is not None:
            middleware.append(Middleware(ApiKeyMiddleware, keys=self.keys, metrics=self.core.metrics))
        return Starlette(
            routes=routes, middleware=middleware, exception_handlers={HTTPException: self._http_exception}
        )

    # --- the API ---------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        deadline = _deadline(request)
        try:
            # the deadline is this front's to keep, as gRPC keeps its own: from the request's arrival
            async with asyncio.timeout(deadline):
                model = request.path_params.get("model", "")
                message = await predict_request(request, model, self.settings.max_http_body_bytes)
                prediction = await self.core.predict(
                    codec.request_from_proto(message), deadline, self.settings.max_message_bytes
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"the deadline of {deadline:g} s passed before the answer was ready"
            ) from None
        return JSONResponse(codec.prediction_to_json(prediction))

    async def list_models(self, request: Request) -> Response:
        message = codec.model_list_to_proto(self.core.list_models(), self.core.default_model)
        return JSONResponse(codec.message_to_json(message))

    async def get_model(self, request: Request) -> Response:
        info = self.core.get_model(request.path_params["model"])
        return JSONResponse(codec.message_to_json(codec.model_info_to_proto(info)))

    # --- operations ------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return PlainTextResponse("live\n")

    async def ready(self, request: Request) -> Response:
        if self.core.serving:
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready: Triton or the default model cannot serve yet\n", status_code=503)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.core.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi)

    # --- the page --------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def sample_list(self, request: Request) -> Response:
        return JSONResponse({"samples": list(self.samples)})

    async def sample(self, request: Request) -> Response:
        path = self.samples.get(request.path_params["name"])
        if path is None:
            return self._error(404, "no sample of that name")
        return FileResponse(path)

    # --- errors and metrics ----------------------------------------------------------------

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(error_body(status, message), status_code=status, headers=headers)

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: f"no endpoint {request.url.path}; see /openapi.json"}.get(exc.status_code, exc.detail)
        body = error_body(exc.status_code, message)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    def _observed(self, method: str, endpoint: Endpoint) -> Endpoint:
        metrics = self.core.metrics

        async def observed(request: Request) -> Response:
            started = time.perf_counter()
            metrics.in_flight.inc()
            try:
                response = await endpoint(request)
            except Exception as exc:
                response = self._error(status_for(exc), describe(exc), error_headers(exc))
                log_failure(log, f"http {method}", exc)
            finally:
                metrics.in_flight.dec()
            model = self.core.metric_label(request.path_params.get("model"))
            metrics.requests.labels("http", method, model, str(response.status_code)).inc()
            metrics.request_seconds.labels("http", method, model).observe(time.perf_counter() - started)
            return response

        return observed
