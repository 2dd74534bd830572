"""How many cheap predictions may run at once, learnt from their latency.

A fixed ``max_in_flight`` is a guess about the machine: 64 requests in flight on two cores is
not capacity but a queue — the CPU stages, the GIL and Triton's batcher share the cores, and
every admitted request waits for the others (a burst of 80 cheap predictions at a cap of 8
took admitted requests from 10 ms to 60 ms inside the gateway). `AdaptiveLimit` admits as many
as keep their latency within ``tolerance`` × their no-load latency: one more at a time while
latency allows, fewer in proportion when it does not (as TCP Vegas, Netflix's
concurrency-limits and Envoy's adaptive concurrency filter do):

- **no-load latency**, per kind of request (a model's cheap predictions), is learnt from the
  *light* samples only: those with fewer than ``minimum`` others in flight when they were
  admitted and when they finished (the first of a burst is not alone for long). Samples
  taken under load never raise it, so a long overload cannot teach the limit that slow is
  normal; the limit never goes below ``minimum``, so light samples keep coming while loaded;
- decisions are made once per **round**, as many completions as the limit: a round whose median
  latency is above ``tolerance`` × no-load latency (and 2 ms above it) cuts the limit in proportion
  (to ``tolerance`` / the round's ratio, at most by half), as Netflix's gradient limit does;
- a round within it, in which at least half the limit was in use, raises it by one: only when
  the limit was what held traffic back (a lone client at concurrency 1 teaches nothing about 8).

Heavy requests (renders, large decodes) have their own cap and threads and do not feed it:
their latency is their queue on the render threads, not the machine's load.

It is latency before throughput, so it is off by default (``adaptive_concurrency``). On two
cores with the load generator beside it, under an open-loop overload it took admitted calls'
p99 from 798 to 107 ms and answered 0.68× as many; under closed-loop clients it answered
0.61–0.71× as many for little (docs/overload.md). Batching in Triton wants concurrency that a 2×
latency budget does not allow.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Hashable

MAX_CUT = 0.5
"""A slow round cuts the limit at most to this share of what it was."""
MIN_EXCESS_S = 0.002
"""A sample less than this above the no-load latency counts as no slower: at sub-millisecond
latencies timer noise alone is a factor of two."""
LEARN = 0.05
"""How fast a light sample above the no-load latency raises it (a model that became slower)."""
RECENT = 0.2
"""The weight of each completion in a kind's recent latency (an exponential average)."""


def machine_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class AdaptiveLimit:
    """The limit and what it learnt; used from the event loop only (no locks)."""

    def __init__(self, initial: int, minimum: int, maximum: int, tolerance: float) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 ≤ minimum ≤ maximum, got {minimum} and {maximum}")
        self.minimum, self.maximum, self.tolerance = minimum, maximum, tolerance
        self.limit = min(max(initial, minimum), maximum)
        self.no_load_s: dict[Hashable, float] = {}
        self.recent_s: dict[Hashable, float] = {}
        """Each kind's latency now, loaded or not: an exponential average of every completion."""
        self._ratios: list[float] = []
        self._busy = 0

    @property
    def value(self) -> int:
        return self.limit

    def observe(self, key: Hashable, latency_s: float, others_in_flight: int) -> None:
        """One completed request of kind ``key``: its latency, and the most others of its kind
        in flight when it was admitted or when it finished."""
        recent = self.recent_s.get(key)
        self.recent_s[key] = latency_s if recent is None else recent + RECENT * (latency_s - recent)
        known = self.no_load_s.get(key)
        if others_in_flight < self.minimum:  # light: what this kind costs when the machine is free
            known = latency_s if known is None or latency_s < known else known + LEARN * (latency_s - known)
            self.no_load_s[key] = known
        if known is None:  # nothing to compare with yet
            return
        slow = latency_s > known + MIN_EXCESS_S
        self._ratios.append(latency_s / known if slow else min(1.0, latency_s / known))
        self._busy += others_in_flight + 1 >= self.limit / 2
        if len(self._ratios) >= self.limit:
            self._decide()

    def _decide(self) -> None:
        ratio = statistics.median(self._ratios)
        if ratio > self.tolerance:
            cut = max(MAX_CUT, self.tolerance / ratio)
            self.limit = max(self.minimum, min(self.limit - 1, int(self.limit * cut)))
        elif 2 * self._busy >= len(self._ratios):
            self.limit = min(self.maximum, self.limit + 1)
        self._ratios.clear()
        self._busy = 0
