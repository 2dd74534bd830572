from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from attnserve import codec
from attnserve.console import models_to_console, summary_json
from attnserve.errors import InvalidInput
from attnserve.export.models import get_spec
from attnserve.export.repository import ServingOptions, build_config
from attnserve.model_info import ModelStatus
from attnserve.prediction import (
    AttentionMap,
    ClassScore,
    ImageEncoding,
    ImageInfo,
    MapDType,
    MapForm,
    Prediction,
    PredictionRequest,
    Timings,
)
from attnserve.server.gateway.catalog import model_info_from_config
from attnserve.spec import AttentionKind
from attnserve.v1 import attnserve_pb2 as pb

from .conftest import CBAM_OUTPUT_DIMS


def sample_prediction() -> Prediction:
    return Prediction(
        model="m",
        model_version="3",
        predictions=[ClassScore(4, "four", 0.9), ClassScore(1, "one", 0.05)],
        attention=[
            AttentionMap(
                "s",
                AttentionKind.SPATIAL,
                ("y", "x"),
                (8, 8),
                "minmax",
                peak=(10.5, 3.0),
                peak_value=0.4,
                contrast=0.3,
                raw=np.random.default_rng(0).random((8, 8)).astype(np.float32),
                upsampled=np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
                overlay_png=b"png",
            ),
            AttentionMap(
                "c",
                AttentionKind.CLASS_ACTIVATION,
                ("class", "y", "x"),
                (10, 8, 8),
                "relu_minmax",
                class_index=0,
                class_label="zero",
                flat=True,
            ),
        ],
        image=ImageInfo(320, 256, "PNG"),
        timings=Timings(1.0, 2.0, 3.0, 6.0),
        request_id="r1",
    )


def assert_same_prediction(back: Prediction, prediction: Prediction) -> None:
    assert [(c.index, c.label) for c in back.predictions] == [(4, "four"), (1, "one")]
    assert back.predictions[0].score == pytest.approx(0.9) and back.image == prediction.image
    assert back.timings == prediction.timings and back.request_id == "r1"
    s, c = back.attention
    original = prediction.attention[0]
    assert s.peak == (10.5, 3.0) and s.overlay_png == b"png"
    assert s.raw is not None and s.raw.tobytes() == original.raw.tobytes()  # type: ignore[union-attr]
    assert s.upsampled is not None and np.array_equal(s.upsampled, original.upsampled)  # type: ignore[arg-type]
    assert s.contrast == pytest.approx(0.3) and s.forms == [
        MapForm.RAW,
        MapForm.UPSAMPLED,
        MapForm.OVERLAY_PNG,
    ]
    assert c.class_index == 0 and c.flat and c.peak is None and c.raw is None


def test_tensors_round_trip_and_bad_ones_are_refused() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(codec.tensor_from_proto(codec.tensor_to_proto(array)), array)
    with pytest.raises(ValueError, match="needs 48 bytes"):
        codec.tensor_from_proto(pb.Tensor(shape=[3, 4], dtype=pb.DATA_TYPE_FLOAT32, data=b"\x00" * 47))
    with pytest.raises(ValueError, match="unsupported"):
        codec.tensor_from_proto(pb.Tensor(shape=[1], dtype=pb.DATA_TYPE_UNSPECIFIED, data=b"\x00" * 4))
    with pytest.raises(ValueError, match="negative"):
        codec.tensor_from_proto(pb.Tensor(shape=[-1], dtype=pb.DATA_TYPE_UINT8, data=b""))


def test_every_form_and_kind_maps_to_the_wire_and_back() -> None:
    for form in MapForm:
        assert codec.form_from_proto(codec.form_to_proto(form)) is form
    with pytest.raises(KeyError):
        codec.form_from_proto(pb.MAP_FORMAT_UNSPECIFIED)
    for kind in AttentionKind:
        assert codec.kind_from_proto(codec.kind_to_proto(kind)) is kind


def test_prediction_round_trips_through_the_proto() -> None:
    prediction = sample_prediction()
    back = codec.prediction_from_proto(codec.prediction_to_proto(prediction))
    assert_same_prediction(back, prediction)
    assert back.attention_map("c") is back.attention[1]


