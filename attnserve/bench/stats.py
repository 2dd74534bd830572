"""What a load run measured: outcomes recorded as they complete, summarised once at the end.

Percentiles are nearest-rank (the smallest recorded latency such that at least p % of the
requests took no longer), so every figure is a latency some request really had: 1..1000 ms
give p50 = 500, p90 = 900, p99 = 990, max = 1000.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

OK = "OK"
"""The outcome code of a successful request; failures carry their gRPC status name or HTTP code."""

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 < p ≤ 100); NaN when it is empty."""
    if not 0.0 < p <= 100.0:
        raise ValueError(f"a percentile is in (0, 100], got {p}")
    if not ordered:
        return math.nan
    rank = math.ceil(p / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass
class Recorder:
    """Collects one run's outcomes; latencies of successful requests only (a fast refusal is
    not a fast answer)."""

    latencies_s: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    response_bytes: int = 0

    def record(self, latency_s: float, code: str = OK, response_bytes: int = 0) -> None:
        self.codes[code] += 1
        if code == OK:
            self.latencies_s.append(latency_s)
            self.response_bytes += response_bytes

    @property
    def count(self) -> int:
        return sum(self.codes.values())

    def summary(self, elapsed_s: float, *, label: str = "", offered: float | None = None) -> Summary:
        ordered = sorted(self.latencies_s)
        ok = len(ordered)
        ms = [value * 1e3 for value in ordered]
        return Summary(
            label=label,
            offered=offered,
            requests=self.count,
            ok=ok,
            elapsed_s=elapsed_s,
            throughput=ok / elapsed_s if elapsed_s > 0 else math.nan,
            p50_ms=percentile(ms, 50.0),
            p90_ms=percentile(ms, 90.0),
            p99_ms=percentile(ms, 99.0),
            max_ms=ms[-1] if ms else math.nan,
            mean_ms=sum(ms) / ok if ok else math.nan,
            errors={code: n for code, n in sorted(self.codes.items()) if code != OK},
            bytes_per_answer=self.response_bytes / ok if ok else 0.0,
        )


@dataclass
class Summary:
    """One measured point: a concurrency (closed loop) or an offered rate (open loop)."""

    label: str
    offered: float | None
    """The load asked for: concurrency, or requests per second; None when not a sweep point."""
    requests: int
    ok: int
    elapsed_s: float
    throughput: float
    """Successful answers per second."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    """Failed requests by gRPC status name or HTTP status code."""
    bytes_per_answer: float

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}
