"""Domain errors, raised anywhere and mapped to status codes in one place per protocol.

The gRPC mapping lives in `attnserve.server.grpc.interceptors`, the HTTP one in
`attnserve.server.http.errors`; the CLI turns any of these into one line on stderr and a
non-zero exit code. Subclasses refine a type for protocols that can say more (HTTP's 413 and
415 are gRPC's INVALID_ARGUMENT).
"""

from __future__ import annotations

import logging

from .logs import REFUSALS


class AttnserveError(Exception):
    """Base of every error a user can act on; the message says what to do."""


class InvalidInput(AttnserveError):
    """The request or the file given is malformed, unsupported or out of limits."""


class TooLarge(InvalidInput):
    """The request, an image in it, or the answer it asks for exceeds a size limit."""


class UnsupportedMedia(InvalidInput):
    """The body or the image is of a type the gateway does not read."""


class Unauthenticated(AttnserveError):
    """The request carries no API key, or one the gateway does not accept."""


class ModelNotFound(AttnserveError):
    """No model of that name is served (or registered, for the export side)."""


class ModelNotReady(AttnserveError):
    """The model exists but cannot serve now (loading, or its Triton instance is down)."""


RETRY_PUSHBACK_TRAILER = "grpc-retry-pushback-ms"
"""gRPC's server push-back trailer (gRFC A6): when a retry may be admitted, in milliseconds."""
RETRY_AFTER_MS_HEADER = "Retry-After-Ms"
"""The same hint over HTTP, beside ``Retry-After`` (which counts whole seconds)."""


class Overloaded(AttnserveError):
    """Too many requests in flight, or not enough memory free for this one; retry later.

    ``retry_after_s`` is the gateway's hint of when a retry may be admitted (gRPC's
    ``grpc-retry-pushback-ms`` trailer, HTTP's ``Retry-After-Ms`` and ``Retry-After``); attnserve's
    clients send the call again after it (`attnserve.clients.retry`).
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_ms(self) -> int | None:
        """The hint in whole milliseconds (at least 1), as it travels."""
        return None if self.retry_after_s is None else max(1, round(self.retry_after_s * 1e3))


class UpstreamError(AttnserveError):
    """Triton answered with an unexpected error."""


class Unavailable(AttnserveError):
    """A service this one depends on (Triton, the gateway) cannot be reached."""


class DeadlineExceeded(AttnserveError):
    """The caller's deadline passed before the answer was ready."""


class SetupError(AttnserveError):
    """The local environment cannot do what was asked (missing binary, port in use, ...)."""


def shorten(value: str, limit: int = 64) -> str:
    """A client-given name for a message: quoted, cut to ``limit`` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"… ({len(value):,} characters)"


def describe(error: BaseException) -> str:
    """What a client is told of any failure: a domain error's message, else no internals."""
    if isinstance(error, AttnserveError):
        return str(error)
    return f"internal error ({type(error).__name__}); the gateway log has the details"


def log_failure(log: logging.Logger, where: str, error: BaseException) -> None:
    """A domain error is one info line (an admission refusal, one a second and a count:
    `attnserve.logs.RefusalLog`); anything else is a bug, logged with its traceback."""
    if isinstance(error, Overloaded):
        REFUSALS.refused(log, where, error)
    elif isinstance(error, AttnserveError):
        log.info("%s: %s: %s", where, type(error).__name__, error)
    else:
        log.error("%s failed unexpectedly", where, exc_info=error)


__all__ = [
    "AttnserveError",
    "DeadlineExceeded",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "Overloaded",
    "SetupError",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedMedia",
    "UpstreamError",
    "describe",
    "log_failure",
    "shorten",
]
