import numpy as np
import pytest

from attnserve.prediction import (
    AttentionMap,
    ClassScore,
    ImageInfo,
    MapForm,
    Prediction,
    Timings,
    form_from_proto,
    form_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)
from attnserve.spec import AttentionKind
from attnserve.v1 import attnserve_pb2 as pb


def test_tensors_round_trip_and_bad_ones_are_refused() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(tensor_from_proto(tensor_to_proto(array)), array)
    with pytest.raises(ValueError, match="needs 48 bytes"):
        tensor_from_proto(pb.Tensor(shape=[3, 4], dtype=pb.DATA_TYPE_FLOAT32, data=b"\x00" * 47))
    with pytest.raises(ValueError, match="unsupported"):
        tensor_from_proto(pb.Tensor(shape=[1], dtype=pb.DATA_TYPE_UNSPECIFIED, data=b"\x00" * 4))
    with pytest.raises(ValueError, match="negative"):
        tensor_from_proto(pb.Tensor(shape=[-1], dtype=pb.DATA_TYPE_UINT8, data=b""))


def test_every_form_maps_to_the_wire_and_back() -> None:
    for form in MapForm:
        assert form_from_proto(form_to_proto(form)) is form
    with pytest.raises(KeyError):
        form_from_proto(pb.MAP_FORMAT_UNSPECIFIED)


def test_prediction_round_trips_through_the_proto() -> None:
    prediction = Prediction(
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
                raw=np.ones((8, 8), np.float32),
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
    back = Prediction.from_proto(prediction.to_proto())
    assert [(c.index, c.label) for c in back.predictions] == [(4, "four"), (1, "one")]
    assert back.predictions[0].score == pytest.approx(0.9) and back.image == prediction.image
    assert back.timings == prediction.timings and back.request_id == "r1"
    s, c = back.attention
    assert s.peak == (10.5, 3.0) and s.overlay_png == b"png" and np.array_equal(s.raw, np.ones((8, 8)))  # type: ignore[arg-type]
    assert c.class_index == 0 and c.flat and c.peak is None and c.raw is None
    document = back.to_json()
    assert document["attention"][0]["peak"] == [10.5, 3.0] and document["attention"][0]["forms"] == [
        "raw",
        "overlay_png",
    ]
    assert back.attention_map("c") is c
