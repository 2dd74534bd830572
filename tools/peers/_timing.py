"""Time-boxed closed loops of one call, as figures named like the suite's (`attnserve.bench`
`Summary`): ``throughput`` (answers per second, here images per second), latency quantiles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from attnserve.bench import Recorder


@dataclass
class Timing:
    elapsed_s: float
    latencies_ms: list[float]
    """Of the successful calls."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed calls by what failed (an HTTP status code)."""

    def figures(self) -> dict[str, object]:
        """The suite's own summary (`attnserve.bench.Recorder`: nearest-rank percentiles), rounded."""
        recorder = Recorder()
        for ms in self.latencies_ms:
            recorder.record(ms / 1e3)
        for code, count in self.errors.items():
            for _ in range(count):
                recorder.record(0.0, code)
        summary = recorder.summary(self.elapsed_s).to_json()
        return {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in summary.items()
            if key not in ("label", "offered", "bytes_per_answer")
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
