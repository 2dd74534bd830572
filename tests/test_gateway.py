"""The gateway against the real Triton: answers, attention in original pixels, and refusals."""

from __future__ import annotations

import asyncio
import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from attnserve.clients import AsyncClient, Client
from attnserve.codec import tensor_to_proto
from attnserve.errors import InvalidInput, ModelNotFound, TooLarge, Unavailable
from attnserve.export.data import ClutteredDigits, as_photo
from attnserve.prediction import Prediction
from attnserve.server.triton import TritonProcess
from attnserve.settings import DEFAULT_MODEL_REPOSITORY, TritonSettings
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .conftest import (
    GatewayThread,
    assert_same_answer,
    gateway_settings,
    triton_settings,
    workers_blas_like_this_process,
)

pytestmark = pytest.mark.triton


@pytest.fixture()
def stub(gateway: GatewayThread) -> Iterator[pb_grpc.AttentionServiceStub]:
    with grpc.insecure_channel(gateway.address) as channel:
        yield pb_grpc.AttentionServiceStub(channel)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def inside(point: tuple[float, float] | None, box: tuple[float, float, float, float]) -> bool:
    assert point is not None
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


def test_predictions_are_right_and_attention_peaks_land_on_the_digit(client: Client) -> None:
    """Test-split digits, enlarged ×2–5 and padded on one axis to other aspect ratios.

    The letterbox then shrinks the canvas by up to 20 %: digits stay near the sizes the model
    was trained on (24–40 px on its input), so this measures the gateway, not scale invariance.
    """
    dataset = ClutteredDigits("test", 60, seed=11)
    rng = np.random.default_rng(0)
    correct, primary_on_digit, stage3_on_digit = 0, 0, 0
    for i in range(len(dataset)):
        sample = dataset[i]
        scale = float(rng.uniform(2, 5))
        total = int(rng.uniform(0, 0.25) * 64 * scale)
        first = int(rng.integers(0, total + 1))
        pad = (first, 0, total - first, 0) if i % 2 else (0, first, 0, total - first)
        photo, box = as_photo(sample, scale=scale, pad=pad)
        prediction = client.predict(png(photo), maps=["primary", "spatial_stage3"])
        assert (prediction.image.width, prediction.image.height) == photo.size
        correct += prediction.predictions[0].index == sample.label
        primary, stage3 = prediction.attention
        primary_on_digit += inside(primary.peak, box)
        stage3_on_digit += inside(stage3.peak, box)
    assert correct / len(dataset) >= 0.9
    assert primary_on_digit / len(dataset) >= 0.9
    assert stage3_on_digit / len(dataset) >= 0.9


SERVED = sorted(d.name for d in DEFAULT_MODEL_REPOSITORY.iterdir() if (d / "config.pbtxt").is_file())
"""Every model of the committed repository: one per registered family."""


