import io

import numpy as np
import pytest
from PIL import Image

from attnserve.errors import InvalidInput
from attnserve.export.models import create_model, get_spec, serving_spec
from attnserve.prediction import MapForm
from attnserve.server.gateway.postprocess import (
    AttentionRequest,
    TaskOptions,
    postprocess,
    softmax,
    to_display,
    top_k,
)
from attnserve.spec import Normalization
from attnserve.transform import ResizeGeometry

from .conftest import CBAM_OUTPUT_DIMS

SPEC = serving_spec(get_spec("cbam"), create_model("cbam"))
FIXED = Normalization(method="fixed", range=(0.0, 1.0))
GATE = Normalization(method="above_median", range=(0.0, 1.0))
MINMAX = Normalization(method="minmax")
RELU = Normalization(method="relu_minmax")


def outputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    result = {"logits": np.array([0, 1, 5, 2, 0, 0, 0, 0, 0, -1], dtype=np.float32)}
    for a in SPEC.attention:
        shape = CBAM_OUTPUT_DIMS[a.name]
        result[a.name] = rng.random(shape).astype(np.float32)
    return result


def test_softmax_and_top_k() -> None:
    logits = np.array([1.0, 3.0, 2.0], dtype=np.float32)
    assert softmax(logits).sum() == pytest.approx(1.0)
    scores = top_k(logits, ("a", "b", "c"), 2)
    assert [s.label for s in scores] == ["b", "c"] and scores[0].score > scores[1].score


@pytest.mark.parametrize(
    ("values", "normalization"),
    [
        (np.full((8, 8), 0.7, dtype=np.float32), MINMAX),  # constant
        (
            0.999 + 0.0005 * np.random.default_rng(0).random((8, 8)).astype(np.float32),
            FIXED,
        ),  # saturated sigmoid
        (  # saturated, with a dip along one border (zero padding of the 7×7 convolution)
            np.concatenate([np.full((7, 8), 0.998), np.linspace(0.6, 0.99, 8)[None]]).astype(np.float32),
            GATE,
        ),
        (
            np.full((8, 8), 1 / 64, dtype=np.float32) * (1 + 1e-3 * np.random.default_rng(1).random((8, 8))),
            MINMAX,
        ),
        (-np.random.default_rng(2).random((8, 8)).astype(np.float32), RELU),  # no positive evidence
    ],
    ids=["constant", "saturated-sigmoid", "saturated-with-border-dip", "uniform-softmax", "all-negative-cam"],
)
def test_flat_maps_are_flagged_and_show_nothing(values: np.ndarray, normalization: Normalization) -> None:
    display = to_display(values.astype(np.float32), normalization)
    assert display.flat and display.contrast < normalization.flat_below
    assert not display.values.any()


def test_a_peaked_map_is_not_flat_and_spans_zero_to_one() -> None:
    values = np.full((8, 8), 0.01, dtype=np.float32)
    values[3, 4] = 0.6
    for normalization in (MINMAX, RELU):
        display = to_display(values, normalization)
        assert not display.flat and display.values.max() == 1.0 and display.values.min() == 0.0
    fixed = to_display(values, FIXED)
    assert not fixed.flat and fixed.values.max() == pytest.approx(0.6)  # fixed keeps absolute meaning


def test_a_mostly_open_gate_shows_where_it_opens_more() -> None:
    values = np.full((8, 8), 0.9, dtype=np.float32)
    values[2, 5] = 0.99
    values[7, :] = 0.5  # suppressed border row: not a highlight
    display = to_display(values, GATE)
    assert not display.flat and display.contrast == pytest.approx(0.09)
    assert display.values[2, 5] == 1.0 and display.values.sum() == 1.0
    assert to_display(values, FIXED).values.mean() > 0.8  # the absolute reading would paint everything


