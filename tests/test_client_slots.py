"""The clients' cap on calls in flight: calls beyond it wait for a slot within their deadline,
and one that gets none in time is never sent (DeadlineExceeded)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from attnserve.clients import AsyncClient, Client
from attnserve.clients.slots import DEFAULT_MAX_CONCURRENT_CALLS, AsyncCallSlots, CallSlots
from attnserve.errors import DeadlineExceeded


def test_blocking_calls_beyond_the_cap_wait_and_give_up_at_their_deadline() -> None:
    slots = CallSlots(2)
    with slots.held(1.0) as first, slots.held(None) as second:
        assert first is not None and 0.9 < first <= 1.0 and second is None
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="2 call slots .* never sent"), slots.held(0.05):
            pass
        assert 0.04 < time.monotonic() - started < 0.5
    with slots.held(0.05) as left:  # free again once released
        assert left is not None and left > 0


def test_threads_never_hold_more_slots_than_the_cap() -> None:
    slots, lock = CallSlots(3), threading.Lock()
    inside, most = 0, 0

    def call() -> None:
        nonlocal inside, most
        with slots.held(5.0):
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 3 and inside == 0


def test_coroutines_wait_for_a_slot_within_their_deadline() -> None:
    async def main() -> tuple[int, float | None]:
        slots = AsyncCallSlots(3)
        inside, most = 0, 0

        async def call() -> None:
            nonlocal inside, most
            async with slots.held(5.0):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(call() for _ in range(12)))
        async with slots.held(1.0), slots.held(1.0), slots.held(1.0):
            with pytest.raises(DeadlineExceeded, match="3 call slots"):
                async with slots.held(0.02):
                    pass
        async with slots.held(0.5) as left:  # a cancelled wait left no slot taken
            return most, left

    most, left = asyncio.run(main())
    assert most == 3 and left is not None and 0 < left <= 0.5


def test_the_clients_take_the_cap_and_refuse_a_cap_below_one() -> None:
    with Client("127.0.0.1:1") as client:
        assert client._slots.limit == DEFAULT_MAX_CONCURRENT_CALLS == 96
    for make in (CallSlots, AsyncCallSlots):
        with pytest.raises(ValueError, match="at least 1"):
            make(0)
    with pytest.raises(ValueError, match="at least 1"):
        Client("127.0.0.1:1", max_concurrent_calls=0)

    async def build() -> int:
        async with AsyncClient("127.0.0.1:1", max_concurrent_calls=7) as client:
            return client._slots.limit

    assert asyncio.run(build()) == 7
