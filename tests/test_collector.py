"""The gateway's garbage collection (server/gateway/collector.py): startup's objects frozen out
of full collections, and every collection's pause observed by generation. `attnserve serve`
does both (tests/test_soak.py reads them from a served gateway's metrics)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from attnserve.server.gateway.collector import PauseRecorder, freeze_startup
from attnserve.server.gateway.metrics import GatewayMetrics


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process must not keep what it froze


def pauses(metrics: GatewayMetrics, generation: str) -> float:
    value = metrics.registry.get_sample_value("attnserve_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


def test_startup_objects_are_frozen_and_full_collections_skip_them(unfrozen: None) -> None:
    class Cycle:
        pass

    cycle = Cycle()
    cycle.me = cycle  # type: ignore[attr-defined]
    alive = weakref.ref(cycle)
    del cycle  # startup's garbage is collected first, not frozen forever
    tracked = len(gc.get_objects())
    frozen = freeze_startup()
    assert alive() is None
    assert frozen >= gc.get_freeze_count() > 0.9 * tracked  # (those freed since drop out)
    assert len(gc.get_objects()) < 0.1 * tracked  # what a full collection still walks


def test_every_collection_pause_is_observed_by_generation() -> None:
    metrics = GatewayMetrics()
    with PauseRecorder(metrics.gc_pause_seconds) as recorder:
        assert recorder._callback in gc.callbacks
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    assert pauses(metrics, "0") >= 1 and pauses(metrics, "2") >= 2
    assert recorder._callback not in gc.callbacks
    seen = pauses(metrics, "2")
    gc.collect()
    assert pauses(metrics, "2") == seen  # nothing is observed once it is left
