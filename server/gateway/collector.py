"""The gateway's process and Python's cyclic garbage collector.

A full collection walks every object the collector tracks, and the event loop stops meanwhile.
The gateway holds ~64,000 such objects from startup alone (its modules, settings, the catalog,
grpc's and prometheus' objects). Under 8 closed-loop clients on the 2-core machine, Python ran a
full collection once in 60 s (12,000 calls), which stopped the loop for 44 ms in the middle of
whatever calls were in flight (docs/overload.md).

`freeze_startup` collects once after startup and moves everything then alive out of the
collector's reach (`gc.freeze`). Later collections then walk only what serving created. Frozen
objects are still freed by reference counting, as most objects are. The cyclic collector only
misses a frozen object that later becomes part of unreachable cycle garbage, and startup's
objects live as long as the process.

`PauseRecorder` observes each collection's pause, by generation, in `attnserve_gc_pause_seconds`.
"""

from __future__ import annotations

import gc
import logging
import time
from types import TracebackType
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)


def freeze_startup() -> int:
    """Collects, then freezes every object alive now; how many are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%d objects frozen after startup: full collections skip them", frozen)
    return frozen


class PauseRecorder:
    """While entered, every collection's pause (start to stop, on the thread that triggered it)
    is observed in ``histogram``, labelled by its generation."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.histogram.labels(str(info["generation"])).observe(time.perf_counter() - self._started)

    def __enter__(self) -> PauseRecorder:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        gc.callbacks.remove(self._callback)
