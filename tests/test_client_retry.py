"""The clients send a call again only when the gateway's transport refused its stream (HTTP/2
REFUSED_STREAM: nothing was processed), with random growing pauses, within the deadline."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from attnserve.clients import retry


class Refusal(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


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
