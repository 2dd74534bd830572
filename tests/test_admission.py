"""Admission and bounded rendering: what a request may cost is decided from its header before
any decoding, beyond the limits it is refused at once with a retry hint, and image forms are
drawn at a bounded size whatever the original's."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client import generate_latest

from attnserve.clients import AsyncClient, Client, HttpClient
from attnserve.clients.http import retry_hint_s
from attnserve.errors import Overloaded, TooLarge
from attnserve.export.models import create_model, get_spec, serving_spec
from attnserve.prediction import MapForm, PredictionRequest
from attnserve.server.gateway.admission import Admission, Cost, estimate_cost
from attnserve.server.gateway.concurrency import MIN_EXCESS_S
from attnserve.server.gateway.metrics import GatewayMetrics
from attnserve.server.gateway.pipeline import resolve_attention
from attnserve.server.gateway.postprocess import AttentionRequest, TaskOptions, postprocess
from attnserve.server.gateway.render import overlay
from attnserve.settings import GatewaySettings
from attnserve.transform import ImageHeader, ResizeGeometry
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .conftest import (
    CBAM_OUTPUT_DIMS,
    FakeBackend,
    GatewayThread,
    HeldCap,
    held_gateway,
)
from .conftest import grey_png as png

SPEC = serving_spec(get_spec("cbam"), create_model("cbam")).model_copy(
    update={"primary_attention": "spatial_stage3"}
)
MIB = 2**20
EVERY_FORM = frozenset({MapForm.UPSAMPLED, MapForm.HEATMAP_PNG, MapForm.OVERLAY_PNG})


def attention(forms: frozenset[MapForm] = frozenset({MapForm.RAW})) -> AttentionRequest:
    return resolve_attention(PredictionRequest(forms=forms), SPEC)


def rejected(metrics: GatewayMetrics) -> dict[str, float]:
    return {
        sample.labels["reason"]: sample.value
        for sample in metrics.rejected.collect()[0].samples
        if sample.name.endswith("_total")
    }


# --- the estimate ---------------------------------------------------------------------------


def test_the_estimate_grows_with_the_decoded_raster_and_the_render_size_not_the_original() -> None:
    settings = GatewaySettings()
    rgb_40mp = ImageHeader(8000, 5000, "RGB", "PNG")
    # Pillow keeps RGB in 4 bytes a pixel (152 MiB), plus the model's 8-bit grey copy (38 MiB)
    assert estimate_cost(rgb_40mp, SPEC, attention(), 1024, settings).memory_bytes == 8000 * 5000 * 5
    # a JPEG predicted without an overlay is decoded at 1/8 scale: 64× less
    jpeg = estimate_cost(ImageHeader(8000, 5000, "RGB", "JPEG"), SPEC, attention(), 1024, settings)
    assert jpeg.memory_bytes == 1000 * 625 * 5 and not jpeg.heavy
    # with an overlay, decoded again at the scale it is shown at: 1/4 for 1024 px (2000×1250)
    shown = estimate_cost(ImageHeader(8000, 5000, "RGB", "JPEG"), SPEC, attention(EVERY_FORM), 1024, settings)
    png = estimate_cost(ImageHeader(8000, 5000, "RGB", "PNG"), SPEC, attention(EVERY_FORM), 1024, settings)
    assert shown.memory_bytes - png.memory_bytes == 1000 * 625 * 5 + 2000 * 1250 * 4 - 8000 * 5000 * 5
    # rendering costs what the render size costs: a 12 MP and a 48 MP photo render alike
    forms = attention(EVERY_FORM)
    small = estimate_cost(ImageHeader(4000, 3000, "RGB", "PNG"), SPEC, forms, 1024, settings)
    large = estimate_cost(ImageHeader(8000, 6000, "RGB", "PNG"), SPEC, forms, 1024, settings)
    assert small.render_size == large.render_size == (1024, 768) and small.heavy
    render = small.memory_bytes - 4000 * 3000 * 5
    assert large.memory_bytes - 8000 * 6000 * 5 == render
    assert render < 128 * MIB  # five maps in every form at 1024×768, the answer held three times
    full = estimate_cost(ImageHeader(4000, 3000, "RGB", "PNG"), SPEC, forms, 4000, settings)
    assert full.memory_bytes - 4000 * 3000 * 5 > 15 * render  # what asking for full size costs
    # a tensor input draws at the model's input size
    assert estimate_cost(None, SPEC, forms, 1024, settings).render_size == (64, 64)


# --- the limits -------------------------------------------------------------------------------


def test_a_cheap_call_that_waited_longer_than_its_latency_allows_is_refused() -> None:
    metrics = GatewayMetrics()
    fixed = Admission(GatewaySettings(max_queued_ms=20), metrics)
    assert fixed.queue_budget("a") == pytest.approx(0.020)
    fixed.check_wait("a", 0.019)
    with pytest.raises(
        Overloaded, match="waited 21 ms before the gateway could take it up, more than the 20 ms"
    ):
        fixed.check_wait("a", 0.021)
    fixed.check_wait("a", None)  # a client that does not say
    assert rejected(metrics) == {"queued": 1}

    # adaptive: what tolerance × the no-load latency learnt for the model leaves once the call is
    # served, at no-load plus its own wait at least (unloaded: (tolerance - 1) × no-load / 2);
    # nothing before a model's first completion
    settings = GatewaySettings(adaptive_concurrency=True, latency_tolerance=2.0, min_in_flight=2)
    adaptive = Admission(settings, GatewayMetrics())
    assert adaptive.queue_budget("a") is None
    adaptive.check_wait("a", 9.0)
    adaptive.admit("a", Cost(10, False)).release(service_s=0.006)
    assert adaptive.queue_budget("a") == pytest.approx(0.003) and adaptive.queue_budget("b") is None
    with pytest.raises(Overloaded, match="more than the 3 ms its latency allows"):
        adaptive.check_wait("a", 0.004)
    assert Admission(GatewaySettings(), GatewayMetrics()).queue_budget("a") is None  # off by default


def test_the_wait_a_call_is_allowed_shrinks_while_the_gateway_is_slow_and_recovers() -> None:
    """A burst slows the admitted calls too (its refusals take the event loop): what they may have
    waited is what their recent latency leaves of the tolerance, never below timer noise; and a
    call that waited W is expected to be served W slower than no-load at least (the loop that
    kept it waiting is still behind), so unloaded it may have waited (tolerance - 1) × no-load / 2."""
    settings = GatewaySettings(adaptive_concurrency=True, latency_tolerance=3.0, min_in_flight=2)
    admission = Admission(settings, GatewayMetrics())
    admission.admit("a", Cost(10, False)).release(service_s=0.006)  # no-load 6 ms
    assert admission.queue_budget("a") == pytest.approx(0.006)  # 6 + (6 + 6) = 18 = 3 × 6
    limit = admission.limit
    assert limit is not None
    for _ in range(12):  # completions at 9 ms under load: still within what the wait leaves
        limit.observe("a", 0.009, others_in_flight=8)
    assert admission.queue_budget("a") == pytest.approx(0.006)
    for _ in range(12):  # at 14 ms: the recent latency leaves less than that
        limit.observe("a", 0.014, others_in_flight=8)
    recent = limit.recent_s["a"]
    assert limit.no_load_s["a"] == pytest.approx(0.006) and 0.0135 < recent < 0.014
    assert admission.queue_budget("a") == pytest.approx(0.018 - recent)
    for _ in range(12):
        limit.observe("a", 0.030, others_in_flight=8)
    assert admission.queue_budget("a") == MIN_EXCESS_S  # 3× no-load is spent serving: timer noise
    with pytest.raises(Overloaded, match="waited 3 ms .* more than the 2 ms"):
        admission.check_wait("a", 0.003)
    for _ in range(20):  # taken up at once, always admitted: fast answers bring the budget back
        admission.check_wait("a", 0.001)
        admission.admit("a", Cost(10, False)).release(service_s=0.006)
    assert admission.queue_budget("a") == pytest.approx(0.006)


def test_each_limit_refuses_at_once_with_a_retry_hint_and_counts_the_refusal() -> None:
    settings = GatewaySettings(
        max_in_flight=4, model_share=0.5, max_heavy_in_flight=1, memory_budget_bytes=100
    )
    metrics = GatewayMetrics()
    admission = Admission(settings, metrics)
    assert admission.per_model() == 2
    cheap, heavy = Cost(10, False), Cost(10, True)

    tickets = []
    for _ in range(2):
        admission.enter()
        tickets.append(admission.admit("a", cheap))
    admission.enter()
    with pytest.raises(Overloaded, match="its share 2") as share:
        admission.admit("a", cheap)  # model a holds its share…
    admission.leave()
    admission.enter()
    tickets.append(admission.admit("b", heavy))  # …model b still gets in
    admission.enter()
    with pytest.raises(Overloaded, match="heavy requests") as heavy_refusal:
        admission.admit("c", heavy)
    admission.leave()
    with pytest.raises(Overloaded, match=r"in flight \(limit 4\)"):
        admission.enter(), admission.enter()
    assert admission.in_flight == 4
    admission.leave()
    with pytest.raises(Overloaded, match="decode/render memory"):
        admission.admit("c", Cost(80, False))
    with pytest.raises(TooLarge, match="budget of 0 MiB"):
        admission.admit("c", Cost(101, False))  # could never fit: not a retry
    assert (share.value.retry_after_s, heavy_refusal.value.retry_after_s) == (0.05, 0.2)  # cheap, heavy
    assert rejected(metrics) == {"model_share": 1, "heavy": 1, "in_flight": 1, "memory": 1, "too_large": 1}

    for ticket in tickets:
        ticket.release(service_s=1.0)
        ticket.release(service_s=1.0)  # twice is once
    assert (admission.memory, admission.heavy, dict(admission.by_model)) == (0, 0, {})
    assert admission.retry_after(True) == pytest.approx(0.8 * 0.2 + 0.2 * 1.0)  # the recent service time


# --- bounded rendering ------------------------------------------------------------------------


def test_image_forms_are_drawn_at_the_render_size_and_positions_stay_in_original_pixels() -> None:
    rng = np.random.default_rng(0)
    outputs = {name: rng.random(shape).astype(np.float32) for name, shape in CBAM_OUTPUT_DIMS.items()}
    outputs["logits"] = np.arange(10, dtype=np.float32)
    geometry = ResizeGeometry.for_spec(4000, 3000, SPEC.preprocess)
    image = Image.new("RGB", (1024, 768), (90, 90, 90))
    request = AttentionRequest(("spatial_stage3", "cam"), EVERY_FORM)
    answer = postprocess(outputs, SPEC, geometry, TaskOptions(3, None), request, image, (1024, 768))
    for result in answer.attention:
        assert result.upsampled is not None and result.upsampled.shape == (768, 1024)
        for encoded in (result.heatmap_png, result.overlay_png):
            assert Image.open(io.BytesIO(encoded)).size == (1024, 768)
        assert result.peak is not None and result.peak[0] > 1024  # original pixels (4000 wide)
    full = postprocess(
        outputs, SPEC, geometry, TaskOptions(3, None), request, Image.new("RGB", (4000, 3000)), (4000, 3000)
    )
    assert [m.peak for m in full.attention] == [m.peak for m in answer.attention]
    assert full.attention[0].upsampled is not None and full.attention[0].upsampled.shape == (3000, 4000)


def test_integer_blending_is_within_one_level_of_float_blending() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)  # more rows than one strip
    display = rng.random((300, 200)).astype(np.float32)
    from attnserve.server.gateway.render import OVERLAY_ALPHA, colorize

    weight = (OVERLAY_ALPHA * display)[:, :, None]
    exact = pixels * (1.0 - weight) + colorize(display).astype(np.float32) * weight
    blended = overlay(Image.fromarray(pixels), display).astype(np.float32)
    assert np.abs(blended - exact).max() <= 1.0


def test_boxes_are_drawn_where_they_are_on_a_smaller_rendering() -> None:
    from attnserve.server.gateway.render import draw_boxes

    drawn = draw_boxes(Image.new("RGB", (100, 60)), [(130.0, 40.0, 150.0, 60.0)], scale=0.5)
    ys, xs = np.nonzero(drawn.sum(axis=2))
    text = xs >= 67  # the number drawn inside the box's corner
    assert (xs.min(), ys.min(), xs.max(), ys[~text].max()) == (65, 20, 74, 29)


# --- through the fronts -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated() -> Iterator[tuple[GatewayThread, FakeBackend]]:
    yield from held_gateway()


def test_a_refusal_carries_a_retry_hint_on_grpc_and_http_and_is_counted_once(gated: object) -> None:
    thread, backend = gated  # type: ignore[misc]
    request = pb.PredictRequest(image=png(64, 64))
    with grpc.insecure_channel(thread.address) as channel, HeldCap(thread, backend, channel):
        stub = pb_grpc.AttentionServiceStub(channel)
        refused_in = []
        for _ in range(3):  # the fastest of three: a shared machine may stall any one call
            started = time.perf_counter()
            with pytest.raises(grpc.RpcError) as refusal:
                stub.Predict(request, timeout=5)
            refused_in.append(time.perf_counter() - started)
        response = httpx.post(
            f"{thread.http_url}/v1/models/cbam:predict",
            content=png(64, 64),
            headers={"content-type": "image/png"},
            timeout=5,
        )
    assert refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and min(refused_in) < 0.05, refused_in
    trailers = dict(refusal.value.trailing_metadata())
    assert 50 <= int(trailers["grpc-retry-pushback-ms"]) <= 10_000
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert 50 <= int(response.headers["retry-after-ms"]) <= 10_000  # the hint itself
    metrics = generate_latest(thread.gateway.core.metrics.registry).decode()
    assert 'attnserve_rejected_total{reason="in_flight"} 4.0' in metrics  # 3 over gRPC, 1 over HTTP


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_attnserves_clients_send_a_refused_call_again_after_the_hint(gated: object, transport: str) -> None:
    """The cap is full; an attnserve client's call is refused (with a hint), sent again after it
    while the cap is still full, refused again, and answered once a slot frees. The gateway
    counted each refusal, the client each retry; with retries off the caller gets the refusal."""
    thread, backend = gated  # type: ignore[misc]
    rejected = thread.gateway.core.metrics.rejected.labels("in_flight")
    client_type = Client if transport == "grpc" else HttpClient
    address = thread.address if transport == "grpc" else thread.http_url
    with grpc.insecure_channel(thread.address) as channel, client_type(address, timeout_s=10) as client:
        with HeldCap(thread, backend, channel) as cap:
            before = rejected._value.get()
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(client.predict, png(64, 64))
                deadline = time.monotonic() + 5
                while rejected._value.get() < before + 2 and time.monotonic() < deadline:
                    time.sleep(0.005)  # refused, sent again, refused again
                cap.release()
                assert answer.result(timeout=10).predictions
        refusals = rejected._value.get() - before
        assert 2 <= refusals <= 3 and client.overload.throttle.retried == refusals
        with (
            client_type(address, timeout_s=10, overload_retries=0) as plain,
            HeldCap(thread, backend, channel),
        ):
            with pytest.raises(Overloaded, match="in flight"):
                plain.predict(png(64, 64))


def test_a_refused_stream_item_carries_the_retry_hint_and_other_failures_none(gated: object) -> None:
    thread, backend = gated  # type: ignore[misc]
    with grpc.insecure_channel(thread.address) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)
        with HeldCap(thread, backend, channel):
            refused = list(
                stub.PredictStream(iter([pb.PredictRequest(image=png(64, 64), request_id="a")]), timeout=10)
            )
        junk = list(stub.PredictStream(iter([pb.PredictRequest(image=b"junk")]), timeout=10))
    (refused_item,), (junk_item,) = refused, junk
    error = refused_item.error
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and "in flight" in error.message
    assert 50 <= error.retry_after_ms <= 10_000 and refused_item.request_id == "a"
    assert junk_item.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert junk_item.error.retry_after_ms == 0  # not one to send again


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
def test_attnserves_clients_send_a_refused_stream_item_again_after_the_hint(
    gated: object, flavour: str
) -> None:
    """Both slots are held: the stream's items are refused with the hint, sent again on their own
    after it and answered once the slots free, in order; with retries off, the items' results
    are the refusals."""
    thread, backend = gated  # type: ignore[misc]
    rejected = thread.gateway.core.metrics.rejected.labels("in_flight")
    images = [png(64, 64), png(80, 48)]

    def stream(retries: int) -> list[Any]:
        if flavour == "blocking":
            with Client(thread.address, timeout_s=10, overload_retries=retries) as client:
                return list(client.predict_stream(images))

        async def collect() -> list[Any]:
            async with AsyncClient(thread.address, timeout_s=10, overload_retries=retries) as client:
                return [result async for result in client.predict_stream(images)]

        return asyncio.run(collect())

    with grpc.insecure_channel(thread.address) as channel:
        with HeldCap(thread, backend, channel) as cap, ThreadPoolExecutor(1) as pool:
            before = rejected._value.get()
            results = pool.submit(stream, 3)
            deadline = time.monotonic() + 5
            while rejected._value.get() < before + 1 and time.monotonic() < deadline:
                time.sleep(0.002)  # the first item refused: free the slots
            cap.release()
            answered = results.result(timeout=20)
        assert [(r.image.width, r.image.height) for r in answered] == [(64, 64), (80, 48)], answered
        assert rejected._value.get() - before >= 1

        with HeldCap(thread, backend, channel):
            before = rejected._value.get()
            plain = stream(0)
    assert [type(r) for r in plain] == [Overloaded, Overloaded] and rejected._value.get() - before == 2


@pytest.mark.parametrize(
    ("status", "headers", "hint"),
    [
        (429, {"Retry-After-Ms": "75", "Retry-After": "1"}, 0.075),  # the precise hint first
        (429, {"Retry-After": "2"}, 2.0),  # another server: whole seconds
        (429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),  # a date: not read
        (429, {}, None),
        (429, {"Retry-After-Ms": "-5"}, None),
        (503, {"Retry-After": "1"}, None),  # only admission refusals are sent again
    ],
)
def test_the_http_clients_read_the_retry_hint(
    status: int, headers: dict[str, str], hint: float | None
) -> None:
    assert retry_hint_s(httpx.Response(status, headers=headers)) == hint


def test_a_request_asks_its_render_size(gated: object) -> None:
    thread, _ = gated  # type: ignore[misc]
    with grpc.insecure_channel(thread.address) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)

        def heatmap(side: int) -> tuple[int, int]:
            options = pb.AttentionOptions(
                maps=["primary"], formats=[pb.MAP_FORMAT_HEATMAP_PNG], render_max_side=side
            )
            answer = stub.Predict(pb.PredictRequest(image=png(3000, 1500), attention=options), timeout=30)
            assert (answer.image.width, answer.image.height) == (3000, 1500)
            size: tuple[int, int] = Image.open(io.BytesIO(answer.attention[0].heatmap_png)).size
            return size

        assert heatmap(0) == (1024, 512)  # the gateway's default
        assert heatmap(300) == (300, 150)
        assert heatmap(5000) == (3000, 1500)  # never larger than the original
