"""Heavy calls' workers (`server/gateway/heavy.py`): render threads, or processes of their own
that answer exactly as the threads do, pass declared errors back as they are, run nicer than
the gateway, and are replaced when one dies."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.prediction import MapForm, Prediction, PredictionRequest
from attnserve.server.gateway.catalog import ModelCatalog
from attnserve.server.gateway.heavy import HeavyWork, worker_pid
from attnserve.server.gateway.metrics import GatewayMetrics
from attnserve.server.gateway.pipeline import Pipeline
from attnserve.settings import GatewaySettings

from .conftest import FakeBackend, assert_same_answer, workers_blas_like_this_process


def niceness() -> int:
    """The calling thread's niceness (a module-level function: it runs in a worker process)."""
    import threading

    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def die() -> None:
    """A worker that dies mid-call (killed, out of memory)."""
    os.kill(os.getpid(), signal.SIGKILL)


def photo(width: int = 1200, height: int = 900) -> bytes:
    """A JPEG large enough to be a heavy call's."""
    buffer = io.BytesIO()
    gradient = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    gradient.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def predict(calls: list[PredictionRequest], **settings: object) -> list[Prediction | Exception]:
    """``calls`` one after another through a real `Pipeline` on a `FakeBackend` (its outputs
    seeded, so that two pipelines answer alike): each call's answer or error."""

    async def run() -> list[Prediction | Exception]:
        backend = FakeBackend()
        catalog = ModelCatalog()
        await catalog.refresh(backend)
        pipeline = Pipeline(
            GatewaySettings(**settings),  # type: ignore[arg-type]
            catalog,
            backend,  # type: ignore[arg-type]
            GatewayMetrics(),
        )
        results: list[Prediction | Exception] = []
        try:
            for call in calls:
                try:
                    results.append(await pipeline.predict(call))
                except Exception as error:  # noqa: BLE001 - the error is the result
                    results.append(error)
        finally:
            pipeline.close()
        return results

    with workers_blas_like_this_process():  # workers spawned by the pipeline: the same sums
        return asyncio.run(run())


@pytest.fixture(scope="module")
def processes() -> Iterator[HeavyWork]:
    work = HeavyWork(threads=1, processes=1, nice=10)
    yield work
    work.close()


FORMS = [MapForm.OVERLAY_PNG, MapForm.HEATMAP_PNG, MapForm.UPSAMPLED]


def test_worker_processes_answer_exactly_as_render_threads() -> None:
    calls = [
        PredictionRequest(image=photo(), maps=("spatial_stage3", "cam"), forms=frozenset(FORMS)),
        PredictionRequest(
            image=photo(640, 1000), forms=frozenset({MapForm.OVERLAY_PNG}), render_max_side=300
        ),
    ]
    threads = predict(calls, render_processes=0)
    processes = predict(calls, render_processes=1)
    for by_thread, by_process in zip(threads, processes, strict=True):
        assert isinstance(by_thread, Prediction) and isinstance(by_process, Prediction)
        assert by_thread.predictions == by_process.predictions
        assert by_thread.image == by_process.image
        assert len(by_thread.attention) == len(by_process.attention) > 0
        assert any(m.overlay_png for m in by_process.attention)  # something drawn to compare
        assert_same_answer(by_thread, by_process)  # every form, the encoded overlays byte for byte


def test_a_worker_process_passes_declared_errors_back() -> None:
    corrupt = photo()[:5000]  # a JPEG cut short: the header probes, the decoding fails
    calls = [
        PredictionRequest(image=corrupt, forms=frozenset({MapForm.OVERLAY_PNG})),
        PredictionRequest(image=photo(), forms=frozenset({MapForm.OVERLAY_PNG})),
    ]
    threads = predict(calls, render_processes=0)
    processes = predict(calls, render_processes=1)
    assert isinstance(threads[0], InvalidInput) and isinstance(processes[0], InvalidInput)
    assert type(threads[0]) is type(processes[0]) and str(threads[0]) == str(processes[0])
    assert isinstance(processes[1], Prediction)  # and the worker goes on


def test_worker_processes_are_their_own_and_nicer(processes: HeavyWork) -> None:
    async def run() -> tuple[int, int]:
        return await processes.run(worker_pid), await processes.run(niceness)

    pid, nice = asyncio.run(run())
    assert pid != os.getpid()
    if sys.platform == "linux":
        assert nice == min(19, niceness() + 10)


def test_a_dead_worker_process_fails_its_call_and_the_next_gets_a_new_one(processes: HeavyWork) -> None:
    async def run() -> tuple[int, list[object], int]:
        first = await processes.run(worker_pid)
        os.kill(first, signal.SIGKILL)
        seen: list[object] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the pool notices the death by itself, or this call does
            try:
                pid = await processes.run(worker_pid)
            except RuntimeError as error:
                seen.append(error)
                continue
            if pid != first:
                return first, seen, pid
            await asyncio.sleep(0.05)
        raise AssertionError("no new worker process within 60 s")

    first, errors, second = asyncio.run(run())
    assert second != first
    assert len(errors) <= 1
    assert all("render worker process stopped" in str(e) for e in errors)


def test_a_call_whose_worker_dies_fails_and_the_next_one_runs(processes: HeavyWork) -> None:
    async def run() -> tuple[int, int]:
        before = await processes.run(worker_pid)
        with pytest.raises(RuntimeError, match="render worker process stopped during this call"):
            await processes.run(die)
        return before, await processes.run(worker_pid)

    before, after = asyncio.run(run())
    assert after != before
