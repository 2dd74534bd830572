"""A cap on the calls a client has in flight on its one connection.

The gateway lets a connection hold 128 streams, and its transport counts a finished call
against them until the gateway's Python has freed it (grpc-core's overload protection; see
`attnserve.server.grpc.server`). A client with close to 128 calls open therefore has some of
them refused (RST_STREAM REFUSED_STREAM, sent again by `retry`). Kept to 96 open, a quarter
below, they were never refused: 640 predictions at once on one connection, a quarter of them
overlays of a 12 MP photo, had 0 streams refused at 96 and at 112 (5 bursts; also at 64 and 32),
308 at 128 and 457 with no cap; and 487 of the 640 were answered instead of 141 (the rest
RESOURCE_EXHAUSTED).
Calls beyond the cap wait here for a slot, within their own deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from attnserve.errors import DeadlineExceeded

DEFAULT_MAX_CONCURRENT_CALLS = 96


def _checked(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"max_concurrent_calls must be at least 1, got {limit}")
    return limit


def _no_slot(limit: int, timeout_s: float | None) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the deadline ({timeout_s:.3g} s) passed while the call waited for one of this client's "
        f"{limit} call slots (max_concurrent_calls): it was never sent"
    )


def _left(timeout_s: float | None, started: float) -> float | None:
    return None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))


class CallSlots:
    """Slots for blocking calls, shared by threads."""

    def __init__(self, limit: int = DEFAULT_MAX_CONCURRENT_CALLS) -> None:
        self.limit = _checked(limit)
        self._free = threading.BoundedSemaphore(limit)

    @contextmanager
    def held(self, timeout_s: float | None) -> Iterator[float | None]:
        """One slot, waited for within ``timeout_s`` (None: as long as it takes); yields what
        is left of ``timeout_s``."""
        started = time.monotonic()
        if not self._free.acquire(timeout=timeout_s):
            raise _no_slot(self.limit, timeout_s)
        try:
            yield _left(timeout_s, started)
        finally:
            self._free.release()


class AsyncCallSlots:
    """Slots for the coroutines of one event loop."""

    def __init__(self, limit: int = DEFAULT_MAX_CONCURRENT_CALLS) -> None:
        self.limit = _checked(limit)
        self._free = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def held(self, timeout_s: float | None) -> AsyncIterator[float | None]:
        """As `CallSlots.held`."""
        started = time.monotonic()
        if not self._free.locked():  # a free slot: taken at once, no timer
            await self._free.acquire()
        else:
            try:
                await asyncio.wait_for(self._free.acquire(), timeout_s)
            except TimeoutError:
                raise _no_slot(self.limit, timeout_s) from None
        try:
            yield _left(timeout_s, started)
        finally:
            self._free.release()