def test_the_wait_before_a_call_was_taken_up_is_sent_only_when_known() -> None:
    prediction = sample_prediction()
    assert "queued_ms" not in codec.prediction_to_json(prediction)["timings"]  # the client did not say
    prediction.timings = Timings(1.0, 2.0, 3.0, 6.0, queued_ms=0.0)  # known, and none
    assert codec.prediction_to_proto(prediction).timings.HasField("queued_ms")
    assert codec.prediction_to_json(prediction)["timings"]["queued_ms"] == 0.0
    for back in (
        codec.prediction_from_proto(codec.prediction_to_proto(prediction)),
        codec.prediction_from_json(codec.prediction_to_json(prediction)),
    ):
        assert back.timings == prediction.timings


def test_prediction_round_trips_through_json_losslessly() -> None:
    prediction = sample_prediction()
    document = codec.prediction_to_json(prediction)
    assert document["attention"][0]["peak"] == {"x": 10.5, "y": 3.0}
    assert document["attention"][0]["raw"]["dtype"] == "DATA_TYPE_FLOAT32"
    assert_same_prediction(codec.prediction_from_json(document), prediction)
    # JSON is the proto's own mapping: the same message both ways
    assert codec.prediction_to_proto(codec.prediction_from_json(document)) == codec.prediction_to_proto(
        prediction
    )


def test_requests_round_trip_through_proto_and_json() -> None:
    request = PredictionRequest(
        image=b"\x89PNG...",
        model="cbam",
        top_k=3,
        maps=("primary", "cam"),
        forms=frozenset({MapForm.RAW, MapForm.OVERLAY_PNG}),
        render=("primary",),
        target_class=0,
        request_id="x",
    )
    assert codec.request_from_proto(codec.request_to_proto(request)) == request
    assert codec.request_from_json(codec.request_to_json(request)) == request
    tensor = PredictionRequest(tensor=np.ones((1, 4, 4), np.float32))
    back = codec.request_from_json(codec.request_to_json(tensor))
    assert back.tensor is not None and np.array_equal(back.tensor, tensor.tensor) and back.image is None
    assert back.top_k is None and back.target_class is None  # unset stays unset


def test_encoding_options_round_trip_and_defaults_leave_the_message_as_it_was() -> None:
    compact = PredictionRequest(
        image=b"\xff\xd8...",
        forms=frozenset({MapForm.UPSAMPLED, MapForm.OVERLAY_PNG}),
        image_encoding=ImageEncoding.WEBP,
        image_quality=70,
        map_dtype=MapDType.UINT8,
    )
    assert codec.request_from_proto(codec.request_to_proto(compact)) == compact
    assert codec.request_from_json(codec.request_to_json(compact)) == compact
    options = codec.request_to_json(compact)["attention"]
    assert (options["image_encoding"], options["image_quality"], options["map_dtype"]) == (
        "IMAGE_ENCODING_WEBP",
        70,
        "DATA_TYPE_UINT8",
    )
    # PNG and FLOAT32 travel as the zero values: a default request is the message it always was
    default = PredictionRequest(image=b"x", maps=("primary",))
    assert codec.request_to_json(default) == {"image": "eA==", "attention": {"maps": ["primary"]}}
    explicit = pb.PredictRequest(
        attention=pb.AttentionOptions(image_encoding=pb.IMAGE_ENCODING_PNG, map_dtype=pb.DATA_TYPE_FLOAT32)
    )
    back = codec.request_from_proto(explicit)
    assert (back.image_encoding, back.image_quality, back.map_dtype) == (
        ImageEncoding.PNG,
        None,
        MapDType.FLOAT32,
    )


