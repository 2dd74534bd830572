"""Load shapes: a closed loop at a fixed concurrency and an open loop at a fixed rate.

Both drive a `Send` (one request → its outcome code and answer bytes; see `attnserve.bench.targets`)
on the running event loop, warm up first without recording, stop after a duration or a number
of requests, and return a `Summary`.

The open loop measures each latency from the moment the request *should* have been sent, so a
server that falls behind is charged for the queue it builds (no coordinated omission); at most
``max_outstanding`` requests are in flight, and arrivals beyond that are recorded as
``DROPPED`` rather than silently delayed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .stats import Recorder, Summary

Send = Callable[[], Awaitable[tuple[str, int]]]
"""One request: returns (outcome code, response bytes); `attnserve.bench.stats.OK` on success."""

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Progress = Callable[[int, float], None]
"""Called as requests complete: (requests done, seconds since the measured phase began)."""

DROPPED = "DROPPED"
"""An open-loop arrival not sent because ``max_outstanding`` requests were already in flight."""


@dataclass(frozen=True)
class Bound:
    """When the measured phase ends: after ``duration_s`` seconds or ``requests`` requests,
    whichever comes first (at least one must be set)."""

    duration_s: float | None = None
    requests: int | None = None

    def __post_init__(self) -> None:
        if self.duration_s is None and self.requests is None:
            raise ValueError("bound a run by a duration, a number of requests, or both")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"the duration must be positive, got {self.duration_s}")
        if self.requests is not None and self.requests <= 0:
            raise ValueError(f"the number of requests must be positive, got {self.requests}")

    @classmethod
    def of(cls, duration_s: float | None, requests: int | None, default_duration_s: float = 10.0) -> Bound:
        """The bound a user's options ask for: ``default_duration_s`` when they give neither."""
        if duration_s is None and requests is None:
            duration_s = default_duration_s
        return cls(duration_s, requests)

    def open(self, started: float, sent: int, now: float) -> bool:
        """May another request start?"""
        if self.requests is not None and sent >= self.requests:
            return False
        return self.duration_s is None or now - started < self.duration_s


async def closed_loop(
    send: Send,
    concurrency: int,
    bound: Bound,
    *,
    warmup_s: float = 0.0,
    progress: Progress | None = None,
    clock: Clock = time.perf_counter,
) -> Summary:
    """``concurrency`` workers, each sending its next request as soon as the last is answered."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if warmup_s > 0:
        await _closed(send, concurrency, Bound(duration_s=warmup_s), Recorder(), None, clock)
    recorder = Recorder()
    elapsed = await _closed(send, concurrency, bound, recorder, progress, clock)
    return recorder.summary(elapsed, label=f"c={concurrency}", offered=float(concurrency))


async def _closed(
    send: Send, concurrency: int, bound: Bound, recorder: Recorder, progress: Progress | None, clock: Clock
) -> float:
    started = clock()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while bound.open(started, sent, clock()):
            sent += 1
            before = clock()
            code, size = await send()
            recorder.record(clock() - before, code, size)
            if progress is not None:
                progress(recorder.count, clock() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return clock() - started


async def open_loop(
    send: Send,
    rate: float,
    bound: Bound,
    *,
    warmup_s: float = 0.0,
    poisson: bool = False,
    seed: int = 0,
    max_outstanding: int = 1024,
    progress: Progress | None = None,
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
) -> Summary:
    """Requests sent at ``rate`` per second whatever the answers do: evenly spaced, or as a
    Poisson process (exponential gaps, seeded) when ``poisson``."""
    if rate <= 0:
        raise ValueError(f"the rate must be positive, got {rate}")
    if max_outstanding < 1:
        raise ValueError(f"max_outstanding must be at least 1, got {max_outstanding}")
    gaps = random.Random(seed)

    def gap() -> float:
        return gaps.expovariate(rate) if poisson else 1.0 / rate

    if warmup_s > 0:
        await _open(send, gap, Bound(duration_s=warmup_s), Recorder(), max_outstanding, None, clock, sleep)
    recorder = Recorder()
    elapsed = await _open(send, gap, bound, recorder, max_outstanding, progress, clock, sleep)
    return recorder.summary(elapsed, label=f"{rate:g}/s", offered=rate)


async def _open(
    send: Send,
    gap: Callable[[], float],
    bound: Bound,
    recorder: Recorder,
    max_outstanding: int,
    progress: Progress | None,
    clock: Clock,
    sleep: Sleep,
) -> float:
    started = clock()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(intended: float) -> None:
        code, size = await send()
        recorder.record(clock() - intended, code, size)
        if progress is not None:
            progress(recorder.count, clock() - started)

    intended = started
    sent = 0
    while bound.open(started, sent, intended):
        wait = intended - clock()
        if wait > 0:
            await sleep(wait)
        sent += 1
        if len(in_flight) >= max_outstanding:
            recorder.record(0.0, DROPPED)
        else:
            task = asyncio.create_task(one(intended))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        intended += gap()
    if in_flight:
        await asyncio.gather(*in_flight)
    return clock() - started
