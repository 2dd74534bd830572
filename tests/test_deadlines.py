"""Deadlines end to end: a call's remaining time bounds the gateway's wait and Triton's work.

The integration tests run the real tritonserver and gateway on a copy of cbam made slow with
the backend's ``execute_delay_ms`` fault injection and ``max_batch_size: 1``, so that every
request is its own execution and work done for callers that already gave up shows in the time
the next caller waits and in Triton's statistics.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from attnserve.clients import AsyncClient, Client
from attnserve.errors import DeadlineExceeded
from attnserve.export.models import get_spec
from attnserve.export.repository import ServingOptions, build_config, config_to_text, read_config
from attnserve.server.gateway import triton as triton_adapter
from attnserve.server.triton.runtime import BACKEND_SOURCE
from attnserve.settings import DEFAULT_MODEL_REPOSITORY, TritonSettings

from .conftest import GatewayThread, serving_gateway, triton_settings
from .conftest import grey_png as png

MODEL = "cbam"
DELAY_MS = 400
DEADLINE_S = 0.150
SLACK_S = 0.050
BURST = 6
SETTLE_S = 0.050
"""Pause before the call that follows a timeout. Triton 2.51's dynamic batcher can miss a request
that arrives in the very millisecond an instance is handed back (as it is when the abandoned
execution stops at the deadline) and find it only at its 500 ms idle wake-up: measured in 5 of
12 calls sent at once, 0 of 12 sent 50 ms later."""


# --- the queue policy in every config -------------------------------------------------------


@pytest.mark.parametrize("config_path", sorted(DEFAULT_MODEL_REPOSITORY.glob("*/config.pbtxt")), ids=str)
def test_no_committed_config_has_a_queue_policy(config_path: Path) -> None:
    """Any ``default_queue_policy`` makes Triton 2.51's dynamic batcher leave a request queued
    until its 500 ms idle wake-up now and then (see `attnserve.export.repository`); abandoned
    work is dropped by cancellation instead (the integration tests below)."""
    config = read_config(config_path)
    assert config.HasField("dynamic_batching")
    assert not config.dynamic_batching.HasField("default_queue_policy")
    assert config_path.read_text() == config_to_text(config)  # written by the exporter's writer


def test_export_writes_no_queue_policy() -> None:
    spec = get_spec(MODEL)
    dims = {name: (10,) if name == "logits" else (8, 8) for name in spec.output_names}
    config = build_config(MODEL, spec, dims, ServingOptions())
    parsed = text_format.Parse(config_to_text(config), mc.ModelConfig())
    assert parsed.HasField("dynamic_batching")
    assert not parsed.dynamic_batching.HasField("default_queue_policy")


# --- the adapter hands the remaining time to Triton ----------------------------------------


class FakeAioClient:
    """Records what `TritonBackend.infer` asks of tritonclient's aio client."""

    def __init__(self, url: str, channel_args: list[tuple[str, int]] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.channel_args = dict(channel_args or [])

    async def infer(self, model_name: str, inputs: list[Any], **options: Any) -> Any:
        self.calls.append(options)
        logits = np.zeros((1, 10), np.float32)
        return SimpleNamespace(as_numpy=lambda name: logits if name == "logits" else None)


def test_the_remaining_time_is_the_grpc_deadline_and_tritons_request_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(triton_adapter.triton_aio, "InferenceServerClient", FakeAioClient)
    backend = triton_adapter.TritonBackend("127.0.0.1:1")
    image = np.zeros((1, 1, 64, 64), np.float32)
    asyncio.run(backend.infer(MODEL, "", {"image": image}, ["logits"], 0.1234567, "id-1"))
    (call,) = backend._client.calls  # type: ignore[attr-defined]
    assert call["client_timeout"] == 0.1234567
    assert call["timeout"] == 123456 and isinstance(call["timeout"], int)  # microseconds
    assert call["request_id"] == "id-1"
    options = backend._client.channel_args  # type: ignore[attr-defined]
    assert options["grpc.max_reconnect_backoff_ms"] == 1000  # back within a second of Triton
    assert options["grpc.max_receive_message_length"] > 2**30  # tritonclient's own options kept
    assert triton_adapter.request_timeout_us(1e-9) == 1  # 0 would mean "no timeout" to Triton


# --- the backend answers cancelled requests without computing them -------------------------


class FakeRequest:
    def __init__(self, value: float, cancelled: bool = False) -> None:
        self.image = np.full((1, 1, 2, 2), value, np.float32)
        self.cancelled = cancelled
        self.polls = 0

    def is_cancelled(self) -> bool:
        self.polls += 1
        return self.cancelled

    def requested_output_names(self) -> list[str]:
        return []


def fake_pb_utils() -> ModuleType:
    class TritonError:
        CANCELLED = 7

        def __init__(self, message: str, code: int = 0) -> None:
            self.message, self.code = message, code

    module = ModuleType("triton_python_backend_utils")
    module.TritonError = TritonError  # type: ignore[attr-defined]
    module.TritonModelException = RuntimeError  # type: ignore[attr-defined]
    module.Tensor = lambda name, array: (name, array)  # type: ignore[attr-defined]
    module.InferenceResponse = lambda output_tensors=None, error=None: SimpleNamespace(  # type: ignore[attr-defined]
        outputs=output_tensors, error=error
    )
    module.get_input_tensor_by_name = lambda request, name: SimpleNamespace(  # type: ignore[attr-defined]
        as_numpy=lambda: request.image
    )
    return module


@pytest.fixture()
def backend_model(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stub-side backend with a fake `pb_utils` and a session that records its batches."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("attnserve_backend_under_test", BACKEND_SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.model_name, model.max_batch_size = MODEL, 8
    model.inputs, model.outputs = [("image", np.float32)], ["double"]
    model.execute_delay_s = 0.0
    model.batches = []

    def run(wanted: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        model.batches.append(feed["image"][:, 0, 0, 0].tolist())
        return [feed["image"] * 2]

    model.session = SimpleNamespace(run=run)
    return model


def test_cancelled_requests_are_answered_cancelled_and_the_others_computed(backend_model: Any) -> None:
    requests = [FakeRequest(1.0), FakeRequest(2.0, cancelled=True), FakeRequest(3.0)]
    responses = backend_model.execute(requests)
    assert backend_model.batches == [[1.0, 3.0]]  # one run, without the cancelled request
    assert responses[1].error.message == "request cancelled" and responses[1].error.code == 7
    assert [r.outputs[0][1][0, 0, 0, 0] for r in (responses[0], responses[2])] == [2.0, 6.0]


def test_the_injected_delay_ends_early_when_every_caller_is_gone(backend_model: Any) -> None:
    backend_model.execute_delay_s = 5.0
    gone = FakeRequest(1.0, cancelled=True)
    started = time.perf_counter()
    (response,) = backend_model.execute([gone])
    assert time.perf_counter() - started < 0.5 and response.error.message == "request cancelled"
    assert backend_model.batches == []

    backend_model.execute_delay_s = 0.05
    waiting = FakeRequest(1.0)
    started = time.perf_counter()
    (response,) = backend_model.execute([waiting])
    assert time.perf_counter() - started >= 0.05 and response.error is None
    assert waiting.polls >= 3  # polled between slices of at most 10 ms (and once before running)


# --- the real Triton and gateway on a slow model -------------------------------------------


@pytest.fixture(scope="module")
def slow_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonSettings]:
    from attnserve.server.triton import TritonProcess

    repository = tmp_path_factory.mktemp("slow-repository")
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / MODEL, repository / MODEL)
    config = read_config(repository / MODEL / "config.pbtxt")
    config.max_batch_size = 1  # one execution per request: queued work cannot hide in a batch
    config.parameters["execute_delay_ms"].string_value = str(DELAY_MS)
    assert [group.count for group in config.instance_group] == [1]
    (repository / MODEL / "config.pbtxt").write_text(config_to_text(config))
    settings = triton_settings(repository=repository)
    with TritonProcess(settings):
        yield settings


@pytest.fixture(scope="module")
def slow_gateway(slow_triton: TritonSettings) -> Iterator[GatewayThread]:
    yield from serving_gateway(slow_triton)


def timed_predict(address: str, timeout_s: float) -> tuple[float, Exception | None]:
    with Client(address, timeout_s=timeout_s) as client:
        started = time.perf_counter()
        try:
            client.predict(png())
        except DeadlineExceeded as exc:
            return time.perf_counter() - started, exc
        return time.perf_counter() - started, None


def triton_work(settings: TritonSettings) -> dict[str, float]:
    """Executions, the backend's compute time and the failures by reason, from Triton."""
    with grpcclient.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}") as client:
        stats = client.get_inference_statistics(MODEL).model_stats[0]
    work = {
        "executions": float(stats.execution_count),
        "compute_s": stats.inference_stats.compute_infer.ns / 1e9,
    }
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("nv_inference_request_failure{") and f'model="{MODEL}"' in line:
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                work[reason] = float(line.rsplit(" ", 1)[1])
    return work


