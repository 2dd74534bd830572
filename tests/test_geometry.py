"""The geometry inverts the resize: a map peak on a known object lands on that object."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnserve.spec import ColorMode, PreprocessSpec, ResizeMode
from attnserve.transform import ResizeGeometry, map_to_original, peak_in_original


def spec(mode: ResizeMode, size: tuple[int, int] = (64, 64), crop_pct: float = 1.0) -> PreprocessSpec:
    return PreprocessSpec(
        input_size=size,
        color_mode=ColorMode.GRAY,
        mean=(0.0,),
        std=(1.0,),
        resize_mode=mode,
        crop_pct=crop_pct,
    )


def test_letterbox_keeps_aspect_and_centres_with_padding() -> None:
    g = ResizeGeometry.for_spec(320, 160, spec(ResizeMode.LETTERBOX))
    assert (g.scale_x, g.scale_y) == (0.2, 0.2) and (g.offset_x, g.offset_y) == (0.0, 16.0)
    assert g.destination_box() == (0, 16, 64, 48)


def test_stretch_and_centre_crop() -> None:
    g = ResizeGeometry.for_spec(320, 160, spec(ResizeMode.STRETCH))
    assert (g.scale_x, g.scale_y, g.offset_x, g.offset_y) == (0.2, 0.4, 0.0, 0.0)
    c = ResizeGeometry.for_spec(320, 160, spec(ResizeMode.CENTER_CROP, crop_pct=0.8))
    assert c.scale_x == c.scale_y == pytest.approx(0.5)
    x0, y0, x1, y1 = c.source_box()
    assert (x0 + x1) / 2 == pytest.approx(160) and (y0 + y1) / 2 == pytest.approx(80)
    assert y1 - y0 == pytest.approx(128)  # 64 input pixels at scale 0.5


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize("size", [(320, 160), (100, 300), (64, 64)])
def test_a_peak_on_an_object_lands_on_that_object(mode: ResizeMode, size: tuple[int, int]) -> None:
    width, height = size
    g = ResizeGeometry.for_spec(width, height, spec(mode))
    # an object at a known original position, near the centre so every mode keeps it
    obj_x, obj_y = 0.55 * width, 0.45 * height
    in_x, in_y = g.to_input(np.array([obj_x]), np.array([obj_y]))
    # the model's 8×8 map peaks on the cell holding the object's input position
    attention = np.zeros((8, 8), dtype=np.float32)
    attention[int(in_y[0] // 8), int(in_x[0] // 8)] = 1.0
    peak_x, peak_y, value = peak_in_original(attention, g)
    assert value == 1.0
    cell_w, cell_h = 8 / g.scale_x, 8 / g.scale_y  # one map cell, in original pixels
    assert abs(peak_x - obj_x) <= cell_w / 2 + 1e-6 and abs(peak_y - obj_y) <= cell_h / 2 + 1e-6
    upsampled = map_to_original(attention, g)
    assert upsampled.shape == (height, width)
    row, col = np.unravel_index(np.argmax(upsampled), upsampled.shape)
    assert abs(col + 0.5 - obj_x) <= cell_w and abs(row + 0.5 - obj_y) <= cell_h


def test_peaks_over_letterbox_padding_are_not_candidates() -> None:
    g = ResizeGeometry.for_spec(320, 160, spec(ResizeMode.LETTERBOX))  # rows 0..15 are padding
    attention = np.zeros((8, 8), dtype=np.float32)
    attention[0, 3] = 10.0  # the padding row
    attention[4, 5] = 1.0
    x, y, value = peak_in_original(attention, g)
    assert 0 <= y < 160 and x == pytest.approx((5.5 * 8) / 0.2)
    assert value == 1.0  # the value at the reported peak, not the padding's larger one


def test_identity_upsampling_matches_pytorch_bilinear() -> None:
    rng = np.random.default_rng(0)
    attention = rng.random((8, 8)).astype(np.float32)
    ours = map_to_original(attention, ResizeGeometry.identity(64, 64))
    reference = F.interpolate(
        torch.from_numpy(attention)[None, None], size=(64, 64), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(ours, reference[0, 0].numpy(), atol=1e-5)


def test_round_trip_between_input_and_original() -> None:
    g = ResizeGeometry.for_spec(123, 77, spec(ResizeMode.LETTERBOX))
    xs, ys = np.array([0.0, 10.5, 122.9]), np.array([0.0, 40.0, 76.9])
    back = g.to_original(*g.to_input(xs, ys))
    np.testing.assert_allclose(back[0], xs)
    np.testing.assert_allclose(back[1], ys)


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize("size", [(320, 160), (100, 300)])
def test_boxes_go_to_original_pixels_and_back(mode: ResizeMode, size: tuple[int, int]) -> None:
    from attnserve.transform import boxes_to_input, boxes_to_original

    width, height = size
    g = ResizeGeometry.for_spec(width, height, spec(mode))
    original = np.array([[0.4 * width, 0.35 * height, 0.6 * width, 0.55 * height]])
    in_input = boxes_to_input(original, g)
    as_fraction = in_input / np.array([g.input_width, g.input_height] * 2)
    np.testing.assert_allclose(boxes_to_original(as_fraction, g), original, rtol=1e-5)
    # a box reaching past the image (a glimpse at its edge) is clipped to it
    past = boxes_to_original(np.array([[-5.0, -5.0, 6.0, 6.0]]), g)
    assert past[0, 0] == past[0, 1] == 0.0 and past[0, 2] == width and past[0, 3] == height
