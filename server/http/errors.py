"""Domain errors → HTTP status codes, in one table, and the error body ``{code, message}``.

The twin of `attnserve.server.grpc.interceptors`' table. Subclasses of `InvalidInput` that HTTP
can name more precisely (413, 415) come first in the lookup by the exception's MRO.
"""

from __future__ import annotations

import math
from typing import Any

from attnserve.errors import (
    RETRY_AFTER_MS_HEADER,
    AttnserveError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    SetupError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMedia,
    UpstreamError,
)

_STATUS: dict[type[AttnserveError], int] = {
    InvalidInput: 400,
    TooLarge: 413,
    UnsupportedMedia: 415,
    ModelNotFound: 404,
    ModelNotReady: 503,
    Unavailable: 503,
    Overloaded: 429,
    DeadlineExceeded: 504,
    UpstreamError: 502,
    SetupError: 500,
    Unauthenticated: 401,
}

# What each status means here, for the OpenAPI document.
STATUS_MEANING: dict[int, str] = {
    400: "the request is malformed (a bad option, an unreadable image, an unknown map)",
    401: "an API key is needed (authorization: Bearer KEY), or the one sent is not valid",
    404: "no model of that name is served",
    413: "the body, the image or the answer asked for exceeds a limit",
    415: "the body or the image is of a type the gateway does not read",
    429: "refused by admission before any work (too many requests in flight, a late call, no memory "
    "left); retry after Retry-After-Ms",
    503: "the model or Triton cannot serve now",
    504: "the deadline (X-Request-Timeout) passed before the answer was ready",
}


def status_for(error: BaseException) -> int:
    """The HTTP status of any exception: domain errors by type, anything else 500."""
    for error_type in type(error).__mro__:
        if error_type in _STATUS:
            return _STATUS[error_type]
    return 500


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "message": message}


def error_headers(error: BaseException) -> dict[str, str]:
    """On a refusal that carries a retry hint: ``Retry-After`` (whole seconds, at least 1, as HTTP
    defines it) and ``Retry-After-Ms``, the hint itself (as gRPC's ``grpc-retry-pushback-ms``;
    the header OpenAI's and Azure's clients read too): a hint of 50 ms is not one of 1 s."""
    if not isinstance(error, Overloaded) or error.retry_after_s is None:
        return {}
    seconds = max(1, math.ceil(error.retry_after_s))
    return {"Retry-After": str(seconds), RETRY_AFTER_MS_HEADER: str(error.retry_after_ms)}
