"""The HTTP front in-process, over a fake backend: every endpoint, every body, errors mapped once,
the body limit with and without Content-Length, the JSON being the proto's, the HTTP client.

test_http_gateway.py covers the same front against the real Triton (and schemathesis, the page).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from attnserve import codec
from attnserve.clients import Client, HttpClient, connect
from attnserve.errors import DeadlineExceeded, InvalidInput, ModelNotFound, Overloaded, TooLarge, Unavailable
from attnserve.server.gateway.backend import RepositoryModel
from attnserve.server.http.requests import OPTIONS
from attnserve.v1 import attnserve_pb2 as pb

from .conftest import FakeBackend, GatewayThread, gateway_settings, triton_settings
from .conftest import grey_png as png


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[GatewayThread, FakeBackend]]:
    backend = FakeBackend(names=("cbam", "other"))
    settings = gateway_settings(
        triton_settings(),
        default_model="cbam",
        max_image_bytes=200_000,
        max_http_body_bytes=300_000,
        max_in_flight=2,
    )
    thread = GatewayThread(settings, backend).start()
    with HttpClient(thread.http_url) as client:
        client.wait_until_serving(10)
    yield thread, backend
    thread.stop()


@pytest.fixture()
def http(fake: tuple[GatewayThread, FakeBackend]) -> Iterator[httpx.Client]:
    thread, backend = fake
    backend.fail_with, backend.gate, backend.ready = None, None, True
    with httpx.Client(base_url=thread.http_url, timeout=10) as client:
        yield client


def predict_url(model: str = "cbam", **query: str) -> str:
    return f"/v1/models/{model}:predict" + (
        "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    )


def test_raw_multipart_and_json_bodies_give_the_same_answer(
    http: httpx.Client, fake: tuple[GatewayThread, FakeBackend]
) -> None:
    _, backend = fake
    image = png()
    backend.calls.clear()  # the fake's outputs are seeded by its call count
    as_raw = http.post(
        predict_url(top_k="3", maps="primary,cam", formats="raw,heatmap_png"),
        content=image,
        headers={"Content-Type": "image/png"},
    )
    backend.calls.clear()
    form = http.post(
        predict_url(),
        files={"image": ("digit.png", image, "image/png")},
        data={"top_k": "3", "maps": ["primary", "cam"], "formats": "RAW,HEATMAP_PNG"},
    )
    body = {
        "image": base64.b64encode(image).decode(),
        "top_k": 3,
        "attention": {"maps": ["primary", "cam"], "formats": ["MAP_FORMAT_RAW", "MAP_FORMAT_HEATMAP_PNG"]},
    }
    backend.calls.clear()
    as_json = http.post(predict_url(), json=body)
    answers = [r.json() for r in (as_raw, form, as_json)]
    assert [r.status_code for r in (as_raw, form, as_json)] == [200, 200, 200]
    for answer in answers:
        answer.pop("timings")
        assert len(answer.pop("request_id")) == 16  # a fresh ID for each request that names none
    assert answers[0] == answers[1] == answers[2]
    first = answers[0]
    assert first["model"] == "cbam" and len(first["predictions"]) == 3
    assert [a["name"] for a in first["attention"]] == ["spatial_stage3", "cam"]
    stage3 = first["attention"][0]
    assert base64.b64decode(stage3["heatmap_png"])[:4] == b"\x89PNG"
    values = np.frombuffer(base64.b64decode(stage3["raw"]["data"]), dtype="<f4")
    assert values.shape == (64,) and stage3["raw"]["shape"] == ["8", "8"]


def test_http_answers_are_the_grpc_answers_json_mapping(fake: tuple[GatewayThread, FakeBackend]) -> None:
    """Every field the gRPC answer carries is in the HTTP answer, under the proto's name: a field
    added to the proto appears in HTTP with no HTTP-side change."""
    thread, backend = fake
    image = png(120, 80)
    options = {"top_k": 4, "maps": ["primary", "cam", "channel_stage1"], "forms": ["raw", "upsampled"]}
    with Client(thread.address) as grpc_client, HttpClient(thread.http_url) as http_client:
        backend.calls.clear()
        over_grpc = grpc_client.predict(image, **options)  # type: ignore[arg-type]
        backend.calls.clear()
        over_http = http_client.predict(image, **options)  # type: ignore[arg-type]
        listing = (grpc_client.list_models(), http_client.list_models())
        model = (grpc_client.get_model("other"), http_client.get_model("other"))
    grpc_json = codec.prediction_to_json(over_grpc)
    http_json = codec.prediction_to_json(over_http)
    grpc_json.pop("timings"), http_json.pop("timings")
    grpc_json.pop("request_id"), http_json.pop("request_id")  # fresh, so different, IDs
    assert grpc_json == http_json
    assert listing[0] == listing[1] and model[0] == model[1]


def _fields(descriptor: Descriptor, seen: set[str]) -> Iterator[tuple[str, str]]:
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        yield descriptor.name, field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            yield from _fields(field.message_type, seen)


def test_openapi_document_has_every_proto_field_and_every_option(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    seen: set[str] = set()
    for message in (pb.PredictRequest, pb.PredictResponse, pb.ListModelsResponse, pb.ModelInfo):
        for name, field in _fields(message.DESCRIPTOR, seen):
            assert field in schemas[name]["properties"], f"{name}.{field} is missing from /openapi.json"
    predict = document["paths"]["/v1/models/{model}:predict"]["post"]
    parameters = {p["name"] for p in predict["parameters"]}
    assert {"top_k", "maps", "formats", "render", "target_class", "omit", "request_id"} <= parameters
    assert {"image/*", "multipart/form-data", "application/json"} <= set(predict["requestBody"]["content"])
    assert set(predict["responses"]) == {"200", "400", "404", "413", "415", "429", "503", "504"}
    # every option of the request, nested ones included, is a parameter (by short or dotted name)
    assert {o.name for o in OPTIONS.values()} == (
        {"model_version", "top_k", "request_id"}
        | {f"attention.{f.name}" for f in pb.AttentionOptions.DESCRIPTOR.fields}
        | {f"task.{f.name}" for f in pb.TaskOptions.DESCRIPTOR.fields}
    )
    assert {"score_threshold", "max_instances", "overlay"} <= parameters


def test_models_health_metrics_page_and_samples(
    http: httpx.Client, fake: tuple[GatewayThread, FakeBackend]
) -> None:
    listing = http.get("/v1/models").json()
    assert [m["name"] for m in listing["models"]] == ["cbam", "other"] and listing["default_model"] == "cbam"
    info = http.get("/v1/models/other").json()
    assert info["primary_attention"] == "spatial_stage3" and info["labels"][3] == "3"
    assert http.get("/live").status_code == 200 and http.get("/ready").status_code == 200
    page = http.get("/")
    assert page.status_code == 200 and '<select id="model"' in page.text
    assert http.get("/static/app.js").status_code == 200 and http.get("/static/style.css").status_code == 200
    samples = http.get("/samples").json()["samples"]
    assert "digit.png" in samples
    sample = http.get(f"/samples/{samples[0]}")
    assert sample.status_code == 200 and sample.content[:4] == b"\x89PNG"
    assert http.get("/samples/..%2Fpyproject.toml").status_code == 404
    http.post(predict_url(), content=png(), headers={"Content-Type": "image/png"})
    metrics = http.get("/metrics").text
    assert 'attnserve_requests_total{code="200",method="Predict",model="cbam",transport="http"}' in metrics


def test_readiness_follows_the_backend(http: httpx.Client, fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, backend = fake
    backend.ready = False
    thread.call(thread.gateway.core.check())
    assert http.get("/ready").status_code == 503 and http.get("/live").status_code == 200
    backend.ready = True
    thread.call(thread.gateway.core.check())
    assert http.get("/ready").status_code == 200


def test_models_that_are_not_ready_are_listed_with_their_reason(
    http: httpx.Client, fake: tuple[GatewayThread, FakeBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    thread, backend = fake
    before = http.get("/v1/models").json()
    assert not [m for m in before["models"] if "reason" in m]  # ready models look as they always did
    listed = [
        *asyncio.run(backend.repository_index()),
        RepositoryModel("broken", "2", "UNAVAILABLE", "load failed"),
    ]

    async def repository_index() -> list[RepositoryModel]:
        return listed

    monkeypatch.setattr(backend, "repository_index", repository_index)
    backend.ready = False
    thread.call(thread.gateway.core.check())
    gone = http.get("/v1/models").json()["models"]
    assert [(m["name"], "ready" in m, m["reason"]) for m in gone] == [
        ("cbam", False, "Triton is unavailable"),
        ("other", False, "Triton is unavailable"),
    ]
    described = {k: v for k, v in before["models"][0].items() if k != "ready"}  # false: left out
    assert gone[0] == {**described, "reason": "Triton is unavailable"}
    backend.ready = True
    thread.call(thread.gateway.core.check())
    try:
        back = http.get("/v1/models").json()
        refused = http.post(predict_url("broken"), content=png(), headers={"Content-Type": "image/png"})
    finally:
        monkeypatch.undo()  # the module's gateway forgets "broken" again
        backend.ready = False
        thread.call(thread.gateway.core.check())
        backend.ready = True
        thread.call(thread.gateway.core.check())
    assert back["models"][0] == {"name": "broken", "version": "2", "reason": "UNAVAILABLE: load failed"}
    assert back["models"][1:] == before["models"] and back["default_model"] == "cbam"
    assert refused.status_code == 503 and "'broken' is not ready: UNAVAILABLE: load failed" in refused.text
    assert [m["name"] for m in http.get("/v1/models").json()["models"]] == ["cbam", "other"]


def raw(content: bytes, content_type: str | None = "image/png", **headers: str) -> dict[str, object]:
    """Keyword arguments of a raw-body POST."""
    if content_type is not None:
        headers["Content-Type"] = content_type
    return {"content": content, "headers": headers}


def tensor_json(array: np.ndarray, data: bytes | None = None) -> dict[str, object]:
    """Keyword arguments of a JSON POST of a tensor (``data`` replaces its bytes)."""
    tensor = codec.tensor_to_proto(array)
    if data is not None:
        tensor.data = data
    return {"json": {"tensor": codec.message_to_json(tensor)}}


PNG = png()
BAD_REQUESTS = [
    ("empty body", predict_url(), raw(b""), 400, "empty"),
    ("not an image", predict_url(), raw(b"hello"), 415, "not an image"),
    ("truncated png", predict_url(), raw(PNG[:60]), 400, "corrupt"),
    ("text body", predict_url(), raw(b"hi", "text/plain"), 415, "Content-Type"),
    ("no content type", predict_url(), raw(PNG, None), 415, "Content-Type"),
    ("unknown model", predict_url("nope"), raw(PNG), 404, "nope"),
    ("unknown map", predict_url(maps="nope"), raw(PNG), 400, "nope"),
    ("bad top_k", predict_url(top_k="0"), raw(PNG), 400, "top_k"),
    ("top_k not a number", predict_url(top_k="x"), raw(PNG), 400, "top_k"),
    ("unknown option", predict_url(bogus="1"), raw(PNG), 400, "bogus"),
    ("unknown format", predict_url(formats="gif"), raw(PNG), 400, "GIF"),
    ("bad bool", predict_url(omit="maybe"), raw(PNG), 400, "omit"),
    ("bad class", predict_url(target_class="99"), raw(PNG), 400, "99"),
    ("malformed JSON", predict_url(), raw(b"{", "application/json"), 400, "JSON"),
    ("JSON not an object", predict_url(), {"json": [1, 2]}, 400, "JSON object"),
    ("JSON unknown field", predict_url(), {"json": {"imag": "AA=="}}, 400, "imag"),
    ("JSON no image", predict_url(), {"json": {"top_k": 2}}, 400, "no image"),
    ("JSON two models", predict_url(), {"json": {"model": "other", "image": "AA=="}}, 400, "path names"),
    ("multipart no image", predict_url(), {"files": {"x": ("a", b"", "text/plain")}}, 400, "'x'"),
    ("image over the limit", predict_url(), raw(b"\x89PNG" + bytes(250_000)), 413, "limit"),
    ("body over the limit", predict_url(), raw(bytes(400_000)), 413, "limit"),
    ("too many pixels", predict_url(), raw(png(8000, 6000)), 413, "pixels"),
    ("bad deadline", predict_url(), raw(PNG, **{"X-Request-Timeout": "-1"}), 400, "X-Request-Timeout"),
    ("GIF header only", predict_url(), raw(b"GIF89a not really"), 415, "not an image"),
    ("truncated JPEG", predict_url(), raw(b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"), 400, "corrupt"),
    ("top_k above classes", predict_url(top_k="11"), raw(PNG), 400, "10 classes"),
    ("format unspecified", predict_url(formats="MAP_FORMAT_UNSPECIFIED"), raw(PNG), 400, "format"),
    ("tensor of 3 channels", predict_url(), tensor_json(np.zeros((3, 64, 64), np.float32)), 400, "shape"),
    ("tensor of uint8", predict_url(), tensor_json(np.zeros((1, 64, 64), np.uint8)), 400, "float32"),
    (
        "tensor unset dtype",
        predict_url(),
        {"json": {"tensor": {"shape": [1, 8, 8]}}},
        400,
        "DATA_TYPE_FLOAT32",
    ),
    (
        "tensor short of bytes",
        predict_url(),
        tensor_json(np.zeros((1, 8, 8), np.float32), b"1"),
        400,
        "bytes",
    ),
    ("wrong method", "/v1/models/cbam", raw(b""), 405, "Method Not Allowed"),
    ("no such endpoint", "/v2/anything", raw(b""), 404, "/openapi.json"),
]


@pytest.mark.parametrize(
    ("case", "url", "kwargs", "status", "hint"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_get_their_code_and_the_server_keeps_serving(
    http: httpx.Client, case: str, url: str, kwargs: dict[str, object], status: int, hint: str
) -> None:
    response = http.post(url, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and hint.lower() in body["message"].lower(), body
    assert "Traceback" not in body["message"] and "/work/" not in body["message"]
    again = http.post(predict_url(), content=png(), headers={"Content-Type": "image/png"})
    assert again.status_code == 200


def test_chunked_body_over_the_limit_is_refused_without_content_length(http: httpx.Client) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):  # 6.4 MB offered; the limit is 300 kB
            sent.append(1)
            yield bytes(64_000)

    response = http.post(predict_url(), content=chunks(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413 and "limit" in response.json()["message"]
    assert "content-length" not in {k.lower() for k in response.request.headers}
    small = http.post(predict_url(), content=iter([png()]), headers={"Content-Type": "image/png"})
    assert small.status_code == 200


def test_overload_and_outage_codes(fake: tuple[GatewayThread, FakeBackend], http: httpx.Client) -> None:
    thread, backend = fake
    backend.gate = thread.call(_new_event())  # type: ignore[assignment]
    headers = {"Content-Type": "image/png"}
    calls = len(backend.calls)
    held: list[int] = []

    def post() -> None:
        with httpx.Client(base_url=thread.http_url, timeout=10) as client:
            held.append(client.post(predict_url(), content=png(), headers=headers).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]  # the in-flight cap is 2
    for t in threads:
        t.start()
    try:
        for _ in range(500):
            if len(backend.calls) >= calls + 2:
                break
            time.sleep(0.01)
        overloaded = http.post(predict_url(), content=png(), headers=headers)
        assert overloaded.status_code == 429 and "in flight" in overloaded.json()["message"]
    finally:
        thread.loop.call_soon_threadsafe(backend.gate.set)  # type: ignore[union-attr]
        for t in threads:
            t.join(10)
        backend.gate = None
    assert held == [200, 200]
    backend.fail_with = Unavailable("Triton is unavailable")
    assert http.post(predict_url(), content=png(), headers=headers).status_code == 503
    backend.fail_with = None
    assert http.post(predict_url(), content=png(), headers=headers).status_code == 200


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


def test_deadline_passes_while_the_backend_holds_the_request(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, backend = fake
    backend.fail_with = None
    backend.gate = thread.call(_new_event())  # type: ignore[assignment]
    try:
        with httpx.Client(base_url=thread.http_url, timeout=10) as client:
            response = client.post(
                predict_url(),
                content=png(),
                headers={"Content-Type": "image/png", "X-Request-Timeout": "0.3"},
            )
        assert response.status_code == 504, response.text
    finally:
        thread.loop.call_soon_threadsafe(backend.gate.set)  # type: ignore[union-attr]
        backend.gate = None


def test_http_client_has_the_grpc_clients_methods_and_errors(fake: tuple[GatewayThread, FakeBackend]) -> None:
    thread, _ = fake
    with connect(thread.http_url) as client:
        assert isinstance(client, HttpClient) and client.health() == "SERVING"
        assert client.get_model().name == "cbam"
        results = list(client.predict_stream([png(), b"junk", png(70, 50)], top_k=2, omit_attention=True))
        with pytest.raises(ModelNotFound):
            client.predict(png(), model="nope")
        with pytest.raises(InvalidInput, match="top_k"):
            client.predict(png(), top_k=0)
        with pytest.raises(TooLarge):
            client.predict(bytes(250_000))
        tensor = client.predict(np.zeros((1, 64, 64), np.float32), maps=["primary"])
    assert isinstance(results[0], object) and isinstance(results[1], InvalidInput)
    assert [r.request_id for r in results if not isinstance(r, Exception)] == ["0", "2"]  # type: ignore[union-attr]
    assert tensor.image.format == "TENSOR" and tensor.attention[0].name == "spatial_stage3"
    for method in (
        "predict",
        "predict_stream",
        "list_models",
        "get_model",
        "health",
        "wait_until_serving",
        "close",
    ):
        assert callable(getattr(HttpClient, method)) and callable(getattr(Client, method))
    with HttpClient("http://127.0.0.1:1", timeout_s=2) as nowhere:
        assert nowhere.health() == "UNREACHABLE"
        with pytest.raises(Unavailable, match="cannot reach"):
            nowhere.list_models()
    assert issubclass(Overloaded, Exception) and issubclass(DeadlineExceeded, Exception)


def test_cli_speaks_http(
    fake: tuple[GatewayThread, FakeBackend], tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:

    from attnserve.cli import main

    thread, _ = fake
    image = Path(str(tmp_path)) / "digit.png"
    image.write_bytes(png())
    assert main(["predict", str(image), "--server", thread.http_url, "--json", "--top-k", "2"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == "cbam" and len(answer["predictions"]) == 2
    assert main(["models", "--server", thread.http_url]) == 0
    assert "other" in capsys.readouterr().out


def test_connections_are_tcp_so_answers_are_not_held(fake: tuple[GatewayThread, FakeBackend]) -> None:
    """asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP; without it every
    keep-alive answer waited ~40 ms for the client's delayed ACK (56 ms p50 instead of 12)."""
    import socket

    thread, _ = fake
    front = thread.gateway.http
    assert front is not None and front._server is not None
    (listening,) = [s for server in front._server.servers for s in (server.sockets or [])]
    assert listening.proto == socket.IPPROTO_TCP
