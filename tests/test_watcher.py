"""The readiness watcher (`server/gateway/watcher.py`): a Triton that refuses the probe empties
the catalog at once; one probe without an answer while serving (a flood of calls, the gateway's
loop late) changes nothing, and a second in a row does."""

from __future__ import annotations

import asyncio

import pytest

from attnserve.server.gateway import watcher as watcher_module
from attnserve.server.gateway.catalog import ModelCatalog
from attnserve.server.gateway.metrics import GatewayMetrics
from attnserve.server.gateway.watcher import ReadinessWatcher

from .conftest import FakeBackend


class ProbedBackend(FakeBackend):
    """A `FakeBackend` whose readiness probe takes ``probe_s`` to fail when not ready."""

    def __init__(self) -> None:
        super().__init__()
        self.probe_s = 0.0

    async def is_ready(self) -> bool:
        if not self.ready:
            await asyncio.sleep(self.probe_s)
        return self.ready


def rounds(plan: list[tuple[bool, float]]) -> list[bool]:
    """After a first round that serves, one round per (ready, probe_s): whether each serves."""
    backend = ProbedBackend()

    async def run() -> list[bool]:
        catalog = ModelCatalog()
        watcher = ReadinessWatcher(backend, catalog, GatewayMetrics(), interval_s=1.0)  # type: ignore[arg-type]
        assert await watcher.check()
        served = []
        for ready, probe_s in plan:
            backend.ready, backend.probe_s = ready, probe_s
            served.append(await watcher.check())
            assert served[-1] == bool(catalog.models)  # nothing servable once the catalog is empty
        return served

    return asyncio.run(run())


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher_module, "UNANSWERED_S", 0.05)


SLOW = 0.1


def test_a_refused_probe_ends_serving_at_once() -> None:
    assert rounds([(False, 0.0), (True, 0.0)]) == [False, True]


def test_one_unanswered_probe_changes_nothing_and_a_second_in_a_row_ends_serving() -> None:
    assert rounds([(False, SLOW), (True, 0.0), (False, SLOW), (False, SLOW)]) == [True, True, True, False]
    assert rounds([(False, 0.0), (False, SLOW)]) == [False, False]  # not serving: nothing to keep
