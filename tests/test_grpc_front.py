"""The gRPC front in-process, over a fake backend: decoding, errors mapped once, health, limits.

The real Triton is not needed to check what the front itself does; test_gateway.py covers
the same front against the real Triton.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attnserve.clients import Client
from attnserve.errors import InvalidInput, ModelNotFound, Unavailable, UpstreamError
from attnserve.server.gateway.backend import RepositoryModel
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .conftest import FakeBackend, GatewayThread, gateway_settings, triton_settings
from .conftest import grey_png as png


@pytest.fixture()
def fake() -> Iterator[tuple[GatewayThread, FakeBackend]]:
    backend = FakeBackend(names=("cbam", "other"))
    settings = gateway_settings(triton_settings(), default_model="cbam", max_message_bytes=4 * 2**20)
    thread = GatewayThread(settings, backend).start()
    with Client(thread.address) as client:
        client.wait_until_serving(10)
    yield thread, backend
    thread.stop()


def test_predict_decodes_calls_the_backend_once_and_encodes(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, backend = fake
    with Client(thread.address) as client:
        prediction = client.predict(png(), maps=["primary", "cam"], forms=["raw", "overlay_png"], top_k=3)
    assert prediction.model == "cbam" and prediction.image.width == 96 and len(prediction.predictions) == 3
    stage3, cam = prediction.attention
    assert stage3.name == "spatial_stage3" and stage3.raw is not None and stage3.raw.shape == (8, 8)
    assert cam.class_index == prediction.predictions[0].index and cam.overlay_png[:4] == b"\x89PNG"
    ((model, inputs, outputs),) = backend.calls
    assert model == "cbam" and inputs == {"image": (1, 1, 64, 64)}
    assert outputs == ["logits", "spatial_stage3", "cam"]


def test_models_are_listed_from_the_backend(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, _ = fake
    with Client(thread.address) as client:
        listing = client.list_models()
        info = client.get_model("other")
        default = client.get_model()
    assert [m.name for m in listing.models] == ["cbam", "other"] and listing.default_model == "cbam"
    assert info.name == "other" and info.primary_attention == "spatial_stage3" and default.name == "cbam"
    assert [a.name for a in info.attention if list(a.shape) == [10, 8, 8]] == ["cam"]


def test_models_that_are_not_ready_are_listed_with_their_reason(
    fake: tuple[GatewayThread, FakeBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    thread, backend = fake
    backend.ready = False  # Triton is gone: every model stays listed, not ready, described as before
    thread.call(thread.gateway.core.check())
    with Client(thread.address) as client:
        gone = client.list_models()
        with pytest.raises(Unavailable, match="'other' is not ready: Triton is unavailable"):
            client.predict(png(), model="other")
    assert [(m.name, m.ready, m.reason) for m in gone.models] == [
        ("cbam", False, "Triton is unavailable"),
        ("other", False, "Triton is unavailable"),
    ]
    assert gone.models[1].primary_attention == "spatial_stage3" and len(gone.models[1].labels) == 10

    listed = [
        *asyncio.run(backend.repository_index()),
        RepositoryModel("broken", "2", "UNAVAILABLE", "load failed"),
    ]

    async def repository_index() -> list[RepositoryModel]:
        return listed

    monkeypatch.setattr(backend, "repository_index", repository_index)
    backend.ready = True  # back, with a model that failed to load
    thread.call(thread.gateway.core.check())
    with Client(thread.address) as client:
        back = client.list_models()
        with pytest.raises(Unavailable, match="'broken' is not ready: UNAVAILABLE: load failed"):
            client.predict(png(), model="broken")
        assert client.predict(png(), model="other").predictions
    assert [(m.name, m.version, m.ready, m.reason) for m in back.models] == [
        ("broken", "2", False, "UNAVAILABLE: load failed"),
        ("cbam", "1", True, ""),
        ("other", "1", True, ""),
    ]
    assert back.models[0] == pb.ModelInfo(name="broken", version="2", reason="UNAVAILABLE: load failed")


@pytest.mark.parametrize(
    ("failure", "error", "code"),
    [
        (Unavailable("Triton is unavailable"), Unavailable, grpc.StatusCode.UNAVAILABLE),
        (UpstreamError("Triton error INTERNAL"), UpstreamError, grpc.StatusCode.INTERNAL),
        (KeyError("a secret detail"), UpstreamError, grpc.StatusCode.INTERNAL),
    ],
)
def test_backend_failures_are_mapped_once_and_the_server_keeps_serving(
    fake: tuple[GatewayThread, FakeBackend], failure: Exception, error: type[Exception], code: grpc.StatusCode
) -> None:
    thread, backend = fake
    backend.fail_with = failure
    with grpc.insecure_channel(thread.address) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(pb.PredictRequest(image=png()), timeout=10)
    assert raised.value.code() == code and "secret" not in (raised.value.details() or "")
    with Client(thread.address) as client:
        with pytest.raises(error):
            client.predict(png())
        backend.fail_with = None
        assert client.predict(png()).predictions


def test_stream_reports_each_failure_in_its_item(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, _ = fake
    with Client(thread.address) as client:
        results = list(client.predict_stream([png(), b"nope", png()], model="other", maps=["primary"]))
        with pytest.raises(ModelNotFound):
            client.predict(png(), model="missing")
    assert [type(r).__name__ for r in results] == ["Prediction", "InvalidInput", "Prediction"]
    assert [r.model for r in results if not isinstance(r, Exception)] == ["other", "other"]


def test_the_message_limit_is_the_fronts_and_is_checked_before_postprocessing(
    fake: tuple[GatewayThread, FakeBackend],
) -> None:
    thread, _ = fake  # a 4 MiB message limit: two 1200×1000 float32 maps need 9 MiB
    with Client(thread.address) as client:
        with pytest.raises(InvalidInput, match="above the 4 MiB message limit"):
            client.predict(png(1200, 1000), maps=["spatial_stage3", "cam"], forms=["upsampled"])
        one = client.predict(png(600, 500), maps=["cam"], forms=["upsampled"])
    assert one.attention[0].upsampled is not None and one.attention[0].upsampled.shape == (500, 600)


def test_health_follows_the_backend(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, backend = fake
    with grpc.insecure_channel(thread.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def status() -> int:
            request = health_pb2.HealthCheckRequest(service="attnserve.v1.AttentionService")
            return int(health.Check(request).status)

        assert status() == health_pb2.HealthCheckResponse.SERVING
        backend.ready = False
        deadline = time.monotonic() + 5
        while status() != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health did not follow the backend"
            time.sleep(0.05)
        with Client(thread.address) as client, pytest.raises(Unavailable, match="not ready"):
            client.predict(png())
        backend.ready = True
        while status() != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline + 5, "health did not come back"
            time.sleep(0.05)


def test_tensor_inputs_reach_the_backend_unchanged(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, backend = fake
    tensor = np.random.default_rng(0).normal(size=(1, 64, 64)).astype(np.float32)
    with Client(thread.address) as client:
        prediction = client.predict(tensor, omit_attention=True)
    assert prediction.image.format == "TENSOR" and prediction.attention == []
    assert backend.calls[-1][2] == ["logits"]


def test_an_unexpected_failure_of_one_stream_item_is_that_items_error(
    fake: tuple[GatewayThread, FakeBackend],
) -> None:
    thread, backend = fake
    backend.fail_with = KeyError("a secret detail")
    try:
        with Client(thread.address) as client:
            results = list(client.predict_stream([png(), png()]))
    finally:
        backend.fail_with = None
    assert [type(r).__name__ for r in results] == ["UpstreamError", "UpstreamError"]
    assert all("secret" not in str(r) and "INTERNAL" in str(r) for r in results)


def test_metric_labels_name_only_served_models(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, _ = fake
    with Client(thread.address) as client:
        for index in range(20):
            with pytest.raises(ModelNotFound):
                client.predict(png(), model=f"made-up-{index}")
        client.predict(png(), model="other")
    metrics = thread.call(_scrape(thread))
    assert "made-up" not in metrics  # type: ignore[operator]
    assert 'code="NOT_FOUND",method="Predict",model="unknown",transport="grpc"} 20.0' in metrics  # type: ignore[operator]
    assert 'model="other",transport="grpc"' in metrics  # type: ignore[operator]


async def _scrape(thread: GatewayThread) -> str:
    from prometheus_client import generate_latest

    return generate_latest(thread.gateway.core.metrics.registry).decode()


def test_unknown_model_versions_are_not_found(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, _ = fake
    with Client(thread.address) as client, pytest.raises(ModelNotFound, match="no version '999'; served: 1"):
        client.predict(png(), model_version="999")


def test_too_little_time_left_is_refused_before_decoding(fake: tuple[GatewayThread, FakeBackend]) -> None:
    from attnserve.errors import DeadlineExceeded
    from attnserve.prediction import PredictionRequest

    thread, backend = fake
    calls = len(backend.calls)
    request = PredictionRequest(image=png())
    with pytest.raises(DeadlineExceeded, match="nothing was decoded"):
        thread.call(thread.gateway.core.predict(request, deadline_s=0.0005))
    assert len(backend.calls) == calls
