"""API keys on the HTTP front: an ASGI middleware that answers 401 before any body is read.

Open without a key: the probes (/live, /ready), the OpenAPI document, and the web page with its
assets and samples (the page asks for a key when the API answers 401).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from attnserve.errors import Unauthenticated

from ..gateway.metrics import GatewayMetrics
from ..gateway.security import ApiKeys
from .errors import error_body

OPEN_PATHS = frozenset({"/", "/live", "/ready", "/openapi.json", "/samples"})
OPEN_PREFIXES = ("/static/", "/samples/")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: ApiKeys, metrics: GatewayMetrics) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self.keys.check(headers.get)
        except Unauthenticated as refusal:
            self.metrics.requests.labels("http", "", "", "401").inc()
            response = JSONResponse(
                error_body(401, str(refusal)), status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