@pytest.mark.parametrize("model", SERVED)
def test_raw_outputs_equal_onnxruntime_for_a_tensor_input(client: Client, model: str) -> None:
    info = client.get_model(model)
    channels, height, width = (int(d) for d in info.inputs[0].shape[1:])
    tensor = np.random.default_rng(3).normal(size=(channels, height, width)).astype(np.float32)
    session = ort.InferenceSession(str(DEFAULT_MODEL_REPOSITORY / model / "1" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    options = {o.name: np.array([[o.default_value]], dtype=np.int64) for o in info.options}
    expected = dict(zip(names, session.run(names, {"image": tensor[None], **options}), strict=True))
    classifies = info.task == "classification"
    prediction = client.predict(tensor, model=model, top_k=10 if classifies else None)
    assert prediction.image.format == "TENSOR" and prediction.model == model
    assert bool(prediction.predictions) == classifies and prediction.task == info.task
    if classifies:
        logits = expected["logits"][0].astype(np.float64)
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        for score in prediction.predictions:
            assert score.score == pytest.approx(probabilities[score.index], abs=1e-5)
    assert {a.name for a in prediction.attention} == {a.name for a in info.attention}
    for attention in prediction.attention:
        want = expected[attention.name][0]
        if attention.class_index is not None:
            want = want[attention.class_index]
        if "word" in attention.axes:  # a caption's stack: the words it has
            assert prediction.caption is not None
            want = want[: len(prediction.caption.words)]
        np.testing.assert_allclose(attention.raw, want, atol=1e-5, err_msg=attention.name)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def process_gateway(triton: TritonSettings) -> Iterator[GatewayThread]:
    """A second gateway on the session's Triton whose heavy calls run in a worker process."""
    with workers_blas_like_this_process():
        thread = GatewayThread(gateway_settings(triton, render_processes=1)).start()
    with Client(thread.address) as client:
        client.wait_until_serving(60)
    yield thread
    thread.stop()


@pytest.mark.parametrize("model", SERVED)
def test_every_model_draws_the_same_in_a_render_worker_process(
    client: Client, process_gateway: GatewayThread, model: str
) -> None:
    """``render_processes``: every model's image forms and drawn answer, made in a worker
    process, are byte for byte those of the render threads (what crosses the pipe pickles)."""
    photo, _ = as_photo(ClutteredDigits("test", 1, seed=8)[0], scale=3, pad=(50, 0, 10, 0))
    forms = ["raw", "upsampled", "heatmap_png", "overlay_png"]
    drawn_task = client.get_model(model).task != "classification"  # a classifier's is its maps
    options = {"model": model, "forms": forms, "task_overlay": drawn_task}
    by_thread = client.predict(png(photo), **options)  # type: ignore[arg-type]
    with Client(process_gateway.address) as other:
        by_process = other.predict(png(photo), **options)  # type: ignore[arg-type]
    assert any(a.overlay_png for a in by_process.attention) or by_process.task_overlay
    assert_same_answer(by_thread, by_process)


@pytest.mark.parametrize("model", SERVED)
def test_every_model_answers_with_its_own_attention_in_original_pixels(client: Client, model: str) -> None:
    """A non-square photo: every kind of attention comes back inside it, and drawn on it."""
    photo, box = as_photo(ClutteredDigits("test", 1, seed=8)[0], scale=3, pad=(50, 0, 10, 0))
    width, height = photo.size
    prediction = client.predict(png(photo), model=model, forms=["raw", "overlay_png"])
    info = client.get_model(model)
    assert info.primary_attention in {a.name for a in prediction.attention}
    kinds = set()
    for attention in prediction.attention:
        kinds.add(attention.kind.value)
        if attention.kind.value == "channel":
            assert attention.raw is not None and attention.peak is None and not attention.overlay_png
            assert attention.block, "channel weights say which block they belong to"
            continue
        assert (
            attention.peak is not None
            and 0 <= attention.peak[0] <= width
            and 0 <= attention.peak[1] <= height
        )
        stacked = (
            len(attention.axes) == 3 and attention.axes[0] != "class" and attention.axes[1:] == ("y", "x")
        )
        tiles = attention.raw.shape[0] if stacked and attention.raw is not None else 1  # as answered
        drawn = (tiles * width + (tiles - 1) * 4, height)  # a stack: a tile per index, 4 px apart
        assert Image.open(io.BytesIO(attention.overlay_png)).size == drawn, attention.name
        for x0, y0, x1, y1 in [*attention.boxes, *(p for g in attention.path for p in g.patches)]:
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        if attention.kind.value == "path":
            assert len(attention.path) == attention.shape[0] and attention.peak == attention.path[-1].center
        if attention.kind.value == "boxes":
            assert len(attention.boxes) == attention.shape[0] and not attention.path
    assert kinds, f"{model} returned no attention"


def test_class_activation_map_of_a_requested_class(client: Client) -> None:
    image = png(as_photo(ClutteredDigits("test", 1, seed=4)[0])[0])
    default = client.predict(image, maps=["cam"])
    top = default.predictions[0].index
    assert default.attention[0].class_index == top
    other = (top + 3) % 10
    asked = client.predict(image, maps=["cam"], target_class=other)
    assert asked.attention[0].class_index == other and asked.attention[0].class_label == str(other)
    assert not np.array_equal(asked.attention[0].raw, default.attention[0].raw)  # type: ignore[arg-type]


def test_image_forms_come_at_the_original_size(client: Client) -> None:
    photo, _ = as_photo(ClutteredDigits("test", 1, seed=5)[0], scale=3, pad=(0, 0, 40, 0))
    prediction = client.predict(
        png(photo),
        maps=["primary", "channel_stage1"],
        forms=["raw", "upsampled", "heatmap_png", "overlay_png"],
    )
    primary, channel = prediction.attention
    for data in (primary.heatmap_png, primary.overlay_png):
        assert Image.open(io.BytesIO(data)).size == photo.size
    assert primary.upsampled is not None and primary.upsampled.shape == (photo.height, photo.width)
    assert 0.0 <= primary.upsampled.min() and primary.upsampled.max() <= 1.0
    assert channel.raw is not None and channel.raw.shape == (32,) and not channel.overlay_png


def test_asking_for_an_overlay_changes_nothing_the_model_sees(client: Client) -> None:
    """A large JPEG is decoded at the DCT scale the model needs whatever the answer draws: scores
    and raw maps are the same with and without an overlay (they differed by up to 3 points of
    score when a kept image meant one full-size decode for both)."""
    photo, _ = as_photo(ClutteredDigits("test", 1, seed=6)[0], scale=12, pad=(0, 0, 300, 0))
    buffer = io.BytesIO()
    photo.convert("RGB").save(buffer, format="JPEG", quality=90)
    plain = client.predict(buffer.getvalue(), maps=["primary"])
    for side in (0, 500):  # shown at 1024×736 (from a full decode), and at 500×360 (a 1/2 one)
        drawn = client.predict(
            buffer.getvalue(), maps=["primary"], forms=["raw", "overlay_png"], render_max_side=side
        )
        assert [(p.index, p.score) for p in plain.predictions] == [
            (p.index, p.score) for p in drawn.predictions
        ]
        assert np.array_equal(plain.attention[0].raw, drawn.attention[0].raw)  # type: ignore[arg-type]
        shown = Image.open(io.BytesIO(drawn.attention[0].overlay_png)).size
        assert shown == ((500, 360) if side else (1024, 736))


def test_models_are_discovered_from_triton(client: Client) -> None:
    listing = client.list_models()
    assert listing.default_model == "cbam" and [m.name for m in listing.models] == SERVED
    assert {"cbam", "racnn", "ram", "ran", "se"} <= set(SERVED)
    info = client.get_model("cbam")
    assert info.ready and info.version == "1" and list(info.labels) == [str(d) for d in range(10)]
    assert info.preprocess.height == 64 and info.preprocess.resize_mode == "letterbox"
    assert info.primary_attention in {a.name for a in info.attention} and "energy" in info.primary_reason
    stage3 = next(a for a in info.attention if a.name == "spatial_stage3")
    assert list(stage3.shape) == [8, 8] and list(stage3.axes) == ["y", "x"] and stage3.quality["energy"] > 0.5
    assert list(info.inputs[0].shape) == [-1, 1, 64, 64]


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({"image": b""}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ({"image": b"GIF89a not really"}, grpc.StatusCode.INVALID_ARGUMENT, "not an image"),
        (
            {"image": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "corrupt or truncated",
        ),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "no input"),
        (
            {"tensor": tensor_to_proto(np.zeros((3, 64, 64), np.float32))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "shape",
        ),
        (
            {"tensor": tensor_to_proto(np.zeros((1, 64, 64), np.uint8))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "float32",
        ),
        (
            {"tensor": pb.Tensor(shape=[1, 64, 64], dtype=pb.DATA_TYPE_FLOAT32, data=b"1")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "bytes",
        ),
        ({"model": "resnet"}, grpc.StatusCode.NOT_FOUND, "unknown model 'resnet'"),
        ({"model": "x" * 10_000}, grpc.StatusCode.NOT_FOUND, "… (10,000 characters)"),
        ({"model_version": "999"}, grpc.StatusCode.NOT_FOUND, "no version '999'"),
        (
            {"tensor": tensor_to_proto(np.full((1, 64, 64), 3e38, np.float32))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "not finite",
        ),
        ({"top_k": 0}, grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
        ({"top_k": 11}, grpc.StatusCode.INVALID_ARGUMENT, "10 classes"),
        (
            {"attention": pb.AttentionOptions(maps=["stage9"])},
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown attention map 'stage9'",
        ),
        (
            {"attention": pb.AttentionOptions(target_class=10)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "target_class",
        ),
        (
            {"attention": pb.AttentionOptions(formats=[pb.MAP_FORMAT_UNSPECIFIED])},
            grpc.StatusCode.INVALID_ARGUMENT,
            "format",
        ),
    ],
    ids=lambda v: v.name if isinstance(v, grpc.StatusCode) else None,
)
def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(
    stub: pb_grpc.AttentionServiceStub,
    client: Client,
    request_fields: dict,
    code: grpc.StatusCode,
    message: str,
) -> None:
    has_input = "image" in request_fields or "tensor" in request_fields
    fields = (
        request_fields
        if has_input or not request_fields
        else {"image": png(Image.new("L", (64, 64))), **request_fields}
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(pb.PredictRequest(**fields), timeout=10)
    assert raised.value.code() == code
    assert message in raised.value.details()
    assert client.predict(png(Image.new("L", (64, 64)))).predictions  # still serving


def test_limits_on_bytes_and_pixels(gateway: GatewayThread, client: Client) -> None:
    limits = gateway.settings.gateway
    with pytest.raises(InvalidInput, match="limit"):
        client.predict(b"\x89PNG" + b"\x00" * limits.max_image_bytes)
    with pytest.raises(TooLarge, match="larger than max"):  # refused by gRPC before any parsing
        client.predict(b"\x89PNG" + b"\x00" * (limits.max_image_bytes + 5 * 2**20))
    side = int(np.sqrt(limits.max_image_pixels)) + 10
    bomb = io.BytesIO()
    Image.new("1", (side, side)).save(bomb, format="PNG")  # a few kB that would decode to 40+ MP
    with pytest.raises(InvalidInput, match="pixels"):
        client.predict(bomb.getvalue())


def test_client_errors_are_domain_errors(client: Client) -> None:
    with pytest.raises(ModelNotFound):
        client.predict(png(Image.new("L", (8, 8))), model="nope")
    with pytest.raises(InvalidInput):
        client.predict(b"nope")
    with pytest.raises(InvalidInput, match="forms are"):
        client.predict(b"x", forms=["jpeg"])


def test_stream_answers_in_order_and_survives_a_bad_image(client: Client) -> None:
    good = png(as_photo(ClutteredDigits("test", 1, seed=6)[0])[0])
    results = list(client.predict_stream([good, b"garbage", good], maps=["primary"]))
    assert isinstance(results[0], Prediction) and isinstance(results[2], Prediction)
    assert isinstance(results[1], InvalidInput) and "not an image" in str(results[1])
    assert [r.request_id for r in (results[0], results[2])] == ["0", "2"]  # type: ignore[union-attr]


def test_async_client_has_the_same_methods(gateway: GatewayThread) -> None:
    image = png(as_photo(ClutteredDigits("test", 1, seed=7)[0])[0])

    async def run() -> tuple[Prediction, list[object], str]:
        async with AsyncClient(gateway.address) as client:
            await client.wait_until_serving(10)
            one = await client.predict(image, maps=["primary"])
            streamed = [r async for r in client.predict_stream([image, image])]
            return one, streamed, (await client.get_model()).name

    one, streamed, name = asyncio.run(run())
    assert name == "cbam" and len(streamed) == 2
    assert one.predictions[0].index == streamed[0].predictions[0].index  # type: ignore[attr-defined]


def test_health_reflection_and_metrics(gateway: GatewayThread, client: Client) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "attnserve.v1.AttentionService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = {s.name for r in responses for s in r.list_services_response.service}
        assert {"attnserve.v1.AttentionService", "grpc.health.v1.Health"} <= services

    def scrape() -> str:
        url = f"http://127.0.0.1:{gateway.gateway.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def count(text: str, line_start: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))

    ok = 'attnserve_requests_total{code="OK",method="Predict",model="cbam",transport="grpc"}'
    bad = 'attnserve_requests_total{code="INVALID_ARGUMENT",method="Predict",model="cbam",transport="grpc"}'
    before = scrape()
    client.predict(png(Image.new("L", (64, 64))))
    with pytest.raises(InvalidInput):
        client.predict(b"")
    after = scrape()
    assert count(after, ok) == count(before, ok) + 1
    assert count(after, bad) == count(before, bad) + 1
    assert 'attnserve_stage_seconds_count{model="cbam",stage="inference"}' in after
    assert "attnserve_in_flight_requests 0.0" in after and "attnserve_triton_ready 1.0" in after


def test_triton_down_is_unavailable_and_health_follows_it(cbam_repository: Path) -> None:
    """A pair of our own: Triton is stopped and started again under a running gateway."""
    settings = triton_settings(cbam_repository)
    triton = TritonProcess(settings)
    triton.start()
    thread = GatewayThread(gateway_settings(settings)).start()
    image = png(Image.new("L", (64, 64)))
    try:
        with Client(thread.address) as client:
            client.wait_until_serving(30)
            assert client.predict(image).predictions
            triton.stop()
            with pytest.raises(Unavailable):
                client.predict(image)
            deadline = asyncio.run(_wait_for(lambda: client.health() == "NOT_SERVING", 10))
            assert deadline, "health did not turn NOT_SERVING after Triton stopped"
            triton.start()
            client.wait_until_serving(30)
            assert client.predict(image).predictions
    finally:
        thread.stop()
        triton.stop()


async def _wait_for(condition: object, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize(("model", "accuracy", "on_digit"), [("racnn", 0.8, 0.75), ("ram", 0.65, 0.6)])
def test_zooming_models_find_a_small_digit_in_a_larger_photo(
    client: Client, model: str, accuracy: float, on_digit: float
) -> None:
    """Small-digit test canvases enlarged ×2 as photos: the answer, and where the zoom box (its
    centre region) or the final glimpse ends up, in the photo's pixels."""
    from attnserve.export.data import make_dataset
    from attnserve.transform import image_from_pixels

    dataset = make_dataset("small", "test", 40, seed=13)
    correct = found = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        canvas = image_from_pixels(sample.image)
        photo = canvas.resize((canvas.width * 2, canvas.height * 2), Image.Resampling.BILINEAR)
        x0, y0, x1, y1 = (2 * v for v in sample.box)
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        prediction = client.predict(png(photo), model=model, maps=["primary"])
        correct += prediction.predictions[0].index == sample.label
        (primary,) = prediction.attention
        if primary.boxes:  # the digit's centre is inside the last zoom box
            bx0, by0, bx1, by1 = primary.boxes[-1]
            found += bx0 <= centre[0] < bx1 and by0 <= centre[1] < by1
        else:  # the final glimpse lands on the digit
            found += inside(primary.peak, (x0, y0, x1, y1))
    assert correct / len(dataset) >= accuracy
    assert found / len(dataset) >= on_digit
