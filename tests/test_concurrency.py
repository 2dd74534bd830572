"""The adaptive concurrency limit: it settles where latency stays within the tolerance, learns
no-load latency only from light samples, and drives admission (reason ``concurrency``)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from attnserve.errors import Overloaded
from attnserve.server.gateway.admission import Admission, Cost
from attnserve.server.gateway.concurrency import AdaptiveLimit
from attnserve.server.gateway.metrics import GatewayMetrics
from attnserve.settings import GatewaySettings

BASE_S = 0.010


def latency(in_flight: int, capacity: int) -> float:
    """A machine that runs ``capacity`` requests at once at full speed and shares beyond that."""
    return BASE_S * max(1.0, in_flight / capacity)


def saturate(limit: AdaptiveLimit, capacity: int, demand: int, rounds: int) -> list[int]:
    """Rounds of ``demand`` waiting requests: as many as the limit allows run together."""
    seen = []
    for _ in range(rounds):
        running = min(demand, limit.value)
        for _ in range(running):
            limit.observe("m", latency(running, capacity), running - 1)
        seen.append(limit.value)
    return seen


def test_under_overload_the_limit_settles_where_latency_stays_within_the_tolerance() -> None:
    limit = AdaptiveLimit(initial=4, minimum=2, maximum=64, tolerance=2.0)
    limit.observe("m", BASE_S, 0)  # one unloaded request: the no-load latency
    seen = saturate(limit, capacity=4, demand=64, rounds=300)
    settled = seen[100:]
    # within 2× of 10 ms means at most 8 at once on a machine of 4; it probes just past that
    assert 6 <= min(settled) and max(settled) <= 9, seen
    assert limit.no_load_s["m"] == BASE_S


def test_from_a_high_start_a_burst_cuts_the_limit_once_per_round_in_proportion() -> None:
    limit = AdaptiveLimit(initial=64, minimum=2, maximum=64, tolerance=2.0)
    limit.observe("m", BASE_S, 0)
    seen = saturate(limit, capacity=4, demand=64, rounds=40)
    # 64 completions 16× slower: one cut, by half at most (not 64 cuts); then 8×, then 4×
    assert seen[:4] == [32, 16, 8, 9], seen
    assert max(seen[3:]) <= 9, seen


def test_a_lone_client_teaches_nothing_about_concurrency() -> None:
    limit = AdaptiveLimit(initial=4, minimum=2, maximum=64, tolerance=2.0)
    for _ in range(1000):
        limit.observe("m", BASE_S, 0)
    assert limit.value == 4  # never more than one in flight: the limit was never what held it back
    saturate(limit, capacity=16, demand=64, rounds=200)
    assert limit.value > 20  # when it is, and latency stays low, it grows


def test_a_long_overload_does_not_teach_that_slow_is_normal() -> None:
    limit = AdaptiveLimit(initial=16, minimum=2, maximum=64, tolerance=2.0)
    limit.observe("m", BASE_S, 0)
    for i in range(10_000):  # loaded samples, 5× slower: never light
        limit.observe("m", 5 * BASE_S, 2 + i % 14)
    assert limit.no_load_s["m"] == BASE_S and limit.value == 2


def test_light_samples_teach_a_model_that_became_slower() -> None:
    limit = AdaptiveLimit(initial=4, minimum=2, maximum=64, tolerance=2.0)
    limit.observe("m", BASE_S, 0)
    for _ in range(200):
        limit.observe("m", 3 * BASE_S, 1)  # light: one other in flight, below the minimum of 2
    assert limit.no_load_s["m"] == pytest.approx(3 * BASE_S, rel=1e-3)
    assert limit.value >= 2


def test_kinds_are_compared_with_their_own_no_load_latency_and_timer_noise_is_not_load() -> None:
    limit = AdaptiveLimit(initial=8, minimum=2, maximum=64, tolerance=2.0)
    limit.observe("fast", 0.0002, 0)
    limit.observe("slow", 0.050, 0)
    for others in range(8):
        limit.observe("slow", 0.060, others)  # 1.2× its own: fine, though 300× the fast kind's
        limit.observe("fast", 0.0009, others)  # 4.5× of 0.2 ms but under 2 ms more: noise
    assert limit.value >= 8
    with pytest.raises(ValueError, match="minimum"):
        AdaptiveLimit(initial=4, minimum=0, maximum=8, tolerance=2.0)


def test_admission_refuses_cheap_requests_beyond_the_adaptive_limit_and_shows_it() -> None:
    settings = GatewaySettings(
        adaptive_concurrency=True, max_in_flight=64, min_in_flight=2, model_share=1.0, max_heavy_in_flight=2
    )
    metrics = GatewayMetrics()
    admission = Admission(settings, metrics)
    assert admission.cheap_limit == 4  # twice the floor
    cheap, heavy = Cost(1, False), Cost(1, True)
    admission.admit("cbam", cheap).release(service_s=0.010)  # alone: the no-load latency
    tickets = [admission.admit("cbam", cheap) for _ in range(4)]
    tickets += [admission.admit("cbam", heavy) for _ in range(2)]  # heavy ones have their own cap
    with pytest.raises(Overloaded, match=r"within 2× unloaded now \(limit 4\)") as refusal:
        admission.admit("cbam", cheap)
    assert refusal.value.retry_after_s == 0.05
    assert "attnserve_concurrency_limit 4.0" in generate_latest(metrics.registry).decode()
    assert [t.others for t in tickets] == [0, 1, 2, 3, 0, 1]
    for ticket in tickets[:4]:  # four at once, five times slower than one alone
        ticket.release(service_s=0.050)
    for ticket in tickets[4:]:
        ticket.release(service_s=5.0)  # heavy: not the limit's business
    # a round (the limit's worth of completions) with a median 5× its no-load latency: cut in half
    assert admission.cheap_limit == 2 and admission.per_model() == 2
    exposed = generate_latest(metrics.registry).decode()
    assert "attnserve_concurrency_limit 2.0" in exposed
    assert 'attnserve_rejected_total{reason="concurrency"} 1.0' in exposed


def test_without_adaptive_concurrency_the_limit_is_max_in_flight() -> None:
    settings = GatewaySettings(max_in_flight=8, model_share=0.5)  # off by default
    admission = Admission(settings, GatewayMetrics())
    assert (admission.cheap_limit, admission.per_model(), admission.limit) == (8, 4, None)
    ticket = admission.admit("cbam", Cost(1, False))
    ticket.release(service_s=100.0)
    assert admission.cheap_limit == 8
    # the floor is capped by max_in_flight, and the start by both
    small = Admission(
        GatewaySettings(adaptive_concurrency=True, max_in_flight=3, min_in_flight=8), GatewayMetrics()
    )
    assert small.limit is not None and (small.limit.minimum, small.cheap_limit) == (3, 3)
