"""Sending a call again: when the server's HTTP/2 transport refused its stream, and when the
gateway's admission refused it with a retry hint.

**Refused streams.** Under a burst of hundreds of calls on one connection, grpc-core's overload
protection on the gateway can refuse a stream before the gateway sees the call (RST_STREAM
REFUSED_STREAM, which gRPC reports as UNAVAILABLE "Received RST_STREAM with error code 7").
HTTP/2 defines that refusal as "not processed", so the call is safe to send again, even a
non-idempotent one; gRPC's transparent retry does not cover it. It is retried with growing
pauses drawn at random (calls refused together must not come back together), within the call's
own deadline.

**Admission refusals** (`OverloadRetry`). The gateway refuses what it cannot serve in time before
doing any work on it (RESOURCE_EXHAUSTED), and says when to come back: the
``grpc-retry-pushback-ms`` trailer, gRPC's own name for a server's retry hint. Such a call is
sent again after the hint, stretched by a random factor of 1–2 (so that a burst's refusals come
back spread over one more hint), at most ``retries`` times and within the call's deadline. A
client's retries are throttled as gRPC's retry throttling does (gRFC A6): each refusal spends a
token, each answer earns back ``token_ratio`` of one, and no call is sent again while half the
tokens or fewer are left. A burst after quiet is retried; under a sustained overload the retries
stop, at about one retry per ten answers, so that they do not add to it. A stream's item refused
so carries the hint in its error (``retry_after_ms``), and is sent again on its own
(`resend_refused`), as a call.

Every other error, UNAVAILABLE from the gateway and a RESOURCE_EXHAUSTED without a hint (a
message over the size limit) included, goes to the caller at once.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from attnserve.errors import RETRY_PUSHBACK_TRAILER

REFUSED_STREAM = "RST_STREAM with error code 7"
ATTEMPTS = 10
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 2.0
"""Pauses up to 50, 100, 200, 400, 800, 1600, 2000, 2000, 2000 ms, each drawn from 0 to its bound
(4.6 s expected in all): a 2-core gateway takes 2–5 s to absorb 640 calls sent at once on one
connection, and calls retried too soon are refused again."""

OVERLOAD_RETRIES = 3
"""Times a call refused by admission with a retry hint is sent again, by default."""
MAX_TOKENS = 200.0
TOKEN_RATIO = 0.1
REFILL_S = 10.0
QUIET_S = 1.0
"""A quiet client may spend 100 refusals on retries at once (a burst of 40 calls sent again until
answered takes about 90), and has them back after 1 s without a refusal and 10 s more; while it
is refused now and then, about one retry per ten answers (`RetryThrottle`)."""

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


def pushback_s(error: grpc.RpcError) -> float | None:
    """The gateway's retry hint on an admission refusal (s), or None: not one to send again."""
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == RETRY_PUSHBACK_TRAILER:
            try:
                hint_ms = int(value)
            except (TypeError, ValueError):
                return None
            return hint_ms / 1e3 if hint_ms >= 0 else None  # negative: "do not retry" (gRFC A6)
    return None


class RetryThrottle:
    """gRPC's retry throttling (gRFC A6), one per client and shared by its threads, with a refill
    in quiet time: ``max_tokens`` to start with; a refusal spends one, an answer earns back
    ``token_ratio``, and every second without a refusal, once ``QUIET_S`` have passed since the
    last, earns back ``max_tokens / refill_s``; retries are allowed while more than half are left.
    A6 counts only events, and this gateway refuses most of a burst even when it is idle on
    average, so the quiet refill gives a client its allowance back once its burst has passed.
    It is quiet time, not any time: a client refused now and then all along (a sustained
    overload, however few calls it sends) earns back only what its answers earn."""

    def __init__(
        self, max_tokens: float = MAX_TOKENS, token_ratio: float = TOKEN_RATIO, refill_s: float = REFILL_S
    ) -> None:
        if max_tokens <= 0 or token_ratio <= 0 or refill_s <= 0:
            raise ValueError(
                f"need max_tokens, token_ratio and refill_s > 0, got {max_tokens}, {token_ratio}, {refill_s}"
            )
        self.max_tokens, self.token_ratio, self.refill_s = max_tokens, token_ratio, refill_s
        self.tokens = max_tokens
        self.retried = 0
        """Calls sent again after an admission refusal, so far."""
        self._lock = threading.Lock()
        self._at = self._refused_at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        quiet_since = max(self._at, self._refused_at + QUIET_S)
        earned = max(0.0, now - quiet_since) * self.max_tokens / self.refill_s
        self.tokens, self._at = min(self.max_tokens, self.tokens + earned), now

    def refused(self) -> bool:
        """A refusal: spends a token; whether a retry is allowed now."""
        with self._lock:
            self._refill()
            self.tokens = max(0.0, self.tokens - 1.0)
            self._refused_at = time.monotonic()
            return self.tokens > self.max_tokens / 2

    def answered(self) -> None:
        with self._lock:
            self._refill()
            self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def retrying(self) -> None:
        with self._lock:
            self.retried += 1


