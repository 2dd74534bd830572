"""Triton answers that do not match the declared outputs: refused with a generic INTERNAL, the
gateway serving on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

import grpc
import httpx
import numpy as np
import pytest

from attnserve.clients import Client
from attnserve.errors import UpstreamError
from attnserve.model_info import TensorInfo
from attnserve.server.gateway.catalog import model_info_from_config
from attnserve.server.gateway.outputs import check_output_shapes
from attnserve.v1 import attnserve_pb2 as pb
from attnserve.v1 import attnserve_pb2_grpc as pb_grpc

from .conftest import CBAM_OUTPUT_DIMS, FakeBackend, GatewayThread, gateway_settings, triton_settings
from .conftest import grey_png as png

MODEL = model_info_from_config(FakeBackend().configs["cbam"], "1")
REQUESTED = ["logits", "spatial_stage3", "cam"]
GENERIC = "answered with outputs that do not match its declared ones; the gateway log has the details"


def answer(**replaced: object) -> dict[str, object]:
    good: dict[str, object] = {n: np.zeros((1, *CBAM_OUTPUT_DIMS[n]), np.float32) for n in REQUESTED}
    return {**good, **replaced}


def test_a_matching_answer_passes_and_extra_outputs_are_ignored() -> None:
    check_output_shapes(answer(channel_stage1=np.zeros(3, np.int8)), MODEL, REQUESTED)
    check_output_shapes(answer(logits=np.zeros((1, 10), np.float16)), MODEL, REQUESTED)


@pytest.mark.parametrize(
    ("replaced", "detail"),
    [
        ({"cam": None}, "'cam' is missing"),
        ({"spatial_stage3": np.zeros((1, 9, 9), np.float32)}, "has shape (1, 9, 9), declared (1, 8, 8)"),
        ({"logits": np.zeros((1, 10, 1), np.float32)}, "has shape (1, 10, 1)"),
        ({"logits": np.zeros((2, 10), np.float32)}, "has shape (2, 10)"),
        ({"logits": np.zeros((), np.float32)}, "has shape ()"),
        ({"logits": np.zeros((1, 10), np.int32)}, "not a float array"),
        ({"logits": [[0.0] * 10]}, "is a list"),
    ],
)
def test_a_mismatched_answer_is_a_generic_upstream_error(
    replaced: dict[str, object], detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    outputs = {k: v for k, v in answer(**replaced).items() if v is not None}
    with pytest.raises(UpstreamError) as raised:
        check_output_shapes(outputs, MODEL, REQUESTED)
    assert str(raised.value) == f"model 'cbam' {GENERIC}"
    assert detail in caplog.text  # the details are the gateway log's, never the caller's


def test_dimensions_declared_as_variable_match_any_size() -> None:
    variable = replace(MODEL, outputs=(TensorInfo("logits", "FP32", (-1, -1)), *MODEL.outputs[1:]))
    check_output_shapes({"logits": np.zeros((1, 1000), np.float32)}, variable, ["logits"])
    with pytest.raises(UpstreamError):
        check_output_shapes({"logits": np.zeros((1000,), np.float32)}, variable, ["logits"])


class MisshapenBackend(FakeBackend):
    """Answers the calls numbered in ``misshapen`` (1-based) with a spatial map of the wrong shape."""

    def __init__(self) -> None:
        super().__init__()
        self.misshapen: set[int] = set()

    async def infer(
        self,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray],
        outputs: list[str],
        timeout_s: float,
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        answer = await super().infer(model, version, inputs, outputs, timeout_s, request_id)
        if len(self.calls) in self.misshapen:
            answer["spatial_stage3"] = np.zeros((1, 9, 9), np.float32)
        return answer


@pytest.fixture()
def misshapen() -> Iterator[tuple[GatewayThread, MisshapenBackend]]:
    backend = MisshapenBackend()
    thread = GatewayThread(gateway_settings(triton_settings()), backend).start()
    with Client(thread.address) as client:
        client.wait_until_serving(10)
    yield thread, backend
    thread.stop()


def test_a_misshapen_answer_is_internal_and_the_gateway_serves_on(
    misshapen: tuple[GatewayThread, MisshapenBackend],
) -> None:
    thread, backend = misshapen
    backend.misshapen = {1, 3}
    with grpc.insecure_channel(thread.address) as channel:
        stub = pb_grpc.AttentionServiceStub(channel)
        request = pb.PredictRequest(image=png(), attention=pb.AttentionOptions(maps=["primary"]))
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=10)
        assert stub.Predict(request, timeout=10).predictions  # the next good answer is served
    assert (
        raised.value.code() == grpc.StatusCode.INTERNAL
        and raised.value.details() == f"model 'cbam' {GENERIC}"
    )
    with httpx.Client(base_url=thread.http_url, timeout=10) as http:
        refused = http.post("/v1/predict?maps=primary", content=png(), headers={"Content-Type": "image/png"})
        served = http.post("/v1/predict?maps=primary", content=png(), headers={"Content-Type": "image/png"})
    assert refused.status_code == 502 and GENERIC in refused.text and served.status_code == 200


def test_in_a_stream_only_the_misshapen_item_fails(misshapen: tuple[GatewayThread, MisshapenBackend]) -> None:
    thread, backend = misshapen
    backend.misshapen = {2}
    with Client(thread.address) as client:
        results = list(client.predict_stream([png(), png(), png()], maps=["primary"]))
    assert [type(r).__name__ for r in results] == ["Prediction", "UpstreamError", "Prediction"]
    assert GENERIC in str(results[1]) and "INTERNAL" in str(results[1])
