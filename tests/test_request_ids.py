"""Request IDs: the client's or a fresh one, in Triton's request, the answer and every log line
written while the request is handled."""

from __future__ import annotations

import io
import logging

import grpc
import pytest
from PIL import Image

from attnserve import request_ids
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .conftest import FakeBackend, GatewayThread, gateway_settings, triton_settings


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(request_ids.RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_request_ids_reach_triton_the_answer_and_the_log() -> None:
    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, format="PNG")
    backend = FakeBackend()
    seen: list[str] = []
    original = backend.infer

    async def infer(*args: object, **kwargs: object) -> object:
        seen.append(str(args[5] if len(args) > 5 else kwargs.get("request_id")))
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    backend.infer = infer  # type: ignore[method-assign]
    captured = Captured()
    logger = logging.getLogger("attnserve")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(captured)
    thread = GatewayThread(gateway_settings(triton_settings(), default_model="cbam"), backend).start()
    try:
        with grpc.insecure_channel(thread.address) as channel:
            stub = pb_grpc.AttentionServiceStub(channel)
            image = buffer.getvalue()
            given = stub.Predict(pb.PredictRequest(image=image, request_id="client-7"), timeout=10)
            fresh = stub.Predict(pb.PredictRequest(image=buffer.getvalue()), timeout=10)
            with pytest.raises(grpc.RpcError):
                stub.Predict(pb.PredictRequest(image=b"junk", request_id="bad-1"), timeout=10)
    finally:
        thread.stop()
        logger.removeHandler(captured)
        logger.setLevel(level)
    assert given.request_id == "client-7" and len(fresh.request_id) == 16
    assert seen == ["client-7", fresh.request_id]  # Triton's request carries the same ID
    failures = [r for r in captured.records if "not an image" in r.getMessage()]
    assert failures and {r.request_id for r in failures} == {"bad-1"}  # type: ignore[attr-defined]
    assert request_ids.current() == "-"  # the test's own context was never touched


def test_the_log_format_names_the_request() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(request_ids.LOG_FORMAT))
    handler.addFilter(request_ids.RequestIdFilter())
    log = logging.getLogger("attnserve.test_request_ids")
    log.addHandler(handler)
    try:
        log.warning("outside")
        import contextvars

        contextvars.copy_context().run(lambda: (request_ids.bind("abc"), log.warning("inside")))
    finally:
        log.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert "[-]: outside" in first and "[abc]: inside" in second