@dataclass(frozen=True)
class OverloadRetry:
    """How a client sends again the calls the gateway's admission refused with a retry hint:
    at most ``retries`` times a call (0: never), throttled by ``throttle``."""

    retries: int = OVERLOAD_RETRIES
    throttle: RetryThrottle = field(default_factory=RetryThrottle)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"overload_retries must be at least 0, got {self.retries}")

    def answered(self) -> None:
        """An answer earns the throttle back its share (when retries are on)."""
        if self.retries:
            self.throttle.answered()


NO_OVERLOAD_RETRY = OverloadRetry(retries=0)


class Attempts:
    """One call's attempts: its deadline, the pauses left for refused streams, its retries left
    after admission refusals."""

    def __init__(self, timeout_s: float | None, overload: OverloadRetry) -> None:
        self.deadline, self.stream_pauses = _pauses(timeout_s)
        self.overload, self.overload_left = overload, overload.retries

    def remaining(self) -> float | None:
        return _remaining(self.deadline)

    def pause_after(self, error: grpc.RpcError) -> float | None:
        """How long to wait before sending again after ``error``; None: raise it."""
        if not refused_stream(error):
            return self.pause_after_refusal(pushback_s(error))
        pause = self.stream_pauses.pop(0) if self.stream_pauses else None
        return None if pause is None or time.monotonic() + pause >= self.deadline else pause

    def pause_after_refusal(self, hint_s: float | None) -> float | None:
        """How long to wait before sending again after an admission refusal whose retry hint is
        ``hint_s`` (None: it gave none, not to be sent again); None: give up."""
        if hint_s is None or not self.overload.retries:
            return None
        allowed = self.overload.throttle.refused()  # every hinted refusal spends a token
        if not (allowed and self.overload_left):
            return None
        pause = hint_s * random.uniform(1.0, 2.0)
        if time.monotonic() + pause >= self.deadline:
            return None
        self.overload_left -= 1
        self.overload.throttle.retrying()
        return pause

    def answered(self) -> None:
        self.overload.answered()


def call_with_retry(
    send: Callable[[float | None], T], timeout_s: float | None, overload: OverloadRetry = NO_OVERLOAD_RETRY
) -> T:
    """``send(timeout)`` until it is answered or fails for good (blocking)."""
    return _until_answered(send, Attempts(timeout_s, overload))


def resend_refused(
    send: Callable[[float | None], T], hint_s: float | None, timeout_s: float | None, overload: OverloadRetry
) -> T | None:
    """A call refused already, with the retry hint ``hint_s`` (a stream's item, whose refusal
    arrives as the item's error): ``send(timeout)`` after the hint as `call_with_retry` would,
    the first refusal counted among its retries; None when it is not to be sent again."""
    attempts = Attempts(timeout_s, overload)
    pause = attempts.pause_after_refusal(hint_s)
    if pause is None:
        return None
    time.sleep(pause)
    return _until_answered(send, attempts)


def _until_answered(send: Callable[[float | None], T], attempts: Attempts) -> T:
    while True:
        try:
            answer = send(attempts.remaining())
        except grpc.RpcError as exc:
            pause = attempts.pause_after(exc)
            if pause is None:
                raise
            time.sleep(pause)
        else:
            attempts.answered()
            return answer


async def call_with_retry_async(
    send: Callable[[float | None], Awaitable[T]],
    timeout_s: float | None,
    overload: OverloadRetry = NO_OVERLOAD_RETRY,
) -> T:
    """``await send(timeout)`` until it is answered or fails for good."""
    return await _until_answered_async(send, Attempts(timeout_s, overload))


async def resend_refused_async(
    send: Callable[[float | None], Awaitable[T]],
    hint_s: float | None,
    timeout_s: float | None,
    overload: OverloadRetry,
) -> T | None:
    """`resend_refused` on asyncio."""
    attempts = Attempts(timeout_s, overload)
    pause = attempts.pause_after_refusal(hint_s)
    if pause is None:
        return None
    await asyncio.sleep(pause)
    return await _until_answered_async(send, attempts)


async def _until_answered_async(send: Callable[[float | None], Awaitable[T]], attempts: Attempts) -> T:
    while True:
        try:
            answer = await send(attempts.remaining())
        except grpc.RpcError as exc:
            pause = attempts.pause_after(exc)
            if pause is None:
                raise
            await asyncio.sleep(pause)
        else:
            attempts.answered()
            return answer
