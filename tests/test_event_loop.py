"""The gateway's event loop (settings: ``event_loop``): uvloop by default, asyncio's own loop on
request, and a missing uvloop said in one line that names the way out."""

from __future__ import annotations

import asyncio
import sys

import pytest

from attnserve.errors import SetupError
from attnserve.server.serve import loop_factory
from attnserve.settings import Settings


def loop_class(settings: Settings) -> str:
    seen: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen.append(f"{type(loop).__module__}.{type(loop).__name__}")

    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        runner.run(main())
    return seen[0]


def test_the_gateway_runs_on_uvloop_unless_asked_for_asyncio() -> None:
    assert Settings().gateway.event_loop == "uvloop"
    assert loop_class(Settings()) == "uvloop.Loop"
    assert loop_class(Settings(gateway={"event_loop": "asyncio"})).startswith("asyncio.")


def test_a_missing_uvloop_says_how_to_do_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop → ImportError
    with pytest.raises(SetupError, match="ATTNSERVE_GATEWAY__EVENT_LOOP=asyncio"):
        loop_factory(Settings())
