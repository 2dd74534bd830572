"""Sending a call again when the server's HTTP/2 transport refused its stream.

Under a burst of hundreds of calls on one connection, grpc-core's overload protection on the
gateway can refuse a stream before the gateway sees the call (RST_STREAM REFUSED_STREAM, which
gRPC reports as UNAVAILABLE "Received RST_STREAM with error code 7"). HTTP/2 defines that
refusal as "not processed", so the call is safe to send again, even a non-idempotent one; gRPC's
transparent retry does not cover it. Only that refusal is retried, with growing pauses drawn at
random (calls refused together must not come back together), within the call's own deadline.
Every other error, UNAVAILABLE from the gateway included, goes to the caller at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

REFUSED_STREAM = "RST_STREAM with error code 7"
ATTEMPTS = 10
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 2.0
"""Pauses up to 50, 100, 200, 400, 800, 1600, 2000, 2000, 2000 ms, each drawn from 0 to its bound
(4.6 s expected in all): a 2-core gateway takes 2–5 s to absorb 640 calls sent at once on one
connection, and calls retried too soon are refused again."""

T = TypeVar("T")


def refused_stream(error: grpc.RpcError) -> bool:
    """The transport refused the call's stream: nothing was processed."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and REFUSED_STREAM in (error.details() or "")


def _pauses(timeout_s: float | None) -> tuple[float, list[float]]:
    deadline = time.monotonic() + timeout_s if timeout_s is not None else float("inf")
    bounds = [min(MAX_PAUSE_S, FIRST_PAUSE_S * 2**attempt) for attempt in range(ATTEMPTS - 1)]
    return deadline, [random.uniform(0.0, bound) for bound in bounds]


def _remaining(deadline: float) -> float | None:
    return None if deadline == float("inf") else max(0.0, deadline - time.monotonic())


def call_with_retry(send: Callable[[float | None], T], timeout_s: float | None) -> T:
    """``send(timeout)`` until it is not a refused stream (blocking)."""
    deadline, pauses = _pauses(timeout_s)
    for pause in pauses:
        try:
            return send(_remaining(deadline))
        except grpc.RpcError as exc:
            if not refused_stream(exc) or time.monotonic() + pause >= deadline:
                raise
        time.sleep(pause)
    return send(_remaining(deadline))


async def call_with_retry_async(send: Callable[[float | None], Awaitable[T]], timeout_s: float | None) -> T:
    """``await send(timeout)`` until it is not a refused stream."""
    deadline, pauses = _pauses(timeout_s)
    for pause in pauses:
        try:
            return await send(_remaining(deadline))
        except grpc.RpcError as exc:
            if not refused_stream(exc) or time.monotonic() + pause >= deadline:
                raise
        await asyncio.sleep(pause)
    return await send(_remaining(deadline))
