"""The one transform: training, evaluation and the gateway make the same tensor from the same image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from attnserve.export.data import ClutteredDigits, DigitSample, as_photo, model_batch
from attnserve.export.data.cluttered_digits import _camera_round_trip
from attnserve.export.models import get_spec
from attnserve.export.scoring import canvases_to_input
from attnserve.server.gateway.preprocess import preprocess_image
from attnserve.spec import ColorMode, Interpolation, PreprocessSpec, ResizeMode
from attnserve.transform import (
    ImageLimits,
    denormalize,
    image_from_pixels,
    normalize,
    normalize_pixels,
    to_model_input,
)

LIMITS = ImageLimits(max_bytes=50_000_000, max_pixels=40_000_000)
CBAM = get_spec("cbam").preprocess
BICUBIC = Interpolation.BICUBIC


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def through_the_gateway(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    return preprocess_image(png(image_from_pixels(pixels)), spec, LIMITS).tensor


@pytest.mark.parametrize(
    "spec",
    [
        CBAM,
        CBAM.model_copy(update={"resize_mode": ResizeMode.STRETCH}),
        CBAM.model_copy(update={"resize_mode": ResizeMode.CENTER_CROP, "crop_pct": 0.875}),
        CBAM.model_copy(update={"input_size": (48, 80), "pad_value": 0.5}),
        CBAM.model_copy(update={"resize_mode": ResizeMode.CENTER_CROP, "interpolation": BICUBIC}),
    ],
    ids=["letterbox", "stretch", "center-crop", "wide-input-grey-padding", "bicubic"],
)
def test_training_and_the_gateway_make_identical_tensors(spec: PreprocessSpec) -> None:
    """Canvases at the input size, larger, and of other aspect ratios: bit for bit the same."""
    sample = ClutteredDigits("test", 1, seed=1)[0]
    photo, box = as_photo(sample, 2.5, pad=(30, 0, 7, 0))
    reshaped = DigitSample(
        np.asarray(photo, np.float32) / 255, sample.label, box, sample.mask, sample.scan_index
    )  # type: ignore[arg-type]
    for shown in (sample, reshaped):
        trained_on = model_batch([shown], spec).inputs().numpy()[0]  # what training feeds the model
        evaluated = canvases_to_input([shown.image], spec).numpy()[0]  # what scoring and parity feed it
        served = through_the_gateway(shown.image, spec)
        assert trained_on.shape == served.shape == (spec.channels, *spec.input_size)
        assert np.array_equal(trained_on, served) and np.array_equal(evaluated, served)


def test_the_interpolation_the_spec_names_is_the_filter_used() -> None:
    """A bicubic model gets Pillow's bicubic resize of the image, not the bilinear default; a
    spec written before the field existed reads as bilinear."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (90, 90), dtype=np.uint8))
    bicubic = CBAM.model_copy(update={"resize_mode": ResizeMode.STRETCH, "interpolation": BICUBIC})
    served = to_model_input(image, bicubic).tensor
    expected = normalize(image.resize((64, 64), Image.Resampling.BICUBIC, reducing_gap=3.0), bicubic)
    bilinear_spec = bicubic.model_copy(update={"interpolation": Interpolation.BILINEAR})
    bilinear = to_model_input(image, bilinear_spec).tensor
    assert np.array_equal(served, expected) and not np.array_equal(served, bilinear)
    legacy = bicubic.model_dump(mode="json")
    del legacy["interpolation"]
    assert PreprocessSpec.model_validate(legacy).interpolation is Interpolation.BILINEAR


def test_the_training_resample_round_trip_is_the_gateways_resize() -> None:
    """A canvas that took training's camera round trip equals the enlarged photo as served."""
    canvas = ClutteredDigits("test", 1, seed=2)[0].image
    trained = _camera_round_trip(canvas, np.random.default_rng(7))
    enlarged = round(64 * np.random.default_rng(7).uniform(1.0, 5.0))
    photo = image_from_pixels(canvas).resize((enlarged, enlarged), Image.Resampling.BILINEAR)
    served = preprocess_image(png(photo), CBAM, LIMITS).tensor
    assert np.array_equal(canvases_to_input([trained], CBAM).numpy()[0], served)


def test_normalisation_of_arrays_and_images_agree() -> None:
    rgb = PreprocessSpec(
        input_size=(4, 4),
        color_mode=ColorMode.RGB,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        resize_mode=ResizeMode.STRETCH,
    )
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    from_image = normalize(image, rgb)
    from_array = normalize_pixels(pixels.astype(np.float32) * np.float32(1 / 255), rgb)
    assert from_image.shape == (3, 4, 4) and np.array_equal(from_image, from_array)
    batch = normalize_pixels(np.stack([pixels, pixels]).astype(np.float32) / 255, rgb)
    assert batch.shape == (2, 3, 4, 4)
    grey = normalize_pixels(np.full((4, 4, 1), 0.5, np.float32), rgb)  # one channel → every channel
    np.testing.assert_allclose(grey[:, 0, 0], [(0.5 - 0.5) / 0.2, (0.5 - 0.4) / 0.25, (0.5 - 0.3) / 0.3])
    assert np.array_equal(np.asarray(denormalize(from_image, rgb)), pixels)


def test_model_input_geometry_refers_to_the_original_size() -> None:
    image = Image.new("L", (50, 100), 255)  # as if decoded at half scale from 100×200
    prepared = to_model_input(image, CBAM, original_size=(100, 200))
    assert (prepared.geometry.width, prepared.geometry.height) == (100, 200)
    assert prepared.geometry.destination_box() == (16, 0, 48, 64)


def test_digit_boxes_follow_the_canvas_into_the_model_input() -> None:
    """Training scores attention against boxes carried through the same geometry."""
    sample = ClutteredDigits("test", 1, seed=1)[0]
    photo, box = as_photo(sample, 2.0, pad=(0, 40, 0, 0))  # 128 wide, 168 tall
    shown = DigitSample(np.asarray(photo, np.float32) / 255, sample.label, box, sample.mask, 0)  # type: ignore[arg-type]
    batch = model_batch([shown], CBAM)
    resized = round(128 * 64 / 168)  # letterboxed by its height: 49 px wide, 7 px of padding left
    sx, sy, offset = resized / 128, 64 / 168, (64 - resized) // 2
    expected = [box[0] * sx + offset, box[1] * sy, box[2] * sx + offset, box[3] * sy]
    np.testing.assert_allclose(batch.boxes[0], expected, rtol=1e-5)
