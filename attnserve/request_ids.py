"""Request IDs: each prediction's ID follows it into every log line written while it is handled
and into Triton's request, and comes back in the answer.

The client's ``request_id`` is kept; a request without one gets a fresh one. The ID lives in a
context variable: every gRPC call, HTTP request and stream item runs in its own asyncio task (or
sets it anew), so log lines of concurrent requests never mix IDs up. `RequestIdFilter` puts it
on log records as ``%(request_id)s`` ("-" outside a request).
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar

_CURRENT: ContextVar[str] = ContextVar("attnserve_request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def bind(request_id: str) -> str:
    """Makes ``request_id`` (or a new ID when empty) the current one and returns it."""
    chosen = request_id or os.urandom(8).hex()  # 16 hex digits; uuid4() costs 8× more
    _CURRENT.set(chosen)
    return chosen


def current() -> str:
    return _CURRENT.get()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record that passes through the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _CURRENT.get()
        return True