def test_compact_maps_round_trip_in_their_dtype_and_say_their_encoding() -> None:
    prediction = sample_prediction()
    s = prediction.attention[0]
    s.raw = s.raw.astype(np.float16)  # type: ignore[union-attr]
    s.upsampled = np.arange(12, dtype=np.uint8).reshape(3, 4)
    s.overlay_png, s.image_encoding = b"\xff\xd8jpeg", ImageEncoding.JPEG
    document = codec.prediction_to_json(prediction)
    assert document["attention"][0]["image_encoding"] == "jpeg"
    assert document["attention"][0]["raw"]["dtype"] == "DATA_TYPE_FLOAT16"
    assert document["attention"][0]["upsampled"]["dtype"] == "DATA_TYPE_UINT8"
    assert "image_encoding" not in document["attention"][1]  # no image bytes, no encoding
    for back in (
        codec.prediction_from_json(document),
        codec.prediction_from_proto(codec.prediction_to_proto(prediction)),
    ):
        first = back.attention[0]
        assert first.image_encoding is ImageEncoding.JPEG and back.attention[1].image_encoding is None
        assert first.raw is not None and first.raw.dtype == np.float16 and np.array_equal(first.raw, s.raw)  # type: ignore[arg-type]
        assert first.upsampled is not None and first.upsampled.dtype == np.uint8
        assert np.array_equal(first.upsampled, s.upsampled)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ({"top_k": "many"}, "not a valid PredictRequest"),
        ({"no_such_field": 1}, "not a valid PredictRequest"),
        ({"attention": {"formats": ["MAP_FORMAT_UNSPECIFIED"]}}, "unknown attention format"),
        ({"tensor": {"shape": [2], "dtype": "DATA_TYPE_FLOAT32", "data": "AAAA"}}, "malformed"),
        ({"attention": {"image_encoding": 9}}, "unknown image_encoding 9; use PNG, JPEG or WEBP"),
        ({"attention": {"map_dtype": 7}}, "unknown map_dtype 7; use FLOAT32, FLOAT16 or UINT8"),
        ({"attention": {"image_encoding": "IMAGE_ENCODING_GIF"}}, "not a valid PredictRequest"),
    ],
)
def test_malformed_json_requests_are_invalid_input(document: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codec.request_from_json(document)


def test_the_cli_summary_keeps_its_documented_fields() -> None:
    document = summary_json(codec.prediction_from_proto(codec.prediction_to_proto(sample_prediction())))
    assert document["attention"][0]["peak"] == [10.5, 3.0]
    assert document["attention"][0]["forms"] == ["raw", "upsampled", "overlay_png"]
    assert document["attention"][1]["class_label"] == "zero" and document["predictions"][0]["label"] == "four"


def test_models_carry_their_readiness_reason_and_failed_release(capsys: pytest.CaptureFixture[str]) -> None:
    spec = get_spec("cbam")
    dims = {name: CBAM_OUTPUT_DIMS[name] for name in spec.output_names}
    ready = model_info_from_config(build_config("cbam", spec, dims, ServingOptions()), "1")
    as_json = codec.message_to_json(codec.model_info_to_proto(ready))
    assert as_json["ready"] is True and "reason" not in as_json  # ready models look as they always did
    assert "release_error" not in as_json

    kept = codec.model_info_to_proto(replace(ready, release_error="INTERNAL: failed to load 'cbam'"))
    assert kept.ready and codec.message_to_json(kept)["release_error"] == "INTERNAL: failed to load 'cbam'"
    listing = SimpleNamespace(
        list_models=lambda: codec.model_list_to_proto([replace(ready, release_error="x")], "cbam")
    )
    models_to_console(listing)  # type: ignore[arg-type]
    assert "its last release failed to load (this one serves): x" in capsys.readouterr().out

    gone = codec.model_info_to_proto(replace(ready, ready=False, reason="Triton is unavailable"))
    assert not gone.ready and gone.reason == "Triton is unavailable"
    assert gone.architecture == "cbam" and [a.name for a in gone.attention] == [
        a.name for a in spec.attention
    ]

    never = codec.model_list_to_proto([ModelStatus("broken", "2", "UNAVAILABLE: load failed")], "cbam")
    assert codec.message_to_json(never) == {
        "models": [{"name": "broken", "version": "2", "reason": "UNAVAILABLE: load failed"}],
        "default_model": "cbam",
    }
