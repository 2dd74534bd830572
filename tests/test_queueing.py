"""How long a call waited before the gateway took it up (attnserve.queueing): the header
attnserve's clients send, what the gateway makes of it, and admission by it, end to end through
the real gateway and Triton."""

from __future__ import annotations

import re
import time

import grpc
import pytest

from attnserve.clients import Client
from attnserve.errors import Overloaded
from attnserve.queueing import TIMEOUT_HEADER, encodable_timeout, queued_s, timeout_metadata
from attnserve.settings import TritonSettings
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .conftest import REPO_ROOT, GatewayThread, gateway_settings

DIGIT = (REPO_ROOT / "docs" / "samples" / "digit.png").read_bytes()


def test_the_header_states_the_timeout_in_whole_milliseconds() -> None:
    assert timeout_metadata(30.0) == ((TIMEOUT_HEADER, "30000"),)
    assert timeout_metadata(0.0004) == ((TIMEOUT_HEADER, "1"),)
    for none in (None, 0.0, -1.0, float("inf"), float("nan")):
        assert timeout_metadata(none) == ()


@pytest.mark.parametrize(
    ("metadata", "remaining", "expected"),
    [
        (((TIMEOUT_HEADER, "5000"),), 4.9, 0.1),
        (((TIMEOUT_HEADER, b"5000"),), 4.75, 0.25),  # as bytes
        (((TIMEOUT_HEADER, "5000"),), 5.2, 0.0),  # a deadline later than stated: never negative
        (((TIMEOUT_HEADER, "5000"),), None, None),  # no deadline reached the server
        ((), 4.9, None),  # a client that does not say
        (None, 4.9, None),
        ((("authorization", "Bearer k"), (TIMEOUT_HEADER, "5000")), 3.0, 2.0),
        *((((TIMEOUT_HEADER, bad),), 4.9, None) for bad in ("soon", "-5", "0", "nan", "inf", "")),
    ],
)
def test_what_the_gateway_makes_of_it(
    metadata: tuple[tuple[str, str | bytes], ...] | None, remaining: float | None, expected: float | None
) -> None:
    got = queued_s(metadata, remaining)
    assert got == pytest.approx(expected) if expected is not None else got is None


def busy_loop(thread: GatewayThread, seconds: float) -> None:
    """Keeps the gateway's event loop busy for ``seconds`` from now, as a burst would: calls that
    arrive meanwhile wait in grpc-core until it asks for them."""
    thread.loop.call_soon_threadsafe(time.sleep, seconds)
    time.sleep(0.05)


@pytest.mark.triton
def test_a_call_that_waited_longer_than_allowed_is_refused_as_queued_and_counted(
    triton: TritonSettings,
) -> None:
    thread = GatewayThread(gateway_settings(triton, max_queued_ms=100.0)).start()
    try:
        with Client(thread.address, overload_retries=0) as client:  # the refusals themselves
            client.wait_until_serving(60)
            answered = client.predict(DIGIT, maps=["primary"])  # no wait
            assert answered.predictions[0].label == "6"
            # the answer says how long it waited, apart from its time in the gateway
            queued_ms = answered.timings.queued_ms
            assert queued_ms is not None and 0 <= queued_ms < 100, answered.timings
            busy_loop(thread, 0.4)
            with pytest.raises(Overloaded, match=r"before the gateway could take it up") as refused:
                client.predict(DIGIT, maps=["primary"])  # attnserve's client states its timeout
            waited = re.search(r"waited (\d+) ms", str(refused.value))
            assert waited is not None and 150 <= int(waited.group(1)) <= 400, refused.value
            assert "retry in" in str(refused.value)
            # a late call that draws nothing is refused before its request is checked: a top_k
            # the model cannot give is found out only once it is taken up in time
            busy_loop(thread, 0.4)
            with pytest.raises(Overloaded, match=r"before the gateway could take it up"):
                client.predict(DIGIT, maps=["primary"], top_k=99)
            # a render's latency is its own queue: the same wait, and it is answered
            busy_loop(thread, 0.4)
            drawn = client.predict(DIGIT, maps=["primary"], forms=["heatmap_png"])
            assert drawn.attention[0].heatmap_png and (drawn.timings.queued_ms or 0) > 150, drawn.timings
        metrics = thread.gateway.core.metrics
        assert metrics.rejected.labels("queued")._value.get() == 2
        # every wait told is observed, the refused ones' too (the first prediction, then 250+ ms)
        (histogram,) = metrics.queued_seconds.collect()
        samples = {s.name: s.value for s in histogram.samples if s.labels.get("model") == "cbam"}
        assert samples["attnserve_queued_seconds_count"] == 4, samples
        assert samples["attnserve_queued_seconds_sum"] > 0.45, samples
        with grpc.insecure_channel(thread.address) as channel:  # a client that does not say
            busy_loop(thread, 0.4)
            answer = pb_grpc.AttentionServiceStub(channel).Predict(pb.PredictRequest(image=DIGIT), timeout=30)
        assert answer.predictions[0].label == "6" and not answer.timings.HasField("queued_ms")
    finally:
        thread.stop()


def test_timeouts_are_rounded_down_to_what_grpc_sends_exactly() -> None:
    # grpc-core rounds a timeout up: to ms below 1 s, 10 ms below 10 s, 100 ms below 100 s, then s, 10 s...
    cases = {0.5004: 0.5, 0.0002: 0.001, 2.3456: 2.34, 30.0004: 30.0, 29.99: 29.9, 120.7: 120.0}
    cases |= {1234.5: 1230.0, 54321.0: 54300.0, 200000.0: 198000.0}
    for timeout, expected in cases.items():
        assert encodable_timeout(timeout) == pytest.approx(expected)


@pytest.mark.triton
def test_attnserves_client_sends_a_refused_call_again_after_the_hint_and_it_is_answered(
    triton: TritonSettings,
) -> None:
    """The refusal above, as an attnserve client meets it by default: the call is sent again
    after the gateway's hint (``grpc-retry-pushback-ms``), once the loop has caught up, and
    answered; the gateway counted the one refusal, the client the one retry."""
    thread = GatewayThread(gateway_settings(triton, max_queued_ms=100.0)).start()
    try:
        with Client(thread.address) as client:
            client.wait_until_serving(60)
            client.predict(DIGIT, maps=["primary"])
            busy_loop(thread, 0.4)
            began = time.perf_counter()
            answered = client.predict(DIGIT, maps=["primary"])
            took = time.perf_counter() - began
            assert answered.predictions[0].label == "6"
            # refused after waiting ~0.35 s, sent again 1–2 hints later (at least 50 ms each)
            assert 0.35 + 0.05 <= took < 5.0, took
            assert (answered.timings.queued_ms or 0) < 100, answered.timings
            assert client.overload.throttle.retried == 1
        assert thread.gateway.core.metrics.rejected.labels("queued")._value.get() == 1
    finally:
        thread.stop()