def test_postprocess_returns_requested_maps_and_forms_only() -> None:
    geometry = ResizeGeometry.for_spec(128, 64, SPEC.preprocess)
    image = Image.new("RGB", (128, 64), (40, 40, 40))
    request = AttentionRequest(
        ("spatial_stage3", "channel_stage1", "cam"),
        frozenset({MapForm.RAW, MapForm.OVERLAY_PNG, MapForm.UPSAMPLED}),
        render=frozenset({"spatial_stage3"}),
    )
    answer = postprocess(outputs(), SPEC, geometry, TaskOptions(top_k=3), request, image)
    maps = answer.attention
    assert [p.index for p in answer.task.predictions] == [2, 3, 1]
    stage3, channel, cam = maps
    assert stage3.raw is not None and stage3.raw.shape == (8, 8)
    assert stage3.upsampled is not None and stage3.upsampled.shape == (64, 128)
    assert Image.open(io.BytesIO(stage3.overlay_png)).size == (128, 64)
    assert stage3.peak is not None and 0 <= stage3.peak[0] < 128 and 0 <= stage3.peak[1] < 64
    assert (
        channel.peak is None
        and channel.raw is not None
        and channel.raw.shape == (32,)
        and not channel.overlay_png
    )
    assert cam.class_index == 2 and cam.class_label == "2" and cam.raw is not None and cam.raw.shape == (8, 8)
    assert not cam.overlay_png and cam.upsampled is None  # not in `render`


def test_class_activation_maps_follow_the_target_class() -> None:
    geometry = ResizeGeometry.identity(64, 64)
    out = outputs()
    raw = AttentionRequest(("cam",), frozenset({MapForm.RAW}))
    predicted = postprocess(out, SPEC, geometry, TaskOptions(1), raw)
    assert predicted.attention[0].class_index == predicted.task.predictions[0].index == 2
    (cam,) = postprocess(out, SPEC, geometry, TaskOptions(1, target_class=7), raw).attention
    assert cam.class_index == 7 and np.array_equal(cam.raw, out["cam"][7])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="target_class 12"):
        postprocess(out, SPEC, geometry, TaskOptions(1, target_class=12), raw)


def test_tasks_and_attention_kinds_are_registered_once() -> None:
    from attnserve.server.gateway.postprocess import register_attention_kind, register_task
    from attnserve.server.gateway.postprocess.attention import spatial_map
    from attnserve.server.gateway.postprocess.tasks import classification
    from attnserve.spec import AttentionKind, Task

    with pytest.raises(ValueError, match="registered already"):
        register_task(Task.CLASSIFICATION)(classification)
    with pytest.raises(ValueError, match="registered already"):
        register_attention_kind(AttentionKind.SPATIAL)(spatial_map)


def test_a_stack_no_task_selects_stays_whole_and_is_drawn_as_tiles() -> None:
    """A per-scale stack (axes scale, y, x): classification selects no scale, so it stays whole:
    raw as the stack, drawn one tile per scale side by side, its peak in the strongest tile."""
    from attnserve.server.gateway.postprocess import MapContext, build_attention_map

    per_scale = SPEC.attention_by_name("spatial_stage3").model_copy(update={"axes": ("scale", "y", "x")})
    values = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    values[2, 5, 6] = 2.0  # the strongest cell: scale 2, row 5, column 6
    forms = frozenset({MapForm.RAW, MapForm.OVERLAY_PNG, MapForm.UPSAMPLED, MapForm.HEATMAP_PNG})
    request = AttentionRequest(("spatial_stage3",), forms)
    image = Image.new("RGB", (64, 64))
    context = MapContext(ResizeGeometry.identity(64, 64), request, {"class": 2}, SPEC.labels, image)
    result = build_attention_map(per_scale, values, context)
    assert result.raw is not None and result.raw.shape == (3, 8, 8) and result.class_index is None
    assert result.peak == (6.5 * 8, 5.5 * 8) and result.peak_value == 2.0
    assert result.upsampled is not None and result.upsampled.shape == (3, 64, 64)
    for drawn in (result.overlay_png, result.heatmap_png):
        with Image.open(io.BytesIO(drawn)) as tiles:
            assert tiles.size == (3 * 64 + 2 * 4, 64)  # three tiles, 4 px apart
    one_scale = MapContext(**{**vars(context), "selection": {"scale": 1}})
    selected = build_attention_map(per_scale, values, one_scale)
    assert selected.raw is not None and np.array_equal(selected.raw, values[1])
    assert selected.peak is not None and selected.overlay_png[:4] == b"\x89PNG"


