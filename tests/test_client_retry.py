"""The clients send a call again only when nothing was processed: the gateway's transport
refused its stream (HTTP/2 REFUSED_STREAM), with random growing pauses, or its admission refused
it with a retry hint (RESOURCE_EXHAUSTED and ``grpc-retry-pushback-ms``), after that hint, a
bounded number of times and throttled; always within the deadline."""

from __future__ import annotations

import asyncio
import math
import time

import grpc
import pytest

from attnserve.clients import retry


class Refusal(grpc.RpcError):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


def overloaded(pushback_ms: str | None = "20") -> Refusal:
    """An admission refusal as the gateway sends it (`server.grpc.interceptors`)."""
    trailers = () if pushback_ms is None else (("grpc-retry-pushback-ms", pushback_ms),)
    return Refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "5 predictions are in flight; retry in 20 ms", trailers
    )


REFUSED = Refusal(
    grpc.StatusCode.UNAVAILABLE, "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))"
)
DOWN = Refusal(grpc.StatusCode.UNAVAILABLE, "Triton is not ready")


def flaky(failures: list[grpc.RpcError], timeouts: list[float | None]):  # type: ignore[no-untyped-def]
    def send(timeout: float | None) -> str:
        timeouts.append(timeout)
        if failures:
            raise failures.pop(0)
        return "answer"

    return send


def test_refused_streams_are_sent_again_and_nothing_else_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_PAUSE_S", 0.001)
    timeouts: list[float | None] = []
    assert retry.call_with_retry(flaky([REFUSED, REFUSED], timeouts), 30.0) == "answer"
    assert len(timeouts) == 3 and all(
        t is not None and 29 < t <= 30 for t in timeouts
    )  # the deadline shrinks
    for other in (DOWN, Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")):
        sent: list[float | None] = []
        with pytest.raises(Refusal) as raised:
            retry.call_with_retry(flaky([other], sent), 30.0)
        assert raised.value is other and len(sent) == 1
    sent = []
    with pytest.raises(Refusal):  # refused every time: the last refusal, after every attempt
        retry.call_with_retry(flaky([REFUSED] * 20, sent), None)
    assert len(sent) == retry.ATTEMPTS


def test_no_pause_outlasts_the_deadline() -> None:
    began = time.monotonic()
    with pytest.raises(Refusal):
        retry.call_with_retry(flaky([REFUSED] * 20, []), 0.2)
    assert time.monotonic() - began < 0.5


def test_the_async_client_path_retries_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_PAUSE_S", 0.001)
    sent: list[float | None] = []
    plain = flaky([REFUSED], sent)

    async def send(timeout: float | None) -> str:
        return plain(timeout)

    assert asyncio.run(retry.call_with_retry_async(send, None)) == "answer" and sent == [None, None]


def test_an_admission_refusal_is_sent_again_after_its_hint_a_bounded_number_of_times() -> None:
    policy = retry.OverloadRetry(retries=2)
    sent: list[float | None] = []
    began = time.monotonic()
    assert retry.call_with_retry(flaky([overloaded("20"), overloaded("20")], sent), 30.0, policy) == "answer"
    took = time.monotonic() - began
    assert len(sent) == 3 and 0.040 <= took < 0.5, took  # never sooner than asked: 2 × 20–40 ms
    assert policy.throttle.retried == 2
    sent = []
    with pytest.raises(Refusal):  # a third refusal: the caller gets it
        retry.call_with_retry(flaky([overloaded()] * 3, sent), 30.0, policy)
    assert len(sent) == 3
    # not to be sent again: no hint (a message over the size limit), a negative hint, retries off
    for refusal, overload in (
        (overloaded(None), policy),
        (overloaded("-1"), policy),
        (overloaded("junk"), policy),
        (overloaded(), retry.OverloadRetry(retries=0)),
    ):
        sent = []
        with pytest.raises(Refusal) as raised:
            retry.call_with_retry(flaky([refusal], sent), 30.0, overload)
        assert raised.value is refusal and len(sent) == 1
    with pytest.raises(ValueError, match="at least 0"):
        retry.OverloadRetry(retries=-1)


def test_no_retry_waits_past_the_deadline() -> None:
    sent: list[float | None] = []
    began = time.monotonic()
    with pytest.raises(Refusal):
        retry.call_with_retry(flaky([overloaded("500")], sent), 0.3, retry.OverloadRetry())
    assert len(sent) == 1 and time.monotonic() - began < 0.1  # a 0.5–1 s pause would outlast 0.3 s


def test_retries_are_throttled_under_a_sustained_overload_and_come_back_with_answers() -> None:
    """gRFC A6: a refusal spends a token, an answer earns back a tenth; no retry at half or less."""
    throttle = retry.RetryThrottle(max_tokens=10, token_ratio=0.5, refill_s=math.inf)  # events only, first
    policy = retry.OverloadRetry(retries=3, throttle=throttle)
    for _ in range(4):  # 10 → 9 … 6 tokens: each still allowed a retry, each answered then (+0.5)
        assert retry.call_with_retry(flaky([overloaded("1")], []), 30.0, policy) == "answer"
    assert policy.throttle.retried == 4 and policy.throttle.tokens == pytest.approx(8.0)
    sent: list[float | None] = []
    with pytest.raises(Refusal):  # refused again and again: 7, 6, 5 → no more retries at 5
        retry.call_with_retry(flaky([overloaded("1")] * 4, sent), 30.0, policy)
    assert len(sent) == 3 and policy.throttle.tokens == pytest.approx(5.0)
    sent = []
    with pytest.raises(Refusal):  # throttled: the refusal goes to the caller at once
        retry.call_with_retry(flaky([overloaded("1")], sent), 30.0, policy)
    assert len(sent) == 1 and policy.throttle.tokens == pytest.approx(4.0)
    for _ in range(5):  # answers earn tokens back: 4 + 5 × 0.5 = 6.5, so the next refusal leaves 5.5
        retry.call_with_retry(flaky([], []), 30.0, policy)
    assert retry.call_with_retry(flaky([overloaded("1")], []), 30.0, policy) == "answer"
    # and quiet time: a client whose burst has passed gets its allowance back, max_tokens / refill_s
    # a second once QUIET_S have passed without a refusal
    throttle.refill_s, throttle.tokens = 10.0, 0.0
    now = time.monotonic()
    throttle._at = throttle._refused_at = now - 5.0  # refused 5 s ago: 4 quiet seconds, 4 tokens
    assert not throttle.refused() and throttle.tokens == pytest.approx(3.0, abs=0.01)
    throttle._at = throttle._refused_at = time.monotonic() - 0.9  # refused all along: nothing back
    throttle.answered()
    assert throttle.tokens == pytest.approx(3.5, abs=0.01)
    throttle._at = throttle._refused_at = time.monotonic() - 100.0  # never above max_tokens
    throttle.answered()
    assert throttle.tokens == pytest.approx(10.0)
    with pytest.raises(ValueError, match="> 0"):
        retry.RetryThrottle(refill_s=0)


def test_the_async_path_sends_admission_refusals_again_alike() -> None:
    policy = retry.OverloadRetry(retries=1)
    sent: list[float | None] = []
    plain = flaky([overloaded("10")], sent)

    async def send(timeout: float | None) -> str:
        return plain(timeout)

    assert asyncio.run(retry.call_with_retry_async(send, 5.0, policy)) == "answer" and len(sent) == 2
    assert policy.throttle.retried == 1
