"""Time-boxed closed loops of one call, as figures named like the suite's (`attnserve.bench`
`Summary`): ``throughput`` (answers per second, here images per second), latency quantiles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    elapsed_s: float
    latencies_ms: list[float]
    """Of the successful calls."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed calls by what failed (an HTTP status code)."""

    def figures(self) -> dict[str, object]:
        latencies = np.asarray(self.latencies_ms or [float("nan")])
        return {
            "requests": len(self.latencies_ms) + sum(self.errors.values()),
            "ok": len(self.latencies_ms),
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput": round(len(self.latencies_ms) / self.elapsed_s, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "p90_ms": round(float(np.percentile(latencies, 90)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "max_ms": round(float(latencies.max()), 3),
            "mean_ms": round(float(latencies.mean()), 3),
            "errors": dict(sorted(self.errors.items())),
        }


def time_calls(call: Callable[[], object], seconds: float, warmup: int = 3) -> Timing:
    """Calls ``call`` ``warmup`` times untimed, then over and over for ``seconds`` (at least once)."""
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        before = time.perf_counter()
        call()
        after = time.perf_counter()
        latencies.append((after - before) * 1e3)
        if after >= deadline:
            return Timing(after - started, latencies)


Call = Callable[[], str | None]
"""One request: None when it succeeded, else what failed (counted, not raised)."""


def time_concurrent(make_call: Callable[[], Call], seconds: float, concurrency: int) -> Timing:
    """``concurrency`` threads, each calling its own ``make_call()`` (a client per thread) in a
    closed loop for ``seconds``: the successful calls' latencies and the failures by kind."""
    calls = [make_call() for _ in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in calls]
    failures: list[list[str]] = [[] for _ in calls]
    start = threading.Barrier(concurrency + 1)
    deadline = 0.0

    def loop(call: Call, latencies: list[float], failures: list[str]) -> None:
        start.wait()
        while True:
            before = time.perf_counter()
            failure = call()
            after = time.perf_counter()
            if failure is None:
                latencies.append((after - before) * 1e3)
            else:
                failures.append(failure)
            if after >= deadline:
                return

    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(loop, *thread) for thread in zip(calls, latencies, failures, strict=True)]
        started = time.perf_counter()
        deadline = started + seconds
        start.wait()
        for future in futures:
            future.result()
        finished = time.perf_counter()
    errors: dict[str, int] = {}
    for failure in (f for thread in failures for f in thread):
        errors[failure] = errors.get(failure, 0) + 1
    return Timing(finished - started, [ms for thread in latencies for ms in thread], errors)