@pytest.mark.triton
def test_a_call_past_its_deadline_fails_in_time_and_the_next_succeeds(slow_gateway: GatewayThread) -> None:
    elapsed, error = timed_predict(slow_gateway.address, DEADLINE_S)
    assert isinstance(error, DeadlineExceeded), f"a {DELAY_MS} ms model answered within {DEADLINE_S} s"
    assert elapsed <= DEADLINE_S + SLACK_S, f"DEADLINE_EXCEEDED after {elapsed * 1e3:.0f} ms"
    time.sleep(SETTLE_S)
    elapsed, error = timed_predict(slow_gateway.address, 10.0)
    assert error is None and elapsed < 2 * DELAY_MS / 1e3, f"next call: {elapsed * 1e3:.0f} ms"


@pytest.mark.triton
def test_triton_does_not_compute_for_callers_that_gave_up(
    slow_triton: TritonSettings, slow_gateway: GatewayThread
) -> None:
    before = triton_work(slow_triton)

    async def burst() -> list[tuple[float, BaseException | None]]:
        async with AsyncClient(slow_gateway.address, timeout_s=DEADLINE_S) as client:

            async def one() -> tuple[float, BaseException | None]:
                started = time.perf_counter()
                try:
                    await client.predict(png())
                except DeadlineExceeded as exc:
                    return time.perf_counter() - started, exc
                return time.perf_counter() - started, None

            return await asyncio.gather(*(one() for _ in range(BURST)))

    outcomes = asyncio.run(burst())
    time.sleep(SETTLE_S)
    next_s, next_error = timed_predict(slow_gateway.address, 10.0)
    after = triton_work(slow_triton)
    work = {key: after[key] - before.get(key, 0.0) for key in after}

    figures = (
        f"burst of {BURST} with a {DEADLINE_S * 1e3:.0f} ms deadline on a {DELAY_MS} ms model: "
        f"failed after {', '.join(f'{s * 1e3:.0f}' for s, _ in outcomes)} ms; the next call took "
        f"{next_s * 1e3:.0f} ms (without dropping, up to {(BURST + 1) * DELAY_MS} ms); Triton: {work}"
    )
    assert all(isinstance(error, DeadlineExceeded) for _, error in outcomes), figures
    assert all(elapsed <= DEADLINE_S + SLACK_S for elapsed, _ in outcomes), figures
    assert next_error is None, figures
    # about one delay (its own); each abandoned request Triton still ran would add one more
    assert next_s < 2 * DELAY_MS / 1e3, figures
    # the backend computed for the next call and for the burst's first request until its
    # deadline (then it noticed the cancellation), not for the whole delay
    assert work["compute_s"] < DELAY_MS / 1e3 + DEADLINE_S + 0.1, figures
    # and some queued abandoned requests never reached the backend: Triton dropped them as
    # cancelled. The others reached it about when their deadline passed (the burst's deadlines all
    # fall within a few ms, as its first request's execution ends) and were answered cancelled
    # within one delay slice: the compute bound above counts them. Asking for half of the burst
    # here failed once in a full suite run (2 of 6) once small images skipped the thread hop and
    # the burst reached Triton closer together.
    assert work.get("CANCELED", 0) + work.get("REJECTED", 0) >= 1, figures