@pytest.mark.parametrize("mode", ["letterbox", "stretch", "center_crop"])
def test_boxes_and_paths_land_on_the_original_pixels_after_exif_rotation(mode: str) -> None:
    """A square at a known place in the *viewed* (EXIF-rotated) photo; a box and a glimpse path
    put on it in the model's input come back on it in original pixels, and are drawn there."""
    from attnserve.server.gateway.postprocess import MapContext, build_attention_map
    from attnserve.server.gateway.preprocess import preprocess_image
    from attnserve.spec import AttentionKind, AttentionSpec, ResizeMode
    from attnserve.transform import ImageLimits, boxes_to_input

    viewed = np.zeros((120, 200), dtype=np.uint8)
    viewed[40:60, 130:150] = 255  # x 130–150, y 40–60 as the user sees the photo
    stored = Image.fromarray(viewed).transpose(Image.Transpose.ROTATE_90)  # the camera's raw pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    preprocess = SPEC.preprocess.model_copy(update={"resize_mode": ResizeMode(mode), "crop_pct": 0.9})
    prepared = preprocess_image(buffer.getvalue(), preprocess, ImageLimits(10**7, 10**7), keep_image=True)
    geometry = prepared.geometry
    assert (geometry.width, geometry.height) == (200, 120)

    square = np.array([130.0, 40.0, 150.0, 60.0])
    in_input = boxes_to_input(square, geometry)
    x0, y0, x1, y1 = (int(round(v)) for v in in_input)
    assert prepared.tensor[0, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].mean() > 2.0  # the square is there
    fraction = in_input / np.array([geometry.input_width, geometry.input_height] * 2)
    centre = np.array([0.5, 0.5, 0.5, 0.5]) + np.array([-0.1, -0.1, 0.1, 0.1])
    request = AttentionRequest(("zoom", "path"), frozenset({MapForm.RAW, MapForm.OVERLAY_PNG}))
    context = MapContext(geometry, request, {}, SPEC.labels, prepared.image)
    zoom = AttentionSpec(
        name="zoom", kind=AttentionKind.BOXES, axes=("scale", "box"), description="d", value_range="r"
    )
    path = AttentionSpec(
        name="path", kind=AttentionKind.PATH, axes=("step", "patch", "box"), description="d", value_range="r"
    )
    boxes = build_attention_map(zoom, fraction[None].astype(np.float32), context)
    glimpses = build_attention_map(path, np.stack([centre, fraction])[:, None].astype(np.float32), context)

    np.testing.assert_allclose(boxes.boxes[0], square, atol=1e-3)
    assert boxes.peak == pytest.approx((140.0, 50.0), abs=1e-3)
    assert [len(g.patches) for g in glimpses.path] == [1, 1]
    assert (
        glimpses.path[1].center == pytest.approx((140.0, 50.0), abs=1e-3)
        and glimpses.peak == glimpses.path[1].center
    )
    np.testing.assert_allclose(glimpses.path[1].patches[0], square, atol=1e-3)
    for drawn in (boxes.overlay_png, glimpses.overlay_png):
        picture = np.asarray(Image.open(io.BytesIO(drawn)).convert("RGB"), dtype=np.int16)
        original = np.asarray(prepared.image, dtype=np.int16)  # type: ignore[arg-type]
        assert picture.shape == (120, 200, 3)
        changed = np.abs(picture - original).sum(axis=2) > 60
        assert changed[40:60, 128:133].any() and not changed[100:, :60].any()  # drawn on the square only
