"""How long a call waited before the gateway took it up, told by the call itself.

A burst arrives faster than the gateway's one event loop takes calls up: grpc-core holds every
arrived call until the loop asks for the next, and the gateway's clocks start only then, so a
call can have waited 100 ms unseen (docs/overload.md). The wait is visible with the caller's
help: gRPC turns the call's timeout into a deadline when the call *arrives* (the
``grpc-timeout`` header, which the server cannot read), so a client that also states the timeout
it set (``x-attnserve-timeout-ms``, as attnserve's clients do) lets the gateway subtract what is
left: the difference is the time between arriving and being taken up. Both are durations, so
the two machines' clocks never meet; the timeout must be one gRPC sends exactly
(`encodable_timeout`). Admission refuses a call that already waited longer than its latency
allows (`attnserve.server.gateway.admission`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

TIMEOUT_HEADER = "x-attnserve-timeout-ms"
"""The timeout the client set for this attempt of the call, in milliseconds (`encodable_timeout`)."""


def encodable_timeout(timeout_s: float) -> float:
    """``timeout_s`` rounded down to what gRPC sends exactly. grpc-core writes a call's timeout
    in a few digits, rounding *up*: to whole ms below 1 s, 10 ms below 10 s, 100 ms below
    100 s, then whole, tens and hundreds of seconds; so a timeout of 30.0004 s reaches the
    server as 30.1 s, and the wait would read 100 ms short (a wait read short only admits). A
    timeout on that grid, sent within one step of being set, arrives as it was set; a client
    slower than that to send counts its own delay as waiting."""
    grid = ((1.0, 0.001), (10.0, 0.01), (100.0, 0.1), (1e3, 1.0), (1e4, 10.0), (1e5, 100.0))
    for below_s, step_s in grid:
        if timeout_s < below_s:
            return max(0.001, math.floor(timeout_s / step_s) * step_s)
    return math.floor(timeout_s / 3600.0) * 3600.0  # beyond 27 hours gRPC counts in hours at most


def timeout_metadata(timeout_s: float | None) -> tuple[tuple[str, str], ...]:
    """The header for a call sent with ``timeout_s`` (none without a timeout)."""
    if timeout_s is None or not math.isfinite(timeout_s) or timeout_s <= 0:
        return ()
    return ((TIMEOUT_HEADER, str(max(1, round(timeout_s * 1e3)))),)


def queued_s(
    metadata: Iterable[tuple[str, str | bytes]] | None, time_remaining_s: float | None
) -> float | None:
    """How long the call waited between arriving and now (≥ 0), or None when it
    cannot be told: no deadline, no header, or a header that is not a positive number of ms."""
    if time_remaining_s is None:
        return None
    for key, value in metadata or ():
        if key != TIMEOUT_HEADER:
            continue
        try:
            timeout_ms = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(timeout_ms) or timeout_ms <= 0:
            return None
        return max(0.0, timeout_ms / 1e3 - time_remaining_s)
    return None
